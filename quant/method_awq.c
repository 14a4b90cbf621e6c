/* method_awq.c: the awq and awq+gptq rows. Their block-begin hook takes every site's input from the
 * full-precision block (each FFN unit's own tokens; a mixture of experts' whole input too), searches
 * each scale set on its module's output, folds the scales (checked to leave the block, and a mixture's
 * routers, unchanged), and clips; the common stage loop then quantises each linear on the AWQ grid (or
 * by GPTQ with the scaled inputs' Hessian), and the block-end hook writes the folded norms, biases and
 * routers. Scale sets: [q, k, v] after input_layernorm; o after v (when the shapes line up); the FFN's
 * gate and up after post_attention_layernorm, for a mixture every expert's and the shared expert's as
 * one set (the router and shared-expert gate compensated); each unit's down after its own up. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/par.h"
#include "../formats/dtype.h"
#include "../kernels/backend.h"
#include "awq.h"
#include "method.h"

/* Inputs seen at one site by one unit, over every calibration token it saw. */
typedef struct {
    float *x;                    /* (n, dim) */
    int64_t n, cap;
    int dim;
} feat_buf;

typedef struct {
    int units;                   /* this block's FFN units */
    int max_units;
    feat_buf *feat;              /* (AWQ_SITES, max_units + 1): [site][unit]; unit `units` at SQ_SITE_GATEUP: a mixture's whole input;
                                  * SQ_SITE_ATTN_OUT, SQ_SITE_FFN_OUT (unit 0): the full-precision block's module outputs */
    float **wf;                  /* (max_units, SQ_LIN_COUNT) the block's weights as floats (scaled), in use by the model */
    char (*why)[SQ_LIN_COUNT][128]; /* (max_units) why each linear is kept ("" when quantised) */
    double *alpha;               /* (max_units, SQ_LIN_COUNT) the exponent of its scale set (-1: not scaled) */
    float *router[2];            /* the compensated router and shared-expert gate, in use by the model */
    int row0;                    /* this block's first report row */
    double fold_max, router_fold_max;
    bool moe;                    /* this block is a mixture of experts */
} awq_state;

/* The sites whose rows a block keeps: the four linear inputs and the two module outputs (unit 0). */
#define AWQ_SITES 6

static const sq_site lin_site[SQ_LIN_COUNT] = {SQ_SITE_QKV, SQ_SITE_QKV, SQ_SITE_QKV, SQ_SITE_O,
                                               SQ_SITE_GATEUP, SQ_SITE_GATEUP, SQ_SITE_DOWN};

static feat_buf *feat(awq_state *a, sq_site site, int unit) { return &a->feat[(int)site * (a->max_units + 1) + unit]; }
static float **wf(awq_state *a, int unit, sq_lin j) { return &a->wf[unit * SQ_LIN_COUNT + j]; }

sq_status sq_awq_init(sq_qrun *r, sq_err *err) {
    awq_state *a = sq_calloc(1, sizeof *a, err);
    if (!a) return SQ_ERR_NOMEM;
    r->ms = a;
    a->max_units = r->max_units;
    a->feat = sq_calloc((size_t)(AWQ_SITES * (a->max_units + 1)), sizeof *a->feat, err);
    a->wf = sq_calloc((size_t)(a->max_units * SQ_LIN_COUNT), sizeof *a->wf, err);
    a->why = sq_calloc((size_t)a->max_units, sizeof *a->why, err);
    a->alpha = sq_calloc((size_t)(a->max_units * SQ_LIN_COUNT), sizeof *a->alpha, err);
    return a->feat && a->wf && a->why && a->alpha ? SQ_OK : SQ_ERR_NOMEM;
}

void sq_awq_fini(sq_qrun *r) {
    awq_state *a = r->ms;
    if (!a) return;
    for (int i = 0; a->feat && i < AWQ_SITES * (a->max_units + 1); i++) free(a->feat[i].x);
    for (int i = 0; a->wf && i < a->max_units * SQ_LIN_COUNT; i++) free(a->wf[i]);
    free(a->feat);
    free(a->wf);
    free(a->why);
    free(a->alpha);
    free(a->router[0]);
    free(a->router[1]);
    free(a);
    r->ms = NULL;
}

void sq_awq_fold_figures(const sq_qrun *r, double *block, double *router) {
    const awq_state *a = r->ms;
    *block = a ? a->fold_max : 0;
    *router = a ? a->router_fold_max : 0;
}

/* The feature pass: every site's input of every unit appended (the full-precision block). */
typedef struct {
    awq_state *a;
    sq_err *err;
    bool failed;
} tap_ctx;

