/* awq.c: AWQ's clipping search (AutoAWQ's _compute_best_clip) for the CPU backend. The error of a
 * candidate q for one row's group is the mean over the sampled tokens of (x_g . q - x_g . w)^2, which is
 * d^T H_g d / T with d = q - w and H_g = X_g^T X_g the group's Gram matrix over the same tokens: the
 * Gram matrices are made once per group (shared by every row), and the ten candidates of a chunk of
 * rows go through one sgemm D H_g. Chunks are fixed by the shape (a group and AC_ROWS rows), so the
 * result is the same bits for every thread count. */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../qmath.h"
#include "cpu.h"

#define AC_ROWS 64   /* rows of a chunk */
#define AC_CANDS 10  /* max |w| shrunk by (1 - i/20), i = 0..9 */
#define AC_TOKENS 512

typedef struct {
    float *w;
    int64_t n, k, nt;
    int gs, maxq;
    const float *xs; /* (nt, k): the sampled tokens */
    float *gram;     /* (G, gs, gs) */
    float *max_val;
    float *scratch;  /* per thread: D and D H (AC_ROWS * AC_CANDS, gs) each */
} ac_job;

static void ac_gram(void *arg, int64_t g, int ith) {
    (void)ith;
    const ac_job *j = arg;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->gs, j->gs, (int)j->nt, 1.0f, j->xs + g * j->gs, (int)j->k, j->xs + g * j->gs,
                (int)j->k, 0.0f, j->gram + g * j->gs * j->gs, j->gs);
}

