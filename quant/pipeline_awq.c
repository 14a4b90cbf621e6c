/* pipeline_awq.c: the AWQ block of the quantize pipeline: every site's input from the full-precision
 * block, the scale search of each scale set on its module's output, folding (checked to leave the block
 * unchanged), clipping, then the grid (or GPTQ for awq+gptq), and the block's tensors written. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "awq.h"
#include "pipeline_internal.h"

/* ---------------------------------------------------------------- AWQ */

static const sq_site lin_site[SQ_LIN_COUNT] = {SQ_SITE_QKV, SQ_SITE_QKV, SQ_SITE_QKV, SQ_SITE_O,
                                               SQ_SITE_GATEUP, SQ_SITE_GATEUP, SQ_SITE_DOWN};

/* Collects every site's input over every calibration token (the full-precision block). */
static bool tap_all(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    run *r = user;
    memcpy(r->feat[site] + (int64_t)r->cur_sample * r->o->seqlen * dim, x, (size_t)n * (size_t)dim * sizeof *x);
    return false;
}

/* One AWQ scale set: the linears scaled together, what precedes them, and the module whose output the
 * loss compares. */
typedef struct {
    sq_site site;
    int nl;
    sq_lin lin[3];
    int prev_norm;               /* 0 / 1: input_layernorm / post_attention_layernorm; -1: prev_lin */
    sq_lin prev_lin;
    int module;                  /* 0: attention, 1: FFN, 2: the single linear itself */
} awq_set;

static const awq_set awq_sets[] = {
    {SQ_SITE_QKV, 3, {SQ_LIN_Q, SQ_LIN_K, SQ_LIN_V}, 0, SQ_LIN_COUNT, 0},
    {SQ_SITE_O, 1, {SQ_LIN_O}, -1, SQ_LIN_V, 2},
    {SQ_SITE_GATEUP, 2, {SQ_LIN_GATE, SQ_LIN_UP}, 1, SQ_LIN_COUNT, 1},
    {SQ_SITE_DOWN, 1, {SQ_LIN_DOWN}, -1, SQ_LIN_UP, 2},
};

typedef struct {
    run *r;
    int l;
    const awq_set *set;
    const float *x;              /* the site's input (ntok, k) */
    const float *fp;             /* the module's full-precision output (ntok, out) */
    float *out;                  /* scratch (ntok, out) */
    int64_t out_dim;
    sq_err *err;
    sq_status status;
} awq_ctx;

/* The module's output on every calibration token with the set's linears as given (NULL: as they are). */
static sq_status awq_module(awq_ctx *c, float *const *weights, float *out) {
    run *r = c->r;
    const awq_set *set = c->set;
    sq_status s = SQ_OK;
    for (int i = 0; i < set->nl && weights; i++) {
        const sq_wmat *cur = sq_model_linear(r->m, c->l, set->lin[i]);
        sq_wmat w = {.dtype = SQ_DT_F32, .rows = cur->rows, .cols = cur->cols, .data = weights[i]};
        if ((s = sq_model_set_linear(r->m, c->l, set->lin[i], &w, c->err))) return s;
    }
    int64_t T = r->o->seqlen, k = sq_model_linear(r->m, c->l, set->lin[0])->cols;
    if (set->module == 2) {
        const sq_wmat *w = sq_model_linear(r->m, c->l, set->lin[0]);
        int64_t ntok = T * r->o->nsamples;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ntok, (int)w->rows, (int)k, 1.0f, c->x, (int)k, w->data, (int)k, 0.0f, out,
                    (int)w->rows);
    } else
        for (int smp = 0; smp < r->o->nsamples && !s; smp++)
            s = sq_layer_part(r->st, c->l, set->module == 0 ? SQ_PART_ATTENTION : SQ_PART_FFN, c->x + smp * T * k, (int)T,
                              out + smp * T * c->out_dim, c->err);
    for (int i = 0; i < set->nl && weights; i++) { /* back to the (scaled) full-precision weights */
        sq_wmat w = *sq_model_linear(r->m, c->l, set->lin[i]);
        w.data = r->wf[set->lin[i]];
        sq_status s2 = sq_model_set_linear(r->m, c->l, set->lin[i], &w, c->err);
        if (!s) s = s2;
    }
    return s;
}

static double awq_loss(void *user, float *const *weights) {
    awq_ctx *c = user;
    sq_status s = awq_module(c, weights, c->out);
    if (s) {
        c->status = s;
        return NAN;
    }
    int64_t m = (int64_t)c->r->o->nsamples * c->r->o->seqlen * c->out_dim;
    double acc = 0;
    for (int64_t i = 0; i < m; i++) {
        double d = (double)c->fp[i] - c->out[i];
        acc += d * d;
    }
    return acc / (double)m;
}