static bool tap_all(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    tap_ctx *t = user;
    awq_state *a = t->a;
    if (unit > a->units || (unit == a->units && (site != SQ_SITE_GATEUP || !a->moe)) || t->failed) return false;
    if (site == SQ_SITE_FFN_OUT && a->moe) return false; /* a mixture's output is not a reference (see kept_output) */
    feat_buf *f = feat(a, site, unit);
    if (f->n + n > f->cap) {
        int64_t cap = f->cap ? f->cap : n;
        while (cap < f->n + n) cap *= 2;
        float *p = realloc(f->x, (size_t)(cap * dim) * sizeof *p);
        if (!p) {
            t->failed = true;
            sq_fail(t->err, SQ_ERR_NOMEM, "AWQ: out of memory");
            return false;
        }
        f->x = p;
        f->cap = cap;
    }
    f->dim = dim;
    memcpy(f->x + f->n * dim, x, (size_t)n * (size_t)dim * sizeof *x);
    f->n += n;
    return false;
}

/* The counting pass of a mixture: the tokens each expert is routed. */
static bool tap_count(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    (void)x, (void)dim;
    sq_calib *cal = user;
    if (site == SQ_SITE_GATEUP && unit < cal->c->n_experts) cal->unit_tokens[unit] += n;
    return false;
}

/* One AWQ scale set: the linears (unit, lin) scaled together, what precedes them, the module whose
 * output the loss compares, and its input. */
typedef struct {
    sq_site site;
    int nl;
    int *unit;
    sq_lin *lin;
    int prev_norm;               /* 0 / 1: input_layernorm / post_attention_layernorm; -1: prev_lin of prev_unit */
    int prev_unit;
    sq_lin prev_lin;
    int module;                  /* 0: attention, 1: FFN, 2: the single linear itself */
    feat_buf *x;                 /* the module's input */
} awq_set;

typedef struct {
    sq_qrun *r;
    int l;
    const awq_set *set;
    const float *fp;             /* the module's full-precision output (ntok, out) */
    float *out;                  /* scratch (ntok, out) */
    int64_t out_dim;
    const float *h;              /* a single linear's set: X^T X [k, k] of its input (NULL: its output compared) */
    const float *w;              /* that linear's weights as they are */
    int wstep;                   /* the subsample: every wstep-th calibration window (1: every one) */
    bool m2win;                  /* a single linear's set run window by window (its subsample cheaper than X^T X) */
    sq_err *err;
    sq_status status;
} awq_ctx;

/* The module's output on every calibration token with the set's linears as given (NULL: as they are). */
static sq_status awq_module(awq_ctx *c, float *const *weights, float *out, int step) {
    sq_qrun *r = c->r;
    awq_state *a = r->ms;
    const awq_set *set = c->set;
    sq_calib *cal = r->cal;
    sq_status s = SQ_OK;
    for (int i = 0; i < set->nl && weights; i++) {
        const sq_wmat *cur = sq_model_linear_unit(r->m, c->l, set->unit[i], set->lin[i]);
        sq_wmat w = {.dtype = SQ_DT_F32, .rows = cur->rows, .cols = cur->cols, .data = weights[i]};
        if ((s = sq_model_set_linear_unit(r->m, c->l, set->unit[i], set->lin[i], &w, c->err))) return s;
    }
    int64_t T = cal->o.seqlen, k = set->x->dim, ntok = set->x->n;
    const float *x = set->x->x;
    if (set->module == 2 && c->m2win) { /* the windows of the subsample, each through the runtime's threaded GEMM */
        const sq_wmat *w = sq_model_linear_unit(r->m, c->l, set->unit[0], set->lin[0]);
        for (int smp = 0; smp < cal->o.nsamples && !s; smp += step) {
            s = sq_state_matmul(cal->st, w, x + smp * T * k, out + smp * T * w->rows, (int)T, c->err);
            r->f_quant += 2.0 * (double)T * (double)w->rows * (double)k;
        }
    } else if (set->module == 2) {
        const sq_wmat *w = sq_model_linear_unit(r->m, c->l, set->unit[0], set->lin[0]);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ntok, (int)w->rows, (int)k, 1.0f, x, (int)k, w->data, (int)k, 0.0f, out,
                    (int)w->rows);
        r->f_quant += 2.0 * (double)ntok * (double)w->rows * (double)k;
    } else
        for (int smp = 0; smp < cal->o.nsamples && !s; smp += step)
            s = sq_layer_part(cal->st, c->l, set->module == 0 ? SQ_PART_ATTENTION : SQ_PART_FFN, x + smp * T * k, (int)T,
                              out + smp * T * c->out_dim, c->err);
    for (int i = 0; i < set->nl && weights; i++) { /* back to the (scaled) full-precision weights */
        sq_wmat w = *sq_model_linear_unit(r->m, c->l, set->unit[i], set->lin[i]);
        w.data = *wf(a, set->unit[i], set->lin[i]);
        sq_status s2 = sq_model_set_linear_unit(r->m, c->l, set->unit[i], set->lin[i], &w, c->err);
        if (!s) s = s2;
    }
    return s;
}

