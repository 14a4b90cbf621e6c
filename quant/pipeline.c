/* pipeline.c: the quantize pipeline's driver: the options resolved, the calibration begun (calib/),
 * then block by block the common loop of the method's row (method.h): its block-begin hook, each
 * true-sequential stage ([k, v, q], [o], [gate, up], [down]) with its statistics (each block sees the
 * outputs of the already quantised blocks before it) and every linear quantised or kept, its block-end
 * hook; then the packed tensors, config and spotq.json, written into a temporary directory renamed
 * into place at the end. */
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../base/par.h"
#include "../formats/outdir.h"
#include "budget_run.h"
#include "plan.h"
#include "method.h"

#define stages sq_calib_stages


/* MPI: the rank that solves the j-th linear (in lin order) of stage si of unit u: an MoE site's units
 * go round the ranks (each expert's linears on one rank, which alone holds its Hessian); a one-unit
 * stage's linears do, numbered through the block (0 .. 6), so that the stages' Hessians land on
 * different ranks. */
static int solver_of(int si, int units, int u, int j) {
    int at = 0;
    for (int i = 0; i < si; i++) at += stages[i].n;
    return units > 1 ? u % sq_par_size() : (at + j) % sq_par_size();
}

/* MPI: the units' Hessians each rank needs: those of the linears it solves (cal->need). */
static void set_needs(sq_qrun *r, int si, int units, const sq_lin *lin, char (*why)[SQ_LIN_COUNT][128]) {
    uint64_t *need = r->cal->need;
    for (int u = 0; u < units; u++) {
        need[u] = 0;
        for (int j = 0; j < stages[si].n; j++)
            if (!why[u][lin[j]][0] && solver_of(si, units, u, j) < 64) need[u] |= 1ULL << solver_of(si, units, u, j);
        if (!need[u]) need[u] = 1; /* nothing to solve: rank 0 keeps it (nothing reads it) */
    }
}

/* What a solve hands to the other ranks besides its tensors and report row. */
typedef struct { int64_t cap_len, wbytes, dtype, n_weights_q; double packed_bytes, t_quant; } solve_head;

/* MPI: the solves of units u0 .. u1-1, each linear on its rank (solver_of; the unit's begin hook on
 * every rank), then each result sent in the order one process makes them: the weights the next
 * forward runs on (dequantised F32, or the E4M3 or INT8 codes and scales) to every rank, the report row, and
 * the tensors to rank 0 alone, which writes them. */
