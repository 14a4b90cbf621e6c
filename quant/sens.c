/* sens.c: the per-unit, per-scheme bytes, proxy and measured KLD of sens.h. */
#include "sens.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../calib/calib.h"
#include "../formats/dtype.h"
#include "budget.h"
#include "quant.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---------------------------------------------------------------- schemes */

sq_status sq_sens_scheme_parse(const char *name, sq_sens_scheme *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    if (strlen(name) >= sizeof out->name) return sq_fail(err, SQ_ERR_ARG, "scheme '%s': unknown (e.g. int4-g128-sym, int8-ch-sym, keep)", name);
    snprintf(out->name, sizeof out->name, "%s", name);
    if (!strcmp(name, "keep")) {
        out->keep = true;
        return SQ_OK;
    }
    int bits = 0, g = 0, used = 0;
    char grp[8] = "", sym[8] = "";
    if (sscanf(name, "int%d-%7[^-]-%7s%n", &bits, grp, sym, &used) != 3 || name[used] || (bits != 4 && bits != 8) ||
        (strcmp(sym, "sym") && strcmp(sym, "asym")))
        return sq_fail(err, SQ_ERR_ARG, "scheme '%s': unknown (e.g. int4-g128-sym, int4-g64-asym, int8-ch-sym, keep)", name);
    if (!strcmp(grp, "ch")) g = -1;
    else if (grp[0] != 'g' || sscanf(grp + 1, "%d%n", &g, &used) != 1 || grp[1 + used] || (g != 32 && g != 64 && g != 128))
        return sq_fail(err, SQ_ERR_ARG, "scheme '%s': the group is g32, g64, g128 (Marlin's) or ch (per channel)", name);
    out->bits = bits;
    out->group_size = g;
    out->sym = !strcmp(sym, "sym");
    return SQ_OK;
}

sq_status sq_sens_schemes_parse(const char *list, sq_sens_scheme *out, int cap, int *n, sq_err *err) {
    *n = 0;
    char buf[1024];
    if (strlen(list) >= sizeof buf) return sq_fail(err, SQ_ERR_ARG, "--schemes: too long");
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == cap) return sq_fail(err, SQ_ERR_ARG, "--schemes: more than %d schemes", cap);
        sq_status s = sq_sens_scheme_parse(t, &out[*n], err);
        if (s) return s;
        for (int i = 0; i < *n; i++)
            if (!strcmp(out[i].name, t)) return sq_fail(err, SQ_ERR_ARG, "--schemes: %s twice", t);
        (*n)++;
    }
    if (!*n) return sq_fail(err, SQ_ERR_ARG, "--schemes: empty");
    return SQ_OK;
}

int sq_sens_default_schemes(sq_sens_scheme *out, int cap) {
    static const char *names[] = {"int4-g128-sym", "int4-g128-asym", "int4-g64-sym", "int4-g64-asym", "int4-g32-sym", "int4-g32-asym",
                                  "int8-ch-sym", "keep"};
    int n = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names && n < cap; i++) sq_sens_scheme_parse(names[i], &out[n++], NULL);
    return n;
}

/* act_order: --act-order, with static groups as the pipeline writes it into compressed-tensors (pipeline.c) */
static sq_qparams qparams_of(const sq_sens_scheme *s, double damp, bool act_order) {
    return (sq_qparams){.bits = s->bits, .group_size = s->group_size, .sym = s->sym, .damp = damp, .block_size = 128, .grid = SQ_GRID_MSE,
                        .act_order = act_order, .static_groups = act_order};
}

double sq_sens_linear_bytes(const sq_sens_scheme *s, int64_t n, int64_t k, int dt_size) {
    if (s->keep) return (double)n * (double)k * dt_size;
    sq_qparams p = qparams_of(s, 0.01, false);
    if (!sq_quant_fits(n, k, &p)) return 0;
    double groups = s->group_size > 0 ? (double)(k / s->group_size) : 1;
    double b = (double)n * (double)k * s->bits / 8 + (double)n * groups * 2; /* weight_packed, weight_scale (F16) */
    if (!s->sym) b += (double)n * groups * s->bits / 8;                         /* weight_zero_point, packed along N */
    return b + 16;                                                              /* weight_shape, I64 [2] */
}

