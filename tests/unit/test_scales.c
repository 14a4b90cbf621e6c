/* test_scales.c: quantised checkpoints whose scales are not F16. llm-compressor stores weight_scale in the
 * model's dtype (BF16 for BF16 models, F32 for F32 ones); the runtime reads F16, BF16 and F32 scales of
 * GPTQ v1, AWQ and compressed-tensors linears at their exact values. Each checkpoint spotq writes (F16
 * scales) is rewritten here with F32 scales (exact, so the logits must be bit-identical) and BF16 scales
 * (rounded: the logits move, by a bounded amount, and must match a copy whose F16 scales were rounded to
 * the same BF16 values first); a scale of another dtype is a one-line error naming the dtypes read. */
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../formats/dtype.h"
#include "../../formats/safetensors.h"
#include "../../quant/pipeline.h"
#include "../../runtime/runtime.h"
#include "check.h"

static char dir[256];

/* Copies src/model.safetensors to dst/ with every scale tensor converted to dt (I32: a bad dtype); with
 * round_bf16, F16 scales stay F16 but carry BF16-rounded values. Copies config.json. */
static void rewrite(const char *src, const char *dst, sq_dtype dt, bool round_bf16) {
    sq_err err = {0};
    char p[600], q[600];
    snprintf(p, sizeof p, "mkdir -p %s && cp %s/config.json %s/", dst, src, dst);
    CHECK(system(p) == 0, "%s", p);
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    snprintf(q, sizeof q, "%s/model.safetensors", dst);
    sq_st *st = NULL;
    sq_stw *w = NULL;
    CHECK_OK(sq_st_open(&st, p, &err), &err);
    CHECK_OK(sq_stw_open(&w, q, &err), &err);
    if (!st || !w) return;
    for (int64_t i = 0; i < sq_st_count(st); i++) {
        const sq_tensor *t = sq_st_get(st, i);
        size_t n = strlen(t->name);
        bool scale = t->dtype == SQ_DT_F16 && ((n > 7 && !strcmp(t->name + n - 7, ".scales")) || (n > 13 && !strcmp(t->name + n - 13, ".weight_scale")));
        if (!scale) {
            CHECK_OK(sq_stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), &err);
            continue;
        }
        const uint16_t *h = t->data;
        void *buf = malloc((size_t)t->numel * 4);
        for (int64_t k = 0; k < t->numel; k++) {
            float f = sq_f16_to_f32(h[k]);
            if (round_bf16) ((uint16_t *)buf)[k] = sq_f32_to_f16(sq_bf16_to_f32(sq_f32_to_bf16(f)));
            else if (dt == SQ_DT_F32) ((float *)buf)[k] = f;
            else if (dt == SQ_DT_BF16) ((uint16_t *)buf)[k] = sq_f32_to_bf16(f);
            else ((int32_t *)buf)[k] = (int32_t)h[k];
        }
        CHECK_OK(sq_stw_add(w, t->name, round_bf16 ? SQ_DT_F16 : dt, t->ndim, t->shape, buf, &err), &err);
        free(buf);
    }
    CHECK_OK(sq_stw_finish(w, &err), &err);
    sq_st_close(st);
}

/* Logits of all positions of a fixed 24-token prompt. */
static float *logits(sq_exec *ex, const char *model, sq_err *err) {
    sq_model *m = NULL;
    sq_state *s = NULL;
    float *out = NULL;
    int ids[24];
    for (int i = 0; i < 24; i++) ids[i] = i ? (i * 37 + 5) % 512 : 1;
    if (sq_model_open(&m, model, ex, err) || sq_state_new(&s, m, 24, 0, err)) goto done;
    out = malloc(24 * 512 * sizeof *out);
    if (sq_forward(s, ids, 24, err) || sq_logits(s, 0, 24, out, err)) {
        free(out);
        out = NULL;
    }
done:
    sq_state_free(s);
    sq_model_close(m);
    return out;
}

static double max_diff(const float *a, const float *b) {
    double d = 0;
    for (int i = 0; i < 24 * 512; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void one_format(sq_exec *ex, sq_format fmt, const char *name) {
    sq_err err = {0};
    char base[300], f32[300], bf16[300], ref[300], bad[300];
    snprintf(base, sizeof base, "%s/%s", dir, name);
    snprintf(f32, sizeof f32, "%s/%s-f32", dir, name);
    snprintf(bf16, sizeof bf16, "%s/%s-bf16", dir, name);
    snprintf(ref, sizeof ref, "%s/%s-bf16ref", dir, name);
    snprintf(bad, sizeof bad, "%s/%s-i32", dir, name);
    sq_quantize_opts o = {.model = "models/stories260K", .out = base, .method = SQ_METHOD_RTN, .format = fmt, .threads = 1,
                          .q = {.bits = 4, .group_size = 32, .sym = false, .damp = 0.01, .block_size = 128}};
    CHECK_OK(sq_quantize_model(&o, &err), &err);
    rewrite(base, f32, SQ_DT_F32, false);
    rewrite(base, bf16, SQ_DT_BF16, false);
    rewrite(base, ref, SQ_DT_F16, true);
    rewrite(base, bad, SQ_DT_I32, false);
    float *a = logits(ex, base, &err), *b = logits(ex, f32, &err), *c = logits(ex, bf16, &err), *d = logits(ex, ref, &err);
    CHECK(a && b && c && d, "%s: a variant did not load: %s", name, err.msg);
    if (a && b && c && d) {
        CHECK(max_diff(a, b) == 0, "%s: F32 scales (exact) change the logits by %.3g", name, max_diff(a, b));
        CHECK(max_diff(c, d) < 1e-5, "%s: BF16 scales read differently from the same values in F16: %.3g", name, max_diff(c, d));
        double moved = max_diff(a, c);
        CHECK(moved > 0 && moved < 0.5, "%s: BF16 rounding of the scales moved the logits by %.3g", name, moved);
        printf("%s: F32 scales: identical logits; BF16 scales: logits moved by %.3g, equal to F16-held BF16 values within %.3g\n", name,
               moved, max_diff(c, d));
    }
    free(a), free(b), free(c), free(d);
    sq_err e2 = {0};
    float *x = logits(ex, bad, &e2);
    CHECK(!x && strstr(e2.msg, "has dtype I32 (expected F16, BF16 or F32)"), "%s: I32 scales: %s", name, e2.msg);
    free(x);
}

int main(void) {
    sq_log_set(NULL, NULL, SQ_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/spotq-test-scales-%d", (int)getpid());
    sq_exec *ex = NULL;
    sq_err err = {0};
    CHECK_OK(sq_exec_new(&ex, "cpu", 1, &err), &err);
    one_format(ex, SQ_FORMAT_GPTQ, "gptq");
    one_format(ex, SQ_FORMAT_CT, "ct");
    one_format(ex, SQ_FORMAT_AWQ, "awq");
    sq_exec_free(ex);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("test_scales");
}
