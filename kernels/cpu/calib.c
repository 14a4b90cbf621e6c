/* calib.c: the CPU backend's calibration ops: the Hessian accumulator, the damped Cholesky inverse,
 * GPTQ's sweep (IST-DASLab's reference step for step) on every grid kind, round to nearest, the output
 * error and absmax, through OpenBLAS and LAPACK. The grids' arithmetic is kernels/qmath.h's. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../qmath.h"
#include "cpu.h"

/* ---------------------------------------------------------------- Hessian */

struct sq_hess {
    int64_t k, tokens;
    float *h;            /* the caller's [K, K] */
};

sq_status sq_cpu_hess_new(sq_hess **out, int64_t k, float *h, sq_err *err) {
    *out = sq_calloc(1, sizeof **out, err);
    if (!*out) return SQ_ERR_NOMEM;
    (*out)->k = k;
    (*out)->h = h;
    return SQ_OK;
}

sq_status sq_cpu_hess_add(sq_hess *hs, const float *x, int64_t t, sq_err *err) {
    (void)err;
    if (t <= 0) return SQ_OK;
    /* Running mean, as the reference: H *= n/(n+t); H += (2/(n+t)) X^T X. */
    int64_t total = hs->tokens + t;
    float keep = (float)((double)hs->tokens / (double)total);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)hs->k, (int)t, (float)(2.0 / (double)total), x, (int)hs->k, keep, hs->h,
                (int)hs->k);
    hs->tokens = total;
    return SQ_OK;
}

sq_status sq_cpu_hess_finish(sq_hess *hs, sq_err *err) {
    (void)err;
    sq_mirror_upper(hs->h, hs->k);
    return SQ_OK;
}

void sq_cpu_hess_free(sq_hess *hs) { free(hs); }

/* ---------------------------------------------------------------- output error, absmax */

/* Rows of D per chunk of the output error's D H (fixed: the same sums for every thread count). */
#define OE_ROWS 64

typedef struct {
    const float *w, *q, *h;
    int64_t n, k;
    float *d, *dh;
    int pass;
} oe_job;

static void oe_chunk(void *arg, int64_t c, int ith) {
    (void)ith;
    const oe_job *j = arg;
    int64_t r0 = c * OE_ROWS, r1 = r0 + OE_ROWS < j->n ? r0 + OE_ROWS : j->n, k = j->k;
    float *d = j->d + r0 * k;
    for (int64_t i = 0; i < (r1 - r0) * k; i++) d[i] = j->pass ? j->w[r0 * k + i] : j->w[r0 * k + i] - j->q[r0 * k + i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)k, (int)k, 1.0f, d, (int)k, j->h, (int)k, 0.0f, j->dh + r0 * k,
                (int)k);
}

sq_status sq_cpu_quad_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads, double *out, sq_err *err) {
    /* D H in fixed chunks of rows on the threads, the trace summed in element order on one. */
    float *d = malloc((size_t)(n * k) * sizeof *d), *dh = malloc((size_t)(n * k) * sizeof *dh);
    if (!d || !dh) {
        free(d);
        free(dh);
        *out = NAN;
        return sq_fail(err, SQ_ERR_NOMEM, "output error: out of memory [%lld x %lld]", (long long)n, (long long)k);
    }
    oe_job j = {w, q, h, n, k, d, dh, q == NULL};
    sq_cpu_par_chunks(threads, (n + OE_ROWS - 1) / OE_ROWS, oe_chunk, &j);
    double acc = 0;
    for (int64_t i = 0; i < n * k; i++) acc += (double)d[i] * dh[i];
    free(d);
    free(dh);
    *out = acc;
    return SQ_OK;
}

