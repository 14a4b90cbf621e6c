/* test_runtime.c: the runtime on the bundled stories260K against tests/golden/stories260K.json (an
 * independent float64 implementation): last-position logits, perplexity under both protocols at two
 * context lengths, a 64-token greedy continuation; and the runtime's own consistency: prefill vs
 * decode vs chunked prefill, fast kernels vs the scalar reference backend, thread counts, rewind,
 * eval against itself, sampling, and bad input. */
#include <cJSON.h>
#include <math.h>
#include <string.h>

#include "../../runtime/runtime.h"
#include "check.h"

#define MODEL "models/stories260K"
#define VOCAB 512

static cJSON *golden;
static int *eval_ids;
static int64_t n_eval_ids;

static int ints(const cJSON *a, int *out, int cap) {
    int n = 0;
    for (const cJSON *x = a ? a->child : NULL; x && n < cap; x = x->next) out[n++] = x->valueint;
    return n;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void load_golden(void) {
    char *text;
    size_t len;
    sq_err err = {0};
    CHECK_OK(sq_read_file("tests/golden/stories260K.json", &text, &len, &err), &err);
    golden = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(golden != NULL, "golden JSON parses");
    const cJSON *ids = cJSON_GetObjectItem(golden, "eval_ids_with_bos");
    n_eval_ids = cJSON_GetArraySize(ids);
    eval_ids = malloc((size_t)n_eval_ids * sizeof *eval_ids);
    ints(ids, eval_ids, (int)n_eval_ids);
}

/* Last-position logits and per-position argmax of the reference prompt. */
static void test_prompt_logits(sq_exec *ex, const char *what) {
    sq_err err = {0};
    sq_model *m;
    sq_state *s;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_state_new(&s, m, 512, 0, &err), &err);
    int ids[16], n = ints(cJSON_GetObjectItem(golden, "prompt_ids"), ids, 16);
    float want[VOCAB], got[5 * VOCAB];
    CHECK(n == 5 && cJSON_GetArraySize(cJSON_GetObjectItem(golden, "last_position_logits")) == VOCAB, "golden prompt");
    int k = 0;
    for (const cJSON *x = cJSON_GetObjectItem(golden, "last_position_logits")->child; x && k < VOCAB; x = x->next) want[k++] = (float)x->valuedouble;
    CHECK_OK(sq_forward(s, ids, n, &err), &err);
    CHECK_OK(sq_logits(s, 0, n, got, &err), &err);
    double d = max_abs_diff(got + (n - 1) * VOCAB, want, VOCAB);
    CHECK(d < 1e-4, "%s: last-position logits differ from the golden by %.3g (max abs)", what, d);
    int am[5];
    ints(cJSON_GetObjectItem(golden, "argmax_per_position"), am, 5);
    for (int i = 0; i < n; i++) CHECK(sq_argmax(got + i * VOCAB, VOCAB) == am[i], "%s: argmax at position %d", what, i);
    sq_state_free(s);
    sq_model_close(m);
}

static void test_ppl(sq_exec *ex) {
    sq_err err = {0};
    sq_model *m;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    const cJSON *ppl = cJSON_GetObjectItem(golden, "perplexity");
    const struct { const char *key; int ctx; sq_ppl_protocol proto; } cases[] = {
        {"protocol_gptq_ctx256", 256, SQ_PPL_GPTQ},
        {"protocol_gptq_ctx128", 128, SQ_PPL_GPTQ},
        {"protocol_llamacpp_ctx256", 256, SQ_PPL_LLAMACPP},
        {"protocol_llamacpp_ctx128", 128, SQ_PPL_LLAMACPP},
    };
    for (int i = 0; i < 4; i++) {
        const cJSON *g = cJSON_GetObjectItem(ppl, cases[i].key);
        sq_eval_opts o = {.ctx = cases[i].ctx, .protocol = cases[i].proto, .bos_id = 1};
        sq_eval_result r;
        CHECK_OK(sq_eval_ppl(m, NULL, eval_ids, n_eval_ids, &o, &r, &err), &err);
        double want = cJSON_GetObjectItem(g, "ppl")->valuedouble;
        CHECK(fabs(r.ppl / want - 1) < 1e-4, "%s: ppl %.8f, golden %.8f", cases[i].key, r.ppl, want);
        CHECK(r.windows == cJSON_GetObjectItem(g, "windows")->valueint, "%s: %lld windows", cases[i].key, (long long)r.windows);
        CHECK(r.scored == cJSON_GetObjectItem(g, "tokens_scored")->valueint, "%s: %lld scored", cases[i].key, (long long)r.scored);
        CHECK(fabs(r.mean_nll - cJSON_GetObjectItem(g, "mean_nll")->valuedouble) < 1e-5, "%s: mean NLL %.8f", cases[i].key, r.mean_nll);
    }
    sq_model_close(m);
}

