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

/* ---------------------------------------------------------------- prefill in the decode step's order */

/* A prefill of more than GEMV_MAX_N tokens on dense weights (F32, F16, BF16) for a context set for the
 * decode kernels (ctx_set_int_rows: spotq generate and bench), on AVX-512, cols a multiple of 32:
 * every (token, row) is dotn's sum, four 8-lane accumulators over the 32-column steps (accumulator s
 * takes columns 32 i + 8 s .. + 7), then ((a0 + a1) + (a2 + a3)) and sq_hsum8, so a prompt's outputs
 * are its decode steps' to the bit. Each accumulator is a pass of its own over the row, the columns
 * it takes packed together: two tokens side by side in a 512-bit register (lanes 0-7 and 8-15), PF_NP
 * pairs against PF_RB rows a pass (24 accumulators in registers: one load of x serves six rows, one
 * of a row eight tokens). A thread packs PF_RBLK rows at a time (as floats: F16 and BF16 converted as
 * the decode step converts them) and runs every token group over them; the rows past its last
 * multiple of PF_RB and the tokens past the last group of 2 PF_NP go through dense_rows (the decode
 * kernel itself). On the 2-core Zen 5 dev machine one thread ran 256 x 2816 x 1024 at ~150 GFLOP/s,
 * OpenBLAS's Haswell sgemm at ~115. */
#define PF_RB 6
#define PF_NP 4
#define PF_RBLK 48

typedef struct {
    sq_kctx *c;
    const sq_wmat *w;
    const float *bias, *x;
    float *y;
    int n, ngrp;                 /* tokens; groups of 2 PF_NP tokens run as pairs */
    const float *xp;             /* [pair][s][step][16]: a pair's 8 columns 32 step + 8 s .. of each token */
    _Atomic int64_t next;
} pf_job;

/* Accumulator s of rows wp (PF_RB of them, ws floats apart: [step][8]) against pairs xq (PF_NP, xs
 * apart: [step][16]) over `steps` 32-column steps, into out[(b PF_NP + p) 4 + s]. */
SQ_AVX512VNNI static inline __attribute__((always_inline)) void pf_pass(const float *wp, int64_t ws, const float *xq, int64_t xs, int64_t steps,
                                                                       __m512 *out, int s) {
    __m512 a[PF_RB][PF_NP];
    _Pragma("GCC unroll 8") for (int b = 0; b < PF_RB; b++) _Pragma("GCC unroll 8") for (int p = 0; p < PF_NP; p++) a[b][p] = _mm512_setzero_ps();
    for (int64_t j = 0; j < steps; j++) {
        __m512 wv[PF_RB];
        _Pragma("GCC unroll 8") for (int b = 0; b < PF_RB; b++)
            wv[b] = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(wp + b * ws + 8 * j))));
        _Pragma("GCC unroll 8") for (int p = 0; p < PF_NP; p++) {
            __m512 xv = _mm512_loadu_ps(xq + p * xs + 16 * j);
            _Pragma("GCC unroll 8") for (int b = 0; b < PF_RB; b++) a[b][p] = _mm512_fmadd_ps(wv[b], xv, a[b][p]);
        }
    }
    _Pragma("GCC unroll 8") for (int b = 0; b < PF_RB; b++) _Pragma("GCC unroll 8") for (int p = 0; p < PF_NP; p++) out[(b * PF_NP + p) * 4 + s] = a[b][p];
}

