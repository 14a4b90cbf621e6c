/* smooth.c: SmoothQuant's scales, fold and block hook (see smooth.h). The rule follows llm-compressor's
 * SmoothQuantModifier as read in src/llmcompressor/modifiers/smoothquant/base.py (commit 056daeec,
 * 2025): the zero-weight guard (s = activation range where a column's weights are all zero) and the
 * floor MINIMUM_SMOOTHING_SCALE = 1e-5, the mappings of utils.py (q/k/v after input_layernorm, gate/up
 * after post_attention_layernorm), and the smoothing applied per block before its quantisation. Two
 * differences, both the paper's (Xiao et al., eq. 4): its activation statistic here is max |x| (the
 * peer takes max - min per channel) and the weight's is max |w| (the peer doubles it, a constant factor
 * 2^(alpha-1) on every s that the per-channel weight and per-token activation scales absorb). A mixture
 * smooths every expert's gate/up and the shared expert's with one s (they share the norm), the router
 * and shared-expert gate compensated (the peer's Mixtral mapping balances the router alone); the router
 * stays in full precision, so its weights do not enter max |w|. */
#include "smooth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"

void sq_smooth_scales(const float *xmax, int64_t k, const float *const *w, const int64_t *rows, int nl, double alpha, float *s) {
    for (int64_t j = 0; j < k; j++) {
        float wm = 0;
        for (int i = 0; i < nl; i++)
            for (int64_t r = 0; r < rows[i]; r++) wm = fmaxf(wm, fabsf(w[i][r * k + j]));
        double v = wm > 0 ? pow((double)xmax[j], alpha) / pow((double)wm, 1.0 - alpha) : (double)xmax[j];
        s[j] = fmaxf((float)v, SQ_SMOOTH_MIN_SCALE);
    }
}

void sq_smooth_fold(float *norm, float *const *w, const int64_t *rows, int nl, int64_t k, const float *s) {
    for (int64_t j = 0; j < k; j++) norm[j] /= s[j];
    for (int i = 0; i < nl; i++)
        for (int64_t r = 0; r < rows[i]; r++)
            for (int64_t j = 0; j < k; j++) w[i][r * k + j] *= s[j];
}

sq_status sq_smooth_new(sq_smooth **out, const sq_qrun *r, sq_err *err) {
    sq_smooth *sm = sq_calloc(1, sizeof *sm, err);
    if (!sm) return SQ_ERR_NOMEM;
    sm->alpha = r->o->smooth_alpha;
    if (!(sm->wf = sq_calloc((size_t)r->max_units * SQ_LIN_COUNT, sizeof *sm->wf, err))) { free(sm); return SQ_ERR_NOMEM; }
    for (int i = 0; i < 2; i++) sm->site[i] = (sq_smooth_site){.s_min = INFINITY};
    *out = sm;
    return SQ_OK;
}

void sq_smooth_free(sq_smooth *sm, const sq_qrun *r) {
    if (!sm) return;
    for (int i = 0; sm->wf && i < r->max_units * SQ_LIN_COUNT; i++) free(sm->wf[i]);
    free(sm->wf);
    free(sm->router[0]);
    free(sm->router[1]);
    free(sm);
}

static void router_name(const sq_config *c, int l, int which, char *buf, size_t cap) {
    if (which == 0) snprintf(buf, cap, c->arch == SQ_ARCH_MIXTRAL ? "model.layers.%d.block_sparse_moe.gate.weight" : "model.layers.%d.mlp.gate.weight", l);
    else snprintf(buf, cap, "model.layers.%d.mlp.shared_expert_gate.weight", l);
}

static const char *const norm_tensor[2] = {"input_layernorm", "post_attention_layernorm"};

/* The gate/up input of window 0 at a mixture's router (a tap), to check its logits. */
typedef struct {
    float *x;
    int units;
} router_tap;

static bool tap_router_input(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    router_tap *t = user;
    if (site == SQ_SITE_GATEUP && unit == t->units) {
        memcpy(t->x, x, (size_t)n * (size_t)dim * sizeof *x);
        return false;
    }
    return false;
}

