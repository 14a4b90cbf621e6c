/* matmul.c: y = x . W^T for weights in F32, F16 or BF16, straight from the mmap.
 * A few rows of x (decode, a speculative verify step): a threaded AVX2 GEMV that streams each weight
 * row once. More rows (prefill): OpenBLAS sgemm on each thread's slice of W; F16/BF16 slices are
 * converted one tile of rows at a time into the thread's scratch, never the whole matrix. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

/* Up to this many rows of x, the GEMV path: it reads W once for all of them. */
#define GEMV_MAX_N 4
/* Rows of W per thread slice boundary (keeps slices cache-line aligned in y). */
#define ROW_ALIGN 16
/* A converted tile holds about this many floats (rows * cols), at least TILE_MIN_ROWS rows. */
#define TILE_FLOATS (1 << 18)
#define TILE_MIN_ROWS 16

SQ_AVX2 static float dot_f32(const float *w, const float *x, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = sq_hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < k; i++) s += w[i] * x[i];
    return s;
}

SQ_AVX2 static float dot_f16(const uint16_t *w, const float *x, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(sq_load_f16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(sq_load_f16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(sq_load_f16(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(sq_load_f16(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(sq_load_f16(w + i), _mm256_loadu_ps(x + i), a0);
    float s = sq_hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < k; i++) s += sq_f16_to_f32(w[i]) * x[i];
    return s;
}

SQ_AVX2 static float dot_bf16(const uint16_t *w, const float *x, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(sq_load_bf16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(sq_load_bf16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(sq_load_bf16(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(sq_load_bf16(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(sq_load_bf16(w + i), _mm256_loadu_ps(x + i), a0);
    float s = sq_hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < k; i++) s += sq_bf16_to_f32(w[i]) * x[i];
    return s;
}

SQ_AVX2 float sq_cpu_dot_row(const sq_wmat *w, int64_t r, const float *x) {
    int64_t k = w->cols;
    switch (w->dtype) {
    case SQ_DT_F32: return dot_f32((const float *)w->data + r * k, x, k);
    case SQ_DT_F16: return dot_f16((const uint16_t *)w->data + r * k, x, k);
    case SQ_DT_BF16: return dot_bf16((const uint16_t *)w->data + r * k, x, k);
    default: return NAN;
    }
}

/* Rows r0 .. r0+m-1 of w as floats into dst (m, cols). */
SQ_AVX2 static void rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    int64_t n = m * w->cols, i = 0;
    if (w->dtype == SQ_DT_F32) {
        memcpy(dst, (const float *)w->data + r0 * w->cols, (size_t)n * sizeof *dst);
        return;
    }
    const uint16_t *s = (const uint16_t *)w->data + r0 * w->cols;
    if (w->dtype == SQ_DT_F16) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, sq_load_f16(s + i));
        for (; i < n; i++) dst[i] = sq_f16_to_f32(s[i]);
    } else {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, sq_load_bf16(s + i));
        for (; i < n; i++) dst[i] = sq_bf16_to_f32(s[i]);
    }
}

typedef struct {
    sq_kctx *c;
    const sq_wmat *w;
    const float *bias, *x;
    float *y;
    int n;
    int64_t tile_rows;
} mm_job;

static void add_bias(const mm_job *j, int64_t lo, int64_t hi) {
    if (!j->bias) return;
    for (int t = 0; t < j->n; t++) {
        float *y = j->y + (int64_t)t * j->w->rows;
        for (int64_t r = lo; r < hi; r++) y[r] += j->bias[r];
    }
}

static void mm_gemv(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const sq_wmat *w = j->w;
    int64_t lo, hi;
    sq_split(w->rows, ith, nth, ROW_ALIGN, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        for (int t = 0; t < j->n; t++) j->y[(int64_t)t * w->rows + r] = sq_cpu_dot_row(w, r, j->x + (int64_t)t * w->cols);
    add_bias(j, lo, hi);
}

static void mm_gemm(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const sq_wmat *w = j->w;
    int64_t lo, hi, k = w->cols;
    sq_split(w->rows, ith, nth, ROW_ALIGN, &lo, &hi);
    if (lo < hi && w->dtype == SQ_DT_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)(hi - lo), (int)k, 1.0f, j->x, (int)k,
                    (const float *)w->data + lo * k, (int)k, 0.0f, j->y + lo, (int)w->rows);
    } else {
        float *tile = j->c->scratch[ith];
        for (int64_t r = lo; r < hi; r += j->tile_rows) {
            int64_t m = hi - r < j->tile_rows ? hi - r : j->tile_rows;
            rows_to_f32(w, r, m, tile);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)m, (int)k, 1.0f, j->x, (int)k, tile, (int)k, 0.0f,
                        j->y + r, (int)w->rows);
        }
    }
    add_bias(j, lo, hi);
}

sq_status sq_cpu_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    if (w->dtype != SQ_DT_F32 && w->dtype != SQ_DT_F16 && w->dtype != SQ_DT_BF16)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: weight dtype %s is not supported by the CPU kernels", sq_dtype_name(w->dtype));
    if (w->rows > 0x7fffffff || w->cols > 0x7fffffff)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: a %lld x %lld matrix is too large for BLAS", (long long)w->rows, (long long)w->cols);
    if (n <= 0 || w->rows == 0) return SQ_OK;
    mm_job j = {c, w, bias, x, y, n, 0};
    if (n <= GEMV_MAX_N) {
        sq_pool_run(c->pool, mm_gemv, &j);
        return SQ_OK;
    }
    if (w->dtype != SQ_DT_F32) {
        int64_t tr = TILE_FLOATS / (w->cols > 0 ? w->cols : 1);
        tr = tr < TILE_MIN_ROWS ? TILE_MIN_ROWS : tr / TILE_MIN_ROWS * TILE_MIN_ROWS;
        j.tile_rows = tr;
        sq_status s = sq_kctx_reserve(c, (size_t)(tr * w->cols), err);
        if (s) return s;
    }
    sq_pool_run(c->pool, mm_gemm, &j);
    return SQ_OK;
}

typedef struct {
    const sq_wmat *w;
    const int *ids;
    int n;
    float *out;
} embed_job;

static void embed_rows(void *arg, int ith, int nth) {
    const embed_job *j = arg;
    int64_t lo, hi;
    sq_split(j->n, ith, nth, 1, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) rows_to_f32(j->w, j->ids[t], 1, j->out + t * j->w->cols);
}

void sq_cpu_embed(sq_kctx *c, const sq_wmat *w, const int *ids, int n, float *out) {
    embed_job j = {w, ids, n, out};
    if (n < 64) embed_rows(&j, 0, 1);
    else sq_pool_run(c->pool, embed_rows, &j);
}