/* Searches and folds one scale set's scales; returns the chosen alpha (or -1 when skipped). */
static sq_status awq_scale_set(run *r, int l, const awq_set *set, const char (*why)[128], double *alpha_out, sq_err *err) {
    *alpha_out = -1;
    for (int i = 0; i < set->nl; i++)
        if (why[set->lin[i]][0]) return SQ_OK; /* only sets whose linears are all quantised are scaled */
    if (set->prev_norm < 0) {
        const sq_wmat *prev = sq_model_linear(r->m, l, set->prev_lin), *first = sq_model_linear(r->m, l, set->lin[0]);
        if (prev->rows != first->cols) return SQ_OK; /* v -> o under GQA: the shapes do not line up */
    }
    int64_t k = sq_model_linear(r->m, l, set->lin[0])->cols, ntok = (int64_t)r->o->nsamples * r->o->seqlen;
    const float *ws[3];
    int64_t ns[3];
    int64_t out_dim = 0;
    for (int i = 0; i < set->nl; i++) {
        ws[i] = r->wf[set->lin[i]];
        ns[i] = sq_model_linear(r->m, l, set->lin[i])->rows;
    }
    out_dim = set->module == 2 ? ns[0] : r->c->hidden;
    float *x = r->feat[set->site];
    float *x_mean = calloc((size_t)k, sizeof *x_mean), *s = malloc((size_t)k * sizeof *s);
    float *fp = malloc((size_t)(ntok * out_dim) * sizeof *fp), *out = malloc((size_t)(ntok * out_dim) * sizeof *out);
    sq_status st = SQ_OK;
    if (!x_mean || !s || !fp || !out) { st = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); goto done; }
    double *acc = calloc((size_t)k, sizeof *acc);
    if (!acc) { st = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); goto done; }
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t c = 0; c < k; c++) acc[c] += fabsf(x[t * k + c]);
    for (int64_t c = 0; c < k; c++) x_mean[c] = (float)(acc[c] / (double)ntok);
    free(acc);
    awq_ctx ctx = {r, l, set, x, fp, out, out_dim, err, SQ_OK};
    double t0 = sq_pl_now();
    if ((st = awq_module(&ctx, NULL, fp))) goto done;
    sq_awq_params p = {.gs = r->o->q.group_size, .bits = r->o->q.bits, .duo = r->o->awq_duo};
    double best_loss;
    st = sq_awq_search(ws, ns, set->nl, k, x_mean, &p, awq_loss, &ctx, s, alpha_out, &best_loss, err);
    if (!st && ctx.status) st = ctx.status;
    r->t_quant += sq_pl_now() - t0;
    if (st) goto done;
    /* Fold: the previous op's output channels divided by s, the set's input columns multiplied by s;
     * the full-precision function is unchanged. The site's inputs are divided too (for the clipping). */
    if (set->prev_norm >= 0) {
        float *g = sq_model_norm(r->m, l, set->prev_norm);
        for (int64_t c = 0; c < k; c++) g[c] /= s[c];
    } else {
        float *w = r->wf[set->prev_lin], *b = sq_model_bias(r->m, l, set->prev_lin);
        int64_t pk = sq_model_linear(r->m, l, set->prev_lin)->cols;
        for (int64_t c = 0; c < k; c++) {
            for (int64_t j = 0; j < pk; j++) w[c * pk + j] /= s[c];
            if (b) b[c] /= s[c];
        }
    }
    for (int i = 0; i < set->nl; i++)
        for (int64_t rr = 0; rr < ns[i]; rr++)
            for (int64_t c = 0; c < k; c++) r->wf[set->lin[i]][rr * k + c] *= s[c];
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t c = 0; c < k; c++) x[t * k + c] /= s[c];
done:
    free(x_mean);
    free(s);
    free(fp);
    free(out);
    return st;
}

/* Writes a floats vector (a norm, a bias) in the source tensor's dtype under its name. */
static sq_status write_vector(run *r, const char *name, const float *v, sq_err *err) {
    const sq_tensor *t = sq_st_find(sq_model_ckpt(r->m)->st, name);
    if (!t) return SQ_OK;
    void *buf = malloc((size_t)t->nbytes);
    if (!buf) return sq_fail(err, SQ_ERR_NOMEM, "out of memory writing %s", name);
    sq_dtype_from_f32(t->dtype, v, buf, (size_t)t->numel);
    sq_status s = sq_shards_add(r->w, name, t->dtype, t->ndim, t->shape, buf, err);
    free(buf);
    return s;
}