static double awq_loss(void *user, float *const *weights, bool full) {
    awq_ctx *c = user;
    if (c->h) { /* ||X W^T - X Q^T||^2 = tr(D X^T X D^T), D = W - Q */
        const sq_wmat *wm = sq_model_linear_unit(c->r->m, c->l, c->set->unit[0], c->set->lin[0]);
        double q = NAN;
        sq_status s = sq_backend_cpu()->quad_error(c->w, weights[0], c->h, wm->rows, wm->cols, c->r->o->threads, &q, c->err);
        if (s) {
            c->status = s;
            return NAN;
        }
        c->r->f_quant += 2.0 * (double)wm->rows * (double)wm->cols * (double)wm->cols;
        return q / ((double)c->set->x->n * (double)wm->rows);
    }
    int step = full ? 1 : c->wstep;
    sq_status s = awq_module(c, weights, c->out, step);
    if (s) {
        c->status = s;
        return NAN;
    }
    /* the windows it ran on (a module-2 set runs on every token at once; its wstep is 1) */
    int64_t win = c->set->module == 2 && !c->m2win ? c->set->x->n * c->out_dim : (int64_t)c->r->cal->o.seqlen * c->out_dim, m = 0;
    double acc = 0;
    for (int64_t i0 = 0; i0 < c->set->x->n * c->out_dim; i0 += step * win) {
        for (int64_t i = i0; i < i0 + win; i++) {
            double d = (double)c->fp[i] - c->out[i];
            acc += d * d;
        }
        m += win;
    }
    return acc / (double)m;
}

/* The largest |y1 - y0| over the largest |y0| of x0 R0^T against x1 R1^T (ntok, k; R (rows, k)). */
static double logits_change(const float *x0, const float *r0, const float *x1, const float *r1, int64_t ntok, int64_t k, int64_t rows) {
    double dmax = 0, ymax = 0;
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t e = 0; e < rows; e++) {
            double y0 = 0, y1 = 0;
            for (int64_t c = 0; c < k; c++) {
                y0 += (double)x0[t * k + c] * r0[e * k + c];
                y1 += (double)x1[t * k + c] * r1[e * k + c];
            }
            dmax = fmax(dmax, fabs(y1 - y0));
            ymax = fmax(ymax, fabs(y0));
        }
    return ymax > 0 ? dmax / ymax : dmax;
}

/* A mixture's router and shared-expert gate see the folded norm's output: their columns are
 * multiplied by s, and their logits on every calibration token checked to be what they were. */
static sq_status compensate_routers(sq_qrun *r, int l, const float *s, const float *x_old, const float *x_new, int64_t ntok, sq_err *err) {
    awq_state *a = r->ms;
    for (int which = 0; which < 2; which++) {
        const sq_wmat *rw = sq_model_router(r->m, l, which);
        if (!rw) continue;
        int64_t rows = rw->rows, k = rw->cols;
        float *orig = malloc((size_t)(rows * k) * sizeof *orig), *comp = malloc((size_t)(rows * k) * sizeof *comp);
        if (!orig || !comp) { free(orig); free(comp); return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); }
        sq_dtype_to_f32(rw->dtype, rw->data, orig, (size_t)(rows * k));
        for (int64_t e = 0; e < rows; e++)
            for (int64_t c = 0; c < k; c++) comp[e * k + c] = orig[e * k + c] * s[c];
        double rel = logits_change(x_old, orig, x_new, comp, ntok, k, rows);
        free(orig);
        a->router_fold_max = fmax(a->router_fold_max, rel);
        sq_wmat w = {.dtype = SQ_DT_F32, .rows = rows, .cols = k, .data = comp};
        sq_status st = sq_model_set_router(r->m, l, which, &w, err);
        if (st) { free(comp); return st; }
        free(a->router[which]);
        a->router[which] = comp;
        if (rel > 1e-3)
            return sq_fail(err, SQ_ERR_INTERNAL, "AWQ: folding the scales changed layer %d's %s logits by %.3g (relative)", l,
                           which ? "shared-expert gate" : "router", rel);
    }
    return SQ_OK;
}

/* Whether a scale set is left unscaled (the same answer on every rank). */
static bool awq_set_skipped(sq_qrun *r, int l, const awq_set *set) {
    awq_state *a = r->ms;
    for (int i = 0; i < set->nl; i++)
        if (a->why[set->unit[i]][set->lin[i]][0]) return true; /* only sets whose linears are all quantised are scaled */
    if (set->prev_norm < 0) {
        const sq_wmat *prev = sq_model_linear_unit(r->m, l, set->prev_unit, set->prev_lin),
                      *first = sq_model_linear_unit(r->m, l, set->unit[0], set->lin[0]);
        if (prev->rows != first->cols) return true; /* v -> o under GQA: the shapes do not line up */
    }
    return set->x->n == 0; /* an expert no calibration token reached */
}

/* The full-precision output a set's search compares with, as the block's forward gave it (NULL: it is
 * computed): the attention's output for q/k/v, and for a lone o scored window by window when o has no
 * bias; a dense FFN's output for gate/up, and for a lone down so scored without a bias. They are the
 * bits awq_module gives (sq_layer_part and sq_state_matmul run the forward's own code on the same
 * windows); a mixture's output is left out (its calibration forward may route every token to a rare
 * expert, sq_state_route_all). */
