/* gptq.c: GPTQ (Frantar et al.) on one matrix, following IST-DASLab's reference step for step,
 * with the Hessian handled through BLAS and LAPACK; and the Hessian accumulator. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

/* ---------------------------------------------------------------- Hessian */

sq_status sq_hessian_init(sq_hessian *hs, int64_t k, sq_err *err) {
    hs->k = k;
    hs->tokens = 0;
    hs->dev = NULL;
    hs->dev_err = (sq_err){0};
    hs->h = sq_calloc((size_t)(k * k), sizeof *hs->h, err);
    return hs->h ? SQ_OK : SQ_ERR_NOMEM;
}

void sq_hessian_free(sq_hessian *hs) {
    if (!hs) return;
    sq_hessian_cuda_free(hs);
    free(hs->h);
    hs->h = NULL;
}

sq_status sq_hessian_check(const sq_hessian *hs, sq_err *err) {
    if (!hs->dev_err.code) return SQ_OK;
    if (err) *err = hs->dev_err;
    return hs->dev_err.code;
}

void sq_hessian_add(sq_hessian *hs, const float *x, int64_t t) {
    if (t <= 0) return;
    if (hs->dev) { sq_hessian_cuda_add(hs, x, t); return; }
    /* Running mean, as the reference: H *= n/(n+t); H += (2/(n+t)) X^T X. */
    int64_t total = hs->tokens + t;
    float keep = (float)((double)hs->tokens / (double)total);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)hs->k, (int)t, (float)(2.0 / (double)total), x, (int)hs->k, keep,
                hs->h, (int)hs->k);
    hs->tokens = total;
}

void sq_hessian_finish(sq_hessian *hs) {
    if (hs->dev) { sq_hessian_cuda_finish(hs); return; }
    int64_t k = hs->k;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < i; j++) hs->h[i * k + j] = hs->h[j * k + i];
}

double sq_quant_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k) {
    /* ||D X^T||^2 / ||W X^T||^2 = tr(D H D^T) / tr(W H W^T); both share the factor T/2. */
    float *d = malloc((size_t)(n * k) * sizeof *d), *dh = malloc((size_t)(n * k) * sizeof *dh);
    if (!d || !dh) { free(d); free(dh); return NAN; }
    double num = 0, den = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < n * k; i++) d[i] = pass ? w[i] : w[i] - q[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)k, (int)k, 1.0f, d, (int)k, h, (int)k, 0.0f, dh, (int)k);
        double acc = 0;
        for (int64_t i = 0; i < n * k; i++) acc += (double)d[i] * dh[i];
        if (pass) den = acc; else num = acc;
    }
    free(d);
    free(dh);
    if (den <= 0) return num <= 0 ? 0.0 : INFINITY;
    return sqrt(fmax(num, 0.0) / den);
}

/* ---------------------------------------------------------------- GPTQ */

typedef struct { float diag; int64_t idx; } diag_item;

static int cmp_diag_desc(const void *a, const void *b) {
    const diag_item *x = a, *y = b;
    if (x->diag != y->diag) return x->diag < y->diag ? 1 : -1;
    return (x->idx > y->idx) - (x->idx < y->idx); /* stable, like torch.argsort(stable) */
}

/* Grid of rows [c0, c1) of wt ([K, N]: column c of W is row c) into scale/zero [N]. The mse grid
 * weights column c by imp[c] (the Hessian's diagonal at the column in that position), with x and d
 * scratch of c1 - c0 floats. */
static void group_grid(const float *wt, int64_t n, int64_t c0, int64_t c1, const sq_qparams *p, const float *imp, float *x, float *d,
                       float *scale, int32_t *zero) {
    if (p->grid == SQ_GRID_MSE) {
        for (int64_t c = c0; c < c1; c++) d[c - c0] = imp[c];
        for (int64_t r = 0; r < n; r++) {
            for (int64_t c = c0; c < c1; c++) x[c - c0] = wt[c * n + r];
            sq_grid_search(x, d, c1 - c0, p->bits, p->sym, p->grid_norm, &scale[r], &zero[r]);
        }
        return;
    }
    for (int64_t r = 0; r < n; r++) {
        float lo = wt[c0 * n + r], hi = lo;
        for (int64_t c = c0 + 1; c < c1; c++) { lo = fminf(lo, wt[c * n + r]); hi = fmaxf(hi, wt[c * n + r]); }
        sq_grid_params(lo, hi, p->bits, p->sym, &scale[r], &zero[r]);
    }
}

