/* fp4matmul.c: y = x . W^T for FP4 weights (NVFP4, MXFP4: kernels/backend.h's sq_fp4weight), the packed
 * E2M1 codes read in place, W[r, c] = e2m1(code) * scale[r, c / group]. With act_fp4 (NVFP4 W4A4) the
 * activations first go through FP4 as vLLM's scaled_fp4_quant computes them (the reference in
 * vllm tests/kernels/quantization/nvfp4_utils.py / nvfp4_emulation_utils.py::ref_nvfp4_quant): per
 * group of 16 along K, s = e4m3(clamp(gs_in * (max|x_g| * (1/6)), +-448)), x_q = e2m1(clamp(x * (1 / (s *
 * (1/gs_in))), +-6)); the GEMM then multiplies e2m1(x_q) * s and e2m1(w) * s_w, times alpha = 1 / (gs_in * gs_w),
 * which is x' = e2m1(x_q) * s / gs_in against the dequantised W. The reference runs the dot products in
 * double; the fast path puts the same values through the tiled sgemm. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../qmath.h"
#include "cpu.h"

#define NVFP4_ACT_GROUP 16

static inline float recip(float x) { return x == 0.0f ? 0.0f : 1.0f / x; } /* vLLM's get_reciprocal */

void sq_cpu_fp4_act_ref(const sq_fp4weight *f, const float *x, float *out, int n, int64_t K) {
    if (!f->act_fp4) {
        memcpy(out, x, (size_t)((int64_t)n * K) * sizeof *out);
        return;
    }
    float gs = f->input_global_scale;
    for (int t = 0; t < n; t++)
        for (int64_t c0 = 0; c0 < K; c0 += NVFP4_ACT_GROUP) {
            const float *xg = x + (int64_t)t * K + c0;
            float *og = out + (int64_t)t * K + c0;
            int64_t len = c0 + NVFP4_ACT_GROUP < K ? NVFP4_ACT_GROUP : K - c0;
            float m = 0;
            for (int64_t c = 0; c < len; c++) m = fmaxf(m, fabsf(xg[c]));
            float s = sq_qm_e4m3_decode(sq_qm_e4m3_encode(fmaxf(-448.0f, fminf(gs * (m * recip(6.0f)), 448.0f))));
            float os = recip(s * recip(gs)), back = s / gs;
            for (int64_t c = 0; c < len; c++) og[c] = sq_qm_e2m1_decode(sq_qm_e2m1_encode(fmaxf(-6.0f, fminf(xg[c] * os, 6.0f)))) * back;
        }
}

static inline uint8_t code_at(const uint8_t *row, int64_t j) { return (uint8_t)((row[j >> 1] >> ((j & 1) * 4)) & 0xF); }

void sq_cpu_fp4_row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst) {
    const sq_fp4weight *f = w->f4;
    int64_t K = w->cols, ng = K / f->group;
    const uint8_t *row = (const uint8_t *)w->data + r * (K / 2);
    for (int64_t j = 0; j < K; j++) dst[j] = sq_qm_e2m1_decode(code_at(row, j)) * f->scale[r * ng + j / f->group];
}

void sq_cpu_fp4_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    static const float lut[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    const sq_fp4weight *f = w->f4;
    int64_t K = w->cols, ng = K / f->group, g = f->group;
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (r0 + i) * (K / 2);
        const float *sc = f->scale + (r0 + i) * ng;
        float *d = dst + i * K;
        for (int64_t b = 0; b < ng; b++) {
            float s = sc[b];
            for (int64_t j = b * g; j < (b + 1) * g; j += 2) {
                uint8_t byte = row[j >> 1];
                d[j] = lut[byte & 0xF] * s;
                d[j + 1] = lut[byte >> 4] * s;
            }
        }
    }
}

static sq_status check(const sq_wmat *w, sq_err *err) {
    const sq_fp4weight *f = w->f4;
    if (!w->data || !f || f->group <= 0 || f->group % 2 || w->cols % f->group || (f->act_fp4 && !(f->input_global_scale > 0)))
        return sq_fail(err, SQ_ERR_INTERNAL, "matmul: an FP4 weight must hold packed E2M1 codes, a group dividing its columns and, for W4A4, an input global scale");
    if (w->rows > 0x7fffffff || w->cols > 0x7fffffff)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: a %lld x %lld matrix is too large for BLAS", (long long)w->rows, (long long)w->cols);
    return SQ_OK;
}

sq_status sq_cpu_fp4_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    (void)c;
    sq_status s = check(w, err);
    if (s) return s;
    int64_t K = w->cols;
    float *xq = sq_malloc((size_t)K * sizeof *xq + 1, err), *wr = xq ? sq_malloc((size_t)K * sizeof *wr + 1, err) : NULL;
    if (!wr) { free(xq); return SQ_ERR_NOMEM; }
    for (int t = 0; t < n; t++) {
        sq_cpu_fp4_act_ref(w->f4, x + (int64_t)t * K, xq, 1, K);
        for (int64_t r = 0; r < w->rows; r++) {
            sq_cpu_fp4_row_to_f32_ref(w, r, wr);
            double acc = 0;
            for (int64_t j = 0; j < K; j++) acc += (double)wr[j] * (double)xq[j];
            y[(int64_t)t * w->rows + r] = (float)(acc + (bias ? bias[r] : 0.0));
        }
    }
    free(xq);
    free(wr);
    return SQ_OK;
}

sq_status sq_cpu_fp4_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    sq_status s = check(w, err);
    if (s) return s;
    if (n <= 0 || w->rows == 0) return SQ_OK;
    int64_t K = w->cols;
    const float *xin = x;
    if (w->f4->act_fp4) { /* into the context's shared buffer: no allocation a step */
        float *xq = sq_kctx_shared(c, (size_t)((int64_t)n * K) * sizeof *xq + 1, err);
        if (!xq) return SQ_ERR_NOMEM;
        sq_cpu_fp4_act_ref(w->f4, x, xq, n, K);
        xin = xq;
    }
    return sq_cpu_tiled_gemm(c, w, sq_cpu_fp4_rows_to_f32, bias, xin, y, n, err);
}