sq_status sq_pl_awq_block(run *r, int l, sq_err *err) {
    const sq_config *c = r->c;
    int64_t ntok = (int64_t)r->o->nsamples * r->o->seqlen;
    sq_status s = SQ_OK;
    char why[SQ_LIN_COUNT][128];
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        const sq_wmat *wm = sq_model_linear(r->m, l, (sq_lin)j);
        char name[160];
        sq_lin_name(c, l, (sq_lin)j, name, sizeof name);
        sq_pl_keep_reason(r, name, wm->rows, wm->cols, why[j], sizeof why[j]);
        char wname[200];
        snprintf(wname, sizeof wname, "%s.weight", name);
        if ((s = sq_pl_check_finite(r, wname, wm->dtype, wm->data, wm->rows * wm->cols, err))) return s;
        free(r->wf[j]);
        if (!(r->wf[j] = malloc((size_t)(wm->rows * wm->cols) * sizeof(float)))) return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory");
        sq_dtype_to_f32(wm->dtype, wm->data, r->wf[j], (size_t)(wm->rows * wm->cols));
    }
    /* The full-precision block: every site's inputs, and its outputs as the next block's inputs. */
    int dims[4] = {c->hidden, (int)sq_model_linear(r->m, l, SQ_LIN_O)->cols, c->hidden, (int)sq_model_linear(r->m, l, SQ_LIN_DOWN)->cols};
    for (int i = 0; i < 4; i++) {
        free(r->feat[i]);
        r->feat_dim[i] = dims[i];
        if (!(r->feat[i] = malloc((size_t)(ntok * dims[i]) * sizeof(float)))) return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory");
    }
    double t0 = sq_pl_now();
    int64_t T = r->o->seqlen, H = c->hidden;
    float *x0 = malloc((size_t)(T * H) * sizeof *x0); /* window 0's input, to check the folding below */
    if (!x0) return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory");
    memcpy(x0, r->x, (size_t)(T * H) * sizeof *x0);
    for (int smp = 0; smp < r->o->nsamples && !s; smp++) {
        r->cur_sample = smp;
        s = sq_layer_forward(r->st, l, r->x + smp * T * H, (int)T, tap_all, r, err);
    }
    r->t_forward += sq_pl_now() - t0;
    if (s) { free(x0); return s; }
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        const sq_wmat *wm = sq_model_linear(r->m, l, (sq_lin)j);
        sq_wmat w = {.dtype = SQ_DT_F32, .rows = wm->rows, .cols = wm->cols, .data = r->wf[j]};
        if ((s = sq_model_set_linear(r->m, l, (sq_lin)j, &w, err))) return s;
    }
    double alpha[SQ_LIN_COUNT];
    for (int j = 0; j < SQ_LIN_COUNT; j++) alpha[j] = -1;
    for (size_t i = 0; i < sizeof awq_sets / sizeof *awq_sets && !s; i++) {
        double a;
        if ((s = awq_scale_set(r, l, &awq_sets[i], why, &a, err))) break;
        for (int j = 0; j < awq_sets[i].nl; j++) alpha[awq_sets[i].lin[j]] = a;
    }
    /* Folding must leave the full-precision block unchanged: window 0 through the scaled block. */
    if (!s) s = sq_layer_forward(r->st, l, x0, (int)T, NULL, NULL, err);
    if (!s) {
        double dmax = 0, ymax = 0;
        for (int64_t i = 0; i < T * H; i++) {
            dmax = fmax(dmax, fabs((double)x0[i] - r->x[i]));
            ymax = fmax(ymax, fabs((double)r->x[i]));
        }
        double rel = ymax > 0 ? dmax / ymax : dmax;
        r->fold_diff_max = fmax(r->fold_diff_max, rel);
        if (rel > 1e-3)
            s = sq_fail(err, SQ_ERR_INTERNAL, "AWQ: folding the scales changed block %d's output by %.3g (relative)", l, rel);
    }
    free(x0);
    if (s) return s;
    /* Clipping (not q and k: their errors are squashed by softmax, AutoAWQ leaves them), then the grid. */
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        sq_lin which = (sq_lin)j;
        const sq_wmat *wm = sq_model_linear(r->m, l, which);
        if (why[j][0] || !r->o->awq_clip || which == SQ_LIN_Q || which == SQ_LIN_K) continue;
        double tc = sq_pl_now();
        s = sq_awq_clip(r->wf[j], wm->rows, wm->cols, r->o->q.group_size, r->o->q.bits, r->feat[lin_site[j]], ntok, NULL, err);
        r->t_quant += sq_pl_now() - tc;
        if (s) return s;
    }
    /* Quantise (AWQ grid, or GPTQ on the scaled weights with the scaled inputs' Hessian) and write. */
    for (int i = 0; i < 4; i++) {
        int todo = 0;
        for (int j = 0; j < SQ_LIN_COUNT; j++) todo += lin_site[j] == (sq_site)i && !why[j][0];
        if (!todo) continue;
        double th = sq_pl_now();
        if ((s = sq_hessian_init(&r->hs[0], r->feat_dim[i], err))) return s;
        if ((s = sq_hessian_add(&r->hs[0], r->feat[i], ntok, err)) || (s = sq_hessian_finish(&r->hs[0], err))) {
            sq_hessian_free(&r->hs[0]);
            return s;
        }
        r->t_hessian += sq_pl_now() - th;
        for (int j = 0; j < SQ_LIN_COUNT && !s; j++) {
            if (lin_site[j] != (sq_site)i || why[j][0]) continue;
            const sq_wmat *wm = sq_model_linear(r->m, l, (sq_lin)j);
            int64_t n = wm->rows, k = wm->cols;
            lin_report *rep = &r->rep[r->nrep++];
            memset(rep, 0, sizeof *rep);
            sq_lin_name(c, l, (sq_lin)j, rep->name, sizeof rep->name);
            rep->n = n;
            rep->k = k;
            rep->alpha = alpha[j];
            double tq = sq_pl_now();
            sq_qmatrix q;
            s = r->o->method == SQ_METHOD_AWQ_GPTQ ? sq_quant_gptq(r->wf[j], r->hs[0].h, n, k, &r->o->q, &q, err)
                                                   : sq_awq_quantize(r->wf[j], n, k, r->o->q.group_size, r->o->q.bits,
                                                                     r->o->format == SQ_FORMAT_GPTQ, &q, err);
            if (s) return s;
            /* Errors in the scaled domain: the scaled inputs' Hessian with the scaled full-precision weights
             * measures the same ||W X - Q X|| as the original ones. */
            float *dq = malloc((size_t)(n * k) * sizeof *dq);
            if (!dq) { sq_qmatrix_free(&q); return sq_fail(err, SQ_ERR_NOMEM, "out of memory"); }
            sq_qmatrix_dequant(&q, dq);
            rep->err = sq_quant_output_error(r->wf[j], dq, r->hs[0].h, n, k);
            if (q.fallback) snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
            rep->damp = q.damp_used;
            sq_qmatrix rq;
            if (!(s = sq_awq_quantize(r->wf[j], n, k, r->o->q.group_size, r->o->q.bits, false, &rq, err))) {
                sq_qmatrix_dequant(&rq, dq);
                rep->err_rtn = sq_quant_output_error(r->wf[j], dq, r->hs[0].h, n, k);
                sq_qmatrix_free(&rq);
            }
            r->t_quant += sq_pl_now() - tq;
            free(dq);
            rep->quantized = true;
            r->n_weights_q += n * k;
            if (!s) s = sq_pl_write_packed(r, rep->name, &q, err);
            sq_qmatrix_free(&q);
        }
        sq_hessian_free(&r->hs[0]);
        if (s) return s;
    }
    /* Linears kept in full precision (scaled ones included: their folding is exact), norms, biases. */
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        if (!why[j][0]) continue;
        const sq_wmat *wm = sq_model_linear(r->m, l, (sq_lin)j);
        lin_report *rep = &r->rep[r->nrep++];
        memset(rep, 0, sizeof *rep);
        sq_lin_name(c, l, (sq_lin)j, rep->name, sizeof rep->name);
        rep->n = wm->rows;
        rep->k = wm->cols;
        rep->alpha = alpha[j];
        snprintf(rep->note, sizeof rep->note, "%.127s", why[j]);
        r->n_weights_kept += wm->rows * wm->cols;
        char name[200];
        snprintf(name, sizeof name, "%s.weight", rep->name);
        if ((s = write_vector(r, name, r->wf[j], err))) return s;
    }
    char name[200];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if ((s = write_vector(r, name, sq_model_norm(r->m, l, 0), err))) return s;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if ((s = write_vector(r, name, sq_model_norm(r->m, l, 1), err))) return s;
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        const float *b = sq_model_bias(r->m, l, (sq_lin)j);
        char mod[160];
        sq_lin_name(c, l, (sq_lin)j, mod, sizeof mod);
        snprintf(name, sizeof name, "%s.bias", mod);
        if (b && (s = write_vector(r, name, b, err))) return s;
    }
    return SQ_OK;
}