static sq_status solve_group_par(sq_qrun *r, int l, int si, int units, int u0, int u1, const sq_lin *lin,
                                 char (*why)[SQ_LIN_COUNT][128], sq_err *err) {
    const sq_method_row *m = r->meth;
    int me = sq_par_rank(), base = r->nrows, n_items = 0, nu = u1 - u0;
    for (int u = u0; u < u1; u++)
        for (int j = 0; j < stages[si].n; j++) n_items += !why[u][lin[j]][0];
    char **caps = calloc((size_t)(n_items + nu) + 1, sizeof *caps); /* each unit's begin hook's tensors, then each solve's */
    solve_head *hd = calloc((size_t)(n_items + nu) + 1, sizeof *hd);
    if (!caps || !hd) { free(caps); free(hd); return sq_fail(err, SQ_ERR_NOMEM, "out of memory"); }
    sq_status s = SQ_OK;
    int i = 0;
    for (int u = u0; u < u1 && !s; u++) {
        int ui = n_items + (u - u0);
        r->capturing = true, r->cap_len = 0;
        if (m->unit_begin) s = m->unit_begin(r, l, si, u, (const char (*)[128])why[u], err);
        r->capturing = false;
        if (!s && !(caps[ui] = malloc(r->cap_len > 0 ? (size_t)r->cap_len : 1))) s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        if (!s && r->cap_len > 0) memcpy(caps[ui], r->cap, (size_t)r->cap_len);
        if (!s) hd[ui].cap_len = r->cap_len;
        for (int j = 0; j < stages[si].n && !s; j++) {
            if (why[u][lin[j]][0]) continue;
            if (solver_of(si, units, u, j) == me) {
                int64_t nq = r->n_weights_q;
                double pb = r->packed_bytes, tq = r->t_quant;
                r->nrows = base + i, r->capturing = true, r->cap_len = 0;
                s = m->quantize(r, l, u, lin[j], &r->cal->hs[u], err);
                r->capturing = false;
                const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, lin[j]);
                int64_t nk = wm->rows * wm->cols;
                hd[i] = (solve_head){.cap_len = r->cap_len, .dtype = wm->dtype, .n_weights_q = r->n_weights_q - nq,
                                     .packed_bytes = r->packed_bytes - pb, .t_quant = r->t_quant - tq,
                                     .wbytes = wm->dtype == SQ_DT_F32 ? nk * (int64_t)sizeof(float)
                                             : wm->dtype == SQ_DT_F8_E4M3 || wm->dtype == SQ_DT_I8 ? (int64_t)sizeof(sq_fp8weight) + sq_fp8weight_nscales(wm->f8, wm->rows, wm->cols) * (int64_t)sizeof(float) + nk
                                                                          : 0};
                r->n_weights_q = nq, r->packed_bytes = pb, r->t_quant = tq;
                if (!s && !(caps[i] = malloc(r->cap_len > 0 ? (size_t)r->cap_len : 1))) s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
                if (!s && r->cap_len > 0) memcpy(caps[i], r->cap, (size_t)r->cap_len);
            }
            i++;
        }
    }
    r->nrows = base + n_items;
    i = 0;
    for (int u = u0; u < u1 && !s; u++) {
        int ui = n_items + (u - u0);
        for (int64_t at = 0; at < hd[ui].cap_len && !s && me == 0;) { /* rank 0: the unit's own tensors first, as one process */
            sq_pl_cap_head h;
            memcpy(&h, caps[ui] + at, sizeof h);
            s = sq_shards_add(r->w, h.name, (sq_dtype)h.dtype, (int)h.nd, h.shape, caps[ui] + at + sizeof h, err);
            at += (int64_t)sizeof h + h.nbytes;
        }
        for (int j = 0; j < stages[si].n && !s; j++) {
            sq_lin which = lin[j];
            if (why[u][which][0]) continue;
            int root = solver_of(si, units, u, j);
            sq_par_bcast(&hd[i], sizeof hd[i], root);
            sq_par_bcast(&r->rows[base + i], sizeof r->rows[base + i], root);
            r->n_weights_q += hd[i].n_weights_q, r->packed_bytes += hd[i].packed_bytes;
            if (me == 0 && root != 0 && !(caps[i] = malloc(hd[i].cap_len > 0 ? (size_t)hd[i].cap_len : 1))) { s = sq_fail(err, SQ_ERR_NOMEM, "out of memory"); break; }
            sq_par_send(caps[i], hd[i].cap_len, root, 0); /* the tensors to rank 0 alone */
            if (hd[i].wbytes) {
                const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, which);
                int64_t n = wm->rows, k = wm->cols;
                char *wbuf = malloc((size_t)hd[i].wbytes);
                if (!wbuf) { s = sq_fail(err, SQ_ERR_NOMEM, "out of memory"); break; }
                if (me == root) {
                    if (hd[i].dtype == SQ_DT_F32) memcpy(wbuf, wm->data, (size_t)hd[i].wbytes);
                    else {
                        int64_t ns = sq_fp8weight_nscales(wm->f8, n, k);
                        memcpy(wbuf, wm->f8, sizeof(sq_fp8weight));
                        memcpy(wbuf + sizeof(sq_fp8weight), wm->f8->scale, (size_t)ns * sizeof(float));
                        memcpy(wbuf + sizeof(sq_fp8weight) + ns * sizeof(float), wm->data, (size_t)(n * k));
                    }
                }
                sq_par_bcast(wbuf, hd[i].wbytes, root);
                if (me == root) free(wbuf);
                else { /* the solver's weights into this rank's model, as the method put them there */
                    sq_wmat w = {.dtype = SQ_DT_F32, .rows = n, .cols = k, .data = wbuf};
                    if (hd[i].dtype == SQ_DT_F8_E4M3 || hd[i].dtype == SQ_DT_I8) { /* E4M3 or INT8 W8A8 codes after their scales */
                        sq_fp8weight *f = (sq_fp8weight *)wbuf;
                        f->scale = (const float *)(f + 1);
                        w = (sq_wmat){.dtype = (sq_dtype)hd[i].dtype, .rows = n, .cols = k, .data = (const uint8_t *)(f->scale + sq_fp8weight_nscales(f, n, k)), .f8 = f};
                    }
                    if ((s = sq_model_set_linear_unit(r->m, l, u, which, &w, err))) { free(wbuf); break; }
                    free(r->held[u * SQ_LIN_COUNT + which]);
                    r->held[u * SQ_LIN_COUNT + which] = wbuf;
                }
            }
            for (int64_t at = 0; at < hd[i].cap_len && !s && me == 0;) { /* rank 0: the tensors, in order */
                sq_pl_cap_head h;
                memcpy(&h, caps[i] + at, sizeof h);
                s = sq_shards_add(r->w, h.name, (sq_dtype)h.dtype, (int)h.nd, h.shape, caps[i] + at + sizeof h, err);
                at += (int64_t)sizeof h + h.nbytes;
            }
            i++;
        }
    }
    for (int t = 0; t < n_items + nu; t++) free(caps[t]);
    free(caps);
    free(hd);
    return s;
}

/* One true-sequential stage of block l, for every FFN unit it has: the statistics of its site (the
 * method's own, a calibration pass, --stats, or none), then each unit's linears quantised (or kept,
 * with the reason). */