/* The largest |y1 - y0| over the largest |y0|, y = x R^T (x (ntok, k), R (rows, k)). */
static double logits_change(const float *x0, const float *r0, const float *x1, const float *r1, int64_t ntok, int64_t k, int64_t rows) {
    double dmax = 0, ymax = 0;
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t e = 0; e < rows; e++) {
            double y0 = 0, y1 = 0;
            for (int64_t c = 0; c < k; c++) y0 += (double)x0[t * k + c] * r0[e * k + c], y1 += (double)x1[t * k + c] * r1[e * k + c];
            dmax = fmax(dmax, fabs(y1 - y0));
            ymax = fmax(ymax, fabs(y0));
        }
    return ymax > 0 ? dmax / ymax : dmax;
}

/* max_j a_j / mean_j a_j of a_j = x_j / s_j (s NULL: 1). */
static double spread(const float *x, const float *s, int64_t k) {
    double mx = 0, sum = 0;
    for (int64_t j = 0; j < k; j++) {
        double a = (double)x[j] / (s ? (double)s[j] : 1.0);
        mx = fmax(mx, a), sum += a;
    }
    return sum > 0 ? mx * (double)k / sum : 0;
}

/* One site's set (0: q/k/v, 1: every unit's gate/up) of block l: its scales from xmax, made exact for
 * the norm's dtype, folded. Returns in *done whether it was smoothed (not when a linear is kept). */
static sq_status smooth_set(sq_qrun *r, sq_smooth *sm, int l, int set, const float *xmax, bool *done, sq_err *err) {
    const sq_config *c = r->c;
    int64_t k = c->hidden;
    int units = set ? sq_model_ffn_units(r->m, l) : 1, nl = 0;
    float *w[3 * 256 + 3];
    int64_t rows[3 * 256 + 3];
    *done = false;
    if (2 * units + 3 > (int)(sizeof w / sizeof *w)) return sq_fail(err, SQ_ERR_UNSUPPORTED, "SmoothQuant: layer %d has %d FFN units (at most 384)", l, units);
    static const sq_lin attn[3] = {SQ_LIN_Q, SQ_LIN_K, SQ_LIN_V}, ffn[2] = {SQ_LIN_GATE, SQ_LIN_UP};
    for (int u = 0; u < units; u++)
        for (int j = 0; j < (set ? 2 : 3); j++) {
            sq_lin which = set ? ffn[j] : attn[j];
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, which);
            char name[160], why[128];
            sq_lin_name_unit(c, l, u, which, name, sizeof name);
            sq_pl_keep_reason(r, l, which, name, wm->rows, wm->cols, why, sizeof why);
            if (why[0]) return SQ_OK; /* a kept linear: the set stays as it is (AWQ's rule too) */
            w[nl] = sm->wf[u * SQ_LIN_COUNT + which], rows[nl++] = wm->rows;
        }
    float *s = malloc((size_t)k * sizeof *s);
    if (!s) return sq_fail(err, SQ_ERR_NOMEM, "SmoothQuant: out of memory");
    sq_smooth_scales(xmax, k, (const float *const *)w, rows, nl, sm->alpha, s);
    /* The norm is written in its source dtype: s adjusted so that g / s is exactly what is written
     * (s' = g / round(g / s)), so the written norm and the scaled columns still cancel. */
    float *g = sq_model_norm(r->m, l, set);
    char tname[200];
    snprintf(tname, sizeof tname, "model.layers.%d.%s.weight", l, norm_tensor[set]);
    const sq_tensor *t = sq_st_find(sq_model_ckpt(r->m)->st, tname);
    if (t && (t->dtype == SQ_DT_F16 || t->dtype == SQ_DT_BF16))
        for (int64_t j = 0; j < k; j++) {
            float q = g[j] / s[j], back;
            uint16_t h;
            sq_dtype_from_f32(t->dtype, &q, &h, 1);
            sq_dtype_to_f32(t->dtype, &h, &back, 1);
            if (!isfinite(back)) { /* F16's range: the least s that keeps g / s finite */
                s[j] = fabsf(g[j]) / 60000.0f;
                q = g[j] / s[j];
                sq_dtype_from_f32(t->dtype, &q, &h, 1);
                sq_dtype_to_f32(t->dtype, &h, &back, 1);
            }
            if (back != 0 && g[j] != 0) s[j] = g[j] / back;
        }
    sq_smooth_site *st = &sm->site[set];
    st->blocks++;
    for (int64_t j = 0; j < k; j++) st->s_min = fmin(st->s_min, s[j]), st->s_max = fmax(st->s_max, s[j]), st->xmax = fmax(st->xmax, xmax[j]);
    st->spread_before = fmax(st->spread_before, spread(xmax, NULL, k));
    st->spread_after = fmax(st->spread_after, spread(xmax, s, k));
    sq_smooth_fold(g, w, rows, nl, k, s);
    sq_status rs = SQ_OK;
    for (int which = 0; set == 1 && which < 2 && !rs; which++) { /* a mixture's router sees the folded norm: columns times s */
        const sq_wmat *rw = sq_model_router(r->m, l, which);
        if (!rw) continue;
        float *comp = malloc((size_t)(rw->rows * rw->cols) * sizeof *comp);
        if (!comp) { rs = sq_fail(err, SQ_ERR_NOMEM, "SmoothQuant: out of memory"); break; }
        sq_dtype_to_f32(rw->dtype, rw->data, comp, (size_t)(rw->rows * rw->cols));
        for (int64_t e = 0; e < rw->rows; e++)
            for (int64_t j = 0; j < k; j++) comp[e * k + j] *= s[j];
        sq_wmat nw = {.dtype = SQ_DT_F32, .rows = rw->rows, .cols = rw->cols, .data = comp};
        if ((rs = sq_model_set_router(r->m, l, which, &nw, err))) { free(comp); break; }
        free(sm->router[which]);
        sm->router[which] = comp;
    }
    free(s);
    *done = !rs;
    return rs;
}