static void ac_chunk(void *arg, int64_t c, int ith) {
    const ac_job *j = arg;
    int64_t rchunks = (j->n + AC_ROWS - 1) / AC_ROWS, g = c / rchunks, r0 = (c % rchunks) * AC_ROWS;
    int64_t r1 = r0 + AC_ROWS < j->n ? r0 + AC_ROWS : j->n, nr = r1 - r0, k = j->k, G = k / j->gs;
    int gs = j->gs, m = (int)(nr * AC_CANDS);
    float *d = j->scratch + (size_t)ith * 2 * AC_ROWS * AC_CANDS * gs, *dh = d + AC_ROWS * AC_CANDS * gs;
    float amax[AC_ROWS];
    bool dup[AC_ROWS * AC_CANDS];
    for (int64_t r = r0; r < r1; r++) {
        const float *wg = j->w + r * k + g * gs;
        float a = 0;
        for (int i = 0; i < gs; i++) a = fmaxf(a, fabsf(wg[i]));
        amax[r - r0] = a;
        for (int is = 0; is < AC_CANDS; is++) {
            float mx = a * (1.0f - (float)is / 20.0f), mn = -mx, lo = INFINITY, hi = -INFINITY;
            float *dc = d + ((r - r0) * AC_CANDS + is) * gs;
            for (int i = 0; i < gs; i++) {
                float v = fminf(fmaxf(wg[i], mn), mx);
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
                dc[i] = v;
            }
            float s, z;
            sq_qm_awq_grid(lo, hi, j->maxq, &s, &z);
            for (int i = 0; i < gs; i++) dc[i] = sq_qm_awq_fq(dc[i], s, z, j->maxq) - wg[i];
            /* the same codes as the previous candidate: the same error (the first wins a tie) */
            dup[(r - r0) * AC_CANDS + is] = is > 0 && !memcmp(dc, dc - gs, (size_t)gs * sizeof *dc);
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, gs, gs, 1.0f, d, gs, j->gram + g * gs * gs, gs, 0.0f, dh, gs);
    for (int64_t r = r0; r < r1; r++) {
        float best = amax[r - r0];
        double best_err = INFINITY;
        for (int is = 0; is < AC_CANDS; is++) {
            int64_t row = (r - r0) * AC_CANDS + is;
            if (dup[row]) continue;
            const float *dc = d + row * gs, *hc = dh + row * gs;
            double e = 0;
            for (int i = 0; i < gs; i++) e += (double)dc[i] * hc[i];
            if (e < best_err) {
                best_err = e;
                best = amax[r - r0] * (1.0f - (float)is / 20.0f);
            }
        }
        float *wg = j->w + r * k + g * gs;
        for (int i = 0; i < gs; i++) wg[i] = fminf(fmaxf(wg[i], -best), best);
        if (j->max_val) j->max_val[r * G + g] = best;
    }
}

sq_status sq_cpu_awq_clip(float *w, int64_t n, int64_t k, int gs, int bits, const float *x, int64_t t, int threads, float *max_val,
                          sq_err *err) {
    if (gs <= 0) gs = (int)k;
    if (k % gs || t < 1 || bits < 2 || bits > 8)
        return sq_fail(err, SQ_ERR_ARG, "AWQ clip: %lld columns in groups of %d, %lld tokens, %d bits", (long long)k, gs, (long long)t, bits);
    int64_t G = k / gs, step = t / AC_TOKENS > 1 ? t / AC_TOKENS : 1, nt = (t + step - 1) / step;
    if (threads < 1) threads = 1;
    if (threads > SQ_PAR_MAX_THREADS) threads = SQ_PAR_MAX_THREADS;
    float *xs = malloc((size_t)(nt * k) * sizeof *xs), *gram = malloc((size_t)(G * gs * gs) * sizeof *gram);
    float *scratch = malloc((size_t)threads * 2 * AC_ROWS * AC_CANDS * (size_t)gs * sizeof *scratch);
    if (!xs || !gram || !scratch) {
        free(xs), free(gram), free(scratch);
        return sq_fail(err, SQ_ERR_NOMEM, "AWQ clip: out of memory [%lld x %lld]", (long long)n, (long long)k);
    }
    for (int64_t ti = 0; ti < nt; ti++) memcpy(xs + ti * k, x + ti * step * k, (size_t)k * sizeof *xs);
    ac_job j = {w, n, k, nt, gs, (1 << bits) - 1, xs, gram, max_val, scratch};
    sq_cpu_par_chunks(threads, G, ac_gram, &j);
    sq_cpu_par_chunks(threads, G * ((n + AC_ROWS - 1) / AC_ROWS), ac_chunk, &j);
    free(xs), free(gram), free(scratch);
    return SQ_OK;
}

/* ---------------------------------------------------------------- X^T X */

#define GRAM_COLS 128 /* rows of H per chunk: H[i0:i1, i0:K] = X[:, i0:i1]^T X[:, i0:K], then mirrored */

typedef struct {
    const float *x;
    int64_t t, k;
    float *h;
} gram_job;

static void gram_chunk(void *arg, int64_t c, int ith) {
    (void)ith;
    const gram_job *j = arg;
    int64_t i0 = c * GRAM_COLS, i1 = i0 + GRAM_COLS < j->k ? i0 + GRAM_COLS : j->k;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(i1 - i0), (int)(j->k - i0), (int)j->t, 1.0f, j->x + i0, (int)j->k, j->x + i0,
                (int)j->k, 0.0f, j->h + i0 * j->k + i0, (int)j->k);
}

sq_status sq_cpu_gram(const float *x, int64_t t, int64_t k, int threads, float *h, sq_err *err) {
    if (t < 1 || k < 1) return sq_fail(err, SQ_ERR_ARG, "gram of %lld tokens x %lld", (long long)t, (long long)k);
    gram_job j = {x, t, k, h};
    sq_cpu_par_chunks(threads < 1 ? 1 : threads > SQ_PAR_MAX_THREADS ? SQ_PAR_MAX_THREADS : threads, (k + GRAM_COLS - 1) / GRAM_COLS, gram_chunk,
                      &j);
    for (int64_t a = 1; a < k; a++)
        for (int64_t b = 0; b < a; b++) h[a * k + b] = h[b * k + a];
    return SQ_OK;
}

/* ---------------------------------------------------------------- a scale search's candidate */