sq_status sq_cpu_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads, double *out, sq_err *err) {
    /* ||D X^T||^2 / ||W X^T||^2 = tr(D H D^T) / tr(W H W^T); both share the factor T/2. */
    double num = 0, den = 0;
    sq_status s = sq_cpu_quad_error(w, q, h, n, k, threads, &num, err);
    if (!s) s = sq_cpu_quad_error(w, NULL, h, n, k, threads, &den, err);
    if (s) {
        *out = NAN;
        return s;
    }
    if (den <= 0) *out = num <= 0 ? 0.0 : INFINITY;
    else *out = sqrt(fmax(num, 0.0) / den);
    return SQ_OK;
}

float sq_cpu_absmax(const float *w, int64_t n, int64_t *bad) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(w[i])) {
            *bad = i;
            return -1;
        }
        m = fmaxf(m, fabsf(w[i]));
    }
    *bad = -1;
    return m;
}

/* ---------------------------------------------------------------- factorisation */

/* dst[j * k + i] = src[i * k + j] for a k x k matrix, in 16 x 16 tiles through a local buffer so
 * that both sides read and write whole cache lines (a plain double loop strides through memory k
 * floats at a time on one side, lines that share one L1 set when k is a multiple of 1024, and took
 * 6% of a GPTQ run). */
static void transpose_sq(const float *src, float *dst, int64_t k) {
    enum { T = 16 };
    float t[T][T];
    for (int64_t i0 = 0; i0 < k; i0 += T)
        for (int64_t j0 = 0; j0 < k; j0 += T) {
            int64_t ni = i0 + T < k ? T : k - i0, nj = j0 + T < k ? T : k - j0;
            for (int64_t i = 0; i < ni; i++)
                for (int64_t j = 0; j < nj; j++) t[j][i] = src[(i0 + i) * k + j0 + j];
            for (int64_t j = 0; j < nj; j++) memcpy(dst + (j0 + j) * k + i0, t[j], (size_t)ni * sizeof *dst);
        }
}

/* b[j * k + i] = b[i * k + j] for i > j: the strict lower triangle of the column-major matrix b (its
 * (i, j) at b[j * k + i]) copied into its upper one, in tiles. */
static void mirror_lower_cm(float *b, int64_t k) {
    enum { T = 32 };
    for (int64_t j0 = 0; j0 < k; j0 += T)
        for (int64_t i0 = j0; i0 < k; i0 += T) {
            int64_t i1 = i0 + T < k ? i0 + T : k, j1 = j0 + T < k ? j0 + T : k;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0 > j + 1 ? i0 : j + 1; i < i1; i++) b[i * k + j] = b[j * k + i];
        }
}

/* U = upper Cholesky factor of (H + damp I)^-1; returns false when H will not factor. The LAPACK
 * calls are the column-major ones that LAPACKE's row-major wrappers make on their transposed copies
 * (lower factor, its inverse, the inverse mirrored to the upper triangle, upper factor), on one
 * column-major copy b [K, K] transposed in and out once: the same bits, without the six transposes
 * the wrappers did. u's lower triangle ends as the wrappers left it (the inverse's). */
static bool inverse_factor(const float *hp, float *u, float *b, int64_t k, double damp_frac) {
    double mean = 0;
    for (int64_t i = 0; i < k; i++) mean += hp[i * k + i];
    mean /= (double)k;
    transpose_sq(hp, b, k);
    for (int64_t i = 0; i < k; i++) b[i * k + i] += (float)(damp_frac * mean);
    lapack_int n = (lapack_int)k;
    if (LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'L', n, b, n) != 0) return false;
    if (LAPACKE_spotri_work(LAPACK_COL_MAJOR, 'L', n, b, n) != 0) return false;
    mirror_lower_cm(b, k);
    if (LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'U', n, b, n) != 0) return false;
    transpose_sq(b, u, k);
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = i; j < k; j++)
            if (!isfinite(u[i * k + j])) return false;
    return true;
}