static const float *kept_output(sq_qrun *r, int l, const awq_set *set, bool m2win) {
    awq_state *a = r->ms;
    const feat_buf *f = NULL;
    if (set->module == 0) f = feat(a, SQ_SITE_ATTN_OUT, 0);
    else if (set->module == 1 && !a->moe) f = feat(a, SQ_SITE_FFN_OUT, 0);
    else if (set->module == 2 && m2win && set->unit[0] == 0 && !sq_model_bias(r->m, l, set->lin[0]))
        f = set->lin[0] == SQ_LIN_O ? feat(a, SQ_SITE_ATTN_OUT, 0) : set->lin[0] == SQ_LIN_DOWN && !a->moe ? feat(a, SQ_SITE_FFN_OUT, 0) : NULL;
    return f && f->n == set->x->n && f->x ? f->x : NULL;
}

/* Searches one (not skipped) scale set's scales s (k) and *alpha_out. A search reads only its own
 * linears, the modules they make and its own inputs, none of which an earlier set's fold changes, so
 * the searches of a block can run apart (MPI: round the ranks) before the folds, in order. */
static sq_status awq_search_set(sq_qrun *r, int l, const awq_set *set, float *s, double *alpha_out, sq_err *err) {
    awq_state *a = r->ms;
    *alpha_out = -1;
    int64_t k = sq_model_linear_unit(r->m, l, set->unit[0], set->lin[0])->cols, ntok = set->x->n;
    const float **ws = malloc((size_t)set->nl * sizeof *ws);
    int64_t *ns = malloc((size_t)set->nl * sizeof *ns);
    if (!ws || !ns) { free(ws); free(ns); return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); }
    for (int i = 0; i < set->nl; i++) {
        ws[i] = *wf(a, set->unit[i], set->lin[i]);
        ns[i] = sq_model_linear_unit(r->m, l, set->unit[i], set->lin[i])->rows;
    }
    int64_t out_dim = set->module == 2 ? ns[0] : r->c->hidden;
    /* The subsample of a module run window by window (--awq-search-tokens): evenly spaced windows,
     * at least the tokens asked. */
    int nwin = r->cal->o.nsamples, T = r->cal->o.seqlen, wstep = 1;
    int64_t want = r->o->awq_search_tokens;
    if (want == SQ_AWQ_SEARCH_AUTO) want = ntok / 8 > SQ_AWQ_SEARCH_MIN ? ntok / 8 : SQ_AWQ_SEARCH_MIN;
    bool windows = want > 0 && want < ntok && ntok == (int64_t)nwin * T, m2win = false;
    if (windows) {
        int sub = (int)((want + T - 1) / T);
        wstep = nwin / sub;
    }
    /* A single linear's loss from its input's X^T X where that costs less than its output (k < ntok)
     * and fits (k <= 8192); or on its windows where that costs fewer operations still (the reference
     * output and the SQ_AWQ_RESCORE best on every token, each alpha on the windows; against X^T X and
     * each alpha's D (X^T X), or every alpha's output on every token): a down projection's k^2
     * outgrows the Gram path, and past k = 8192 every alpha ran on every token. */
    bool gram = set->module == 2 && k < ntok && k <= 8192;
    if (set->module == 2 && windows && wstep > 1) {
        double kk = (double)k, nn = (double)ns[0], nt = (double)ntok, nw = (double)((nwin + wstep - 1) / wstep) * (double)T;
        double c_now = gram ? nt * kk * kk + 2.0 * SQ_AWQ_GRID * nn * kk * kk : 2.0 * kk * nn * nt * (1 + SQ_AWQ_GRID);
        double c_win = 2.0 * kk * nn * (nt * (1 + SQ_AWQ_RESCORE) + SQ_AWQ_GRID * nw);
        m2win = c_win < c_now;
        const char *force = getenv("SPOTQ_AWQ_SCORE"); /* tests: windows for every single-linear set that has them */
        if (force && !strcmp(force, "windows")) m2win = true;
    }
    if (m2win) gram = false;
    else if (set->module == 2) wstep = 1; /* a single linear's set is scored on every token (X^T X or its output) */
    float *x = set->x->x, *h = NULL, *fp = NULL, *out = NULL;
    const float *kept = gram ? NULL : kept_output(r, l, set, m2win);
    float *x_mean = calloc((size_t)k, sizeof *x_mean);
    if (gram) h = malloc((size_t)(k * k) * sizeof *h);
    else {
        if (!kept) fp = malloc((size_t)(ntok * out_dim) * sizeof *fp);
        out = malloc((size_t)(ntok * out_dim) * sizeof *out);
    }
    sq_status st = SQ_OK;
    if (!x_mean || (gram ? !h : (!fp && !kept) || !out)) { st = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); goto done; }
    double *acc = calloc((size_t)k, sizeof *acc);
    if (!acc) { st = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); goto done; }
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t c = 0; c < k; c++) acc[c] += fabsf(x[t * k + c]);
    for (int64_t c = 0; c < k; c++) x_mean[c] = (float)(acc[c] / (double)ntok);
    free(acc);
    awq_ctx ctx = {r, l, set, kept ? kept : fp, out, out_dim, h, ws[0], wstep, m2win, err, SQ_OK};
    double t0 = sq_pl_now();
    if (gram) {
        st = sq_backend_cpu()->gram(x, ntok, k, r->o->threads, h, err);
        r->f_quant += (double)k * (double)(k + 1) * (double)ntok;
    }
    else if (!kept) st = awq_module(&ctx, NULL, fp, 1);
    if (st) goto done;
    sq_awq_params p = {.gs = r->o->q.group_size, .bits = r->o->q.bits, .duo = r->o->awq_duo, .rescore = wstep > 1 ? SQ_AWQ_RESCORE : 0,
                       .threads = r->o->threads};
    double best_loss;
    st = sq_awq_search(ws, ns, set->nl, k, x_mean, &p, awq_loss, &ctx, s, alpha_out, &best_loss, err);
    if (!st && ctx.status) st = ctx.status;
    r->t_quant += sq_pl_now() - t0;
