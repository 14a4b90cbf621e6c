/* qmatmul.c: y = x . W^T for quantised weights (INT4/INT8 codes, per-group scales and zeros).
 * A few rows of x: a threaded GEMV on integer instructions, x quantised per block of 32 to int8 (see
 * cpu.h), each weight row read once for all the rows of x; shapes it does not take (cols not a
 * multiple of 64, groups not of 32s) get a float GEMV that unpacks codes in registers and applies
 * each group's scale and zero once per group: sum_j s (q_j - z) x_j = s (sum_j q_j x_j - z sum_j x_j).
 * More rows: tiles of rows dequantised into scratch for sgemm (sq_cpu_tiled_gemm).
 * x is first gathered into packed column order when the weight has an act-order permutation. */
#include <cblas.h>
#include <math.h>
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

/* The same as the loop below, 8 codes at a time: s * ((float)q - z), the same two roundings. */
SQ_AVX2 static void qrow_fast(const sq_qweight *q, const uint32_t *row, int64_t r, float *dst) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), mask = _mm256_set1_epi32(15);
    int64_t gs = q->group_size;
    for (int64_t g = 0; g < q->n_groups; g++) {
        __m256 s = _mm256_set1_ps(q->scale[r * q->n_groups + g]), z = _mm256_set1_ps(q->zero[r * q->n_groups + g]);
        for (int64_t j = g * gs; j < (g + 1) * gs; j += 8) {
            __m256i v = q->bits == 4 ? _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)row[j / 8]), shifts), mask)
                                     : _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)row + j)));
            _mm256_storeu_ps(dst + j, _mm256_mul_ps(s, _mm256_sub_ps(_mm256_cvtepi32_ps(v), z)));
        }
    }
}

void sq_cpu_qrow_to_f32(const sq_wmat *w, int64_t r, float *dst) {
    const sq_qweight *q = w->q;
    const uint32_t *row = q->codes + r * words_per_row(w);
    if ((q->bits == 4 || q->bits == 8) && q->group_size % 8 == 0 && sq_cpu_has_avx2()) {
        qrow_fast(q, row, r, dst);
        return;
    }
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

void sq_cpu_qrows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    for (int64_t i = 0; i < m; i++) sq_cpu_qrow_to_f32(w, r0 + i, dst + i * w->cols);
}

/* ---------------------------------------------------------------- integer GEMV */

#define QBLK 32
/* Rows of W per chunk of work: about a quarter of a thread's share, 32 to 256 rows (threads take
 * chunks as they come free; y does not depend on who). Each thread then reads long runs of the
 * weight, which the prefetchers follow; chunks of 32 rows were ~25% slower on the 2-core EPYC. */
static int64_t int_chunk(int64_t rows, int nth) {
    int64_t c = rows / (4 * (int64_t)(nth > 0 ? nth : 1)) / 16 * 16;
    return c < 32 ? 32 : c > 256 ? 256 : c;
}
/* Software prefetch this many bytes ahead in the weight stream: one 32-byte load of codes takes
 * ~14 instructions of work, so the out-of-order window alone keeps too few lines in flight (INT4
 * decode read ~11 GB/s against the F32 GEMV's ~40 on the 2-core EPYC; 2-4 KiB ahead: ~20). */
#define QINT_PF 4096

bool sq_cpu_qmatmul_int_ok(const sq_kctx *c, const sq_wmat *w, int n) {
    const sq_qweight *q = w->q;
    return q && n >= 1 && n <= (c ? c->int_rows : SQ_CPU_INT_ROWS) && (q->bits == 4 || q->bits == 8) && w->cols % 64 == 0 &&
           q->group_size % QBLK == 0 && w->cols % q->group_size == 0 && sq_cpu_has_avx2();
}

/* Where column j of a 64-column span goes in the 4-bit order: the even columns first, then the odd. */
static inline int64_t q4_slot(int64_t j) { return (j & ~63) + ((j & 1) ? 32 : 0) + ((j & 63) >> 1); }