/* U = upper Cholesky factor of (H + damp I)^-1; returns false when H will not factor. */
static bool inverse_factor(const float *hp, float *u, int64_t k, double damp_frac) {
    double mean = 0;
    for (int64_t i = 0; i < k; i++) mean += hp[i * k + i];
    mean /= (double)k;
    memcpy(u, hp, (size_t)(k * k) * sizeof *u);
    for (int64_t i = 0; i < k; i++) u[i * k + i] += (float)(damp_frac * mean);
    if (LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', (int)k, u, (int)k) != 0) return false;
    if (LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', (int)k, u, (int)k) != 0) return false;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = i + 1; j < k; j++) u[i * k + j] = u[j * k + i];
    if (LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', (int)k, u, (int)k) != 0) return false;
    for (int64_t i = 0; i < k * k; i++)
        if (!isfinite(u[i]) && (i % k) >= (i / k)) return false;
    return true;
}

sq_status sq_gptq_sweep(const float *w, const float *h, int64_t n, int64_t k, bool act_order, double damp0, int64_t bs,
                        sq_gptq_grid *g, double *damp_used, sq_err *err) {
    if (bs <= 0) bs = 128;
    sq_status s = SQ_OK;
    float *wt = calloc((size_t)(n * k), sizeof *wt);     /* [K, N] W transposed, then permuted */
    float *tmp = NULL;
    float *hp = malloc((size_t)(k * k) * sizeof *hp);    /* [K, K] H permuted */
    float *u = malloc((size_t)(k * k) * sizeof *u);      /* [K, K] upper factor of H^-1 */
    float *w1 = malloc((size_t)(bs * n) * sizeof *w1);   /* [B, N] the block being quantised */
    float *e1 = malloc((size_t)(bs * n) * sizeof *e1);   /* [B, N] its scaled errors */
    float *dq = malloc((size_t)n * sizeof *dq);
    int64_t *perm = malloc((size_t)k * sizeof *perm);
    diag_item *items = malloc((size_t)k * sizeof *items);
    *damp_used = -1;
    if (!wt || !hp || !u || !w1 || !e1 || !dq || !perm || !items) { s = sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory (K=%lld)", (long long)k); goto done; }

    /* Dead inputs (no calibration signal): H[d,d] = 1, W[:,d] = 0. u holds the fixed H for now. */
    memcpy(u, h, (size_t)(k * k) * sizeof *u);
    for (int64_t c = 0; c < k; c++) {
        bool dead = h[c * k + c] == 0;
        if (dead) u[c * k + c] = 1.0f;
        for (int64_t r = 0; r < n; r++) wt[c * n + r] = dead ? 0.0f : w[r * k + c];
    }
    if (g->begin && (s = g->begin(g, wt, err))) goto done;

    for (int64_t c = 0; c < k; c++) { items[c].diag = u[c * k + c]; items[c].idx = c; }
    if (act_order) qsort(items, (size_t)k, sizeof *items, cmp_diag_desc);
    for (int64_t c = 0; c < k; c++) perm[c] = items[c].idx;
    g->perm = perm;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < k; j++) hp[i * k + j] = u[perm[i] * k + perm[j]];
    if (!(tmp = malloc((size_t)(n * k) * sizeof *tmp))) { s = sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory"); goto done; }
    for (int64_t c = 0; c < k; c++) memcpy(tmp + c * n, wt + perm[c] * n, (size_t)n * sizeof *tmp);
    free(wt);
    wt = tmp;
    tmp = NULL;

    double damp = damp0;
    bool ok = false;
    for (int attempt = 0; attempt < 4 && !ok; attempt++, damp *= 10) ok = inverse_factor(hp, u, k, damp);
    if (!ok) {
        sq_log(SQ_LOG_WARN, "GPTQ: Hessian [%lld x %lld] will not factor even with damping %.3g; using RTN for this matrix",
               (long long)k, (long long)k, damp / 10);
        goto done;
    }
    *damp_used = damp / 10;

    for (int64_t i1 = 0; i1 < k; i1 += bs) {
        int64_t i2 = i1 + bs < k ? i1 + bs : k, cnt = i2 - i1;
        memcpy(w1, wt + i1 * n, (size_t)(cnt * n) * sizeof *w1);
        for (int64_t i = 0; i < cnt; i++) {
            int64_t col = i1 + i;
            float d = u[col * k + col];
            float *wc = w1 + i * n, *ec = e1 + i * n;
            g->column(g, col, perm[col], wt, wc, dq);
            for (int64_t r = 0; r < n; r++) ec[r] = (wc[r] - dq[r]) / d;
            for (int64_t j = i + 1; j < cnt; j++) cblas_saxpy((int)n, -u[col * k + i1 + j], ec, 1, w1 + j * n, 1);
        }
        if (i2 < k)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(k - i2), (int)n, (int)cnt, -1.0f, u + i1 * k + i2, (int)k, e1,
                        (int)n, 1.0f, wt + i2 * n, (int)n);
    }
done:
    free(wt);
    free(tmp);
    free(hp);
    free(u);
    free(w1);
    free(e1);
    free(dq);
    free(perm);
    free(items);
    g->perm = NULL;
    return s;
}

/* The integer grid as GPTQ's sweep sees it: groups of K/g columns, each with its scale and zero per row. */
typedef struct {
    sq_gptq_grid base;
    const sq_qparams *p;
    sq_qmatrix *out;
    int64_t n, k, gs;
    float *sscale;       /* static groups: every group's grid, from the original W */
    int32_t *szero;
    float *imp;          /* mse: diag(H) [K] in source order, then [K] in the sweep's order */
    float *x, *d;        /* mse: one group's values and importances [gs] */
} int_grid;

static sq_status int_begin(sq_gptq_grid *gg, const float *wt, sq_err *err) {
    int_grid *g = (int_grid *)gg;
    int64_t n = g->n, k = g->k, gs = g->gs;
    /* Per-channel (group_size -1): one grid from the whole, not yet updated, W. */
    if (g->p->group_size <= 0) group_grid(wt, n, 0, k, g->p, g->imp, g->x, g->d, g->out->scale, g->out->zero);
    /* Static groups: every grid from the original (dead-zeroed) W, before any update or permutation. */
    if (g->p->static_groups && g->p->group_size > 0) {
        g->sscale = malloc((size_t)(g->out->n_groups * n) * sizeof *g->sscale);
        g->szero = malloc((size_t)(g->out->n_groups * n) * sizeof *g->szero);
        if (!g->sscale || !g->szero) return sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory");
        for (int64_t q = 0; q < g->out->n_groups; q++)
            group_grid(wt, n, q * gs, (q + 1) * gs < k ? (q + 1) * gs : k, g->p, g->imp, g->x, g->d, g->sscale + q * n, g->szero + q * n);
    }
    return SQ_OK;
}

static void int_column(sq_gptq_grid *gg, int64_t col, int64_t src, const float *wt, const float *wc, float *dq) {
    int_grid *g = (int_grid *)gg;
    int64_t n = g->n, k = g->k, gs = g->gs;
    sq_qmatrix *out = g->out;
    float *sc = out->scale;
    int32_t *zr = out->zero;
    if (g->p->group_size > 0) {
        int64_t q;
        if (g->p->static_groups) {
            q = src / gs;
            sc = g->sscale + q * n;
            zr = g->szero + q * n;
        } else {
            q = col / gs;
            sc = out->scale + q * n;
            zr = out->zero + q * n;
            /* The reference reads W here, not the block copy: in-block updates are not seen. */
            if (col % gs == 0) {
                if (g->imp && col == 0) /* the importances in the sweep's order, once */
                    for (int64_t c = 0; c < k; c++) g->imp[k + c] = g->imp[gg->perm[c]];
                group_grid(wt, n, col, col + gs < k ? col + gs : k, g->p, g->imp ? g->imp + k : NULL, g->x, g->d, sc, zr);
            }
        }
        out->g_idx[src] = (int32_t)q;
    }
    int maxq = (1 << g->p->bits) - 1;
    uint8_t *qc = out->q + src * n;
    for (int64_t r = 0; r < n; r++) {
        qc[r] = sq_grid_quant(wc[r], sc[r], zr[r], maxq);
        dq[r] = sc[r] * (float)((int32_t)qc[r] - zr[r]);
    }
}

sq_status sq_quant_gptq(const float *w, const float *h, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    sq_status s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err);
    if (s) return s;
    int_grid g = {.base = {.begin = int_begin, .column = int_column}, .p = p, .out = out, .n = n, .k = k,
                  .gs = p->group_size > 0 ? p->group_size : k};
    if (p->grid == SQ_GRID_MSE) {
        /* The grid search weights each column by diag(H), the per-channel second moment of its input */
        g.imp = malloc((size_t)(2 * k) * sizeof *g.imp);
        g.x = malloc((size_t)g.gs * sizeof *g.x);
        g.d = malloc((size_t)g.gs * sizeof *g.d);
        if (!g.imp || !g.x || !g.d) s = sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory");
        for (int64_t c = 0; c < k && !s; c++) g.imp[c] = h[c * k + c];
    }
    if (!s) s = sq_gptq_sweep(w, h, n, k, p->act_order, p->damp, p->block_size, &g.base, &out->damp_used, err);
    if (!s && out->damp_used < 0) {
        sq_qmatrix_free(out);
        s = sq_quant_rtn_weighted(w, n, k, p, g.imp, out, err);
        if (!s) out->fallback = 1;
    } else if (!s && p->static_groups && p->group_size > 0) {
        memcpy(out->scale, g.sscale, (size_t)(out->n_groups * n) * sizeof *g.sscale);
        memcpy(out->zero, g.szero, (size_t)(out->n_groups * n) * sizeof *g.szero);
        for (int64_t c = 0; c < k; c++) out->g_idx[c] = (int32_t)(c / g.gs);
    }
    free(g.sscale);
    free(g.szero);
    free(g.imp);
    free(g.x);
    free(g.d);
    if (s) sq_qmatrix_free(out);
    return s;
}