static void damped_factor(const float *hp, float *u, int64_t k, double damp0, double *damp_used) {
    double damp = damp0;
    bool ok = false;
    float *b = malloc((size_t)(k * k) * sizeof *b); /* no memory: as LAPACKE's wrappers failing, no factor */
    for (int attempt = 0; attempt < 4 && !ok && b; attempt++, damp *= 10) ok = inverse_factor(hp, u, b, k, damp);
    free(b);
    *damp_used = ok ? damp / 10 : -1;
}

/* The last factor the sweep computed, kept for the next solve over the same matrix: q, k and v share
 * one Hessian, as do gate and up, and a budget solves each unit's Hessian once per candidate scheme.
 * A hit needs the same K, damping and bytes of H (the permuted, dead-fixed matrix the factor is of, so
 * act-order is in it), and gives the factor's bits, as computing it again would. One entry, replaced
 * on a miss, held until then (or the process's end); matrices past FACTOR_KEEP_K are not kept (two
 * K x K copies: 512 MiB at 8192). */
#define FACTOR_KEEP_K 8192
static struct {
    pthread_mutex_t mu;
    int64_t k;
    double damp0, damp;
    float *hp, *u;
} kept = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void kept_drop(void) {
    free(kept.hp);
    free(kept.u);
    kept.hp = kept.u = NULL;
    kept.k = 0;
}

/* damped_factor through the kept entry: hp and u [K, K]; true when the kept factor was used. */
static bool factor_kept(const float *hp, float *u, int64_t k, double damp0, double *damp_used) {
    size_t bytes = (size_t)(k * k) * sizeof *hp;
    pthread_mutex_lock(&kept.mu);
    if (kept.k == k && kept.damp0 == damp0 && !memcmp(kept.hp, hp, bytes)) {
        memcpy(u, kept.u, bytes);
        *damp_used = kept.damp;
        pthread_mutex_unlock(&kept.mu);
        return true;
    }
    kept_drop();
    pthread_mutex_unlock(&kept.mu);
    damped_factor(hp, u, k, damp0, damp_used);
    if (k > FACTOR_KEEP_K) return false;
    float *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) { free(a); free(b); return false; }
    memcpy(a, hp, bytes);
    memcpy(b, u, bytes);
    pthread_mutex_lock(&kept.mu);
    kept_drop();
    kept.hp = a, kept.u = b, kept.k = k, kept.damp0 = damp0, kept.damp = *damp_used;
    pthread_mutex_unlock(&kept.mu);
    return false;
}

sq_status sq_cpu_factor(const float *h, float *u, int64_t k, double damp, double *damp_used, sq_err *err) {
    (void)err;
    damped_factor(h, u, k, damp, damp_used);
    return SQ_OK;
}

/* ---------------------------------------------------------------- grids as the sweep sees them */

/* The grid GPTQ's sweep rounds onto, column by column. */
typedef struct grid_state {
    const sq_qgrid *g;
    sq_qout *out;
    int64_t n, k, gs;
    const int64_t *perm; /* perm[col] is the source column at position col */
    float *sscale;       /* static groups: every group's grid, from the original W */
    int32_t *szero;
    float *imp;          /* mse: diag(H) [K] in source order, then [K] in the sweep's order */
} grid_state;

static bool is_int(sq_qgrid_kind kind) { return kind == SQ_QGRID_INT_MINMAX || kind == SQ_QGRID_INT_MSE; }

/* Grid of rows [c0, c1) of wt ([K, N]: column c of W is row c) into scale/zero [N]. The mse grid
 * weights column c by imp[c] (the Hessian's diagonal at the column in that position). */
static void group_grid(const float *wt, int64_t n, int64_t r0, int64_t r1, int64_t c0, int64_t c1, const sq_qgrid *p, const float *imp,
                       float *scale, int32_t *zero) {
    if (p->kind == SQ_QGRID_INT_MSE) {
        int64_t r = r0;
        for (; r + 8 <= r1; r += 8) sq_cpu_grid_search8(wt + c0 * n + r, n, imp + c0, c1 - c0, p->bits, p->sym, p->norm, &scale[r], &zero[r]);
        for (; r < r1; r++) sq_qm_grid_search(wt + c0 * n + r, n, imp + c0, c1 - c0, p->bits, p->sym, p->norm, &scale[r], &zero[r]);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        float lo = wt[c0 * n + r], hi = lo;
        for (int64_t c = c0 + 1; c < c1; c++) { lo = fminf(lo, wt[c * n + r]); hi = fmaxf(hi, wt[c * n + r]); }
        sq_qm_grid_params(lo, hi, p->bits, p->sym, &scale[r], &zero[r]);
    }
}

