/* fp8.c: FP8 E4M3 weight quantisation, per tensor or per output channel (see fp8.h). */
#include "fp8.h"

#include <float.h>
#include <math.h>

#include "../formats/dtype.h"
#include "quant_internal.h"

float sq_fp8_scale(float absmax) {
    float s = absmax / SQ_FP8_MAX;
    return s > 0 ? s : FLT_EPSILON;
}

float sq_fp8_absmax(const float *w, int64_t n, int64_t *bad) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(w[i])) {
            *bad = i;
            return -1;
        }
        m = fmaxf(m, fabsf(w[i]));
    }
    *bad = -1;
    return m;
}

/* code = e4m3(clamp(w / s)); the clamp only matters for the last ulp of the division (and for a shared
 * scale it never does, before GPTQ's updates), but it is what the peers do. */
static inline uint8_t code_of(float w, float s) { return sq_f32_to_e4m3(fmaxf(-SQ_FP8_MAX, fminf(w / s, SQ_FP8_MAX))); }

static void quant_row(const float *w, int64_t k, float s, uint8_t *codes) {
    for (int64_t j = 0; j < k; j++) codes[j] = code_of(w[j], s);
}

sq_status sq_fp8_quantize(const float *w, int64_t n, int64_t k, bool per_channel, float tensor_absmax, uint8_t *codes, float *scales,
                          const char *what, sq_err *err) {
    int64_t bad, total;
    if (n < 0 || k < 0 || !sq_mul_i64(n, k, &total)) return sq_fail(err, SQ_ERR_ARG, "%s: bad shape [%lld, %lld]", what, (long long)n, (long long)k);
    float m = sq_fp8_absmax(w, total, &bad);
    if (m < 0)
        return sq_fail(err, SQ_ERR_NUMERIC, "%s has a NaN or Inf at element %lld (row %lld, column %lld)", what, (long long)bad,
                       (long long)(bad / k), (long long)(bad % k));
    if (!per_channel) {
        scales[0] = sq_fp8_scale(tensor_absmax > 0 ? tensor_absmax : m);
        for (int64_t r = 0; r < n; r++) quant_row(w + r * k, k, scales[0], codes + r * k);
        return SQ_OK;
    }
    for (int64_t r = 0; r < n; r++) {
        scales[r] = sq_fp8_scale(sq_fp8_absmax(w + r * k, k, &bad));
        quant_row(w + r * k, k, scales[r], codes + r * k);
    }
    return SQ_OK;
}

void sq_fp8_dequant(const uint8_t *codes, const float *scales, int64_t n, int64_t k, bool per_channel, float *out) {
    for (int64_t r = 0; r < n; r++) {
        float s = scales[per_channel ? r : 0];
        for (int64_t j = 0; j < k; j++) out[r * k + j] = sq_e4m3_to_f32(codes[r * k + j]) * s;
    }
}

/* E4M3 with fixed scales as GPTQ's sweep rounds onto it. */
typedef struct {
    sq_gptq_grid base;
    const float *scales;
    bool per_channel;
    uint8_t *codes;      /* (N, K) */
    int64_t n, k;
} fp8_grid;

static void fp8_column(sq_gptq_grid *gg, int64_t col, int64_t src, const float *wt, const float *wc, float *dq) {
    (void)col;
    (void)wt;
    fp8_grid *g = (fp8_grid *)gg;
    for (int64_t r = 0; r < g->n; r++) {
        float s = g->scales[g->per_channel ? r : 0];
        uint8_t c = code_of(wc[r], s);
        g->codes[r * g->k + src] = c;
        dq[r] = sq_e4m3_to_f32(c) * s;
    }
}

sq_status sq_fp8_gptq(const float *w, const float *h, int64_t n, int64_t k, bool per_channel, const float *scales, bool act_order,
                      double damp, uint8_t *codes, double *damp_used, sq_err *err) {
    fp8_grid g = {.base = {.column = fp8_column}, .scales = scales, .per_channel = per_channel, .codes = codes, .n = n, .k = k};
    return sq_gptq_sweep(w, h, n, k, act_order, damp, 128, &g.base, damp_used, err);
}
