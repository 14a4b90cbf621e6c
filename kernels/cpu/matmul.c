/* matmul.c: the dense weight kinds' kernels: y = x . W^T for weights in F32, F16 or BF16, straight from
 * the mmap. A few rows of x (decode, a speculative verify step): a threaded AVX2 GEMV that streams each
 * weight row once. More rows (prefill): OpenBLAS sgemm on chunks of W's rows (gemm.c's
 * sq_cpu_tiled_gemm, which the quantised and FP8 kinds share); F16/BF16 chunks are converted one tile at
 * a time into the thread's scratch, never the whole matrix. Threads take chunks as they come free.
 * sq_cpu_matmul dispatches on the weight kind through traits.c's table. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

/* Up to this many rows of x, the GEMV path: it reads W once for all of them. */
#define GEMV_MAX_N 8
/* Rows of W per chunk of the GEMV's work. Multiples of 16 keep chunks cache-line aligned in y. */
#define GEMV_CHUNK 64

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

/* One row of W against NT tokens (NT a constant after inlining): each 32 columns of the row converted
 * once and multiplied into every token's four accumulators, which take the very operations of
 * dot_f32 / dot_f16 / dot_bf16 in the same order (4 accumulators over 32-column steps, one over the
 * 8-column steps left, the same horizontal sum, the scalar tail), so out[t] equals sq_cpu_dot_row of
 * token t bit for bit: a verify step gives the decode step's numbers while reading the row once.
 * The AVX-512 variant is the same code on the 32 vector registers of AVX512VL (up to 6 tokens a
 * pass; AVX2's 16 take 3). */
/* Software prefetch this many bytes ahead in the row (each 64-byte line once): the 2-core EPYC's
 * F32 decode step of the 135M shape's linears went 10.1-12.1 -> 10.0 ms, a 5-token verify step
 * 14.2-16.3 -> 11.2-11.9 ms (bench/kernels). */
#define DOTN_PF 4096
#define DOTN_BODY(T, LOAD, SCALAR)                                                                      \
    __m256 a[6][4];                                                                                     \
    UNROLL6 for (int t = 0; t < NT; t++) a[t][0] = a[t][1] = a[t][2] = a[t][3] = _mm256_setzero_ps();   \
    int64_t i = 0;                                                                                      \
    for (; i + 32 <= k; i += 32) {                                                                      \
        _mm_prefetch((const char *)(p + i) + DOTN_PF, _MM_HINT_T0);                                     \
        if (sizeof(T) == 4) _mm_prefetch((const char *)(p + i) + 64 + DOTN_PF, _MM_HINT_T0);            \
        __m256 w0 = LOAD(p + i), w1 = LOAD(p + i + 8), w2 = LOAD(p + i + 16), w3 = LOAD(p + i + 24);    \
        UNROLL6 for (int t = 0; t < NT; t++) {                                                          \
            const float *xt = x + t * xs + i;                                                           \
            a[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt), a[t][0]);                                \
            a[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), a[t][1]);                            \
            a[t][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xt + 16), a[t][2]);                           \
            a[t][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xt + 24), a[t][3]);                           \
        }                                                                                               \
    }                                                                                                   \
    for (; i + 8 <= k; i += 8) {                                                                        \
        __m256 w0 = LOAD(p + i);                                                                        \
        UNROLL6 for (int t = 0; t < NT; t++) a[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + i), a[t][0]); \
    }                                                                                                   \
    UNROLL6 for (int t = 0; t < NT; t++) {                                                              \
        float s = sq_hsum8(_mm256_add_ps(_mm256_add_ps(a[t][0], a[t][1]), _mm256_add_ps(a[t][2], a[t][3]))); \
        for (int64_t ii = i; ii < k; ii++) s += SCALAR(p[ii]) * x[t * xs + ii];                         \
        out[t * os] = s;                                                                                \
    }

#define UNROLL6 _Pragma("GCC unroll 6")
#define F32_SCALAR(v) (v)
#define DOTN_DEFS(TARGET, SUF)                                                                          \
    TARGET static inline __attribute__((always_inline)) void dotn_f32_##SUF(const float *p, const float *x, int64_t xs, int64_t k, int NT, float *out, int64_t os) { DOTN_BODY(float, _mm256_loadu_ps, F32_SCALAR) } \
    TARGET static inline __attribute__((always_inline)) void dotn_f16_##SUF(const uint16_t *p, const float *x, int64_t xs, int64_t k, int NT, float *out, int64_t os) { DOTN_BODY(uint16_t, sq_load_f16, sq_f16_to_f32) } \
    TARGET static inline __attribute__((always_inline)) void dotn_bf16_##SUF(const uint16_t *p, const float *x, int64_t xs, int64_t k, int NT, float *out, int64_t os) { DOTN_BODY(uint16_t, sq_load_bf16, sq_bf16_to_f32) }
DOTN_DEFS(SQ_AVX2, avx2)
DOTN_DEFS(SQ_AVX512VNNI, avx512)