/* Called once with W^T [K, N] (dead inputs zeroed), before any permutation or update. */
static sq_status grid_begin(grid_state *g, const float *wt, sq_err *err) {
    if (!is_int(g->g->kind)) return SQ_OK;
    int64_t n = g->n, k = g->k, gs = g->gs;
    sq_qmatrix *q = g->out->q;
    /* Per-channel (group_size -1): one grid from the whole, not yet updated, W. */
    if (g->g->group_size <= 0) group_grid(wt, n, 0, n, 0, k, g->g, g->imp, q->scale, q->zero);
    /* Static groups: every grid from the original (dead-zeroed) W, before any update or permutation. */
    if (g->g->static_groups && g->g->group_size > 0) {
        g->sscale = malloc((size_t)(q->n_groups * n) * sizeof *g->sscale);
        g->szero = malloc((size_t)(q->n_groups * n) * sizeof *g->szero);
        if (!g->sscale || !g->szero) return sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory");
        for (int64_t c = 0; c < q->n_groups; c++)
            group_grid(wt, n, 0, n, c * gs, (c + 1) * gs < k ? (c + 1) * gs : k, g->g, g->imp, g->sscale + c * n, g->szero + c * n);
    }
    return SQ_OK;
}

/* Rounds wc [N], the current values of source column src (position col of the sweep's order), keeping
 * its codes, and gives the values they stand for in dq [N]. wt is W^T as updated before this lazy block. */
static void grid_column(grid_state *g, int64_t r0, int64_t r1, int64_t col, int64_t src, const float *wt, const float *wc, float *dq) {
    int64_t n = g->n, k = g->k, gs = g->gs;
    if (g->g->kind == SQ_QGRID_FP4) { /* the scale of the source column's group, fixed before the sweep */
        int64_t gs4 = g->g->group_size, ng = k / gs4;
        for (int64_t r = r0; r < r1; r++) {
            float s = g->g->fp8_scale[r * ng + src / gs4];
            uint8_t c = sq_qm_fp4_code(wc[r], s);
            g->out->codes[r * k + src] = c;
            dq[r] = sq_qm_e2m1_decode(c) * s;
        }
        return;
    }
    if (g->g->kind == SQ_QGRID_INT8_CHANNEL) {
        for (int64_t r = r0; r < r1; r++) {
            float s = g->g->fp8_scale[r];
            int8_t c = sq_qm_i8_code(wc[r], s);
            g->out->codes[r * k + src] = (uint8_t)c;
            dq[r] = (float)c * s;
        }
        return;
    }
    if (!is_int(g->g->kind)) {
        bool pc = g->g->kind == SQ_QGRID_FP8_CHANNEL, blk = g->g->kind == SQ_QGRID_FP8_BLOCK;
        for (int64_t r = r0; r < r1; r++) { /* block-wise: the scale of the source column's block, fixed before the sweep */
            float s = g->g->fp8_scale[sq_qm_fp8_scale_idx(pc, blk, r, src, k)];
            uint8_t c = sq_qm_fp8_code(wc[r], s);
            g->out->codes[r * k + src] = c;
            dq[r] = sq_qm_e4m3_decode(c) * s;
        }
        return;
    }
    sq_qmatrix *out = g->out->q;
    float *sc = out->scale;
    int32_t *zr = out->zero;
    if (g->g->group_size > 0) {
        int64_t q;
        if (g->g->static_groups) {
            q = src / gs;
            sc = g->sscale + q * n;
            zr = g->szero + q * n;
        } else {
            q = col / gs;
            sc = out->scale + q * n;
            zr = out->zero + q * n;
            /* The reference reads W here, not the block copy: in-block updates are not seen. */
            if (col % gs == 0) {
                group_grid(wt, n, r0, r1, col, col + gs < k ? col + gs : k, g->g, g->imp ? g->imp + k : NULL, sc, zr);
            }
        }
        out->g_idx[src] = (int32_t)q;
    }
    int maxq = (1 << g->g->bits) - 1;
    uint8_t *qc = out->q + src * n;
    for (int64_t r = r0; r < r1; r++) {
        qc[r] = sq_qm_grid_quant(wc[r], sc[r], zr[r], maxq);
        dq[r] = sc[r] * (float)((int32_t)qc[r] - zr[r]);
    }
}