/* The reference does not stop at EOS: 64 new tokens, argmax each step. */
static void test_greedy(sq_exec *ex) {
    sq_err err = {0};
    sq_model *m;
    sq_state *s;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_state_new(&s, m, 512, 0, &err), &err);
    const cJSON *g = cJSON_GetObjectItem(golden, "greedy");
    int prompt[16], want[64];
    int np = ints(cJSON_GetObjectItem(g, "prompt_ids"), prompt, 16), nw = ints(cJSON_GetObjectItem(g, "new_ids"), want, 64);
    CHECK(nw == 64, "golden has 64 new ids");
    float lg[VOCAB];
    CHECK_OK(sq_forward(s, prompt, np, &err), &err);
    CHECK_OK(sq_logits(s, np - 1, 1, lg, &err), &err);
    int same = 0;
    for (int i = 0; i < nw; i++) {
        int t = sq_argmax(lg, VOCAB);
        if (t != want[i]) break;
        same++;
        if (i + 1 < nw && (sq_forward(s, &t, 1, &err) || sq_logits(s, 0, 1, lg, &err))) break;
    }
    CHECK(same == nw, "greedy continuation agrees for %d of %d tokens", same, nw);
    sq_state_free(s);
    sq_model_close(m);
}

/* Prefill, chunked prefill, token-by-token decode, and rewind all give the same logits. */
static void test_consistency(sq_exec *ex) {
    sq_err err = {0};
    sq_model *m;
    sq_state *a, *b;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_state_new(&a, m, 64, 0, &err), &err);
    CHECK_OK(sq_state_new(&b, m, 64, 7, &err), &err);
    enum { N = 40 };
    static float la[N * VOCAB], lb[N * VOCAB], lc[VOCAB];
    CHECK_OK(sq_forward(a, eval_ids, N, &err), &err);
    CHECK_OK(sq_logits(a, 0, N, la, &err), &err);
    CHECK_OK(sq_forward(b, eval_ids, N, &err), &err);
    CHECK_OK(sq_logits(b, 0, N, lb, &err), &err);
    CHECK(max_abs_diff(la, lb, (int64_t)N * VOCAB) < 1e-4, "chunked prefill (7 at a time) vs one prefill: %.3g",
          max_abs_diff(la, lb, (int64_t)N * VOCAB));
    CHECK_OK(sq_state_rewind(b, 0, &err), &err);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        CHECK_OK(sq_forward(b, eval_ids + i, 1, &err), &err);
        CHECK_OK(sq_logits(b, 0, 1, lc, &err), &err);
        worst = fmax(worst, max_abs_diff(lc, la + i * VOCAB, VOCAB));
    }
    CHECK(worst < 1e-4, "token-by-token decode vs prefill: %.3g", worst);
    /* a verify-style step: rewind to 30, run 3 tokens at once, same logits as the prefill */
    CHECK_OK(sq_state_rewind(b, 30, &err), &err);
    CHECK(sq_state_pos(b) == 30, "rewound to 30");
    CHECK_OK(sq_forward(b, eval_ids + 30, 3, &err), &err);
    CHECK_OK(sq_logits(b, 0, 3, lb, &err), &err);
    CHECK(max_abs_diff(lb, la + 30 * VOCAB, 3 * VOCAB) < 1e-4, "rewind + 3-token step vs prefill");
    sq_state_free(a);
    sq_state_free(b);
    sq_model_close(m);
}

/* The fast kernels (at 1, 2 and 3 threads) against the scalar reference backend, whole model. */
static void test_backends(void) {
    sq_err err = {0};
    enum { N = 24 };
    static float ref[N * VOCAB], got[N * VOCAB];
    const char *be[] = {"cpu-ref", "cpu", "cpu", "cpu"};
    int threads[] = {1, 1, 2, 3};
    for (int i = 0; i < 4; i++) {
        sq_exec *ex;
        sq_model *m;
        sq_state *s;
        CHECK_OK(sq_exec_new(&ex, be[i], threads[i], &err), &err);
        CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
        CHECK_OK(sq_state_new(&s, m, N, 0, &err), &err);
        CHECK_OK(sq_forward(s, eval_ids + 100, N, &err), &err);
        CHECK_OK(sq_logits(s, 0, N, i ? got : ref, &err), &err);
        if (i) {
            double d = max_abs_diff(got, ref, (int64_t)N * VOCAB);
            CHECK(d < 1e-4, "cpu with %d threads vs cpu-ref: %.3g", threads[i], d);
        }
        sq_state_free(s);
        sq_model_close(m);
        sq_exec_free(ex);
    }
}

static void test_eval_self_ref(sq_exec *ex) {
    sq_err err = {0};
    sq_model *m, *r;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_model_open(&r, MODEL, ex, &err), &err);
    sq_eval_opts o = {.ctx = 128, .protocol = SQ_PPL_GPTQ, .bos_id = 1};
    sq_eval_result res;
    CHECK_OK(sq_eval_ppl(m, r, eval_ids, 1024, &o, &res, &err), &err);
    CHECK(res.has_ref && res.ppl_ratio == 1.0 && res.kld_max == 0.0 && res.top1 == 1.0, "a model against itself: ratio %g kld %g top1 %g",
          res.ppl_ratio, res.kld_max, res.top1);
    CHECK(res.windows == 8 && res.scored == 8 * 127, "8 windows of 128");
    sq_model_close(r);
    sq_model_close(m);
}