/* ---------------------------------------------------------------- units */

static sq_site site_of(sq_lin w) {
    switch (w) {
    case SQ_LIN_Q: case SQ_LIN_K: case SQ_LIN_V: return SQ_SITE_QKV;
    case SQ_LIN_O: return SQ_SITE_O;
    case SQ_LIN_GATE: case SQ_LIN_UP: return SQ_SITE_GATEUP;
    default: return SQ_SITE_DOWN;
    }
}

static sq_status add_unit(sq_sens *s, sq_model *m, int l, const char *what, const sq_lin *lins, int nl, int units, sq_err *err) {
    sq_sens_unit *u = &s->units[s->n_units];
    memset(u, 0, sizeof *u);
    u->layer = l;
    u->lin = calloc((size_t)(nl * units), sizeof *u->lin);
    if (!u->lin) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    for (int e = 0; e < units; e++)
        for (int i = 0; i < nl; i++) {
            const sq_wmat *w = sq_model_linear_unit(m, l, e, lins[i]);
            if (!w) continue;
            if (w->q || w->f8)
                return sq_fail(err, SQ_ERR_ARG, "quantising to a budget needs a full-precision model: layer %d is already quantised", l);
            u->lin[u->n_lin++] = (sq_sens_lin){l, e, lins[i]};
            u->params += w->rows * w->cols;
        }
    snprintf(u->name, sizeof u->name, "model.layers.%d %s", l, what);
    if (u->n_lin) s->n_units++;
    else free(u->lin);
    return SQ_OK;
}

static sq_status build_units(sq_sens *s, sq_model *m, sq_err *err) {
    const sq_config *c = sq_model_config(m);
    s->units = calloc((size_t)c->n_layers * 4, sizeof *s->units);
    if (!s->units) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    static const sq_lin qkv[] = {SQ_LIN_Q, SQ_LIN_K, SQ_LIN_V}, o[] = {SQ_LIN_O}, gu[] = {SQ_LIN_GATE, SQ_LIN_UP}, dn[] = {SQ_LIN_DOWN};
    sq_status st;
    for (int l = 0; l < c->n_layers; l++) {
        int units = sq_model_ffn_units(m, l);
        if ((st = add_unit(s, m, l, "q/k/v", qkv, 3, 1, err)) || (st = add_unit(s, m, l, "o", o, 1, 1, err)) ||
            (st = add_unit(s, m, l, units > 1 ? "experts gate/up" : "gate/up", gu, 2, units, err)) ||
            (st = add_unit(s, m, l, units > 1 ? "experts down" : "down", dn, 1, units, err)))
            return st;
    }
    return SQ_OK;
}

/* ---------------------------------------------------------------- the proxy */

/* w [n, k] F32 of a linear of the model (must be full precision). */
static sq_status weight_f32(sq_model *m, const sq_sens_lin *li, float **out, int64_t *n, int64_t *k, sq_err *err) {
    const sq_wmat *w = sq_model_linear_unit(m, li->layer, li->unit, li->which);
    *n = w->rows;
    *k = w->cols;
    *out = sq_malloc((size_t)(w->rows * w->cols) * sizeof **out, err);
    if (!*out) return SQ_ERR_NOMEM;
    sq_dtype_to_f32(w->dtype, w->data, *out, (size_t)(w->rows * w->cols));
    return SQ_OK;
}

static sq_status hessian_of(const sq_stats *st, const sq_sens_lin *li, int64_t k, float **h, sq_err *err) {
    const sq_stat_entry *e = sq_stats_find(st, li->layer, site_of(li->which), li->unit);
    if (!e || e->k != k)
        return sq_fail(err, SQ_ERR_ARG, "the statistics have no Hessian of width %lld for layer %d site %d unit %d", (long long)k, li->layer,
                       (int)site_of(li->which), li->unit);
    *h = sq_malloc((size_t)(k * k) * sizeof **h, err);
    if (!*h) return SQ_ERR_NOMEM;
    sq_stats_hessian(st, e, *h);
    return SQ_OK;
}

