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

float sq_fp8_absmax(const float *w, int64_t n, int64_t *bad) { return sq_backend_cpu()->absmax(w, n, bad); }

/* code = e4m3(clamp(w / s)); the clamp only matters for the last ulp of the division (and for a shared
 * scale it never does, before GPTQ's updates), but it is what the peers do. */
static inline uint8_t code_of(float w, float s) { return sq_qm_fp8_code(w, s); }

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

static sq_status gptq(const float *w, const float *h, int64_t n, int64_t k, sq_qgrid_kind kind, const float *scales, bool act_order,
                      double damp, int threads, uint8_t *codes, double *damp_used, bool *factor_kept, sq_err *err) {
    sq_qgrid g = {.kind = kind, .fp8_scale = scales, .threads = threads};
    sq_gptq_args a = {.act_order = act_order, .damp = damp, .block_size = 128};
    sq_qout o = {.codes = codes};
    sq_status s = sq_backend_cpu()->gptq(w, h, NULL, n, k, &g, &a, &o, damp_used, err);
    if (factor_kept) *factor_kept = !s && o.factor_kept;
    if (!s && *damp_used < 0)
        sq_log(SQ_LOG_WARN, "GPTQ: Hessian [%lld x %lld] will not factor even with damping %.3g; using RTN for this matrix",
               (long long)k, (long long)k, damp * 1000);
    return s;
}

sq_status sq_fp8_gptq(const float *w, const float *h, int64_t n, int64_t k, bool per_channel, const float *scales, bool act_order,
                      double damp, int threads, uint8_t *codes, double *damp_used, bool *factor_kept, sq_err *err) {
    return gptq(w, h, n, k, per_channel ? SQ_QGRID_FP8_CHANNEL : SQ_QGRID_FP8_TENSOR, scales, act_order, damp, threads, codes, damp_used,
                factor_kept, err);
}

sq_status sq_fp8_gptq_block(const float *w, const float *h, int64_t n, int64_t k, const float *scales, bool act_order, double damp,
                            int threads, uint8_t *codes, double *damp_used, bool *factor_kept, sq_err *err) {
    return gptq(w, h, n, k, SQ_QGRID_FP8_BLOCK, scales, act_order, damp, threads, codes, damp_used, factor_kept, err);
}

/* ---------------------------------------------------------------- block-wise */

sq_status sq_fp8_quantize_block(const float *w, int64_t n, int64_t k, uint8_t *codes, float *scales, const char *what, sq_err *err) {
    int64_t bad, total;
    if (n < 0 || k < 0 || !sq_mul_i64(n, k, &total)) return sq_fail(err, SQ_ERR_ARG, "%s: bad shape [%lld, %lld]", what, (long long)n, (long long)k);
    if (sq_fp8_absmax(w, total, &bad) < 0)
        return sq_fail(err, SQ_ERR_NUMERIC, "%s has a NaN or Inf at element %lld (row %lld, column %lld)", what, (long long)bad,
                       (long long)(bad / k), (long long)(bad % k));
    const int64_t B = SQ_QM_FP8_BLOCK, nb = (n + B - 1) / B, kb = (k + B - 1) / B;
    for (int64_t i = 0; i < nb; i++)
        for (int64_t j = 0; j < kb; j++) {
            float m = 0;
            for (int64_t r = i * B; r < n && r < (i + 1) * B; r++)
                for (int64_t c = j * B; c < k && c < (j + 1) * B; c++) m = fmaxf(m, fabsf(w[r * k + c]));
            scales[i * kb + j] = sq_fp8_scale(m);
        }
    sq_qgrid g = {.kind = SQ_QGRID_FP8_BLOCK, .fp8_scale = scales};
    sq_qout o = {.codes = codes};
    return sq_backend_cpu()->rtn(w, n, k, &g, &o, err);
}

void sq_fp8_dequant_block(const uint8_t *codes, const float *scales, int64_t n, int64_t k, float *out) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) out[r * k + j] = sq_e4m3_to_f32(codes[r * k + j]) * scales[sq_qm_fp8_scale_idx(false, true, r, j, k)];
}