#define FQ_ROWS 16 /* rows of a chunk */

typedef struct {
    const float *w, *s;
    float *out;
    int64_t n, k;
    int gs, maxq;
} fq_job;

/* One group of gs: out = Q(w s) / s on the zero-point grid, as quant/awq.c's sq_awq_fake_quant does it. */
static void fq_group(const float *w, const float *s, float *out, int gs, int maxq) {
    for (int i = 0; i < gs; i++) out[i] = w[i] * s[i];
    float lo = out[0], hi = out[0];
    for (int i = 1; i < gs; i++) { lo = fminf(lo, out[i]); hi = fmaxf(hi, out[i]); }
    float sc, z;
    sq_qm_awq_grid(lo, hi, maxq, &sc, &z);
    for (int i = 0; i < gs; i++) {
        out[i] = sq_qm_awq_fq(out[i], sc, z, maxq) / s[i];
    }
}

/* The same eight lanes at a time (gs a multiple of 8): the same operations, so the same values (min and
 * max of finite numbers do not depend on the order). */
SQ_AVX2 static void fq_group_avx2(const float *w, const float *s, float *out, int gs, int maxq) {
    __m256 vlo = _mm256_set1_ps(INFINITY), vhi = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < gs; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(s + i));
        _mm256_storeu_ps(out + i, v);
        vlo = _mm256_min_ps(vlo, v);
        vhi = _mm256_max_ps(vhi, v);
    }
    float l8[8], h8[8];
    _mm256_storeu_ps(l8, vlo);
    _mm256_storeu_ps(h8, vhi);
    float lo = l8[0], hi = h8[0];
    for (int i = 1; i < 8; i++) { lo = fminf(lo, l8[i]); hi = fmaxf(hi, h8[i]); }
    float sc, z;
    sq_qm_awq_grid(lo, hi, maxq, &sc, &z);
    const __m256 vs = _mm256_set1_ps(sc), vz = _mm256_set1_ps(z), vmax = _mm256_set1_ps((float)maxq), v0 = _mm256_setzero_ps();
    for (int i = 0; i < gs; i += 8) {
        __m256 q = _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(out + i), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
        q = _mm256_min_ps(_mm256_max_ps(q, v0), vmax);
        _mm256_storeu_ps(out + i, _mm256_div_ps(_mm256_mul_ps(_mm256_sub_ps(q, vz), vs), _mm256_loadu_ps(s + i)));
    }
}

static void fq_chunk(void *arg, int64_t c, int ith) {
    (void)ith;
    const fq_job *j = arg;
    int64_t r0 = c * FQ_ROWS, r1 = r0 + FQ_ROWS < j->n ? r0 + FQ_ROWS : j->n;
    bool avx = j->gs % 8 == 0 && sq_cpu_isa() >= SQ_ISA_AVX2;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c0 = 0; c0 < j->k; c0 += j->gs) {
            const float *w = j->w + r * j->k + c0, *s = j->s + c0;
            float *o = j->out + r * j->k + c0;
            if (avx) fq_group_avx2(w, s, o, j->gs, j->maxq);
            else fq_group(w, s, o, j->gs, j->maxq);
        }
}

sq_status sq_cpu_awq_candidate(const float *w, const float *s, int64_t n, int64_t k, int gs, int bits, int threads, float *out, sq_err *err) {
    if (gs <= 0) gs = (int)k;
    if (k % gs || bits < 2 || bits > 8)
        return sq_fail(err, SQ_ERR_ARG, "AWQ candidate: %lld columns in groups of %d, %d bits", (long long)k, gs, bits);
    fq_job j = {w, s, out, n, k, gs, (1 << bits) - 1};
    sq_cpu_par_chunks(threads < 1 ? 1 : threads > SQ_PAR_MAX_THREADS ? SQ_PAR_MAX_THREADS : threads, (n + FQ_ROWS - 1) / FQ_ROWS, fq_chunk, &j);
    return SQ_OK;
}