done:
    free(ws);
    free(ns);
    free(x_mean);
    free(h);
    free(fp);
    free(out);
    return st;
}

/* Folds a searched set's scales s. */
static sq_status awq_fold_set(sq_qrun *r, int l, const awq_set *set, const float *s, sq_err *err) {
    awq_state *a = r->ms;
    int64_t k = sq_model_linear_unit(r->m, l, set->unit[0], set->lin[0])->cols, ntok = set->x->n;
    float *x = set->x->x, *x_old = NULL;
    sq_status st = SQ_OK;
    /* Fold: the previous op's output channels divided by s, the set's input columns multiplied by s;
     * the full-precision function is unchanged. The site's inputs are divided too (for the clipping). */
    if (set->prev_norm >= 0) {
        float *g = sq_model_norm(r->m, l, set->prev_norm);
        for (int64_t c = 0; c < k; c++) g[c] /= s[c];
    } else {
        float *w = *wf(a, set->prev_unit, set->prev_lin), *b = set->prev_unit == 0 ? sq_model_bias(r->m, l, set->prev_lin) : NULL;
        int64_t pk = sq_model_linear_unit(r->m, l, set->prev_unit, set->prev_lin)->cols;
        for (int64_t c = 0; c < k; c++) {
            for (int64_t j = 0; j < pk; j++) w[c * pk + j] /= s[c];
            if (b) b[c] /= s[c];
        }
    }
    for (int i = 0; i < set->nl; i++) {
        int64_t ni = sq_model_linear_unit(r->m, l, set->unit[i], set->lin[i])->rows;
        for (int64_t rr = 0; rr < ni; rr++)
            for (int64_t c = 0; c < k; c++) (*wf(a, set->unit[i], set->lin[i]))[rr * k + c] *= s[c];
    }
    bool whole = set->site == SQ_SITE_GATEUP && a->moe; /* the mixture's whole input: every unit's inputs are rows of it */
    if (whole && !(x_old = malloc((size_t)(ntok * k) * sizeof *x_old))) { st = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); goto done; }
    if (x_old) memcpy(x_old, x, (size_t)(ntok * k) * sizeof *x);
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t c = 0; c < k; c++) x[t * k + c] /= s[c];
    for (int u = 0; whole && u < a->units; u++) {
        feat_buf *f = feat(a, SQ_SITE_GATEUP, u);
        for (int64_t t = 0; t < f->n; t++)
            for (int64_t c = 0; c < k; c++) f->x[t * k + c] /= s[c];
    }
    if (whole) st = compensate_routers(r, l, s, x_old, x, ntok, err);
done:
    free(x_old);
    return st;
}

/* Converts the block's linears to floats, collects every site's inputs from the full-precision block
 * (its outputs become the next block's inputs), then searches and folds the scale sets, checks the
 * folding and clips. */