static sq_status quantize_stage(sq_qrun *r, int l, int si, sq_err *err) {
    const sq_method_row *m = r->meth;
    bool ffn = stages[si].site == SQ_SITE_GATEUP || stages[si].site == SQ_SITE_DOWN;
    int units = ffn ? sq_model_ffn_units(r->m, l) : 1, todo = 0;
    char (*why)[SQ_LIN_COUNT][128] = malloc((size_t)units * sizeof *why);
    if (!why) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    for (int u = 0; u < units; u++)
        for (int j = 0; j < stages[si].n; j++) {
            sq_lin which = stages[si].lin[j];
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, which);
            char name[160];
            sq_lin_name_unit(r->c, l, u, which, name, sizeof name);
            sq_pl_keep_reason(r, l, which, name, wm->rows, wm->cols, why[u][which], sizeof why[u][which]);
            todo += why[u][which][0] == 0;
        }
    sq_lin lin[3]; /* the order they are quantised and written in */
    memcpy(lin, stages[si].lin, sizeof lin);
    for (int i = 1; i < stages[si].n && m->index_order; i++)
        for (int j = i; j > 0 && lin[j] < lin[j - 1]; j--) {
            sq_lin t = lin[j];
            lin[j] = lin[j - 1], lin[j - 1] = t;
        }
    sq_status s = SQ_OK;
    sq_calib *cal = r->cal;
    int group = todo ? sq_calib_unit_group(cal, l, si, units) : units;
    bool par = sq_par_size() > 1 && !m->stage_hessians; /* MPI: the solves round the ranks (a method's own statistics: every rank solves) */
    if (par) set_needs(r, si, units, lin, why);
    for (int u0 = 0; u0 < units && todo && !s; u0 += group) {
        int u1 = u0 + group < units ? u0 + group : units;
        s = m->stage_hessians ? m->stage_hessians(r, l, si, u0, u1, err) : sq_calib_stage_stats(cal, l, si, units, u0, u1, err);
        if (par && !s) s = solve_group_par(r, l, si, units, u0, u1, lin, why, err);
        for (int u = u0; u < u1 && !s && !par; u++) {
            if (m->unit_begin) s = m->unit_begin(r, l, si, u, (const char (*)[128])why[u], err);
            for (int j = 0; j < stages[si].n && !s; j++)
                if (!why[u][lin[j]][0]) s = m->quantize(r, l, u, lin[j], &cal->hs[u], err);
        }
        sq_calib_free_hessians(cal);
    }
    for (int u = 0; u < units && !s && !m->keep_at_end; u++)
        for (int j = 0; j < stages[si].n && !s; j++)
            if (why[u][lin[j]][0]) s = sq_pl_keep_linear(r, l, u, lin[j], why[u][lin[j]], err);
    free(why);
    return s;
}

/* Block l on the common loop: the method's block-begin hook, the stages, its block-end hook (by
 * default the quantised block's outputs become the next block's inputs). */
static sq_status quantize_block(sq_qrun *r, int l, sq_err *err) {
    const sq_method_row *m = r->meth;
    sq_calib_block_begin(r->cal);
    sq_status s = m->block_begin ? m->block_begin(r, l, err) : SQ_OK;
    for (int si = 0; si < SQ_CALIB_NSTAGES && !s; si++) s = quantize_stage(r, l, si, err);
    for (int u = 0; u < sq_model_ffn_units(r->m, l) && !s && m->keep_at_end; u++)
        for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT && !s; j++) {
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, (sq_lin)j);
            char name[160], why[128];
            sq_lin_name_unit(r->c, l, u, (sq_lin)j, name, sizeof name);
            sq_pl_keep_reason(r, l, (sq_lin)j, name, wm->rows, wm->cols, why, sizeof why);
            if (why[0]) s = sq_pl_keep_linear(r, l, u, (sq_lin)j, why, err);
        }
    if (s) return s;
    return m->block_end ? m->block_end(r, l, err) : sq_calib_forward(r->cal, l, NULL, NULL, err);
}

/* Every tensor that is not a linear weight goes to the output unchanged (embeddings, norms, biases,
 * lm_head, routers). */
static sq_status copy_others(sq_qrun *r, const sq_st *st, sq_err *err) {
    uint8_t *linear = sq_calloc((size_t)sq_st_count(st) + 1, 1, err);
    if (!linear) return SQ_ERR_NOMEM;
    for (int l = 0; l < r->c->n_layers; l++)
        for (int u = 0; u < sq_model_ffn_units(r->m, l); u++)
            for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
                char name[200];
                sq_lin_name_unit(r->c, l, u, (sq_lin)j, name, sizeof name - 8);
                strcat(name, ".weight");
                const sq_tensor *t = sq_st_find(st, name);
                if (t) linear[t - sq_st_get(st, 0)] = 1;
            }
    sq_status s = SQ_OK;
    for (int64_t i = 0; i < sq_st_count(st) && !s; i++) {
        const sq_tensor *t = sq_st_get(st, i);
        if (linear[i]) continue;
        if (r->meth->writes_tensor && r->meth->writes_tensor(r, t->name)) continue; /* e.g. what AWQ folds its scales into: written with its block */
        if ((s = sq_pl_check_finite(r, t->name, t->dtype, t->data, t->numel, err))) break;
        double t0 = sq_pl_now();
        if (sq_pl_keep_as_bf16(r, t->dtype, t->ndim)) {
            uint16_t *b = sq_malloc((size_t)t->numel * sizeof *b, err);
            if (!b) { s = SQ_ERR_NOMEM; break; }
            sq_dtype_from_f32(SQ_DT_BF16, t->data, b, (size_t)t->numel);
            s = sq_shards_add(r->w, t->name, SQ_DT_BF16, t->ndim, t->shape, b, err);
            free(b);
        } else {
            s = sq_shards_add(r->w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
        }
        r->t_write += sq_pl_now() - t0;
    }
    free(linear);
    return s;
}