SQ_AVX512VNNI static void pf_rows(void *arg, int ith, int nth) {
    (void)nth;
    pf_job *j = arg;
    const sq_wmat *w = j->w;
    int64_t k = w->cols, rows = w->rows, steps = k / 32, lo, hi;
    float *wp = j->c->scratch[ith];                    /* [s][row][step][8] */
    __m512 *acc = (__m512 *)(void *)(((uintptr_t)(wp + PF_RBLK * k) + 63) & ~(uintptr_t)63); /* [row][pair][s] */
    int tg = 2 * PF_NP * j->ngrp;                      /* the tokens the pairs take */
    while (sq_chunk_next(&j->next, rows, PF_RBLK, &lo, &hi)) {
        int64_t nr = hi - lo, full = tg ? nr / PF_RB * PF_RB : 0;
        for (int s = 0; s < 4; s++)
            for (int64_t rr = 0; rr < full; rr++)
                for (int64_t i = 0; i < steps; i++) {
                    float *o = wp + ((s * PF_RBLK + rr) * steps + i) * 8;
                    int64_t at = (lo + rr) * k + 32 * i + 8 * s;
                    __m256 v = w->dtype == SQ_DT_F32 ? _mm256_loadu_ps((const float *)w->data + at)
                               : w->dtype == SQ_DT_F16 ? sq_load_f16((const uint16_t *)w->data + at)
                                                       : sq_load_bf16((const uint16_t *)w->data + at);
                    _mm256_storeu_ps(o, v);
                }
        for (int g = 0; g < j->ngrp && full; g++) {
            const float *xg = j->xp + (int64_t)g * PF_NP * 4 * steps * 16;
            for (int64_t rr = 0; rr < full; rr += PF_RB)
                for (int s = 0; s < 4; s++)
                    pf_pass(wp + (s * PF_RBLK + rr) * steps * 8, steps * 8, xg + s * steps * 16, 4 * steps * 16, steps, acc + rr * PF_NP * 4, s);
            for (int64_t rr = 0; rr < full; rr++)
                for (int p = 0; p < PF_NP; p++) {
                    const __m512 *q = acc + (rr * PF_NP + p) * 4;
                    __m512 t = _mm512_add_ps(_mm512_add_ps(q[0], q[1]), _mm512_add_ps(q[2], q[3]));
                    int64_t tk = 2 * ((int64_t)g * PF_NP + p);
                    j->y[tk * rows + lo + rr] = sq_hsum8(_mm512_castps512_ps256(t));
                    j->y[(tk + 1) * rows + lo + rr] = sq_hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
                }
        }
        if (full < nr) dense_rows_avx512(w, j->x, j->y, tg, lo + full, hi);
        if (tg < j->n) dense_rows_avx512(w, j->x + (int64_t)tg * k, j->y + (int64_t)tg * rows, j->n - tg, lo, hi);
        sq_cpu_add_bias(j->y, j->bias, j->n, rows, lo, hi);
    }
}

static sq_status dense_prefill(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    int64_t k = w->cols, steps = k / 32;
    int ngrp = n / (2 * PF_NP);
    sq_status s = sq_kctx_reserve(c, (size_t)(PF_RBLK * k) + (size_t)PF_RBLK * PF_NP * 4 * 16 + 16, err);
    if (s) return s;
    float *xp = sq_kctx_shared(c, (size_t)ngrp * 2 * PF_NP * (size_t)k * sizeof *xp, err);
    if (ngrp && !xp) return SQ_ERR_NOMEM;
    for (int64_t pr = 0; pr < (int64_t)ngrp * PF_NP; pr++) /* [pair][s][step][16] */
        for (int sa = 0; sa < 4; sa++)
            for (int64_t i = 0; i < steps; i++) {
                float *o = xp + ((pr * 4 + sa) * steps + i) * 16;
                memcpy(o, x + (2 * pr) * k + 32 * i + 8 * sa, 8 * sizeof *o);
                memcpy(o + 8, x + (2 * pr + 1) * k + 32 * i + 8 * sa, 8 * sizeof *o);
            }
    pf_job j = {.c = c, .w = w, .bias = bias, .x = x, .y = y, .n = n, .ngrp = ngrp, .xp = xp};
    sq_pool_run_work(c->pool, pf_rows, &j, (int64_t)n * w->rows * k);
    return SQ_OK;
}

sq_status sq_cpu_dense_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    if (w->rows > 0x7fffffff || w->cols > 0x7fffffff)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: a %lld x %lld matrix is too large for BLAS", (long long)w->rows, (long long)w->cols);
    if (n <= 0 || w->rows == 0) return SQ_OK;
    if (n > GEMV_MAX_N && n <= c->int_rows && w->cols % 32 == 0 && sq_cpu_isa() >= SQ_ISA_AVX512) return dense_prefill(c, w, bias, x, y, n, err);
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