sq_status sq_awq_block_begin(sq_qrun *r, int l, sq_err *err) {
    awq_state *a = r->ms;
    sq_calib *cal = r->cal;
    const sq_config *c = r->c;
    sq_status s = SQ_OK;
    a->units = sq_model_ffn_units(r->m, l);
    a->moe = sq_config_moe_layer(c, l);
    a->row0 = r->nrows;
    for (int u = 0; u < a->units; u++)
        for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, (sq_lin)j);
            char name[160];
            sq_lin_name_unit(c, l, u, (sq_lin)j, name, sizeof name);
            sq_pl_keep_reason(r, l, (sq_lin)j, name, wm->rows, wm->cols, a->why[u][j], sizeof a->why[u][j]);
            char wname[200];
            snprintf(wname, sizeof wname, "%s.weight", name);
            if ((s = sq_pl_check_finite(r, wname, wm->dtype, wm->data, wm->rows * wm->cols, err))) return s;
            float **p = wf(a, u, (sq_lin)j);
            free(*p);
            if (!(*p = malloc((size_t)(wm->rows * wm->cols) * sizeof(float)))) return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory");
            sq_dtype_to_f32(wm->dtype, wm->data, *p, (size_t)(wm->rows * wm->cols));
            a->alpha[u * SQ_LIN_COUNT + j] = -1;
        }
    for (int i = 0; i < AWQ_SITES * (a->max_units + 1); i++) a->feat[i].n = 0;
    int64_t T = cal->o.seqlen, H = c->hidden;
    float *x0 = malloc((size_t)(T * H) * sizeof *x0); /* window 0's input, to check the folding below */
    if (!x0) return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory");
    memcpy(x0, cal->x, (size_t)(T * H) * sizeof *x0);
    if (a->moe) { /* the tokens routed to each expert; the rare ones are calibrated on every token */
        for (int e = 0; e < c->n_experts; e++) cal->unit_tokens[e] = 0;
        double t0 = sq_pl_now(), f0 = sq_state_flops(cal->st);
        int64_t T2 = cal->o.seqlen;
        for (int smp = 0; smp < cal->o.nsamples && !s; smp++) {
            memcpy(cal->tmp, cal->x + smp * T2 * H, (size_t)(T2 * H) * sizeof *cal->tmp);
            s = sq_layer_forward(cal->st, l, cal->tmp, (int)T2, tap_count, cal, err);
        }
        cal->t_forward += sq_pl_now() - t0;
        cal->f_forward += sq_state_flops(cal->st) - f0;
        if (!s) sq_calib_route_rare_experts(cal, l);
    }
    /* The full-precision block: every site's inputs, and its outputs as the next block's inputs. */
    tap_ctx tc = {a, err, false};
    sq_state_tap_outputs(cal->st, true); /* the modules' outputs too: the searches' references */
    if (!s) s = sq_calib_forward(cal, l, tap_all, &tc, err);
    sq_state_tap_outputs(cal->st, false);
    if (!s && tc.failed) s = SQ_ERR_NOMEM;
    if (s) { free(x0); return s; }
    for (int u = 0; u < a->units; u++)
        for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, (sq_lin)j);
            sq_wmat w = {.dtype = SQ_DT_F32, .rows = wm->rows, .cols = wm->cols, .data = *wf(a, u, (sq_lin)j)};
            if ((s = sq_model_set_linear_unit(r->m, l, u, (sq_lin)j, &w, err))) { free(x0); return s; }
        }
    /* The scale sets, in order: [q, k, v], o, the FFN's gate and up (every unit's), each unit's down:
     * first every set's search (MPI: set i on rank i mod N, its scales and alpha then sent to every
     * rank), then the folds in set order on every rank: the same bytes for every N. */
    int nsets = 3 + a->units, maxl = 2 * a->units + 3;
    int *units = malloc((size_t)maxl * nsets * sizeof *units);
    sq_lin *lins = malloc((size_t)maxl * nsets * sizeof *lins);
    awq_set *sets = calloc((size_t)nsets, sizeof *sets);
    float **sc = calloc((size_t)nsets, sizeof *sc);
    double *al = malloc((size_t)nsets * sizeof *al);
    if (!units || !lins || !sets || !sc || !al) { free(units); free(lins); free(sets); free(sc); free(al); free(x0); return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); }
    for (int si = 0; si < nsets; si++) {
        awq_set set = {.unit = units + si * maxl, .lin = lins + si * maxl, .prev_lin = SQ_LIN_COUNT};
        int *units_ = set.unit;
        sq_lin *lins_ = set.lin;
        if (si == 0) {
            set.site = SQ_SITE_QKV, set.nl = 3, set.prev_norm = 0, set.module = 0;
            units_[0] = units_[1] = units_[2] = 0, lins_[0] = SQ_LIN_Q, lins_[1] = SQ_LIN_K, lins_[2] = SQ_LIN_V;
            set.x = feat(a, SQ_SITE_QKV, 0);
        } else if (si == 1) {
            set.site = SQ_SITE_O, set.nl = 1, set.prev_norm = -1, set.prev_unit = 0, set.prev_lin = SQ_LIN_V, set.module = 2;
            units_[0] = 0, lins_[0] = SQ_LIN_O;
            set.x = feat(a, SQ_SITE_O, 0);
        } else if (si == 2) {
            set.site = SQ_SITE_GATEUP, set.prev_norm = 1, set.module = 1;
            for (int u = 0; u < a->units; u++) {
                units_[set.nl] = u, lins_[set.nl++] = SQ_LIN_GATE;
                units_[set.nl] = u, lins_[set.nl++] = SQ_LIN_UP;
            }
            set.x = feat(a, SQ_SITE_GATEUP, a->moe ? a->units : 0);
        } else {
            int u = si - 3;
            set.site = SQ_SITE_DOWN, set.nl = 1, set.prev_norm = -1, set.prev_unit = u, set.prev_lin = SQ_LIN_UP, set.module = 2;
            units_[0] = u, lins_[0] = SQ_LIN_DOWN;
            set.x = feat(a, SQ_SITE_DOWN, u);
        }
        sets[si] = set;
        al[si] = -1;
    }
    for (int si = 0; si < nsets && !s; si++) {
        if (awq_set_skipped(r, l, &sets[si])) continue;
        int64_t k = sq_model_linear_unit(r->m, l, sets[si].unit[0], sets[si].lin[0])->cols;
        if (!(sc[si] = malloc((size_t)k * sizeof **sc))) { s = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); break; }
        if (sq_par_mine(si)) s = awq_search_set(r, l, &sets[si], sc[si], &al[si], err);
    }
    if (s && sq_par_size() > 1) sq_par_abort(err); /* the others would wait for this rank's scales */
    for (int si = 0; si < nsets && !s; si++) {
        if (!sc[si]) continue;
        int64_t k = sq_model_linear_unit(r->m, l, sets[si].unit[0], sets[si].lin[0])->cols;
        sq_par_bcast(sc[si], k * (int64_t)sizeof **sc, sq_par_owner(si));
        sq_par_bcast(&al[si], sizeof al[si], sq_par_owner(si));
        if ((s = awq_fold_set(r, l, &sets[si], sc[si], err))) break;
        for (int j = 0; j < sets[si].nl; j++) a->alpha[sets[si].unit[j] * SQ_LIN_COUNT + sets[si].lin[j]] = al[si];
    }
    for (int si = 0; si < nsets; si++) free(sc[si]);
    free(sc);
    free(al);
    free(sets);
    free(units);
    free(lins);
    /* Folding must leave the full-precision block unchanged: window 0 through the scaled block. */
    if (!s) s = sq_layer_forward(cal->st, l, x0, (int)T, NULL, NULL, err);
    if (!s) {
        double dmax = 0, ymax = 0;
        for (int64_t i = 0; i < T * H; i++) {
            dmax = fmax(dmax, fabs((double)x0[i] - cal->x[i]));
            ymax = fmax(ymax, fabs((double)cal->x[i]));
        }
        double rel = ymax > 0 ? dmax / ymax : dmax;
        a->fold_max = fmax(a->fold_max, rel);
        if (rel > 1e-3)
            s = sq_fail(err, SQ_ERR_INTERNAL, "AWQ: folding the scales changed block %d's output by %.3g (relative)", l, rel);
    }
    free(x0);
    if (s) return s;
    /* Clipping (not q and k: their errors are squashed by softmax, AutoAWQ leaves them). */
    for (int u = 0; u < a->units; u++)
        for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
            sq_lin which = (sq_lin)j;
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, which);
            const feat_buf *f = feat(a, lin_site[j], u);
            if (a->why[u][j][0] || !r->o->awq_clip || which == SQ_LIN_Q || which == SQ_LIN_K || f->n == 0) continue;
            double tc0 = sq_pl_now();
            s = sq_awq_clip(*wf(a, u, which), wm->rows, wm->cols, r->o->q.group_size, r->o->q.bits, f->x, f->n, r->o->threads, NULL, err);
            r->t_quant += sq_pl_now() - tc0;
            if (s) return s;
            /* its Gram matrices (G gs^2 over at most 512 tokens) and D H (10 candidates a row) */
            double gs = r->o->q.group_size > 0 ? r->o->q.group_size : (double)wm->cols, nt = f->n < 512 ? (double)f->n : 512;
            r->f_quant += (double)wm->cols * gs * nt * 2 + 20.0 * (double)wm->rows * (double)wm->cols * gs;
        }
    return SQ_OK;
}