void sq_cpu_q8_quantize_ref(const float *x, int64_t cols, int bits, int8_t *codes, float *d, float *ds) {
    for (int64_t b = 0; b < cols / QBLK; b++) {
        const float *xb = x + b * QBLK;
        float amax = 0;
        for (int i = 0; i < QBLK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float db = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < QBLK; i++) {
            int64_t j = b * QBLK + i;
            int c = (int)nearbyintf(xb[i] * id);
            codes[bits == 4 ? q4_slot(j) : j] = (int8_t)c;
            sum += c;
        }
        d[b] = db;
        ds[b] = db * (float)sum;
    }
}

/* 32 floats -> 32 int8 codes (in order), their scale d and d * their sum. */
SQ_AVX2 static inline __m256i quant_block(const float *xb, float *d, float *ds) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8), v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
    __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    float amax = sq_hmax8(a);
    *d = amax / 127.0f;
    __m256 id = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *ds = *d * (float)_mm_cvtsi128_si32(s4);
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

SQ_AVX2 static void q8_quantize_fast(const float *x, int64_t cols, int bits, int8_t *codes, float *d, float *ds) {
    if (bits == 8) {
        for (int64_t b = 0; b < cols / QBLK; b++) _mm256_storeu_si256((__m256i *)(codes + b * QBLK), quant_block(x + b * QBLK, d + b, ds + b));
        return;
    }
    /* in each 128-bit lane: its 8 even bytes, then its 8 odd ones */
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9,
                                           11, 13, 15);
    for (int64_t c = 0; c < cols / 64; c++) {
        __m256i s0 = _mm256_shuffle_epi8(quant_block(x + c * 64, d + 2 * c, ds + 2 * c), split);
        __m256i s1 = _mm256_shuffle_epi8(quant_block(x + c * 64 + 32, d + 2 * c + 1, ds + 2 * c + 1), split);
        __m256i ev = _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(s0, s1), 0xD8);
        __m256i od = _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(s0, s1), 0xD8);
        _mm256_storeu_si256((__m256i *)(codes + c * 64), ev);
        _mm256_storeu_si256((__m256i *)(codes + c * 64 + 32), od);
    }
}

void sq_cpu_q8_quantize(const float *x, int64_t cols, int bits, int8_t *codes, float *d, float *ds) {
    if (sq_cpu_has_avx2() && cols % 64 == 0) q8_quantize_fast(x, cols, bits, codes, d, ds);
    else sq_cpu_q8_quantize_ref(x, cols, bits, codes, d, ds);
}

typedef struct {
    const sq_wmat *w;
    const float *bias;
    const int8_t *xq;        /* (n, cols) */
    const float *d;          /* (n, cols / 32) block scales */
    const float *dx;         /* 4-bit: (n, cols / 8) the block scales spread over the 8 lanes of each 64 columns */
    const float *zs;         /* (n, n_groups) sum over the group's blocks of d_b * sum of the block's codes */
    const int8_t *xp;        /* on 512-bit registers: tokens in pairs (q4_pairs, q8_pairs), or NULL */
    const float *dxp;        /* with xp: the pairs' dx (4-bit) or d (8-bit) */
    const int32_t *sp;       /* 8-bit with xp: the pairs' -128 (sums of 4 codes) */
    float *y;
    int n;
    int64_t chunk;           /* rows per chunk of work (int_chunk) */
    _Atomic int64_t next;
} qint_job;

/* The loops over a pass's rows and tokens unrolled, their accumulators in registers. */
#define UNROLL _Pragma("GCC unroll 4")

/* The sums of the 8 lanes of a, b, c, d, in the same order for each: ((0+1)+(2+3)) + ((4+5)+(6+7)).
 * Every (row, token) is reduced this way whatever pass computed it, so a token's y does not depend
 * on how many rows of x came with it (a verify step gives the decode step's numbers). */