/* ---------------------------------------------------------------- GPTQ */

typedef struct { float diag; int64_t idx; } diag_item;

static int cmp_diag_desc(const void *a, const void *b) {
    const diag_item *x = a, *y = b;
    if (x->diag != y->diag) return x->diag < y->diag ? 1 : -1;
    return (x->idx > y->idx) - (x->idx < y->idx); /* stable, like torch.argsort(stable) */
}

/* The lazy-batch sweep over rows [r0, r1) of W (columns of wt): GPTQ's updates never mix rows, so
 * rows go in fixed chunks (SWEEP_ROWS, whatever the thread count) and each chunk's arithmetic is the
 * whole matrix's (the same saxpy and sgemm sums per element), the same bytes for every --threads. */
#define SWEEP_ROWS 64

typedef struct {
    const float *u;
    float *wt;
    int64_t n, k, bs;
    grid_state *g;
    float **w1, **e1, **dq; /* per thread: [B, N], [B, N], [N] */
} sweep_job;

static void sweep_rows(const sweep_job *j, int64_t r0, int64_t r1, int ith) {
    int64_t n = j->n, k = j->k, bs = j->bs, nr = r1 - r0;
    const float *u = j->u;
    float *wt = j->wt, *w1 = j->w1[ith], *e1 = j->e1[ith], *dq = j->dq[ith];
    const int64_t *perm = j->g->perm;
    for (int64_t i1 = 0; i1 < k; i1 += bs) {
        int64_t i2 = i1 + bs < k ? i1 + bs : k, cnt = i2 - i1;
        for (int64_t i = 0; i < cnt; i++) memcpy(w1 + i * n + r0, wt + (i1 + i) * n + r0, (size_t)nr * sizeof *w1);
        for (int64_t i = 0; i < cnt; i++) {
            int64_t col = i1 + i;
            float d = u[col * k + col];
            float *wc = w1 + i * n, *ec = e1 + i * n;
            grid_column(j->g, r0, r1, col, perm[col], wt, wc, dq);
            for (int64_t r = r0; r < r1; r++) ec[r] = (wc[r] - dq[r]) / d;
            for (int64_t jj = i + 1; jj < cnt; jj++) cblas_saxpy((int)nr, -u[col * k + i1 + jj], ec + r0, 1, w1 + jj * n + r0, 1);
        }
        if (i2 < k)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(k - i2), (int)nr, (int)cnt, -1.0f, u + i1 * k + i2, (int)k, e1 + r0,
                        (int)n, 1.0f, wt + i2 * n + r0, (int)n);
    }
}

static void sweep_chunk(void *arg, int64_t c, int ith) {
    const sweep_job *j = arg;
    int64_t r0 = c * SWEEP_ROWS, r1 = r0 + SWEEP_ROWS < j->n ? r0 + SWEEP_ROWS : j->n;
    sweep_rows(j, r0, r1, ith);
}