/* Calls fn on every linear of the model (name, matrix, the reason it stays in full precision under r's
 * settings, "" when it is quantised) until fn returns true; returns whether one did. */
typedef bool (*linear_fn)(const char *name, const sq_wmat *wm, const char *keep, void *user);
static int find_l, find_which; /* the layer and sq_lin of the linear fn is called on */
static bool find_linear(const sq_qrun *r, linear_fn fn, void *user) {
    for (int l = 0; l < r->c->n_layers; l++)
        for (int u = 0; u < sq_model_ffn_units(r->m, l); u++)
            for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
                const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, (sq_lin)j);
                char name[160], keep[160];
                sq_lin_name_unit(r->c, l, u, (sq_lin)j, name, sizeof name);
                sq_pl_keep_reason(r, l, (sq_lin)j, name, wm->rows, wm->cols, keep, sizeof keep);
                find_l = l, find_which = j;
                if (fn(name, wm, keep, user)) return true;
            }
    return false;
}

typedef struct {
    int total;
    char first[160], first_why[160];
} kept_count;

static bool quantised_or_count(const char *name, const sq_wmat *wm, const char *keep, void *user) {
    (void)wm;
    kept_count *k = user;
    if (!keep[0]) return true;
    if (!k->total++) snprintf(k->first, sizeof k->first, "%s", name), snprintf(k->first_why, sizeof k->first_why, "%s", keep);
    return false;
}

/* Refuses a run that would quantise nothing (every linear kept by its shape, the group size or
 * --ignore): written anyway, it would pass a CI step as quantised. Names the reason of the first
 * linear and, for a group size no linear fits, the sizes that would. */
static sq_status check_some_linear_fits(sq_qrun *r, sq_err *err) {
    kept_count k = {0};
    if (find_linear(r, quantised_or_count, &k) || !k.total) return SQ_OK;
    char fits[128] = "", suffix[160] = "";
    if (r->o->q.group_size > 0) { /* which group sizes would have let some linear in */
        sq_quantize_opts t = *r->o;
        sq_qrun probe = *r;
        probe.o = &t;
        probe.plan = (sq_plan){0}; /* o's scheme everywhere: the candidate group sizes as given */
        int n = 0;
        static const int cand[] = {-1, 32, 64, 128, 256};
        for (size_t c = 0; c < sizeof cand / sizeof *cand; c++) {
            t.q.group_size = cand[c];
            kept_count none = {0};
            if (find_linear(&probe, quantised_or_count, &none)) n += snprintf(fits + n, sizeof fits - (size_t)n, "%s%d", n ? ", " : "", cand[c]);
        }
        if (n) snprintf(suffix, sizeof suffix, "; --group-size %s would fit", fits);
    }
    return sq_fail(err, SQ_ERR_ARG, "%s: no linear layer can be quantised with these settings, so nothing would be: all %d stay in full "
                   "precision, e.g. %s: %s%s", r->o->model, k.total, k.first, k.first_why, suffix);
}

typedef struct {
    const sq_qrun *r;
    const sq_quantize_opts *o;
    char why[512];
} marlin_probe;

/* A quantised linear that vLLM's Marlin could not take as GPTQ v1 (its reason into p->why). */
static bool marlin_refuses(const char *name, const sq_wmat *wm, const char *keep, void *user) {
    marlin_probe *p = user;
    if (keep[0]) return false;
    sq_serve_linear v;
    sq_scheme sc = sq_pl_lin_scheme(p->r, find_l, (sq_lin)find_which); /* the plan's scheme for it */
    sq_serve_plan(p->r->c, name, wm->rows, wm->cols, SQ_SERVE_AS_GPTQ, sc.bits, sc.group_size, true, 1, &v);
    if (v.verdict != SQ_SERVE_REJECT) return false;
    snprintf(p->why, sizeof p->why, "vLLM serves GPTQ v1 only through Marlin, which cannot take %s (%s)", name, v.rule);
    return true;
}

/* SQ_FORMAT_AUTO: GPTQ v1 only where vLLM would load it (it serves GPTQ v1 through Marlin alone:
 * symmetric, Marlin's group sizes and shapes for every linear quantised), else compressed-tensors
 * pack-quantized, with one line saying why. Act-order there takes static groups (no g_idx). */