SQ_AVX2 static inline __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* acc (RB rows x NT tokens) -> y. */
SQ_AVX2 static inline __attribute__((always_inline)) void store_acc(const qint_job *j, __m256 acc[4][4], int64_t r0, int RB, int t0, int NT) {
    const __m256 z = _mm256_setzero_ps();
    int64_t rows = j->w->rows;
    float out[4];
    if (RB == 1) {
        _mm_storeu_ps(out, reduce4(acc[0][0], NT > 1 ? acc[0][1] : z, NT > 2 ? acc[0][2] : z, NT > 3 ? acc[0][3] : z));
        UNROLL
        for (int t = 0; t < NT; t++) j->y[(int64_t)(t0 + t) * rows + r0] = out[t];
    } else {
        UNROLL
        for (int t = 0; t < NT; t++) {
            _mm_storeu_ps(out, reduce4(acc[0][t], RB > 1 ? acc[1][t] : z, RB > 2 ? acc[2][t] : z, RB > 3 ? acc[3][t] : z));
            UNROLL
            for (int b = 0; b < RB; b++) j->y[(int64_t)(t0 + t) * rows + r0 + b] = out[b];
        }
    }
}

/* The lane sums of a[0..7], lane b of the result being a[b]'s, each in the same order. */
SQ_AVX2 static inline __m256 reduce8(const __m256 a[8]) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* y[t, r] -= sum_g s_g z_g zs[t, g] (z - 128 for 8-bit codes, which the dot took as q - 128), then the
 * bias. Eight rows at a time: the groups in whole eights in the lanes, then the G % 8 left one by
 * one per row; the rows past the matrix's last multiple of 8 go through the same arithmetic (their
 * lanes repeat the last row), so each row's sum has one order whatever chunk or thread computed it.
 * (Masked loads for the last eight groups cost more than all the rest on the EPYC.) */
#define ZB_MAX_G 512
SQ_AVX2 static void qint_zero_bias(const qint_job *j, int64_t lo, int64_t hi) {
    const sq_qweight *q = j->w->q;
    int64_t G = q->n_groups, G8 = G / 8 * 8, rows = j->w->rows;
    float off = q->bits == 8 ? 128.0f : 0.0f;
    /* nothing to subtract: an 8-bit weight's one zero point is 128, which the dot took */
    if (q->zero_uniform && q->zero[0] == off) {
        sq_cpu_add_bias(j->y, j->bias, j->n, rows, lo, hi);
        return;
    }
    const __m256 vo = _mm256_set1_ps(off);
    /* symmetric weights: one zero, z - off the same in every lane, the zeros (as many bytes as the
     * scales) never read */
    bool uni = q->zero_uniform;
    float zu = q->zero[0];
    const __m256 zuo = _mm256_set1_ps(zu - off);
#define ZMINUS(zp) (uni ? zuo : _mm256_sub_ps(_mm256_loadu_ps(zp), vo))
    float cb[8 * ZB_MAX_G];
    for (int64_t r0 = lo; r0 < hi; r0 += 8) {
        int nr = hi - r0 < 8 ? (int)(hi - r0) : 8;
        const float *s[8], *z[8];
        for (int b = 0; b < 8; b++) {
            int64_t r = r0 + (b < nr ? b : nr - 1);
            s[b] = q->scale + r * G, z[b] = q->zero + r * G;
        }
        /* s (z - off) of the eight rows' whole eights of groups, once for all tokens (a prefill's
         * hundreds), where they fit here; else per token, the same products */
        bool keep = G8 <= ZB_MAX_G;
        for (int64_t g = 0; keep && g < G8; g += 8)
            for (int b = 0; b < 8; b++)
                _mm256_storeu_ps(cb + b * G8 + g, _mm256_mul_ps(_mm256_loadu_ps(s[b] + g), ZMINUS(z[b] + g)));
        for (int t = 0; t < j->n; t++) {
            const float *zs = j->zs + (int64_t)t * G;
            __m256 res = _mm256_setzero_ps();
            if (G8) {
                __m256 a[8];
                _Pragma("GCC unroll 8")
                for (int b = 0; b < 8; b++) a[b] = _mm256_setzero_ps();
                for (int64_t g = 0; g < G8; g += 8) {
                    __m256 zv = _mm256_loadu_ps(zs + g);
                    _Pragma("GCC unroll 8")
                    for (int b = 0; b < 8; b++)
                        a[b] = _mm256_fmadd_ps(keep ? _mm256_loadu_ps(cb + b * G8 + g)
                                                    : _mm256_mul_ps(_mm256_loadu_ps(s[b] + g), ZMINUS(z[b] + g)),
                                               zv, a[b]);
                }
                res = reduce8(a);
            }
            if (G8 < G) {
                float out[8];
                _mm256_storeu_ps(out, res);
                for (int b = 0; b < 8; b++)
                    for (int64_t g = G8; g < G; g++) out[b] += s[b][g] * ((uni ? zu : z[b][g]) - off) * zs[g];
                res = _mm256_loadu_ps(out);
            }
            float *yt = j->y + (int64_t)t * rows + r0;
            if (nr == 8) _mm256_storeu_ps(yt, _mm256_sub_ps(_mm256_loadu_ps(yt), res));
            else {
                float out[8];
                _mm256_storeu_ps(out, res);
                for (int b = 0; b < nr; b++) yt[b] -= out[b];
            }
        }
    }
    sq_cpu_add_bias(j->y, j->bias, j->n, rows, lo, hi);
#undef ZMINUS
}