/* tr(D H D^T), D = w - q (both [n, k]); dh: scratch [n, k]. */
static double weighted_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, float *d, float *dh) {
    for (int64_t i = 0; i < n * k; i++) d[i] = w[i] - q[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)k, (int)k, 1.0f, d, (int)k, h, (int)k, 0.0f, dh, (int)k);
    double e = 0;
    for (int64_t i = 0; i < n * k; i++) e += (double)d[i] * dh[i];
    return e > 0 ? e : 0;
}

/* ---------------------------------------------------------------- the measurement */

typedef struct {
    sq_state *st;
    int n_win, ctx, vocab;
    int *win;          /* [n_win, ctx] */
    float *ref_lp;     /* [n_win, ctx - 1, vocab] the full-precision model's log-probabilities */
    float *logits;     /* [ctx, vocab] */
} measure;

static void log_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = fmaxf(mx, x[i]);
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)(x[i] - mx));
    float ls = (float)log(s) + mx;
    for (int i = 0; i < n; i++) x[i] -= ls;
}

/* The windows: of ctx tokens at a stride of ctx, the ones no calibration window touches, spread over
 * the text; overlapping ones only when there are too few. */
static sq_status pick_windows(const sq_sens_opts *o, measure *me, int *heldout, sq_err *err) {
    int64_t slots = o->n_ids / me->ctx;
    if (slots < me->n_win)
        return sq_fail(err, SQ_ERR_ARG, "the calibration text (%lld tokens) is too short for %d measurement windows of %d tokens",
                       (long long)o->n_ids, me->n_win, me->ctx);
    uint8_t *used = calloc((size_t)slots, 1);
    if (!used) {
        return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    }
    if (o->calib_nsamples > 0 && o->n_ids >= o->calib_seqlen) {
        sq_rng r;
        sq_rng_seed(&r, o->calib_seed);
        for (int i = 0; i < o->calib_nsamples; i++) {
            int64_t a = sq_calib_window_start(&r, o->n_ids, o->calib_seqlen), b = a + o->calib_seqlen;
            for (int64_t sl = a / me->ctx; sl < slots && sl * me->ctx < b; sl++) used[sl] = 1;
        }
    }
    int64_t free_slots = 0;
    for (int64_t sl = 0; sl < slots; sl++) free_slots += !used[sl];
    *heldout = (int)(free_slots < me->n_win ? free_slots : me->n_win);
    /* every (free_slots / n)-th free slot, then the used ones from the start if needed */
    int got = 0;
    int64_t seen = 0;
    for (int64_t sl = 0; sl < slots && got < *heldout; sl++) {
        if (used[sl]) continue;
        if (seen++ * *heldout / (free_slots ? free_slots : 1) != got) continue;
        memcpy(me->win + (int64_t)got * me->ctx, o->ids + sl * me->ctx, (size_t)me->ctx * sizeof(int));
        got++;
    }
    for (int64_t sl = 0; sl < slots && got < me->n_win; sl++)
        if (used[sl]) memcpy(me->win + (int64_t)got++ * me->ctx, o->ids + sl * me->ctx, (size_t)me->ctx * sizeof(int));
    free(used);
    return SQ_OK;
}

/* Window w's log-probabilities at positions 0 .. ctx-2 into lp [ctx - 1, vocab]. */
static sq_status run_window(measure *me, int w, float *lp, sq_err *err) {
    sq_status s;
    if ((s = sq_state_rewind(me->st, 0, err)) || (s = sq_forward(me->st, me->win + (int64_t)w * me->ctx, me->ctx, err)) ||
        (s = sq_logits(me->st, 0, me->ctx - 1, lp, err)))
        return s;
    for (int t = 0; t < me->ctx - 1; t++) log_softmax(lp + (int64_t)t * me->vocab, me->vocab);
    return SQ_OK;
}