static void resolve_format(sq_qrun *r, sq_quantize_opts *o, char *note, size_t cap) {
    marlin_probe p = {r, o, ""};
    sq_scheme d[4];
    int nd = r->plan.n_layers ? sq_plan_distinct(&r->plan, d, 4) : 1;
    if (nd > 1) snprintf(p.why, sizeof p.why, "the plan writes %d schemes (group sizes %d, %d%s), and GPTQ v1 states one", nd, d[0].group_size,
                         d[1].group_size, nd > 2 ? ", ..." : "");
    else if (!o->q.sym) snprintf(p.why, sizeof p.why, "asymmetric weights (zero points): vLLM serves GPTQ v1 only through Marlin, which takes them symmetric");
    else find_linear(r, marlin_refuses, &p);
    o->format = p.why[0] ? SQ_FORMAT_CT : SQ_FORMAT_GPTQ;
    if (!p.why[0]) return;
    bool stat = o->q.act_order && !o->q.static_groups; /* said with the summary, so that an error stays the only line */
    o->q.static_groups |= stat;
    snprintf(note, cap, "wrote compressed-tensors pack-quantized%s: %s; %s",
             stat ? " (act-order with static groups: the format stores no g_idx)" : "", p.why,
             nd > 1 ? "--strict-group-size with a group size that fits every linear writes one" : "--format gptq writes GPTQ v1 anyway");
}


/* The per-linear plan (plan.h) into r->plan: a copy of o->plan (checked), else for a method row with
 * plan_groups the default one over each linear's in_features (unit 0: every expert of a layer has the
 * same shape), its lowering said once; else empty (o's scheme everywhere). */
static sq_status build_plan(sq_qrun *r, sq_err *err) {
    const sq_quantize_opts *o = r->o;
    int L = r->c->n_layers;
    if (o->plan) {
        if (o->plan->n_layers != L)
            return sq_fail(err, SQ_ERR_ARG, "%s: the quantisation plan has %d layers, the model %d", o->model, o->plan->n_layers, L);
        sq_scheme any = sq_pl_scheme(o);
        sq_status s = sq_plan_init(&r->plan, L, &any, err);
        if (s) return s;
        memcpy(r->plan.e, o->plan->e, (size_t)L * SQ_LIN_COUNT * sizeof *r->plan.e);
        return sq_plan_check(&r->plan, err);
    }
    if (!r->meth->plan_groups) return SQ_OK;
    int64_t *k = sq_calloc((size_t)(L ? L : 1) * SQ_LIN_COUNT, sizeof *k, err);
    if (!k) return SQ_ERR_NOMEM;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < SQ_LIN_COUNT; j++) {
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, 0, (sq_lin)j);
            k[l * SQ_LIN_COUNT + j] = wm ? wm->cols : 0;
        }
    sq_scheme base = sq_pl_scheme(o);
    sq_status s = sq_plan_default(&r->plan, L, k, &base, o->strict_group_size, err);
    free(k);
    if (s) {
        char m[sizeof err->msg];
        memcpy(m, err->msg, sizeof m);
        return sq_fail(err, s, "%s: %s", o->model, m);
    }
    for (int l = 0; l < L && o->n_ignore; l++) /* a linear --ignore keeps in every unit writes no scheme (its keep reason stays the ignore) */
        for (int j = 0; j < SQ_LIN_COUNT; j++) {
            bool all = true;
            for (int u = 0; u < (j >= SQ_LIN_GATE ? sq_model_ffn_units(r->m, l) : 1) && all; u++) {
                char name[160];
                sq_lin_name_unit(r->c, l, u, (sq_lin)j, name, sizeof name);
                bool hit = false;
                for (int i = 0; i < o->n_ignore && !hit; i++) hit = fnmatch(o->ignore[i], name, 0) == 0;
                all = hit;
            }
            if (all) r->plan.e[l * SQ_LIN_COUNT + j].keep = true;
        }
    return SQ_OK; /* its lowering said once the format is settled (an error stays the only line) */
}

/* After resolve_format: the act-order choices it made (static groups) in every entry of the plan. */
static void plan_follow(sq_qrun *r) {
    for (int i = 0; i < r->plan.n_layers * SQ_LIN_COUNT; i++)
        r->plan.e[i].s.act_order = r->o->q.act_order, r->plan.e[i].s.static_groups = r->o->q.static_groups;
}

/* ---------------------------------------------------------------- the pipeline */