/* Rows [lo, hi) against every token: passes of 4 tokens over QINT_PASS_RB rows at a time (each
 * weight load serving 4-8 dot products), then the 1-3 tokens left a row at a time (a decode step
 * reads each weight row once, front to back). */
#define QINT_ROWS(BLOCK)                                                                                                \
    do {                                                                                                                \
        int t = 0;                                                                                                      \
        for (; t + 4 <= j->n; t += 4) {                                                                                 \
            int64_t r = lo;                                                                                             \
            for (; r + QINT_PASS_RB <= hi; r += QINT_PASS_RB) BLOCK(j, r, QINT_PASS_RB, t, 4);                          \
            for (; r < hi; r++) BLOCK(j, r, 1, t, 4);                                                                   \
        }                                                                                                               \
        QINT_TAIL(BLOCK, t);                                                                                            \
    } while (0)
/* The 1-3 tokens from t0 on that the 4-token passes left, a row at a time. */
#define QINT_TAIL(BLOCK, t0)                                                                                            \
    do {                                                                                                                \
        int64_t r = lo;                                                                                                 \
        switch (j->n - (t0)) {                                                                                          \
        case 3:                                                                                                         \
            for (; r < hi; r++) BLOCK(j, r, 1, (t0), 3);                                                                \
            break;                                                                                                      \
        case 2:                                                                                                         \
            for (; r < hi; r++) BLOCK(j, r, 1, (t0), 2);                                                                \
            break;                                                                                                      \
        case 1:                                                                                                         \
            for (; r < hi; r++) BLOCK(j, r, 1, (t0), 1);                                                                \
            break;                                                                                                      \
        default: break;                                                                                                 \
        }                                                                                                               \
    } while (0)

#define QINT_TARGET SQ_AVX2
#define QINT_NAME(x) x##_avx2
#define QINT_PASS_RB 1 /* 16 registers: one row a 4-token pass */
#define QINT_DOT1(a, x) _mm256_madd_epi16(_mm256_maddubs_epi16(a, x), _mm256_set1_epi16(1))
#define QINT_DOT2(a, x, b, y) _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a, x), _mm256_maddubs_epi16(b, y)), _mm256_set1_epi16(1))
#include "qint_body.h"
#undef QINT_TARGET
#undef QINT_NAME
#undef QINT_DOT1
#undef QINT_DOT2
#undef QINT_PASS_RB

