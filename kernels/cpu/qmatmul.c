/* qmatmul.c: y = x . W^T for quantised weights (INT4/INT8 codes, per-group scales and zeros).
 * A few rows of x: a threaded GEMV that unpacks codes in registers and applies each group's scale
 * and zero once per group: sum_j s (q_j - z) x_j = s (sum_j q_j x_j - z sum_j x_j).
 * More rows: tiles of rows dequantised into scratch for sgemm (sq_cpu_tiled_gemm).
 * x is first gathered into packed column order when the weight has an act-order permutation. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

#define GEMV_MAX_N 8
#define ROW_ALIGN 16

static inline uint32_t code_at(const sq_qweight *q, const uint32_t *row, int64_t j) {
    int per = 32 / q->bits;
    return (row[j / per] >> (q->bits * (int)(j % per))) & ((1u << q->bits) - 1);
}

static int64_t words_per_row(const sq_wmat *w) { return w->cols * w->q->bits / 32; }

void sq_cpu_qrow_to_f32(const sq_wmat *w, int64_t r, float *dst) {
    const sq_qweight *q = w->q;
    const uint32_t *row = q->codes + r * words_per_row(w);
    for (int64_t g = 0; g < q->n_groups; g++) {
        float s = q->scale[r * q->n_groups + g], z = q->zero[r * q->n_groups + g];
        for (int64_t j = g * q->group_size; j < (g + 1) * q->group_size; j++) dst[j] = s * ((float)code_at(q, row, j) - z);
    }
}

sq_status sq_cpu_qmatmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    (void)c;
    (void)err;
    const sq_qweight *q = w->q;
    int64_t K = w->cols;
    for (int t = 0; t < n; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            const uint32_t *row = q->codes + r * words_per_row(w);
            double s = bias ? bias[r] : 0.0;
            for (int64_t j = 0; j < K; j++) {
                int64_t g = j / q->group_size, col = q->perm ? q->perm[j] : j;
                double wv = (double)q->scale[r * q->n_groups + g] * ((double)code_at(q, row, j) - (double)q->zero[r * q->n_groups + g]);
                s += wv * x[(int64_t)t * K + col];
            }
            y[(int64_t)t * w->rows + r] = (float)s;
        }
    return SQ_OK;
}

/* sum_j code_j * x_j over one group of 4-bit codes (group_size a multiple of 8). */
SQ_AVX2 static float qdot4(const uint32_t *codes, const float *x, int64_t len) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), mask = _mm256_set1_epi32(15);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t w = 0, words = len / 8;
    for (; w + 2 <= words; w += 2) {
        __m256i v0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)codes[w]), shifts), mask);
        __m256i v1 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)codes[w + 1]), shifts), mask);
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v0), _mm256_loadu_ps(x + 8 * w), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v1), _mm256_loadu_ps(x + 8 * w + 8), a1);
    }
    for (; w < words; w++) {
        __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)codes[w]), shifts), mask);
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(x + 8 * w), a0);
    }
    return sq_hsum8(_mm256_add_ps(a0, a1));
}

/* The same for 8-bit codes (group_size a multiple of 8). */
SQ_AVX2 static float qdot8(const uint32_t *codes, const float *x, int64_t len) {
    const uint8_t *b = (const uint8_t *)codes;
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t j = 0; j < len; j += 8) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + j)));
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(x + j), a0);
    }
    return sq_hsum8(a0);
}

typedef struct {
    sq_kctx *c;
    const sq_wmat *w;
    const float *bias, *x;   /* x (n, cols) in packed column order */
    const float *xsum;       /* (n, n_groups) sums of x over each group */
    float *y;
    int n;
} qmm_job;

SQ_AVX2 static void qmm_gemv(void *arg, int ith, int nth) {
    const qmm_job *j = arg;
    const sq_wmat *w = j->w;
    const sq_qweight *q = w->q;
    int64_t lo, hi, K = w->cols, wpr = words_per_row(w), G = q->n_groups, gs = q->group_size, gw = gs * q->bits / 32;
    sq_split(w->rows, ith, nth, ROW_ALIGN, &lo, &hi);
    float (*dot)(const uint32_t *, const float *, int64_t) = q->bits == 4 ? qdot4 : qdot8;
    for (int64_t r = lo; r < hi; r++) {
        const uint32_t *row = q->codes + r * wpr;
        const float *s = q->scale + r * G, *z = q->zero + r * G;
        for (int t = 0; t < j->n; t++) {
            const float *x = j->x + (int64_t)t * K, *xs = j->xsum + (int64_t)t * G;
            float acc = 0;
            for (int64_t g = 0; g < G; g++) acc += s[g] * (dot(row + g * gw, x + g * gs, gs) - z[g] * xs[g]);
            j->y[(int64_t)t * w->rows + r] = acc;
        }
    }
    sq_cpu_add_bias(j->y, j->bias, j->n, j->w->rows, lo, hi);
}

static void qrows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    for (int64_t i = 0; i < m; i++) sq_cpu_qrow_to_f32(w, r0 + i, dst + i * w->cols);
}

sq_status sq_cpu_qmatmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    const sq_qweight *q = w->q;
    if (n <= 0 || w->rows == 0) return SQ_OK;
    if ((q->bits != 4 && q->bits != 8) || q->group_size <= 0 || w->cols % q->group_size)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: %d-bit weights in groups of %d are not supported by the CPU kernels", q->bits,
                       q->group_size);
    /* the SIMD dot products take 8 columns at a time: an 8-bit row of 172 (a per-channel group of a
     * 172-wide matrix) goes through the reference */
    if (!sq_cpu_has_avx2() || q->group_size % 8) return sq_cpu_qmatmul_ref(c, w, bias, x, y, n, err);
    int64_t K = w->cols, G = q->n_groups;
    float *xp = NULL, *xsum = NULL;
    const float *xin = x;
    if (q->perm) { /* gather x into packed column order once for all rows */
        if (!(xp = sq_malloc((size_t)(n * K) * sizeof *xp, err))) return SQ_ERR_NOMEM;
        for (int t = 0; t < n; t++)
            for (int64_t jc = 0; jc < K; jc++) xp[(int64_t)t * K + jc] = x[(int64_t)t * K + q->perm[jc]];
        xin = xp;
    }
    qmm_job j = {c, w, bias, xin, NULL, y, n};
    sq_status s = SQ_OK;
    if (n <= GEMV_MAX_N) {
        if (!(xsum = sq_malloc((size_t)(n * G) * sizeof *xsum, err))) { free(xp); return SQ_ERR_NOMEM; }
        for (int t = 0; t < n; t++)
            for (int64_t g = 0; g < G; g++) {
                float sum = 0;
                for (int64_t i = g * q->group_size; i < (g + 1) * q->group_size; i++) sum += xin[(int64_t)t * K + i];
                xsum[(int64_t)t * G + g] = sum;
            }
        j.xsum = xsum;
        sq_pool_run_work(c->pool, qmm_gemv, &j, (int64_t)n * w->rows * K);
    } else s = sq_cpu_tiled_gemm(c, w, qrows_to_f32, bias, xin, y, n, err);
    free(xp);
    free(xsum);
    return s;
}