/* The mean KL(ref || model) over every window's positions, the model as it is now. */
static sq_status measure_kld(measure *me, double *kld, sq_err *err) {
    double sum = 0;
    int64_t cnt = 0;
    for (int w = 0; w < me->n_win; w++) {
        sq_status s = run_window(me, w, me->logits, err);
        if (s) return s;
        const float *ref = me->ref_lp + (int64_t)w * (me->ctx - 1) * me->vocab;
        for (int t = 0; t < me->ctx - 1; t++) {
            const float *a = ref + (int64_t)t * me->vocab, *b = me->logits + (int64_t)t * me->vocab;
            double k = 0;
            for (int v = 0; v < me->vocab; v++) k += exp((double)a[v]) * ((double)a[v] - b[v]);
            sum += k > 0 ? k : 0;
            cnt++;
        }
    }
    *kld = sum / (double)cnt;
    return SQ_OK;
}

/* ---------------------------------------------------------------- the run */

typedef struct {
    float **q;         /* [n_schemes][n_lin] the dequantised linears (NULL: kept or not held) */
    int n;             /* n_schemes * n_lin */
} unit_work;

static void free_work(unit_work *uw) {
    if (!uw->q) return;
    for (int i = 0; i < uw->n; i++) free(uw->q[i]);
    free(uw->q);
    uw->q = NULL;
}

/* Unit u quantised to scheme si alone: its linears point at the dequantised copies, the KLD measured, the
 * originals put back. */