/* The Hessians of a stage's units from their (scaled) inputs. */
sq_status sq_awq_stage_hessians(sq_qrun *r, int l, int si, int u0, int u1, sq_err *err) {
    (void)l;
    awq_state *a = r->ms;
    sq_calib *cal = r->cal;
    sq_site site = sq_calib_stages[si].site;
    sq_status s = SQ_OK;
    cal->u0 = cal->u1 = u0;
    double th = sq_pl_now();
    for (int u = u0; u < u1 && !s; u++, cal->u1++) {
        const feat_buf *f = feat(a, site, u);
        int64_t k = sq_model_linear_unit(r->m, l, u, sq_calib_stages[si].lin[0])->cols;
        if ((s = sq_hessian_init(&cal->hs[u], k, err))) break;
        cal->f_hessian += (double)k * (double)(k + 1) * (double)f->n;
        if ((f->n && (s = sq_hessian_add(&cal->hs[u], f->x, f->n, err))) || (s = sq_hessian_finish(&cal->hs[u], err))) {
            sq_hessian_free(&cal->hs[u]);
            break;
        }
    }
    cal->t_hessian += sq_pl_now() - th;
    return s;
}

/* The AWQ grid, or GPTQ on the scaled weights with the scaled inputs' Hessian; written. */
static sq_status awq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, bool gptq, sq_err *err) {
    const float *h = hs->h;
    awq_state *a = r->ms;
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    int64_t n = wm->rows, k = wm->cols;
    float *w = *wf(a, unit, which);
    sq_report_row *rep = sq_pl_new_row(r, l, unit, which, wm);
    rep->alpha = a->alpha[unit * SQ_LIN_COUNT + which];
    double tq = sq_pl_now();
    sq_qmatrix q;
    sq_status s = gptq ? sq_quant_gptq(w, h, n, k, &r->o->q, &q, err)
                       : sq_awq_quantize(w, n, k, r->o->q.group_size, r->o->q.bits, r->o->format == SQ_FORMAT_GPTQ, &q, err);
    if (s) return s;
    /* Errors in the scaled domain: the scaled inputs' Hessian with the scaled full-precision weights
     * measures the same ||W X - Q X|| as the original ones. */
    float *dq = malloc((size_t)(n * k) * sizeof *dq);
    if (!dq) { sq_qmatrix_free(&q); return sq_fail(err, SQ_ERR_NOMEM, "out of memory"); }
    sq_qmatrix_dequant(&q, dq);
    double den = NAN;
    rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
    if (q.fallback) snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
    rep->damp = q.damp_used;
    sq_qmatrix rq;
    if (!(s = sq_awq_quantize(w, n, k, r->o->q.group_size, r->o->q.bits, false, &rq, err))) {
        sq_qmatrix_dequant(&rq, dq);
        rep->err_rtn = sq_pl_output_error(r, w, dq, h, n, k, &den);
        sq_qmatrix_free(&rq);
    }
    r->t_quant += sq_pl_now() - tq;
    free(dq);
    rep->quantized = true;
    r->n_weights_q += n * k;
    if (!s) s = sq_pl_write_packed(r, rep->name, &q, err);
    sq_qmatrix_free(&q);
    return s;
}