static void test_sampling(void) {
    sq_err err = {0};
    float z[8] = {0.1f, 2.0f, 0.5f, -1.0f, 1.9f, 0.0f, -3.0f, 0.2f}, w[8];
    sq_sampler *g, *a, *b, *p;
    CHECK_OK(sq_sampler_new(&g, 8, 0, 1, 1, &err), &err);
    CHECK(sq_sample(g, z) == 1, "greedy picks the argmax");
    CHECK_OK(sq_sampler_new(&a, 8, 1.0f, 1, 42, &err), &err);
    CHECK_OK(sq_sampler_new(&b, 8, 1.0f, 1, 42, &err), &err);
    int same = 1, hist[8] = {0};
    for (int i = 0; i < 4000; i++) {
        memcpy(w, z, sizeof w);
        int x = sq_sample(a, w);
        memcpy(w, z, sizeof w);
        same &= x == sq_sample(b, w);
        hist[x]++;
    }
    CHECK(same, "same seed, same samples");
    /* p(1) = e^2 / sum e^z ~ 0.38: the frequency is within a few standard deviations */
    double sum = 0;
    for (int i = 0; i < 8; i++) sum += exp(z[i]);
    double p1 = exp(2.0) / sum, f1 = hist[1] / 4000.0;
    CHECK(fabs(f1 - p1) < 0.04, "sampled frequency %.3f vs probability %.3f", f1, p1);
    CHECK_OK(sq_sampler_new(&p, 8, 1.0f, 0.3f, 7, &err), &err);
    int only = 1;
    for (int i = 0; i < 200; i++) {
        memcpy(w, z, sizeof w);
        only &= sq_sample(p, w) == 1;
    }
    CHECK(only, "top-p 0.3 keeps only the most likely token here");
    sq_sampler *bad;
    CHECK(sq_sampler_new(&bad, 8, 1.0f, 0.0f, 1, &err) == SQ_ERR_ARG && bad == NULL, "top-p 0 refused");
    sq_sampler_free(g);
    sq_sampler_free(a);
    sq_sampler_free(b);
    sq_sampler_free(p);
}

static void test_bad_input(sq_exec *ex) {
    sq_err err = {0};
    sq_model *m;
    sq_state *s;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_state_new(&s, m, 8, 0, &err), &err);
    int bad[2] = {1, VOCAB};
    CHECK(sq_forward(s, bad, 2, &err) == SQ_ERR_FORMAT && strstr(err.msg, "vocabulary"), "id out of range: %s", err.msg);
    CHECK(sq_state_pos(s) == 0, "a refused forward leaves the state alone");
    int ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK(sq_forward(s, ids, 9, &err) == SQ_ERR_ARG && strstr(err.msg, "context"), "context full: %s", err.msg);
    CHECK(sq_state_rewind(s, 3, &err) == SQ_ERR_ARG, "rewind past the end");
    float lg[VOCAB];
    CHECK(sq_logits(s, 0, 1, lg, &err) == SQ_ERR_ARG, "logits before any forward");
    sq_eval_opts o = {.ctx = 256, .protocol = SQ_PPL_GPTQ, .bos_id = 1};
    sq_eval_result r;
    CHECK(sq_eval_ppl(m, NULL, eval_ids, 200, &o, &r, &err) == SQ_ERR_FORMAT && strstr(err.msg, "too few"), "data too short: %s", err.msg);
    int oob[300];
    for (int i = 0; i < 300; i++) oob[i] = i == 77 ? -5 : 1;
    CHECK(sq_eval_ppl(m, NULL, oob, 300, &o, &r, &err) == SQ_ERR_FORMAT && strstr(err.msg, "-5"), "eval: id out of range: %s", err.msg);
    sq_model *none;
    CHECK(sq_model_open(&none, "models/nonexistent", ex, &err) != SQ_OK && strstr(err.msg, "nonexistent"), "missing model: %s", err.msg);
    sq_state_free(s);
    sq_model_close(m);
}

int main(void) {
    sq_err err = {0};
    sq_exec *ex;
    load_golden();
    CHECK_OK(sq_exec_new(&ex, "cpu", 2, &err), &err);
    test_prompt_logits(ex, "cpu");
    test_ppl(ex);
    test_greedy(ex);
    test_consistency(ex);
    test_backends();
    test_eval_self_ref(ex);
    test_sampling();
    test_bad_input(ex);
    sq_exec_free(ex);
    sq_exec *rx;
    CHECK_OK(sq_exec_new(&rx, "cpu-ref", 1, &err), &err);
    test_prompt_logits(rx, "cpu-ref");
    sq_exec_free(rx);
    cJSON_Delete(golden);
    free(eval_ids);
    return check_report("test_runtime");
}