static sq_status sweep(const float *w, const float *h, int64_t n, int64_t k, bool act_order, double damp0, int64_t bs, grid_state *g,
                       int threads, double *damp_used, bool *kept_used, sq_err *err) {
    if (bs <= 0) bs = 128;
    int64_t nchunks = (n + SWEEP_ROWS - 1) / SWEEP_ROWS;
    if (threads < 1) threads = 1;
    if (threads > nchunks) threads = (int)nchunks;
    sq_status s = SQ_OK;
    float *wt = calloc((size_t)(n * k), sizeof *wt);     /* [K, N] W transposed, then permuted */
    float *tmp = NULL;
    float *hp = malloc((size_t)(k * k) * sizeof *hp);    /* [K, K] H permuted */
    float *u = malloc((size_t)(k * k) * sizeof *u);      /* [K, K] upper factor of H^-1 */
    float *w1[SQ_PAR_MAX_THREADS] = {0}, *e1[SQ_PAR_MAX_THREADS] = {0}, *dq[SQ_PAR_MAX_THREADS] = {0};
    bool bufs = true;
    for (int t = 0; t < threads; t++) {
        w1[t] = malloc((size_t)(bs * n) * sizeof *w1[t]); /* [B, N] the block being quantised */
        e1[t] = malloc((size_t)(bs * n) * sizeof *e1[t]); /* [B, N] its scaled errors */
        dq[t] = malloc((size_t)n * sizeof *dq[t]);
        bufs = bufs && w1[t] && e1[t] && dq[t];
    }
    int64_t *perm = malloc((size_t)k * sizeof *perm);
    diag_item *items = malloc((size_t)k * sizeof *items);
    *damp_used = -1;
    if (!wt || !hp || !u || !bufs || !perm || !items) { s = sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory (K=%lld)", (long long)k); goto done; }

    /* Dead inputs (no calibration signal): H[d,d] = 1, W[:,d] = 0. u holds the fixed H for now. */
    memcpy(u, h, (size_t)(k * k) * sizeof *u);
    for (int64_t c = 0; c < k; c++)
        if (h[c * k + c] == 0) u[c * k + c] = 1.0f;
    for (int64_t r0 = 0; r0 < n; r0 += 32) /* W^T in 32 x 32 tiles */
        for (int64_t c0 = 0; c0 < k; c0 += 32)
            for (int64_t c = c0; c < c0 + 32 && c < k; c++) {
                bool dead = h[c * k + c] == 0;
                for (int64_t r = r0; r < r0 + 32 && r < n; r++) wt[c * n + r] = dead ? 0.0f : w[r * k + c];
            }
    if ((s = grid_begin(g, wt, err))) goto done;

    for (int64_t c = 0; c < k; c++) { items[c].diag = u[c * k + c]; items[c].idx = c; }
    if (act_order) qsort(items, (size_t)k, sizeof *items, cmp_diag_desc);
    for (int64_t c = 0; c < k; c++) perm[c] = items[c].idx;
    g->perm = perm;
    if (g->imp) /* the importances in the sweep's order */
        for (int64_t c = 0; c < k; c++) g->imp[k + c] = g->imp[perm[c]];
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < k; j++) hp[i * k + j] = u[perm[i] * k + perm[j]];
    if (!(tmp = malloc((size_t)(n * k) * sizeof *tmp))) { s = sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory"); goto done; }
    for (int64_t c = 0; c < k; c++) memcpy(tmp + c * n, wt + perm[c] * n, (size_t)n * sizeof *tmp);
    free(wt);
    wt = tmp;
    tmp = NULL;

    double damp;
    *kept_used = factor_kept(hp, u, k, damp0, &damp);
    if (damp < 0) goto done;
    *damp_used = damp;

    sweep_job job = {.u = u, .wt = wt, .n = n, .k = k, .bs = bs, .g = g, .w1 = w1, .e1 = e1, .dq = dq};
    sq_cpu_par_chunks(threads, nchunks, sweep_chunk, &job);
done:
    free(wt);
    free(tmp);
    free(hp);
    free(u);
    for (int t = 0; t < threads; t++) free(w1[t]), free(e1[t]), free(dq[t]);
    free(perm);
    free(items);
    g->perm = NULL;
    return s;
}

static sq_status check_grid(const sq_qgrid *g, int64_t k, const sq_qout *out, sq_err *err) {
    if (is_int(g->kind) ? !out->q || (g->bits != 4 && g->bits != 8) : (g->kind != SQ_QGRID_FP8_TENSOR && g->kind != SQ_QGRID_FP8_CHANNEL && g->kind != SQ_QGRID_FP8_BLOCK && g->kind != SQ_QGRID_FP4 && g->kind != SQ_QGRID_INT8_CHANNEL) || !out->codes || !g->fp8_scale ||
        (g->kind == SQ_QGRID_FP4 && (g->group_size <= 0 || k % g->group_size)))
        return sq_fail(err, SQ_ERR_ARG, "quantiser: grid %s lacks its output or its settings", sq_qgrid_name(g->kind));
    return SQ_OK;
}

sq_status sq_cpu_gptq(const float *w, const float *h, const sq_hess *hs, int64_t n, int64_t k, const sq_qgrid *p, const sq_gptq_args *a,
                      sq_qout *out, double *damp_used, sq_err *err) {
    (void)hs; /* h is the same matrix, on the host */
    *damp_used = -1;
    sq_status s = check_grid(p, k, out, err);
    if (s) return s;
    grid_state g = {.g = p, .out = out, .n = n, .k = k, .gs = p->group_size > 0 ? p->group_size : k};
    if (p->kind == SQ_QGRID_INT_MSE) {
        /* The grid search weights each column by diag(H), the per-channel second moment of its input */
        if (!(g.imp = malloc((size_t)(2 * k) * sizeof *g.imp))) return sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory");
        for (int64_t c = 0; c < k; c++) g.imp[c] = h[c * k + c];
    }
    out->factor_kept = false;
    s = sweep(w, h, n, k, a->act_order, a->damp, a->block_size, &g, p->threads, damp_used, &out->factor_kept, err);
    if (!s && *damp_used >= 0 && is_int(p->kind) && p->static_groups && p->group_size > 0) {
        sq_qmatrix *q = out->q;
        memcpy(q->scale, g.sscale, (size_t)(q->n_groups * n) * sizeof *g.sscale);
        memcpy(q->zero, g.szero, (size_t)(q->n_groups * n) * sizeof *g.szero);
        for (int64_t c = 0; c < k; c++) q->g_idx[c] = (int32_t)(c / g.gs);
    }
    free(g.sscale);
    free(g.szero);
    free(g.imp);
    return s;
}

/* ---------------------------------------------------------------- RTN */

typedef struct {
    const float *w;
    int64_t n, k, gs;
    int maxq;
    const sq_qgrid *p;
    const float *imp;
    sq_qmatrix *out;
    _Atomic bool nomem;          /* a chunk could not get its tile */
} rtn_job;

/* RTN on the mse grid of rows [c SWEEP_ROWS, (c+1) SWEEP_ROWS): each group's tile of eight rows
 * transposed and searched side by side. */
static void rtn_chunk(void *arg, int64_t ch, int ith) {
    (void)ith;
    rtn_job *j = arg;
    int64_t n = j->n, k = j->k, gs = j->gs;
    sq_qmatrix *out = j->out;
    float *tile = malloc((size_t)gs * 8 * sizeof *tile);
    if (!tile) { j->nomem = true; return; }
    for (int64_t r0 = ch * SWEEP_ROWS; r0 < (ch + 1) * SWEEP_ROWS; r0 += 8)
        for (int64_t g = 0; g < out->n_groups; g++) {
            int64_t c0 = g * gs, c1 = c0 + gs < k ? c0 + gs : k;
            for (int64_t c = c0; c < c1; c++)
                for (int t = 0; t < 8; t++) tile[(c - c0) * 8 + t] = j->w[(r0 + t) * k + c];
            float sc[8];
            int32_t z[8];
            sq_cpu_grid_search8(tile, 8, j->imp ? j->imp + c0 : NULL, c1 - c0, j->p->bits, j->p->sym, j->p->norm, sc, z);
            for (int t = 0; t < 8; t++) {
                int64_t r = r0 + t;
                out->scale[g * n + r] = sc[t];
                out->zero[g * n + r] = z[t];
                for (int64_t c = c0; c < c1; c++) out->q[c * n + r] = sq_qm_grid_quant(j->w[r * k + c], sc[t], z[t], j->maxq);
            }
        }
    free(tile);
}

sq_status sq_cpu_rtn(const float *w, int64_t n, int64_t k, const sq_qgrid *p, sq_qout *o, sq_err *err) {
    sq_status s = check_grid(p, k, o, err);
    if (s) return s;
    if (p->kind == SQ_QGRID_FP4) {
        int64_t ng = k / p->group_size;
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < k; j++) o->codes[r * k + j] = sq_qm_fp4_code(w[r * k + j], p->fp8_scale[r * ng + j / p->group_size]);
        return SQ_OK;
    }
    if (p->kind == SQ_QGRID_INT8_CHANNEL) {
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < k; j++) o->codes[r * k + j] = (uint8_t)sq_qm_i8_code(w[r * k + j], p->fp8_scale[r]);
        return SQ_OK;
    }
    if (!is_int(p->kind)) {
        bool pc = p->kind == SQ_QGRID_FP8_CHANNEL, blk = p->kind == SQ_QGRID_FP8_BLOCK;
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < k; j++) o->codes[r * k + j] = sq_qm_fp8_code(w[r * k + j], p->fp8_scale[sq_qm_fp8_scale_idx(pc, blk, r, j, k)]);
        return SQ_OK;
    }
    sq_qmatrix *out = o->q;
    int64_t gs = p->group_size > 0 ? p->group_size : k;
    int maxq = (1 << p->bits) - 1;
    const float *imp = p->imp;
    for (int64_t c = 0; c < k; c++) out->g_idx[c] = (int32_t)(c / gs);
    int64_t r0 = 0;
    if (p->kind == SQ_QGRID_INT_MSE) { /* rows in fixed chunks on the threads, eight at a time within */
        rtn_job j = {w, n, k, gs, maxq, p, imp, out, false};
        r0 = n / SWEEP_ROWS * SWEEP_ROWS;
        sq_cpu_par_chunks(p->threads, n / SWEEP_ROWS, rtn_chunk, &j);
        if (j.nomem) return sq_fail(err, SQ_ERR_NOMEM, "RTN: out of memory");
    }
    for (int64_t r = r0; r < n; r++) {
        const float *row = w + r * k;
        for (int64_t g = 0; g < out->n_groups; g++) {
            int64_t c0 = g * gs, c1 = c0 + gs < k ? c0 + gs : k;
            float sc;
            int32_t z;
            if (p->kind == SQ_QGRID_INT_MSE) sq_qm_grid_search(row + c0, 1, imp ? imp + c0 : NULL, c1 - c0, p->bits, p->sym, p->norm, &sc, &z);
            else {
                float lo = row[c0], hi = row[c0];
                for (int64_t c = c0; c < c1; c++) { lo = fminf(lo, row[c]); hi = fmaxf(hi, row[c]); }
                sq_qm_grid_params(lo, hi, p->bits, p->sym, &sc, &z);
            }
            out->scale[g * n + r] = sc;
            out->zero[g * n + r] = z;
            for (int64_t c = c0; c < c1; c++) out->q[c * n + r] = sq_qm_grid_quant(row[c], sc, z, maxq);
        }
    }
    return SQ_OK;
}

bool sq_cpu_supports(sq_op op, sq_qgrid_kind grid) {
    (void)grid;
    return op >= 0 && op < SQ_OP_COUNT;
}