#define QINT_TARGET SQ_AVX512VNNI
#define QINT_NAME(x) x##_vnni
#define QINT_PASS_RB 2 /* AVX512VL's 32 registers: two rows a 4-token pass (a prefill's ~10% faster) */
#define QINT_DOT1(a, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, x)
#define QINT_DOT2(a, x, b, y) _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, x), b, y)
#include "qint_body.h"

/* acc of RB rows x NP token pairs (lanes 0-7 the pair's first token, 8-15 its second) -> y, through
 * store_acc's reduction (each token's sums as a 256-bit pass gives them). */
SQ_AVX512VNNI static inline __attribute__((always_inline)) void store_pairs(const qint_job *j, __m512 acc[4][2], int64_t r0, int RB, int p0,
                                                                           int NP) {
    __m256 a8[4][4];
    UNROLL
    for (int b = 0; b < RB; b++) {
        UNROLL
        for (int p = 0; p < NP; p++) {
            a8[b][2 * p] = _mm512_castps512_ps256(acc[b][p]);
            a8[b][2 * p + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[b][p]), 1));
        }
    }
    store_acc(j, a8, r0, RB, 2 * p0, 2 * NP);
}

/* 4-bit rows r0 .. r0+RB-1 against the token pairs p0 .. p0+NP-1 (tokens 2p and 2p+1) on 512-bit
 * registers: a pair's two tokens side by side, lanes 0-7 the first token's and 8-15 the second's, each
 * 64 columns' codes broadcast to both halves. For a 64-column span c, pair p's activations are 128
 * bytes at xp + (p * cols/64 + c) * 128: the first token's even columns, the second's, the first's odd,
 * the second's, and its dx 16 floats (the first token's 8, the second's). Every lane does what
 * q4_block does for its token, in its order (the same integers, products and sums), so each token's y
 * is q4_block's to the bit; the single tokens left over go through q4_block itself. */
SQ_AVX512VNNI static inline __attribute__((always_inline)) void q4_pairs(const qint_job *j, int64_t r0, int RB, int p0, int NP) {
    const sq_qweight *q = j->w->q;
    int64_t K = j->w->cols, G = q->n_groups, gs = q->group_size, wpr = K / 8, nblk = K / 64;
    const uint8_t *wb = (const uint8_t *)(q->codes + r0 * wpr);
    const float *s = q->scale + r0 * G;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i pair = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
    __m512 acc[4][2];
    UNROLL
    for (int b = 0; b < RB; b++) {
        UNROLL
        for (int p = 0; p < NP; p++) acc[b][p] = _mm512_setzero_ps();
    }
    int64_t cpg = gs / 64, g = 0, left = cpg;
    for (int64_t c = 0; c < nblk; c++) {
        __m512i lo[4], hi[4];
        __m512 sv[4];
        UNROLL
        for (int b = 0; b < RB; b++) {
            _mm_prefetch((const char *)(wb + b * wpr * 4 + 32 * c + QINT_PF), _MM_HINT_T0);
            __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb + b * wpr * 4 + 32 * c)));
            lo[b] = _mm512_and_si512(v, m4);
            hi[b] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            sv[b] = gs == 32 ? _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(s + b * G + 2 * c)))))
                             : _mm512_set1_ps(s[b * G + g]);
        }
        if (gs != 32 && --left == 0) {
            g++;
            left = cpg;
        }
        UNROLL
        for (int p = 0; p < NP; p++) {
            const int8_t *xt = j->xp + ((int64_t)(p0 + p) * nblk + c) * 128;
            __m512i xe = _mm512_loadu_si512((const void *)xt), xo = _mm512_loadu_si512((const void *)(xt + 64));
            __m512 dx = _mm512_loadu_ps(j->dxp + ((int64_t)(p0 + p) * nblk + c) * 16);
            UNROLL
            for (int b = 0; b < RB; b++) {
                __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[b], xe), hi[b], xo));
                acc[b][p] = _mm512_fmadd_ps(f, _mm512_mul_ps(dx, sv[b]), acc[b][p]);
            }
        }
    }
    store_pairs(j, acc, r0, RB, p0, NP);
}