/* MPI: what each rank sent over the whole run and per block, and where its time went, said by rank 0. */
static void par_summary(const sq_qrun *r, int64_t last_block_bytes) {
    typedef struct { int64_t sent, last; double fwd, hess, quant, wait; } par_row;
    int N = sq_par_size();
    par_row mine = {sq_par_bytes_sent(), last_block_bytes, r->cal->t_forward, r->cal->t_hessian, r->t_quant, sq_par_wait_seconds()};
    int64_t *off = malloc((size_t)(N + 1) * sizeof *off);
    par_row *all = off ? sq_par_allgatherv(&mine, sizeof mine, off) : NULL;
    free(off);
    for (int q = 0; q < N && all && sq_par_root(); q++)
        sq_log(SQ_LOG_INFO, "MPI rank %d of %d: sent %.1f MiB, %.2f MiB per block (%d blocks; the last block %.2f MiB); forward %.1f s, "
               "hessian %.1f s, solve %.1f s, in MPI calls %.1f s", q, N, (double)all[q].sent / 1048576.0,
               (double)all[q].sent / 1048576.0 / r->c->n_layers, r->c->n_layers, (double)all[q].last / 1048576.0, all[q].fwd,
               all[q].hess, all[q].quant, all[q].wait);
    free(all);
}

/* Everything a run holds, freed at its end. */
typedef struct {
    sq_qrun r;
    sq_calib cal;
    sq_exec *ex;
    sq_outdir *od;
} pipeline;

static void pipeline_free(pipeline *p) {
    sq_qrun *r = &p->r;
    sq_shards_abort(r->w);
    sq_outdir_abort(p->od);
    if (r->meth && r->meth->fini) r->meth->fini(r);
    for (int j = 0; r->deq && j < r->max_units * SQ_LIN_COUNT; j++) free(r->deq[j]);
    free(r->deq);
    for (int j = 0; r->held && j < r->max_units * SQ_LIN_COUNT; j++) free(r->held[j]);
    free(r->held);
    free(r->cap);
    free(r->rows);
    sq_plan_free(&r->plan);
    sq_calib_end(&p->cal);
    sq_model_close(r->m);
    sq_exec_free(p->ex);
}

/* GFLOP/s of f operations in t seconds (0 when nothing ran). */
static double gflops(double f, double t) { return t > 0 ? f / t / 1e9 : 0; }