/* Rows [lo, hi) of w against the n tokens of x (n <= 8), passes of up to MAXT tokens a row. */
#define DENSE_ROWS(SUF, MAXT)                                                                           \
    do {                                                                                                \
        for (int64_t r = lo; r < hi; r++)                                                               \
            for (int t0 = 0; t0 < n; t0 += MAXT) {                                                      \
                int nt = n - t0 < MAXT ? n - t0 : MAXT;                                                 \
                const float *xt = x + (int64_t)t0 * k;                                                  \
                float *yt = y + (int64_t)t0 * rows + r;                                                 \
                switch (w->dtype) {                                                                     \
                case SQ_DT_F32: {                                                                       \
                    const float *p = (const float *)w->data + r * k;                                    \
                    switch (nt) {                                                                       \
                    case 1: dotn_f32_##SUF(p, xt, k, k, 1, yt, rows); break;                            \
                    case 2: dotn_f32_##SUF(p, xt, k, k, 2, yt, rows); break;                            \
                    case 3: dotn_f32_##SUF(p, xt, k, k, 3, yt, rows); break;                            \
                    case 4: dotn_f32_##SUF(p, xt, k, k, 4, yt, rows); break;                            \
                    case 5: dotn_f32_##SUF(p, xt, k, k, 5, yt, rows); break;                            \
                    default: dotn_f32_##SUF(p, xt, k, k, 6, yt, rows); break;                           \
                    }                                                                                   \
                    break;                                                                              \
                }                                                                                       \
                case SQ_DT_F16: {                                                                       \
                    const uint16_t *p = (const uint16_t *)w->data + r * k;                              \
                    switch (nt) {                                                                       \
                    case 1: dotn_f16_##SUF(p, xt, k, k, 1, yt, rows); break;                            \
                    case 2: dotn_f16_##SUF(p, xt, k, k, 2, yt, rows); break;                            \
                    case 3: dotn_f16_##SUF(p, xt, k, k, 3, yt, rows); break;                            \
                    case 4: dotn_f16_##SUF(p, xt, k, k, 4, yt, rows); break;                            \
                    case 5: dotn_f16_##SUF(p, xt, k, k, 5, yt, rows); break;                            \
                    default: dotn_f16_##SUF(p, xt, k, k, 6, yt, rows); break;                           \
                    }                                                                                   \
                    break;                                                                              \
                }                                                                                       \
                default: {                                                                              \
                    const uint16_t *p = (const uint16_t *)w->data + r * k;                              \
                    switch (nt) {                                                                       \
                    case 1: dotn_bf16_##SUF(p, xt, k, k, 1, yt, rows); break;                           \
                    case 2: dotn_bf16_##SUF(p, xt, k, k, 2, yt, rows); break;                           \
                    case 3: dotn_bf16_##SUF(p, xt, k, k, 3, yt, rows); break;                           \
                    case 4: dotn_bf16_##SUF(p, xt, k, k, 4, yt, rows); break;                           \
                    case 5: dotn_bf16_##SUF(p, xt, k, k, 5, yt, rows); break;                           \
                    default: dotn_bf16_##SUF(p, xt, k, k, 6, yt, rows); break;                          \
                    }                                                                                   \
                    break;                                                                              \
                }                                                                                       \
                }                                                                                       \
            }                                                                                           \
    } while (0)

SQ_AVX2 static void dense_rows_avx2(const sq_wmat *w, const float *x, float *y, int n, int64_t lo, int64_t hi) {
    int64_t k = w->cols, rows = w->rows;
    DENSE_ROWS(avx2, 3);
}
SQ_AVX512VNNI static void dense_rows_avx512(const sq_wmat *w, const float *x, float *y, int n, int64_t lo, int64_t hi) {
    int64_t k = w->cols, rows = w->rows;
    DENSE_ROWS(avx512, 6);
}

/* Rows r0 .. r0+m-1 of w as floats into dst (m, cols). */
SQ_AVX2 void sq_cpu_dense_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
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
    int64_t chunk;               /* rows of W per chunk (converted sgemm: one tile) */
    _Atomic int64_t next;        /* next chunk to take */
} mm_job;

/* Each thread's chunk of rows read one row after the other, front to back, each row once for all
 * the tokens (dotn above). One sequential stream is what this machine's prefetchers serve best:
 * measured on the 2-core EPYC dev machine, an lm_head-sized F32 GEMV (49152 x 576) ran at 25 GB/s one
 * row at a time (the streaming-read rate) and at 8-12 GB/s with four rows interleaved (the earlier
 * dot4 kernel, with or without software prefetch). Each (row, token) is the same sum whatever n,
 * the thread count and the variant. */
static void mm_gemv(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    mm_job *j = arg;
    int64_t lo, hi;
    bool wide = sq_cpu_isa() >= SQ_ISA_AVX512;
    while (sq_chunk_next(&j->next, j->w->rows, j->chunk, &lo, &hi)) {
        if (wide) dense_rows_avx512(j->w, j->x, j->y, j->n, lo, hi);
        else dense_rows_avx2(j->w, j->x, j->y, j->n, lo, hi);
        sq_cpu_add_bias(j->y, j->bias, j->n, j->w->rows, lo, hi);
    }
}

sq_status sq_cpu_dense_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    if (w->rows > 0x7fffffff || w->cols > 0x7fffffff)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: a %lld x %lld matrix is too large for BLAS", (long long)w->rows, (long long)w->cols);
    if (n <= 0 || w->rows == 0) return SQ_OK;
    if (n > GEMV_MAX_N) return sq_cpu_tiled_gemm(c, w, w->dtype == SQ_DT_F32 ? NULL : sq_cpu_dense_rows_to_f32, bias, x, y, n, err);
    mm_job j = {.c = c, .w = w, .bias = bias, .x = x, .y = y, .n = n, .chunk = GEMV_CHUNK};
    sq_pool_run_work(c->pool, mm_gemv, &j, (int64_t)n * w->rows * w->cols);
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
    for (int64_t t = lo; t < hi; t++) sq_cpu_dense_rows_to_f32(j->w, j->ids[t], 1, j->out + t * j->w->cols);
}

void sq_cpu_embed(sq_kctx *c, const sq_wmat *w, const int *ids, int n, float *out) {
    embed_job j = {w, ids, n, out};
    if (n < 64) embed_rows(&j, 0, 1);
    else sq_pool_run(c->pool, embed_rows, &j);
}