/* The same for 8-bit rows: a pair's 32 activation codes of block k at xp + (p * cols/32 + k) * 64 (the
 * first token's, then the second's), their d spread over each token's 8 lanes at dxp + (..) * 16, and
 * at sp + (..) * 16 each lane's -128 (c_4i + .. + c_4i+3). vpdpbusd of the unsigned codes q, started
 * from that, sums (q - 128) c exactly: the integers q8_block's sign trick sums, so each token's y is
 * q8_block's to the bit. */
SQ_AVX512VNNI static inline __attribute__((always_inline)) void q8_pairs(const qint_job *j, int64_t r0, int RB, int p0, int NP) {
    const sq_qweight *q = j->w->q;
    int64_t K = j->w->cols, G = q->n_groups, gs = q->group_size, bpg = gs / QBLK, nb = K / QBLK;
    const uint8_t *wb = (const uint8_t *)(q->codes + r0 * (K / 4));
    const float *s = q->scale + r0 * G;
    __m512 acc[4][2];
    UNROLL
    for (int b = 0; b < RB; b++) {
        UNROLL
        for (int p = 0; p < NP; p++) acc[b][p] = _mm512_setzero_ps();
    }
    for (int64_t g = 0; g < G; g++) {
        __m512 ag[4][2];
        UNROLL
        for (int b = 0; b < RB; b++) {
            UNROLL
            for (int p = 0; p < NP; p++) ag[b][p] = _mm512_setzero_ps();
        }
        for (int64_t k = g * bpg; k < (g + 1) * bpg; k++) {
            __m512i v[4];
            UNROLL
            for (int b = 0; b < RB; b++) {
                _mm_prefetch((const char *)(wb + b * K + QBLK * k + QINT_PF), _MM_HINT_T0);
                v[b] = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb + b * K + QBLK * k)));
            }
            UNROLL
            for (int p = 0; p < NP; p++) {
                int64_t at = (int64_t)(p0 + p) * nb + k;
                __m512i xt = _mm512_loadu_si512((const void *)(j->xp + at * 64)), s0 = _mm512_loadu_si512((const void *)(j->sp + at * 16));
                __m512 d = _mm512_loadu_ps(j->dxp + at * 16);
                UNROLL
                for (int b = 0; b < RB; b++) ag[b][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(s0, v[b], xt)), d, ag[b][p]);
            }
        }
        UNROLL
        for (int b = 0; b < RB; b++) {
            __m512 sv = _mm512_set1_ps(s[b * G + g]);
            UNROLL
            for (int p = 0; p < NP; p++) acc[b][p] = _mm512_fmadd_ps(ag[b][p], sv, acc[b][p]);
        }
    }
    store_pairs(j, acc, r0, RB, p0, NP);
}

/* The vnni variant with passes of two token pairs over QINT_PAIR_RB rows, then q*_block_vnni's passes
 * for the 1-3 tokens left. */
#define QINT_PAIR_RB 4
#define PAIR_ROWS(PAIRS, BLOCK)                                                                                         \
    do {                                                                                                                \
        for (int t = 0; t < n4; t += 4) {                                                                               \
            int64_t r = lo;                                                                                             \
            for (; r + QINT_PAIR_RB <= hi; r += QINT_PAIR_RB) PAIRS(j, r, QINT_PAIR_RB, t / 2, 2);                      \
            for (; r < hi; r++) PAIRS(j, r, 1, t / 2, 2);                                                               \
        }                                                                                                               \
        QINT_TAIL(BLOCK, n4);                                                                                           \
    } while (0)