sq_status sq_quantize_model(const sq_quantize_opts *opts, sq_err *err) {
    double t0 = sq_pl_now();
    sq_quantize_opts resolved = *opts; /* the rules applied, then the format chosen for SQ_FORMAT_AUTO */
    sq_status s = sq_quantize_resolve(&resolved, err);
    if (s) return s;
    const sq_quantize_opts *o = &resolved;
    sq_budget_result budget = {0};
    sq_plan budget_plan = {0};
    bool use_budget = o->target_bits > 0 || o->max_kld > 0;
    if (use_budget) { /* the choice first, then the pipeline writes it from the same statistics */
        if ((s = sq_path_check_output(o->out, (const char *[]){o->model, o->calib, o->stats_in}, (const char *[]){"the model", "the calibration text", "the statistics file"}, 3, err)))
            return s;
        if ((s = sq_budget_prepare(o, &budget, err))) return s;
        resolved.stats_in = budget.stats_path;
        resolved.calib = NULL;
        sq_log(SQ_LOG_INFO, "budget: %.3f bits per weight predicted, KLD %.5f predicted, %.5f measured on %d held-out windows (%.1f s)",
               budget.bits, budget.pred_kld, budget.heldout_kld, budget.sens.heldout_windows, budget.seconds);
        s = sq_budget_plan(&budget, &resolved, &budget_plan, err);
        resolved.plan = &budget_plan;
        if (s) {
            sq_budget_free(&budget);
            sq_plan_free(&budget_plan);
            return s;
        }
    }
    pipeline p = {0};
    sq_qrun *r = &p.r;
    r->o = o;
    r->meth = sq_method_row_of(o->method);
    r->cal = &p.cal;
    if ((s = sq_exec_new(&p.ex, "cpu", o->threads, err))) return s;
    if ((s = sq_model_open(&r->m, o->model, p.ex, err))) goto done;
    r->c = sq_model_config(r->m);
    const sq_ckpt *ck = sq_model_ckpt(r->m);
    { /* the output is none of the inputs, holds none and lies in none: checked before anything is written */
        const char *in[] = {ck->dir, ck->weights_path, o->calib, o->stats_in};
        const char *what[] = {"the model's directory", "the model's weights", "the calibration text", "the statistics file"};
        if ((s = sq_path_check_output(o->out, in, what, 4, err))) goto done;
    }
    if ((s = build_plan(r, err))) goto done;
    if ((s = check_some_linear_fits(r, err))) goto done;
    char format_note[700] = ""; /* why SQ_FORMAT_AUTO chose compressed-tensors, said after the output is written */
    if (o->format == SQ_FORMAT_AUTO) resolve_format(r, &resolved, format_note, sizeof format_note);
    else if (r->plan.n_layers && !sq_pl_format(o)->several_schemes) {
        sq_scheme d[4];
        int nd = sq_plan_distinct(&r->plan, d, 4);
        if (nd > 1) {
            s = sq_fail(err, SQ_ERR_ARG, "%s: --format %s states one group size, but in_features of some linears is no multiple of %d, so "
                        "the plan writes %d (%d, %d%s): use --format compressed-tensors (or auto), or --strict-group-size with a size "
                        "that fits every linear", o->model, sq_format_name(o->format), o->q.group_size, nd, d[0].group_size, d[1].group_size,
                        nd > 2 ? ", ..." : "");
            goto done;
        }
    }
    plan_follow(r);
    {
        char note[256];
        sq_plan_note(&r->plan, o->q.group_size, note, sizeof note);
        if (note[0]) sq_log(SQ_LOG_INFO, "%s (the largest group size vLLM serves that divides each; --strict-group-size refuses instead)", note);
    }
    sq_calib_opts co = {.model = o->model, .calib = o->calib, .nsamples = o->nsamples, .seqlen = o->seqlen, .seed = o->seed,
                        .stats_in = o->stats_in, .max_hessian_bytes = o->max_hessian_bytes,
                        .absmax = (r->meth->needs & SQ_NEED_ABSMAX) != 0,
                        .backend = r->meth->gpu ? o->backend : NULL};
    if ((s = sq_calib_begin(&p.cal, r->m, &co, err))) goto done;
    resolved.nsamples = p.cal.o.nsamples, resolved.seqlen = p.cal.o.seqlen; /* as calibrated (--seqlen 0 resolved) */
    int64_t nlin = 0;
    for (int l = 0; l < r->c->n_layers; l++) {
        int u = sq_model_ffn_units(r->m, l);
        nlin += 4 + 3 * u;
        if (u > r->max_units) r->max_units = u;
    }
    r->rows = sq_calloc((size_t)nlin, sizeof *r->rows, err);
    r->deq = sq_calloc((size_t)r->max_units * SQ_LIN_COUNT, sizeof *r->deq, err);
    if (sq_par_size() > 1) r->held = sq_calloc((size_t)r->max_units * SQ_LIN_COUNT, sizeof *r->held, err);
    if (!r->rows || !r->deq || (sq_par_size() > 1 && !r->held)) {
        s = SQ_ERR_NOMEM;
        goto done;
    }
    if (r->meth->init && (s = r->meth->init(r, err))) goto done;
    if (sq_par_root()) { /* MPI: rank 0 alone writes OUT (the others' r->w stays NULL: their tensors go nowhere) */
        if ((s = sq_outdir_begin(&p.od, o->out, o->force, err))) goto done;
        if ((s = sq_shards_open(&r->w, sq_outdir_tmp(p.od), o->max_shard_bytes > 0 ? o->max_shard_bytes : SQ_DEFAULT_SHARD_BYTES, err))) goto done;
        if ((s = copy_others(r, ck->st, err))) goto done;
    }
    if ((s = sq_par_start(SQ_OK, sq_ckpt_hash(ck, p.cal.hash), err))) goto done; /* every rank ready, the same inputs */
    int64_t block_bytes = 0;
    for (int64_t i = 0; i < sq_st_count(ck->st); i++) /* embeddings, lm_head: written, not needed again */
        if (strncmp(sq_st_get(ck->st, i)->name, "model.layers.", 13) != 0) sq_st_release(ck->st, sq_st_get(ck->st, i));
    for (int l = 0; l < r->c->n_layers; l++) {
        int64_t sent = sq_par_bytes_sent();
        if (sq_par_test_fault(l)) { s = sq_fail(err, SQ_ERR_INTERNAL, "test fault at block %d (SPOTQ_TEST_FAULT)", l); goto done; }
        if ((s = quantize_block(r, l, err))) goto done;
        block_bytes = sq_par_bytes_sent() - sent;
        if (sq_par_size() > 1) sq_log(SQ_LOG_DEBUG, "rank %d: block %d: sent %lld bytes", sq_par_rank(), l, (long long)block_bytes);
        /* Done with this block's weights: out of resident memory, so the peak stays about one block. */
        char prefix[64];
        int np = snprintf(prefix, sizeof prefix, "model.layers.%d.", l);
        for (int64_t i = 0; i < sq_st_count(ck->st); i++)
            if (strncmp(sq_st_get(ck->st, i)->name, prefix, (size_t)np) == 0) sq_st_release(ck->st, sq_st_get(ck->st, i));
        if (o->progress) o->progress(o->progress_user, "quantize", l + 1, r->c->n_layers, sq_pl_now() - t0);
    }
    if (sq_par_size() > 1) par_summary(r, block_bytes);
    if (!sq_par_root()) goto done; /* the rest writes OUT */
    int nkept = 0;
    for (int i = 0; i < r->nrows; i++) nkept += !r->rows[i].quantized;
    if (nkept)
        sq_log(SQ_LOG_WARN, "%d of %d linear layers stay in full precision (see kept_in_full_precision in spotq.json), e.g. %s: %s",
               nkept, r->nrows, r->rows[0].quantized ? r->rows[r->nrows - 1].name : r->rows[0].name,
               r->rows[0].quantized ? r->rows[r->nrows - 1].note : r->rows[0].note);
    sq_qreport rep = {.o = o, .c = r->c, .t = r->meth->report, .scheme = sq_pl_scheme(o), .fmt = sq_pl_format(o), .rows = r->rows, .nrows = r->nrows, .calib_hash = p.cal.hash,
                      .calib_tokens = p.cal.nids, .bos_id = p.cal.bos_id, .bos_rule = p.cal.bos_rule,
                      .stats = o->stats_in ? &p.cal.stats : NULL, .moe_tokens = p.cal.moe_tokens, .moe_all = p.cal.moe_all,
                      .n_weights_q = r->n_weights_q, .packed_bytes = r->packed_bytes, .budget = use_budget ? &budget : NULL};
    if (r->meth->report.awq) sq_awq_fold_figures(r, &rep.fold_max, &rep.router_fold_max);
    if (r->meth->report_figures) r->meth->report_figures(r, &rep);
    rep.out_bytes = sq_shards_bytes(r->w);
    char src_scheme[128]; /* the source's parameters and size, counted as bench counts them */
    sq_ckpt_describe(ck, src_scheme, sizeof src_scheme, &rep.src_params, &rep.src_bytes);
    double tw = sq_pl_now();
    int nshards;
    s = sq_shards_finish(r->w, &nshards, err);
    r->w = NULL;
    if (!s && nshards > 1) sq_log(SQ_LOG_INFO, "weights written as %d shards of at most %lld bytes", nshards, (long long)o->max_shard_bytes);
    r->t_write += sq_pl_now() - tw;
    if (s) goto done;
    if ((s = sq_pl_write_config(&rep, p.od, ck->config_path, err))) goto done;
    static const char *copy[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                 "generation_config.json", "LICENSE"};
    for (size_t i = 0; i < sizeof copy / sizeof *copy && !s; i++) s = sq_outdir_copy(p.od, ck->dir, copy[i], true, err);
    if (s) goto done;
    sq_serve_summary serve;
    { /* the serving check on what was written: one warning when vLLM would not load it */
        sq_ckpt *oc = NULL;
        sq_err e2 = {0};
        if (sq_ckpt_open(&oc, sq_outdir_tmp(p.od), &e2) == SQ_OK && sq_serve_check(oc, 1, NULL, NULL, &serve, &e2) == SQ_OK) {
            rep.serve = &serve;
            if (serve.n_reject)
                sq_log(SQ_LOG_WARN, "vLLM would not load %s: %d of %d linears break its kernel rules, e.g. %s: %s (spotq check %s lists them)",
                       o->out, serve.n_reject, serve.n_linear, serve.first_reject.name, serve.first_reject.rule, o->out);
        }
        sq_ckpt_close(oc);
    }
    rep.t_forward = p.cal.t_forward, rep.t_hessian = p.cal.t_hessian, rep.t_quant = r->t_quant, rep.t_write = r->t_write;
    /* the calibration state's forwards outside t_forward (AWQ's scale searches, timed in quantize) count as quantize's */
    double f_all = p.cal.st ? sq_state_flops(p.cal.st) : 0;
    rep.f_forward = p.cal.f_forward, rep.f_hessian = p.cal.f_hessian, rep.f_quant = r->f_quant + (f_all - p.cal.f_forward);
    rep.total = sq_pl_now() - t0;
    if ((s = sq_pl_write_report(&rep, p.od, err))) goto done;
    s = sq_outdir_commit(p.od, err);
    p.od = NULL;
    if (!s && format_note[0]) sq_log(SQ_LOG_INFO, "%s", format_note);
    if (!s) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char a[32], b[32];
        sq_human_bytes(rep.src_bytes, a, sizeof a);
        sq_human_bytes(rep.out_bytes, b, sizeof b);
        sq_log(SQ_LOG_INFO, "quantized %d of %d linear layers (%.2f bits per quantized weight): the checkpoint %.2f bits per weight, %s "
               "(source %s, %.2f bits per weight) in %.1f s: forward %.1f (%.1f GFLOP/s), hessian %.1f (%.1f), %s %.1f (%.1f), write %.1f; peak RSS %.0f MiB",
               r->nrows - nkept, r->nrows, r->n_weights_q ? 8.0 * r->packed_bytes / (double)r->n_weights_q : 0.0,
               rep.src_params ? 8.0 * (double)rep.out_bytes / (double)rep.src_params : 0.0, b, a,
               rep.src_params ? 8.0 * (double)rep.src_bytes / (double)rep.src_params : 0.0, sq_pl_now() - t0, p.cal.t_forward,
               gflops(rep.f_forward, p.cal.t_forward), p.cal.t_hessian, gflops(rep.f_hessian, p.cal.t_hessian), r->meth->name, r->t_quant,
               gflops(rep.f_quant, r->t_quant), r->t_write, (double)ru.ru_maxrss / 1024.0);
    }
done:
    pipeline_free(&p);
    sq_budget_free(&budget);
    sq_plan_free(&budget_plan);
    return s;
}
