/* w8a8matmul.c: y = x . W^T for INT8 W8A8 weights (w->f8 set with dtype I8: signed codes (rows, cols) read
 * in place, one F32 scale per output row), computed as vLLM computes it: each token of x quantised dynamic
 * per token to INT8 (vLLM's dynamic_scaled_int8_quant, csrc/quantization/w8a8/int8/scaled_quant.cu, main
 * 2026: s_x = max|x_t| / 127, codes cvt.rni.sat(x * (127 / max|x_t|)), 0 for an all-zero token), the
 * products summed in int32, and the accumulator scaled as CUTLASS's ScaledEpilogue does
 * (csrc/quantization/w8a8/cutlass/c3x/scaled_mm_epilogues_c3x.hpp: D = a_scale * (b_scale * float(acc)),
 * then + bias). The integer sums are exact, so the threaded AVX2 path equals the scalar reference bit for bit. */
#include <stdlib.h>
#include <string.h>

#include "../qmath.h"
#include "vec.h"

#define ROW_ALIGN 16

/* Token xt (k) as INT8 codes q (k); returns s_x. */
static float quant_token(const float *xt, int64_t k, int8_t *q) {
    float m = 0;
    for (int64_t c = 0; c < k; c++) m = fmaxf(m, fabsf(xt[c]));
    float inv = m == 0.0f ? 0.0f : 127.0f / m;
    for (int64_t c = 0; c < k; c++) q[c] = sq_qm_i8_rn(xt[c] * inv);
    return m / 127.0f;
}

void sq_cpu_w8a8_act_ref(const sq_wmat *w, const float *x, float *out, int n) {
    int64_t k = w->cols;
    int8_t *q = malloc((size_t)(k > 0 ? k : 1));
    if (!q) return; /* the reference's scratch: a test's sizes */
    for (int t = 0; t < n; t++) {
        float s = quant_token(x + (int64_t)t * k, k, q);
        for (int64_t c = 0; c < k; c++) out[(int64_t)t * k + c] = (float)q[c] * s;
    }
    free(q);
}

void sq_cpu_w8a8_row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst) {
    const int8_t *row = (const int8_t *)w->data + r * w->cols;
    for (int64_t j = 0; j < w->cols; j++) dst[j] = (float)row[j] * w->f8->scale[r];
}

void sq_cpu_w8a8_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    for (int64_t i = 0; i < m; i++) sq_cpu_w8a8_row_to_f32_ref(w, r0 + i, dst + i * w->cols);
}

static sq_status check(const sq_wmat *w, sq_err *err) {
    if (w->dtype != SQ_DT_I8 || !w->data || !w->f8)
        return sq_fail(err, SQ_ERR_INTERNAL, "matmul: a W8A8 weight must hold I8 codes (has %s)", sq_dtype_name(w->dtype));
    return SQ_OK;
}

sq_status sq_cpu_w8a8_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    (void)c;
    sq_status s = check(w, err);
    if (s || n <= 0) return s;
    int64_t K = w->cols, N = w->rows;
    int8_t *q = sq_malloc((size_t)(K > 0 ? K : 1), err);
    if (!q) return SQ_ERR_NOMEM;
    const int8_t *codes = w->data;
    for (int t = 0; t < n; t++) {
        float sx = quant_token(x + (int64_t)t * K, K, q);
        for (int64_t r = 0; r < N; r++) {
            int32_t acc = 0;
            for (int64_t j = 0; j < K; j++) acc += (int32_t)q[j] * (int32_t)codes[r * K + j];
            float v = sx * (w->f8->scale[r] * (float)acc);
            y[(int64_t)t * N + r] = bias ? v + bias[r] : v;
        }
    }
    free(q);
    return SQ_OK;
}

typedef struct {
    const sq_wmat *w;
    const float *bias;
    const int8_t *xq;        /* (n, cols) */
    const float *sx;         /* (n) */
    float *y;
    int n;
} w8_job;

SQ_AVX2 static int32_t dot_i8(const int8_t *a, const int8_t *b, int64_t k) {
    __m256i acc = _mm256_setzero_si256();
    int64_t c = 0;
    for (; c + 16 <= k; c += 16) {
        __m256i va = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + c)));
        __m256i vb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + c)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    int32_t r = _mm_cvtsi128_si32(s);
    for (; c < k; c++) r += (int32_t)a[c] * (int32_t)b[c];
    return r;
}

SQ_AVX2 static void w8_rows(void *arg, int ith, int nth) {
    const w8_job *j = arg;
    const sq_wmat *w = j->w;
    int64_t lo, hi, K = w->cols, N = w->rows;
    sq_split(N, ith, nth, ROW_ALIGN, &lo, &hi);
    const int8_t *codes = w->data;
    for (int64_t r = lo; r < hi; r++) {
        float sw = w->f8->scale[r];
        for (int t = 0; t < j->n; t++) {
            int32_t acc = dot_i8(j->xq + (int64_t)t * K, codes + r * K, K);
            float v = j->sx[t] * (sw * (float)acc);
            j->y[(int64_t)t * N + r] = j->bias ? v + j->bias[r] : v;
        }
    }
}

sq_status sq_cpu_w8a8_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    sq_status s = check(w, err);
    if (s || n <= 0 || w->rows == 0) return s;
    if (!sq_cpu_has_avx2()) return sq_cpu_w8a8_matmul_ref(c, w, bias, x, y, n, err);
    int64_t K = w->cols;
    size_t xbytes = (size_t)((int64_t)n * K), off = (xbytes + 63) / 64 * 64;
    char *buf = sq_kctx_shared(c, off + (size_t)n * sizeof(float), err); /* no allocation a step */
    if (!buf) return SQ_ERR_NOMEM;
    int8_t *xq = (int8_t *)buf;
    float *sx = (float *)(buf + off);
    for (int t = 0; t < n; t++) sx[t] = quant_token(x + (int64_t)t * K, K, xq + (int64_t)t * K);
    w8_job j = {w, bias, xq, sx, y, n};
    sq_pool_run_work(c->pool, w8_rows, &j, (int64_t)n * w->rows * K);
    return SQ_OK;
}