static sq_status measure_unit(sq_model *m, measure *me, const sq_sens_unit *u, float **q, double *kld, sq_err *err) {
    sq_wmat *saved = calloc((size_t)u->n_lin, sizeof *saved);
    if (!saved) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    sq_status s = SQ_OK;
    int set = 0;
    for (; set < u->n_lin && !s; set++) {
        const sq_sens_lin *li = &u->lin[set];
        saved[set] = *sq_model_linear_unit(m, li->layer, li->unit, li->which);
        sq_wmat w = {.dtype = SQ_DT_F32, .rows = saved[set].rows, .cols = saved[set].cols, .data = q[set]};
        s = sq_model_set_linear_unit(m, li->layer, li->unit, li->which, &w, err);
    }
    if (!s) s = measure_kld(me, kld, err);
    sq_err e2 = {0};
    for (int i = 0; i < set; i++) sq_model_set_linear_unit(m, u->lin[i].layer, u->lin[i].unit, u->lin[i].which, &saved[i], &e2);
    free(saved);
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

sq_status sq_sens_run(sq_model *m, const sq_sens_scheme *schemes, int n_schemes, const sq_sens_opts *o, sq_sens *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    if (!o->stats) return sq_fail(err, SQ_ERR_ARG, "quantising to a budget needs calibration statistics");
    if (n_schemes < 1) return sq_fail(err, SQ_ERR_ARG, "no candidate schemes");
    const sq_config *c = sq_model_config(m);
    const sq_ckpt *ck = sq_model_ckpt(m);
    double damp = o->damp > 0 ? o->damp : 0.01;
    sq_status s;
    out->n_schemes = n_schemes;
    out->schemes = malloc((size_t)n_schemes * sizeof *out->schemes);
    if (!out->schemes) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    memcpy(out->schemes, schemes, (size_t)n_schemes * sizeof *schemes);
    if ((s = build_units(out, m, err))) goto fail;
    size_t cells = (size_t)out->n_units * (size_t)n_schemes;
    out->bytes = calloc(cells, sizeof(double));
    out->err = calloc(cells, sizeof(double));
    out->cost = calloc(cells, sizeof(double));
    out->kld = malloc(cells * sizeof(double));
    out->ref = malloc((size_t)out->n_units * sizeof(int));
    if (!out->bytes || !out->err || !out->cost || !out->kld || !out->ref) {
        s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cells; i++) out->kld[i] = NAN;
    /* the parameters and the bytes outside the units */
    double unit_src = 0;
    for (int u = 0; u < out->n_units; u++)
        for (int i = 0; i < out->units[u].n_lin; i++) {
            const sq_sens_lin *li = &out->units[u].lin[i];
            const sq_wmat *w = sq_model_linear_unit(m, li->layer, li->unit, li->which);
            unit_src += (double)(w->rows * w->cols) * sq_dtype_size(w->dtype);
        }
    char scheme_desc[128];
    int64_t params = 0, bytes_all = 0;
    sq_ckpt_describe(ck, scheme_desc, sizeof scheme_desc, &params, &bytes_all);
    out->params = params;
    out->fixed_bytes = (double)bytes_all - unit_src; /* every stored tensor's data, less the units' */
    if (o->keep_bf16) { /* the F32 matrices outside the units are written as BF16 (qrun.c's sq_pl_keep_as_bf16) */
        double f32_mat = 0;
        for (int64_t i = 0; i < sq_st_count(ck->st); i++) {
            const sq_tensor *t = sq_st_get(ck->st, i);
            if (t->dtype == SQ_DT_F32 && t->ndim >= 2) f32_mat += (double)t->numel * 4;
        }
        for (int u = 0; u < out->n_units; u++)
            for (int i = 0; i < out->units[u].n_lin; i++) {
                const sq_sens_lin *li = &out->units[u].lin[i];
                const sq_wmat *w = sq_model_linear_unit(m, li->layer, li->unit, li->which);
                if (w->dtype == SQ_DT_F32) f32_mat -= (double)(w->rows * w->cols) * 4;
            }
        out->fixed_bytes -= f32_mat / 2;
    }

    /* the measurement's windows and the full-precision log-probabilities */
    measure me = {.n_win = o->measure_windows > 0 ? o->measure_windows : 8, .ctx = o->measure_ctx > 0 ? o->measure_ctx : 128,
                  .vocab = c->vocab};
    if (me.ctx > c->max_pos) me.ctx = c->max_pos;
    me.win = malloc((size_t)me.n_win * (size_t)me.ctx * sizeof *me.win);
    me.ref_lp = malloc((size_t)me.n_win * (size_t)(me.ctx - 1) * (size_t)me.vocab * sizeof *me.ref_lp);
    me.logits = malloc((size_t)me.ctx * (size_t)me.vocab * sizeof *me.logits);
    unit_work uw = {0};
    float *wbuf = NULL, *hbuf = NULL, *d = NULL, *dh = NULL;
    if (!me.win || !me.ref_lp || !me.logits) {
        s = sq_fail(err, SQ_ERR_NOMEM, "out of memory for the measurement's %d windows of %d tokens", me.n_win, me.ctx);
        goto done;
    }
    if ((s = pick_windows(o, &me, &out->heldout_windows, err)) || (s = sq_state_new(&me.st, m, me.ctx, me.ctx, err))) goto done;
    out->measure_windows = me.n_win;
    out->measure_ctx = me.ctx;
    for (int w = 0; w < me.n_win && !s; w++) s = run_window(&me, w, me.ref_lp + (int64_t)w * (me.ctx - 1) * me.vocab, err);
    if (s) goto done;

    double t_proxy = 0, t_meas = 0;
    double *pred = malloc((size_t)out->n_units * sizeof *pred), *meas = malloc((size_t)out->n_units * sizeof *meas);
    if (!pred || !meas) {
        free(pred);
        free(meas);
        s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int u = 0; u < out->n_units && !s; u++) {
        const sq_sens_unit *un = &out->units[u];
        double t0 = now();
        uw.q = calloc((size_t)n_schemes * (size_t)un->n_lin, sizeof *uw.q);
        uw.n = n_schemes * un->n_lin;
        if (!uw.q) {
            s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
            break;
        }
        for (int i = 0; i < un->n_lin && !s; i++) {
            int64_t n, k;
            if ((s = weight_f32(m, &un->lin[i], &wbuf, &n, &k, err)) || (s = hessian_of(o->stats, &un->lin[i], k, &hbuf, err))) break;
            sq_dtype ldt = sq_model_linear_unit(m, un->lin[i].layer, un->lin[i].unit, un->lin[i].which)->dtype;
            int dts = o->keep_bf16 && ldt == SQ_DT_F32 ? 2 : (int)sq_dtype_size(ldt);
            d = malloc((size_t)(n * k) * sizeof *d);
            dh = malloc((size_t)(n * k) * sizeof *dh);
            if (!d || !dh) {
                s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
                break;
            }
            for (int si = 0; si < n_schemes && !s; si++) {
                size_t cell = (size_t)u * (size_t)n_schemes + (size_t)si;
                double b = sq_sens_linear_bytes(&schemes[si], n, k, dts);
                if (i > 0 && out->bytes[cell] == 0 && !schemes[si].keep) continue; /* an earlier linear did not fit */
                if (b == 0) {
                    out->bytes[cell] = 0;
                    continue;
                }
                out->bytes[cell] += b;
                if (schemes[si].keep) continue;
                sq_qparams p = qparams_of(&schemes[si], damp, o->act_order);
                sq_qmatrix qm;
                if ((s = sq_quant_gptq(wbuf, hbuf, n, k, &p, &qm, err))) break;
                float *q = malloc((size_t)(n * k) * sizeof *q);
                if (!q) {
                    sq_qmatrix_free(&qm);
                    s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
                    break;
                }
                sq_qmatrix_dequant(&qm, q);
                sq_qmatrix_free(&qm);
                out->err[cell] += weighted_error(wbuf, q, hbuf, n, k, d, dh);
                uw.q[(size_t)si * (size_t)un->n_lin + (size_t)i] = q;
            }
            free(wbuf), free(hbuf), free(d), free(dh);
            wbuf = hbuf = d = dh = NULL;
        }
        if (s) break;
        /* a scheme that one linear of the unit could not take holds none of it */
        for (int si = 0; si < n_schemes; si++) {
            size_t cell = (size_t)u * (size_t)n_schemes + (size_t)si;
            for (int i = 0; i < un->n_lin && out->bytes[cell] > 0 && !schemes[si].keep; i++)
                if (!uw.q[(size_t)si * (size_t)un->n_lin + (size_t)i]) out->bytes[cell] = 0;
        }
        double t1 = now();
        t_proxy += t1 - t0;
        /* the reference: the smallest quantised scheme; the validation: the one nearest the middle in bytes */
        int ref = -1, val = -1;
        for (int si = 0; si < n_schemes; si++) {
            size_t cell = (size_t)u * (size_t)n_schemes + (size_t)si;
            if (schemes[si].keep || out->bytes[cell] == 0) continue;
            if (ref < 0 || out->bytes[cell] < out->bytes[(size_t)u * n_schemes + ref]) ref = si;
        }
        out->ref[u] = ref;
        if (ref >= 0) {
            size_t rc = (size_t)u * (size_t)n_schemes + (size_t)ref;
            if ((s = measure_unit(m, &me, un, uw.q + (size_t)ref * un->n_lin, &out->kld[rc], err))) break;
            double lo = INFINITY, hi = 0;
            for (int si = 0; si < n_schemes; si++) {
                size_t cell = (size_t)u * (size_t)n_schemes + (size_t)si;
                if (schemes[si].keep || out->bytes[cell] == 0) continue;
                lo = fmin(lo, out->bytes[cell]), hi = fmax(hi, out->bytes[cell]);
            }
            for (int si = 0; si < n_schemes; si++) {
                size_t cell = (size_t)u * (size_t)n_schemes + (size_t)si;
                if (schemes[si].keep || out->bytes[cell] == 0) continue;
                out->cost[cell] = out->err[rc] > 0 ? out->kld[rc] * out->err[cell] / out->err[rc] : 0;
                if (si != ref && (val < 0 || fabs(out->bytes[cell] - 0.5 * (lo + hi)) <
                                                 fabs(out->bytes[(size_t)u * n_schemes + val] - 0.5 * (lo + hi))))
                    val = si;
            }
            out->cost[rc] = out->kld[rc];
            if (o->validate && val >= 0) {
                size_t vc = (size_t)u * (size_t)n_schemes + (size_t)val;
                if ((s = measure_unit(m, &me, un, uw.q + (size_t)val * un->n_lin, &out->kld[vc], err))) break;
                if (out->kld[vc] > 0 && out->cost[vc] > 0) {
                    pred[out->n_validate] = out->cost[vc];
                    meas[out->n_validate++] = out->kld[vc];
                }
            }
        }
        t_meas += now() - t1;
        free_work(&uw);
        if (o->progress) o->progress(o->progress_user, u + 1, out->n_units);
    }
    if (!s && out->n_validate > 1) {
        double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, nv = out->n_validate;
        for (int i = 0; i < out->n_validate; i++) {
            double x = log(pred[i]), y = log(meas[i]);
            sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y;
        }
        double vx = sxx - sx * sx / nv, vy = syy - sy * sy / nv;
        out->validate_r = vx > 0 && vy > 0 ? (sxy - sx * sy / nv) / sqrt(vx * vy) : NAN;
        for (int i = 0; i < out->n_validate; i++) pred[i] /= meas[i];
        qsort(pred, (size_t)out->n_validate, sizeof *pred, cmp_double);
        out->validate_ratio = pred[out->n_validate / 2];
    } else {
        out->validate_r = out->validate_ratio = NAN;
    }
    free(pred);
    free(meas);
    out->seconds_proxy = t_proxy;
    out->seconds_measure = t_meas;
done:
    free_work(&uw);
    free(wbuf), free(hbuf), free(d), free(dh);
    sq_state_free(me.st);
    if (!s) out->windows = me.win, me.win = NULL;
    free(me.win);
    free(me.ref_lp);
    free(me.logits);
    if (!s) return SQ_OK;
fail:
    sq_sens_free(out);
    return s;
}

void sq_sens_free(sq_sens *s) {
    if (!s) return;
    for (int u = 0; u < s->n_units; u++) free(s->units[u].lin);
    free(s->units);
    free(s->schemes);
    free(s->bytes);
    free(s->err);
    free(s->cost);
    free(s->kld);
    free(s->ref);
    free(s->windows);
    memset(s, 0, sizeof *s);
}

sq_status sq_sens_choose(const sq_sens *s, double target_bits, double max_kld, int *choice, double *bytes, double *kld, sq_err *err) {
    int nu = s->n_units, ns = s->n_schemes;
    sq_budget_cand *cand = malloc((size_t)nu * (size_t)ns * sizeof *cand);
    sq_budget_unit *units = malloc((size_t)nu * sizeof *units);
    int **idx = calloc((size_t)nu, sizeof *idx), *sub = malloc((size_t)nu * sizeof *sub);
    sq_status st = SQ_OK;
    if (!cand || !units || !idx || !sub) {
        st = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int u = 0; u < nu; u++) { /* the schemes that hold the unit, as the solver's candidates */
        idx[u] = malloc((size_t)ns * sizeof **idx);
        if (!idx[u]) {
            st = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        units[u] = (sq_budget_unit){0, cand + (size_t)u * ns};
        for (int si = 0; si < ns; si++) {
            double b = s->bytes[(size_t)u * ns + si];
            if (b <= 0) continue;
            idx[u][units[u].n_cand] = si;
            cand[(size_t)u * ns + units[u].n_cand++] = (sq_budget_cand){b, s->cost[(size_t)u * ns + si]};
        }
        if (!units[u].n_cand) {
            st = sq_fail(err, SQ_ERR_ARG, "%s: none of the candidate schemes holds it (add keep to --schemes)", s->units[u].name);
            goto done;
        }
    }
    sq_budget_total tot;
    if (target_bits > 0) {
        double budget = target_bits * (double)s->params / 8 - s->fixed_bytes;
        st = sq_budget_min_cost(units, nu, budget, 0, sub, &tot, err);
        if (st == SQ_ERR_ARG) {
            double least = s->fixed_bytes;
            for (int u = 0; u < nu; u++) {
                double m = units[u].cand[0].bytes;
                for (int c = 1; c < units[u].n_cand; c++) m = fmin(m, units[u].cand[c].bytes);
                least += m;
            }
            st = sq_fail(err, SQ_ERR_ARG, "--target-bits %g is below the %.3f bits per weight of the smallest candidate schemes", target_bits,
                         8 * least / (double)s->params);
        }
    } else {
        st = sq_budget_min_bytes(units, nu, max_kld, 0, sub, &tot, err);
    }
    if (st) goto done;
    for (int u = 0; u < nu; u++) choice[u] = idx[u][sub[u]];
    *bytes = tot.bytes + s->fixed_bytes;
    *kld = tot.cost;
done:
    if (idx)
        for (int u = 0; u < nu; u++) free(idx[u]);
    free(idx);
    free(sub);
    free(cand);
    free(units);
    return st;
}

sq_status sq_sens_measure_choice(sq_model *m, const sq_sens *s, const int *choice, const sq_sens_opts *o, double *kld, sq_err *err) {
    if (!o->stats) return sq_fail(err, SQ_ERR_ARG, "measuring a choice needs calibration statistics");
    if (!s->windows || s->measure_windows < 1) return sq_fail(err, SQ_ERR_ARG, "the measurement has no windows");
    const sq_config *c = sq_model_config(m);
    double damp = o->damp > 0 ? o->damp : 0.01;
    measure me = {.n_win = s->measure_windows, .ctx = s->measure_ctx, .vocab = c->vocab, .win = s->windows};
    int nl = 0;
    for (int u = 0; u < s->n_units; u++) nl += s->units[u].n_lin;
    sq_wmat *saved = calloc((size_t)nl, sizeof *saved);
    const sq_sens_lin **lins = calloc((size_t)nl, sizeof *lins);
    float **q = calloc((size_t)nl, sizeof *q);
    me.ref_lp = malloc((size_t)me.n_win * (size_t)(me.ctx - 1) * (size_t)me.vocab * sizeof *me.ref_lp);
    me.logits = malloc((size_t)me.ctx * (size_t)me.vocab * sizeof *me.logits);
    float *wbuf = NULL, *hbuf = NULL;
    int set = 0;
    sq_status st = SQ_OK;
    if (!saved || !lins || !q || !me.ref_lp || !me.logits) {
        st = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = sq_state_new(&me.st, m, me.ctx, me.ctx, err))) goto done;
    for (int w = 0; w < me.n_win && !st; w++) st = run_window(&me, w, me.ref_lp + (int64_t)w * (me.ctx - 1) * me.vocab, err);
    /* every chosen unit's linears quantised as the pipeline writes them, then set in together */
    for (int u = 0; u < s->n_units && !st; u++) {
        const sq_sens_scheme *sc = &s->schemes[choice[u]];
        if (sc->keep) continue;
        const sq_sens_unit *un = &s->units[u];
        for (int i = 0; i < un->n_lin && !st; i++) {
            int64_t n, k;
            if ((st = weight_f32(m, &un->lin[i], &wbuf, &n, &k, err)) || (st = hessian_of(o->stats, &un->lin[i], k, &hbuf, err))) break;
            sq_qparams p = qparams_of(sc, damp, o->act_order);
            sq_qmatrix qm;
            if ((st = sq_quant_gptq(wbuf, hbuf, n, k, &p, &qm, err))) break;
            float *dq = malloc((size_t)(n * k) * sizeof *dq);
            if (!dq) {
                sq_qmatrix_free(&qm);
                st = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
                break;
            }
            sq_qmatrix_dequant(&qm, dq);
            sq_qmatrix_free(&qm);
            free(wbuf), free(hbuf);
            wbuf = hbuf = NULL;
            lins[set] = &un->lin[i];
            q[set] = dq;
            saved[set] = *sq_model_linear_unit(m, un->lin[i].layer, un->lin[i].unit, un->lin[i].which);
            sq_wmat w = {.dtype = SQ_DT_F32, .rows = saved[set].rows, .cols = saved[set].cols, .data = dq};
            st = sq_model_set_linear_unit(m, un->lin[i].layer, un->lin[i].unit, un->lin[i].which, &w, err);
            set++;
        }
    }
    if (!st) st = measure_kld(&me, kld, err);
done:;
    sq_err e2 = {0};
    for (int i = 0; i < set; i++) sq_model_set_linear_unit(m, lins[i]->layer, lins[i]->unit, lins[i]->which, &saved[i], &e2);
    for (int i = 0; q && i < nl; i++) free(q[i]);
    free(q), free(lins), free(saved), free(wbuf), free(hbuf);
    sq_state_free(me.st);
    free(me.ref_lp);
    free(me.logits);
    return st;
}
