/* test_runtime_hf.c: the runtime against Hugging Face transformers as the oracle, on the tiny
 * random-weight models of tests/fixtures/runtime (made by tests/fixtures/gen_runtime.py): llama with
 * GQA and an untied lm_head, Llama-3 rope_scaling, head_dim != hidden/heads with attention and MLP
 * biases, qwen2 with q/k/v biases, mistral, BF16 and F16 weights, and the mixtures of experts
 * mixtral, qwen2_moe (with its gated shared expert) and qwen3_moe (q/k norms), sliding-window attention
 * (mistral with a window of 5, qwen2 with max_window_layers 1 and a window of 4) and a Llama-3 config in
 * transformers 5's own layout (rope_parameters, rope_theta 500000). Every position's logits, from
 * one prefill and from token-by-token decoding, on the fast kernels and on the scalar reference.
 * Tolerance: max abs error 1e-4 for all of them (BF16/F16 too: the oracle ran in float64 on the
 * exact stored weights, and spotq computes in float32); against transformers' native bfloat16
 * arithmetic, the fixture's tolerance_native (0.1, bf16 rounds every product to ~4e-3). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../runtime/runtime.h"
#include "check.h"

static const char *FIXTURES[] = {"llama_gqa", "llama3_rope", "llama_headdim", "qwen2_bias", "mistral", "llama_bf16", "qwen2_f16",
                                 "mixtral", "qwen2_moe", "qwen3_moe", "mistral_window", "qwen2_window", "llama3_v5"};

typedef struct {
    int ids[64], n, vocab;
    float *logits, *native; /* (n, vocab) */
    double tol, tol_native;
} expected;

static int load_expected(const char *dir, expected *e) {
    char path[512];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    char *text;
    size_t len;
    sq_err err = {0};
    memset(e, 0, sizeof *e);
    if (sq_read_file(path, &text, &len, &err)) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *ids = cJSON_GetObjectItem(j, "ids"), *lg = cJSON_GetObjectItem(j, "logits"), *nat = cJSON_GetObjectItem(j, "logits_native");
    for (const cJSON *x = ids ? ids->child : NULL; x && e->n < 64; x = x->next) e->ids[e->n++] = x->valueint;
    e->vocab = lg ? cJSON_GetArraySize(lg->child) : 0;
    e->tol = cJSON_GetObjectItem(j, "tolerance") ? cJSON_GetObjectItem(j, "tolerance")->valuedouble : 0;
    e->logits = calloc((size_t)(e->n * e->vocab), sizeof(float));
    e->native = nat ? calloc((size_t)(e->n * e->vocab), sizeof(float)) : NULL;
    if (nat) e->tol_native = cJSON_GetObjectItem(j, "tolerance_native")->valuedouble;
    int r = 0;
    for (const cJSON *row = lg ? lg->child : NULL; row && r < e->n; row = row->next, r++) {
        int c = 0;
        for (const cJSON *v = row->child; v && c < e->vocab; v = v->next) e->logits[r * e->vocab + c++] = (float)v->valuedouble;
    }
    r = 0;
    for (const cJSON *row = nat ? nat->child : NULL; row && r < e->n; row = row->next, r++) {
        int c = 0;
        for (const cJSON *v = row->child; v && c < e->vocab; v = v->next) e->native[r * e->vocab + c++] = (float)v->valuedouble;
    }
    cJSON_Delete(j);
    CHECK(e->n == 16 && e->vocab > 0 && e->tol == 1e-4, "%s: expected.json has 16 ids, logits and tolerance 1e-4", dir);
    return e->n == 16 && e->vocab > 0 ? 0 : -1;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void run_fixture(const char *name, const char *backend, int threads) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/runtime/%s", name);
    expected e;
    if (load_expected(dir, &e)) return;
    sq_err err = {0};
    sq_exec *ex;
    sq_model *m;
    sq_state *s;
    CHECK_OK(sq_exec_new(&ex, backend, threads, &err), &err);
    if (sq_model_open(&m, dir, ex, &err)) {
        CHECK(0, "%s: %s", name, err.msg);
        sq_exec_free(ex);
        return;
    }
    CHECK(sq_model_config(m)->vocab == e.vocab, "%s: vocab", name);
    CHECK(sq_model_ckpt(m)->tokenizer_path[0] == 0, "%s: runs without a tokenizer.json", name);
    CHECK_OK(sq_state_new(&s, m, 32, 0, &err), &err);
    float *got = malloc((size_t)(e.n * e.vocab) * sizeof *got);
    CHECK_OK(sq_forward(s, e.ids, e.n, &err), &err);
    CHECK_OK(sq_logits(s, 0, e.n, got, &err), &err);
    double d = max_abs_diff(got, e.logits, (int64_t)e.n * e.vocab);
    CHECK(d < e.tol, "%s (%s, %d threads): prefill logits differ from transformers by %.3g (max abs), tolerance %g", name, backend,
          threads, d, e.tol);
    if (e.native) {
        double dn = max_abs_diff(got, e.native, (int64_t)e.n * e.vocab);
        CHECK(dn < e.tol_native, "%s: vs transformers in native bfloat16: %.3g, tolerance %g", name, dn, e.tol_native);
    }
    /* the same through the decode path, one token at a time */
    CHECK_OK(sq_state_rewind(s, 0, &err), &err);
    double worst = 0;
    for (int i = 0; i < e.n; i++) {
        CHECK_OK(sq_forward(s, e.ids + i, 1, &err), &err);
        CHECK_OK(sq_logits(s, 0, 1, got, &err), &err);
        worst = fmax(worst, max_abs_diff(got, e.logits + i * e.vocab, e.vocab));
    }
    CHECK(worst < e.tol, "%s (%s, %d threads): decode logits differ from transformers by %.3g", name, backend, threads, worst);
    if (!strcmp(backend, "cpu") && threads == 2)
        printf("%-14s prefill max abs err %.2e, decode %.2e\n", name, d, worst);
    free(got);
    free(e.logits);
    free(e.native);
    sq_state_free(s);
    sq_model_close(m);
    sq_exec_free(ex);
}

int main(void) {
    for (size_t i = 0; i < sizeof FIXTURES / sizeof *FIXTURES; i++) {
        run_fixture(FIXTURES[i], "cpu", 2);
        run_fixture(FIXTURES[i], "cpu", 1);
        run_fixture(FIXTURES[i], "cpu-ref", 1);
    }
    return check_report("test_runtime_hf");
}