sq_status sq_awq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return awq_linear(r, l, unit, which, hs, false, err);
}

sq_status sq_awq_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return awq_linear(r, l, unit, which, hs, true, err);
}

static bool ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

/* The tensors AWQ folds its scales into, which it writes with their block (not copied from the source):
 * the norms, the linears' biases, a mixture's router and shared-expert gate. */
bool sq_awq_writes_tensor(const sq_qrun *r, const char *name) {
    (void)r;
    if (strstr(name, "layernorm.weight") || (strstr(name, "_proj.bias") && strstr(name, "model.layers."))) return true;
    return !strncmp(name, "model.layers.", 13) &&
           (ends_with(name, ".mlp.gate.weight") || ends_with(name, ".block_sparse_moe.gate.weight") || ends_with(name, ".mlp.shared_expert_gate.weight"));
}

/* The folded norms, biases and routers of block l; the kept linears' report rows get their alpha. */
sq_status sq_awq_block_end(sq_qrun *r, int l, sq_err *err) {
    awq_state *a = r->ms;
    const sq_config *c = r->c;
    sq_status s;
    for (int i = a->row0; i < r->nrows; i++) /* the rows of kept linears */
        for (int u = 0; u < a->units; u++)
            for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
                char name[160];
                sq_lin_name_unit(c, l, u, (sq_lin)j, name, sizeof name);
                if (!r->rows[i].quantized && !strcmp(name, r->rows[i].name)) r->rows[i].alpha = a->alpha[u * SQ_LIN_COUNT + j];
            }
    char name[200];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if ((s = sq_pl_write_floats(r, name, sq_model_norm(r->m, l, 0), err))) return s;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if ((s = sq_pl_write_floats(r, name, sq_model_norm(r->m, l, 1), err))) return s;
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        const float *b = sq_model_bias(r->m, l, (sq_lin)j);
        char mod[160];
        sq_lin_name(c, l, (sq_lin)j, mod, sizeof mod);
        snprintf(name, sizeof name, "%s.bias", mod);
        if (b && (s = sq_pl_write_floats(r, name, b, err))) return s;
    }
    for (int which = 0; which < 2 && a->moe; which++) {
        const sq_wmat *rw = sq_model_router(r->m, l, which);
        if (!rw) continue;
        if (which == 0) snprintf(name, sizeof name, c->arch == SQ_ARCH_MIXTRAL ? "model.layers.%d.block_sparse_moe.gate.weight" : "model.layers.%d.mlp.gate.weight", l);
        else snprintf(name, sizeof name, "model.layers.%d.mlp.shared_expert_gate.weight", l);
        if (rw->dtype == SQ_DT_F32 && a->router[which] == rw->data) s = sq_pl_write_floats(r, name, rw->data, err);
        else { /* not compensated (its set was not scaled): as it was */
            const sq_tensor *t = sq_st_find(sq_model_ckpt(r->m)->st, name);
            if (t && !(s = sq_pl_check_finite(r, name, t->dtype, t->data, t->numel, err)))
                s = sq_shards_add(r->w, name, t->dtype, t->ndim, t->shape, t->data, err);
        }
        if (s) return s;
    }
    return SQ_OK;
}
