/* fp8block.c: y = x . W^T for block-wise FP8 weights (E4M3 codes read in place, one scale per
 * block_n x block_k block), computed as vLLM's W8A8BlockFp8LinearOp does (fp8_utils.py @364d0192:
 * per_token_group_quant_fp8, then w8a8_block_fp8_matmul / the CUTLASS block kernel):
 *   - activations quantised per token and group of block_k along K: s = max(max|x_g|, 1e-10) / 448,
 *     q = e4m3(clamp(x / s, +-448)) (the Triton kernel divides; ue8m0 scales are DeepGEMM-on-Blackwell only);
 *   - y[t, r] = sum_b a_s[t, b] * b_s[r / block_n, b] * sum_{c in b} e4m3(q[t, c]) e4m3(w[r, c]).
 * vLLM asserts K % group == 0 (x.shape[-1] % group_size in per_token_group_quant_fp8), so its serving
 * check rejects such a K (formats/serving.c); here the last group is simply short, so such a checkpoint
 * still evaluates. SQ_FP8_ACT_NONE keeps x in float (compressed-tensors' weight-only block form).
 * The reference runs that formula in double; the fast path multiplies the same E4M3 values (x' = q * s,
 * W' = code * b_s, each exact in float up to one rounding) through the tiled sgemm. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define E4M3_MAX 448.0f
#define GROUP_EPS 1e-10f /* vLLM's eps on a group's max */

static inline int64_t kblocks(const sq_fp8weight *f, int64_t K) { return (K + f->block_k - 1) / f->block_k; }
static inline float bscale(const sq_fp8weight *f, int64_t r, int64_t b, int64_t kb) { return f->scale[(r / f->block_n) * kb + b]; }

/* Row t of x (K) quantised per group of g: codes (K) and scales (ceil(K / g)). */
static void quant_token(const float *xt, int64_t K, int g, uint8_t *codes, float *scales) {
    for (int64_t c0 = 0, b = 0; c0 < K; c0 += g, b++) {
        int64_t c1 = c0 + g < K ? c0 + g : K;
        float m = 0;
        for (int64_t c = c0; c < c1; c++) m = fmaxf(m, fabsf(xt[c]));
        float s = fmaxf(m, GROUP_EPS) / E4M3_MAX;
        scales[b] = s;
        for (int64_t c = c0; c < c1; c++) codes[c] = sq_f32_to_e4m3(fmaxf(-E4M3_MAX, fminf(xt[c] / s, E4M3_MAX))); /* NaN -> 448 */
    }
}

void sq_cpu_fp8b_act_ref(const sq_fp8weight *f, const float *x, float *out, int n, int64_t K) {
    if (f->act != SQ_FP8_ACT_DYNAMIC_GROUP) {
        memcpy(out, x, (size_t)((int64_t)n * K) * sizeof *out);
        return;
    }
    int64_t g = f->block_k;
    for (int t = 0; t < n; t++)
        for (int64_t c0 = 0; c0 < K; c0 += g) {
            const float *xg = x + (int64_t)t * K + c0;
            float *og = out + (int64_t)t * K + c0;
            int64_t len = c0 + g < K ? g : K - c0;
            float m = 0;
            for (int64_t c = 0; c < len; c++) m = fmaxf(m, fabsf(xg[c]));
            float sc = fmaxf(m, GROUP_EPS) / E4M3_MAX;
            for (int64_t c = 0; c < len; c++) og[c] = sq_e4m3_to_f32(sq_f32_to_e4m3(fmaxf(-E4M3_MAX, fminf(xg[c] / sc, E4M3_MAX)))) * sc;
        }
}

sq_status sq_cpu_fp8b_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    (void)c;
    const sq_fp8weight *f = w->f8;
    int64_t K = w->cols, kb = kblocks(f, K), g = f->block_k;
    bool quant = f->act == SQ_FP8_ACT_DYNAMIC_GROUP;
    uint8_t *xc = sq_malloc((size_t)K + 1, err);
    float *xs = xc ? sq_malloc((size_t)kb * sizeof *xs, err) : NULL;
    if (!xs) { free(xc); return SQ_ERR_NOMEM; }
    const uint8_t *codes = w->data;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (int64_t)t * K;
        if (quant) quant_token(xt, K, (int)g, xc, xs);
        for (int64_t r = 0; r < w->rows; r++) {
            double acc = 0;
            for (int64_t b = 0; b < kb; b++) {
                double part = 0;
                for (int64_t j = b * g; j < K && j < (b + 1) * g; j++)
                    part += (double)sq_e4m3_to_f32(codes[r * K + j]) * (quant ? (double)sq_e4m3_to_f32(xc[j]) : (double)xt[j]);
                acc += part * (quant ? (double)xs[b] : 1.0) * (double)bscale(f, r, b, kb);
            }
            y[(int64_t)t * w->rows + r] = (float)(acc + (bias ? bias[r] : 0.0));
        }
    }
    free(xc);
    free(xs);
    return SQ_OK;
}

void sq_cpu_fp8b_row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst) {
    const sq_fp8weight *f = w->f8;
    int64_t K = w->cols, kb = kblocks(f, K);
    const uint8_t *row = (const uint8_t *)w->data + r * K;
    for (int64_t j = 0; j < K; j++) dst[j] = sq_e4m3_to_f32(row[j]) * bscale(f, r, j / f->block_k, kb);
}

void sq_cpu_fp8b_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    static float lut[256];
    static int ready; /* every thread writes the same values; after the first call it only reads */
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < 256; i++) lut[i] = sq_e4m3_to_f32((uint8_t)i);
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    const sq_fp8weight *f = w->f8;
    int64_t K = w->cols, kb = kblocks(f, K), g = f->block_k;
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (r0 + i) * K;
        float *d = dst + i * K;
        for (int64_t b = 0; b < kb; b++) {
            float s = bscale(f, r0 + i, b, kb);
            for (int64_t j = b * g; j < K && j < (b + 1) * g; j++) d[j] = lut[row[j]] * s;
        }
    }
}

sq_status sq_cpu_fp8b_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    if (w->dtype != SQ_DT_F8_E4M3 || !w->data || !w->f8 || w->f8->block_n <= 0 || w->f8->block_k <= 0)
        return sq_fail(err, SQ_ERR_INTERNAL, "matmul: a block-wise FP8 weight must hold F8_E4M3 codes and its block shape");
    if (w->rows > 0x7fffffff || w->cols > 0x7fffffff)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: a %lld x %lld matrix is too large for BLAS", (long long)w->rows, (long long)w->cols);
    if (n <= 0 || w->rows == 0) return SQ_OK;
    int64_t K = w->cols;
    const float *xin = x;
    if (w->f8->act == SQ_FP8_ACT_DYNAMIC_GROUP) { /* into the context's shared buffer: no allocation a step */
        float *xq = sq_kctx_shared(c, (size_t)((int64_t)n * K) * sizeof *xq + 1, err);
        if (!xq) return SQ_ERR_NOMEM;
        sq_cpu_fp8b_act_ref(w->f8, x, xq, n, K);
        xin = xq;
    }
    return sq_cpu_tiled_gemm(c, w, sq_cpu_fp8b_rows_to_f32, bias, xin, y, n, err);
}