SQ_AVX512VNNI static void qint_gemv_vnni_pairs(void *arg, int ith, int nth) {
    (void)ith, (void)nth;
    qint_job *j = arg;
    int64_t lo, hi;
    int n4 = j->n / 4 * 4;
    while (sq_chunk_next(&j->next, j->w->rows, j->chunk, &lo, &hi)) {
        if (j->w->q->bits == 4) PAIR_ROWS(q4_pairs, q4_block_vnni);
        else PAIR_ROWS(q8_pairs, q8_block_vnni);
        qint_zero_bias(j, lo, hi);
    }
}
#undef PAIR_ROWS

/* The integer kernels on n <= c->int_rows rows of xin (packed column order); buffers from the context. */
static sq_status qmatmul_int(sq_kctx *c, const sq_wmat *w, const float *bias, const float *xin, float *y, int n, sq_err *err) {
    const sq_qweight *q = w->q;
    int64_t K = w->cols, G = q->n_groups, nb = K / QBLK, bpg = q->group_size / QBLK;
    size_t xq_b = ((size_t)n * (size_t)K + 63) / 64 * 64, d_b = (size_t)n * (size_t)nb * sizeof(float);
    size_t dx_b = q->bits == 4 ? (size_t)n * (size_t)(K / 8) * sizeof(float) : 0, zs_b = (size_t)n * (size_t)G * sizeof(float);
    bool pairs = n >= 4 && sq_cpu_isa() >= SQ_ISA_AVX512; /* passes of token pairs (q4_pairs, q8_pairs) */
    int np = pairs ? n / 4 * 2 : 0;
    size_t xp_b = (size_t)np * (size_t)K * 2, dxp_b = (size_t)np * (size_t)(K / (q->bits == 4 ? 4 : 2)) * sizeof(float);
    size_t sp_b = q->bits == 8 ? (size_t)np * (size_t)(K / 2) * sizeof(int32_t) : 0;
    char *buf = sq_kctx_shared(c, xq_b + 2 * d_b + dx_b + zs_b + xp_b + dxp_b + sp_b + 256, err);
    if (!buf) return SQ_ERR_NOMEM;
    int8_t *xq = (int8_t *)buf;
    float *d = (float *)(buf + xq_b), *ds = (float *)(buf + xq_b + d_b), *dx = (float *)(buf + xq_b + 2 * d_b);
    float *zs = (float *)(buf + xq_b + 2 * d_b + dx_b);
    int8_t *xp = (int8_t *)(buf + (xq_b + 2 * d_b + dx_b + zs_b + 63) / 64 * 64);
    float *dxp = (float *)((char *)xp + (xp_b + 63) / 64 * 64);
    int32_t *sp = (int32_t *)((char *)dxp + (dxp_b + 63) / 64 * 64);
    for (int t = 0; t < n; t++) {
        int8_t *ct = xq + (int64_t)t * K;
        float *dt = d + (int64_t)t * nb, *dst = ds + (int64_t)t * nb;
        sq_cpu_q8_quantize(xin + (int64_t)t * K, K, q->bits, ct, dt, dst);
        if (q->bits == 4)
            for (int64_t b = 0; b < nb; b++)
                for (int l = 0; l < 4; l++) dx[(int64_t)t * (K / 8) + (b / 2) * 8 + (b % 2) * 4 + l] = dt[b];
        for (int64_t g = 0; g < G; g++) {
            float sum = 0;
            for (int64_t b = g * bpg; b < (g + 1) * bpg; b++) sum += dst[b];
            zs[(int64_t)t * G + g] = sum;
        }
    }
    int64_t nblk = K / 64;
    for (int p = 0; p < np && q->bits == 8; p++) /* the pairs' activations, as q8_pairs reads them */
        for (int64_t k = 0; k < nb; k++)
            for (int h = 0; h < 2; h++) {
                int64_t at = (int64_t)p * nb + k, t = 2 * p + h;
                const int8_t *xk = xq + t * K + QBLK * k;
                memcpy(xp + at * 64 + 32 * h, xk, 32);
                for (int l = 0; l < 8; l++) {
                    dxp[at * 16 + 8 * h + l] = d[t * nb + k];
                    sp[at * 16 + 8 * h + l] = -128 * (xk[4 * l] + xk[4 * l + 1] + xk[4 * l + 2] + xk[4 * l + 3]);
                }
            }
    for (int p = 0; p < np && q->bits == 4; p++) /* the pairs' activations, as q4_pairs reads them */
        for (int64_t cb = 0; cb < nblk; cb++) {
            int8_t *o = xp + ((int64_t)p * nblk + cb) * 128;
            const int8_t *x0 = xq + (int64_t)(2 * p) * K + 64 * cb, *x1 = x0 + K;
            memcpy(o, x0, 32), memcpy(o + 32, x1, 32), memcpy(o + 64, x0 + 32, 32), memcpy(o + 96, x1 + 32, 32);
            float *od = dxp + ((int64_t)p * nblk + cb) * 16;
            memcpy(od, dx + (int64_t)(2 * p) * (K / 8) + 8 * cb, 8 * sizeof *od);
            memcpy(od + 8, dx + (int64_t)(2 * p + 1) * (K / 8) + 8 * cb, 8 * sizeof *od);
        }
    qint_job j = {.w = w, .bias = bias, .xq = xq, .d = d, .dx = q->bits == 4 ? dx : NULL, .zs = zs, .xp = pairs ? xp : NULL,
                  .dxp = pairs ? dxp : NULL, .sp = pairs ? sp : NULL, .y = y, .n = n, .chunk = int_chunk(w->rows, sq_pool_threads(c->pool))};
    void (*fn)(void *, int, int) = pairs ? qint_gemv_vnni_pairs : sq_cpu_isa() >= SQ_ISA_AVX512 ? qint_gemv_vnni : qint_gemv_avx2;
    sq_pool_run_work(c->pool, fn, &j, (int64_t)n * w->rows * K);
    return SQ_OK;
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
    if (n > GEMV_MAX_N && !sq_cpu_qmatmul_int_ok(c, w, n)) {
        if (!q->perm) return sq_cpu_tiled_gemm(c, w, sq_cpu_qrows_to_f32, bias, x, y, n, err);
        float *xp = sq_malloc((size_t)(n * K) * sizeof *xp, err); /* x in packed column order (the scratch holds the tiles) */
        if (!xp) return SQ_ERR_NOMEM;
        for (int t = 0; t < n; t++)
            for (int64_t jc = 0; jc < K; jc++) xp[(int64_t)t * K + jc] = x[(int64_t)t * K + q->perm[jc]];
        sq_status s = sq_cpu_tiled_gemm(c, w, sq_cpu_qrows_to_f32, bias, xp, y, n, err);
        free(xp);
        return s;
    }
    const float *xin = x;
    if (q->perm) { /* gather x into packed column order once for all rows, into thread 0's scratch */
        sq_status s = sq_kctx_reserve(c, (size_t)(n * K), err);
        if (s) return s;
        float *xp = c->scratch[0];
        for (int t = 0; t < n; t++)
            for (int64_t jc = 0; jc < K; jc++) xp[(int64_t)t * K + jc] = x[(int64_t)t * K + q->perm[jc]];
        xin = xp;
    }
    if (sq_cpu_qmatmul_int_ok(c, w, n)) return qmatmul_int(c, w, bias, xin, y, n, err);
    float *xsum = sq_kctx_shared(c, (size_t)(n * G) * sizeof *xsum, err);
    if (!xsum) return SQ_ERR_NOMEM;
    for (int t = 0; t < n; t++)
        for (int64_t g = 0; g < G; g++) {
            float sum = 0;
            for (int64_t i = g * q->group_size; i < (g + 1) * q->group_size; i++) sum += xin[(int64_t)t * K + i];
            xsum[(int64_t)t * G + g] = sum;
        }
    qmm_job j = {c, w, bias, xin, xsum, y, n};
    sq_pool_run_work(c->pool, qmm_gemv, &j, (int64_t)n * w->rows * K);
    return SQ_OK;
}