sq_status sq_smooth_block(sq_qrun *r, sq_smooth *sm, int l, sq_err *err) {
    sq_calib *cal = r->cal;
    const sq_config *c = r->c;
    int units = sq_model_ffn_units(r->m, l);
    bool moe = sq_config_moe_layer(c, l);
    int64_t H = c->hidden, T = cal->o.seqlen;
    sq_status s = SQ_OK;
    if (!cal->x) return SQ_OK; /* no text: the library refuses --smoothquant without it */
    double t0 = sq_pl_now();
    /* The sets' linears as floats, in use by the model (scaled in place below). */
    for (int u = 0; u < units; u++)
        for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
            if (j == SQ_LIN_O || j == SQ_LIN_DOWN) continue;
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, (sq_lin)j);
            char name[200];
            sq_lin_name_unit(c, l, u, (sq_lin)j, name, sizeof name - 8);
            strcat(name, ".weight");
            if ((s = sq_pl_check_finite(r, name, wm->dtype, wm->data, wm->rows * wm->cols, err))) return s;
            float **p = &sm->wf[u * SQ_LIN_COUNT + j];
            float *nw = malloc((size_t)(wm->rows * wm->cols) * sizeof *nw);
            if (!nw) return sq_fail(err, SQ_ERR_NOMEM, "SmoothQuant: out of memory");
            sq_dtype_to_f32(wm->dtype, wm->data, nw, (size_t)(wm->rows * wm->cols));
            sq_wmat w = {.dtype = SQ_DT_F32, .rows = wm->rows, .cols = wm->cols, .data = nw};
            if ((s = sq_model_set_linear_unit(r->m, l, u, (sq_lin)j, &w, err))) { free(nw); return s; }
            free(*p);
            *p = nw;
        }
    float *xmax = malloc((size_t)(2 * H) * sizeof *xmax), *y0 = malloc((size_t)(T * H) * sizeof *y0), *y1 = malloc((size_t)(T * H) * sizeof *y1);
    float *rx[2] = {moe ? malloc((size_t)(T * H) * sizeof(float)) : NULL, moe ? malloc((size_t)(T * H) * sizeof(float)) : NULL};
    float *r0[2] = {NULL, NULL}; /* the routers as they were */
    if (!xmax || !y0 || !y1 || (moe && (!rx[0] || !rx[1]))) { s = sq_fail(err, SQ_ERR_NOMEM, "SmoothQuant: out of memory"); goto done; }
    for (int which = 0; which < 2 && moe; which++) {
        const sq_wmat *rw = sq_model_router(r->m, l, which);
        if (!rw) continue;
        if (!(r0[which] = malloc((size_t)(rw->rows * rw->cols) * sizeof(float)))) { s = sq_fail(err, SQ_ERR_NOMEM, "SmoothQuant: out of memory"); goto done; }
        sq_dtype_to_f32(rw->dtype, rw->data, r0[which], (size_t)(rw->rows * rw->cols));
    }
    /* Window 0 through the full-precision block, before and after, to check the fold. */
    memcpy(y0, cal->x, (size_t)(T * H) * sizeof *y0);
    router_tap rt = {rx[0], units};
    if ((s = sq_layer_forward(cal->st, l, y0, (int)T, moe ? tap_router_input : NULL, &rt, err))) goto done;
    if ((s = sq_calib_channel_absmax(cal, l, xmax, xmax + H, err))) goto done;
    bool done_set[2];
    for (int set = 0; set < 2 && !s; set++) s = smooth_set(r, sm, l, set, xmax + set * H, &done_set[set], err);
    if (s) goto done;
    memcpy(y1, cal->x, (size_t)(T * H) * sizeof *y1);
    rt.x = rx[1];
    if ((s = sq_layer_forward(cal->st, l, y1, (int)T, moe ? tap_router_input : NULL, &rt, err))) goto done;
    double dmax = 0, ymax = 0;
    for (int64_t i = 0; i < T * H; i++) dmax = fmax(dmax, fabs((double)y1[i] - y0[i])), ymax = fmax(ymax, fabs((double)y0[i]));
    double rel = ymax > 0 ? dmax / ymax : dmax;
    sm->fold_max = fmax(sm->fold_max, rel);
    if (rel > 1e-3) { s = sq_fail(err, SQ_ERR_INTERNAL, "SmoothQuant: folding the scales changed block %d's output by %.3g (relative)", l, rel); goto done; }
    for (int which = 0; which < 2 && moe && done_set[1]; which++) {
        const sq_wmat *rw = sq_model_router(r->m, l, which);
        if (!rw || !r0[which]) continue;
        double rr = logits_change(rx[0], r0[which], rx[1], rw->data, T, H, rw->rows);
        sm->router_fold_max = fmax(sm->router_fold_max, rr);
        if (rr > 1e-3) { s = sq_fail(err, SQ_ERR_INTERNAL, "SmoothQuant: folding the scales changed layer %d's %s logits by %.3g (relative)", l, which ? "shared-expert gate" : "router", rr); goto done; }
    }
done:
    r->t_quant += sq_pl_now() - t0;
    free(xmax), free(y0), free(y1), free(rx[0]), free(rx[1]), free(r0[0]), free(r0[1]);
    return s;
}

static bool ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

bool sq_smooth_writes_tensor(const char *name) {
    if (strncmp(name, "model.layers.", 13)) return false;
    return ends_with(name, ".input_layernorm.weight") || ends_with(name, ".post_attention_layernorm.weight") || ends_with(name, ".mlp.gate.weight") ||
           ends_with(name, ".block_sparse_moe.gate.weight") || ends_with(name, ".mlp.shared_expert_gate.weight");
}

sq_status sq_smooth_write_block(sq_qrun *r, sq_smooth *sm, int l, sq_err *err) {
    const sq_config *c = r->c;
    char name[200];
    sq_status s;
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norm_tensor[i]);
        if ((s = sq_pl_write_floats(r, name, sq_model_norm(r->m, l, i), err))) return s;
    }
    for (int which = 0; which < 2 && sq_config_moe_layer(c, l); which++) {
        const sq_wmat *rw = sq_model_router(r->m, l, which);
        if (!rw) continue;
        router_name(c, l, which, name, sizeof name);
        if (rw->dtype == SQ_DT_F32 && sm->router[which] == rw->data) s = sq_pl_write_floats(r, name, rw->data, err);
        else { /* not compensated (its set was not smoothed): as it was */
            const sq_tensor *t = sq_st_find(sq_model_ckpt(r->m)->st, name);
            s = t ? sq_pl_check_finite(r, name, t->dtype, t->data, t->numel, err) : SQ_OK;
            if (t && !s) s = sq_shards_add(r->w, name, t->dtype, t->ndim, t->shape, t->data, err);
        }
        if (s) return s;
    }
    return SQ_OK;
}
