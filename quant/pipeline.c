/* pipeline.c: the quantize pipeline: calibration windows -> block-by-block calibration (each block
 * sees the outputs of the already quantised blocks before it, true-sequential inside the block:
 * [k, v, q], [o], [gate, up], [down]) -> RTN or GPTQ per linear -> packed tensors, config and
 * spotq.json, written into a temporary directory renamed into place at the end. */
#include "pipeline_internal.h"

#include <cblas.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "../calib/calib.h"
#include "../formats/dtype.h"
#include "awq.h"
#include "fp8.h"
#include "../formats/outdir.h"
#include "../formats/text.h"
#include "../formats/tokenizer.h"
#include "../runtime/runtime.h"

const char *sq_method_name(sq_method m) {
    static const char *names[] = {"rtn", "gptq", "awq", "awq+gptq", "fp8", "fp8+gptq"};
    return m >= 0 && m < (int)(sizeof names / sizeof *names) ? names[m] : "?";
}

bool sq_pl_is_awq(sq_method m) { return m == SQ_METHOD_AWQ || m == SQ_METHOD_AWQ_GPTQ; }
bool sq_pl_is_fp8(sq_method m) { return m == SQ_METHOD_FP8 || m == SQ_METHOD_FP8_GPTQ; }

double sq_pl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The true-sequential stages of a Llama block and the site whose input each needs. */
static const struct { sq_site site; int n; sq_lin lin[3]; } stages[] = {
    {SQ_SITE_QKV, 3, {SQ_LIN_K, SQ_LIN_V, SQ_LIN_Q}},
    {SQ_SITE_O, 1, {SQ_LIN_O}},
    {SQ_SITE_GATEUP, 2, {SQ_LIN_GATE, SQ_LIN_UP}},
    {SQ_SITE_DOWN, 1, {SQ_LIN_DOWN}},
};

static bool tap(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    run *r = user;
    if (site != r->want || unit >= r->units) return false;
    double t = sq_pl_now();
    if (unit >= r->u0 && unit < r->u1 && !r->hess_err.code) sq_hessian_add(&r->hs[unit], x, n, &r->hess_err);
    if (r->counting) r->unit_tokens[unit] += n;
    if (r->counting && (sq_pl_is_fp8(r->o->method) || r->o->stats_out)) { /* max |x|: FP8 scales, and kept by spotq calib */
        int64_t bad;
        float m = sq_fp8_absmax(x, (int64_t)n * dim, &bad);
        r->act_absmax[unit] = m < 0 ? INFINITY : fmaxf(r->act_absmax[unit], m);
    }
    r->t_hessian += sq_pl_now() - t;
    return unit == (r->counting ? r->units : r->u1) - 1; /* nothing after the last unit wanted is needed */
}

/* Why a linear stays in full precision ("" when it is quantised). */
void sq_pl_keep_reason(const run *r, const char *name, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    for (int i = 0; i < r->o->n_ignore; i++)
        if (fnmatch(r->o->ignore[i], name, 0) == 0) {
            snprintf(why, cap, "ignored (--ignore %s)", r->o->ignore[i]);
            return;
        }
    sq_scheme sc = sq_pl_scheme(r->o);
    const sq_fmt *f = sq_pl_format(r->o);
    if (f->can_hold(&sc, 0, 0, why, cap)) f->can_hold(&sc, n, k, why, cap);
    else why[0] = 0; /* the scheme itself: refused before anything runs */
}

static sq_status add_tensor(run *r, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                            const void *data, sq_err *err) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    int64_t shape[2] = {d0, d1};
    double t = sq_pl_now();
    sq_status s = sq_shards_add(r->w, name, dt, nd, shape, data, err);
    r->t_write += sq_pl_now() - t;
    return s;
}

/* The backend of the Hessians and GPTQ solves (--device), chosen once by the caller; the CPU by default. */
static const sq_backend_i *calib_backend(const sq_quantize_opts *o) { return o->backend ? o->backend : sq_backend_cpu(); }

/* The relative output error over the calibration inputs; NaN (null in spotq.json) without them. */
static double output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k) {
    return h ? sq_quant_output_error(w, q, h, n, k) : NAN;
}

/* The next report, for linear `which` of FFN unit `unit` of layer l. */
static lin_report *new_report(run *r, int l, int unit, sq_lin which, const sq_wmat *wm) {
    lin_report *rep = &r->rep[r->nrep++];
    memset(rep, 0, sizeof *rep);
    sq_lin_name_unit(r->c, l, unit, which, rep->name, sizeof rep->name);
    rep->n = wm->rows;
    rep->k = wm->cols;
    return rep;
}

/* Quantises linear `which` of unit `unit` of layer l with that unit's Hessian; swaps the dequantised
 * weights into the model so the rest of the block runs on them. */
static sq_status quantize_linear(run *r, int l, int unit, sq_lin which, sq_err *err) {
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    int64_t n = wm->rows, k = wm->cols;
    lin_report *rep = new_report(r, l, unit, which, wm);
    const float *h = r->hs[unit].h;
    float *w = malloc((size_t)(n * k) * sizeof *w), *dq = malloc((size_t)(n * k) * sizeof *dq);
    if (!w || !dq) { free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    sq_dtype_to_f32(wm->dtype, wm->data, w, (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++)
        if (!isfinite(w[i])) {
            free(w); free(dq);
            return sq_fail(err, SQ_ERR_NUMERIC, "%s: tensor '%s.weight' has a NaN or Inf at element %lld", r->o->model, rep->name,
                           (long long)i);
        }
    double t = sq_pl_now();
    /* The mse grid's importances: diag(H), the per-channel second moment of the input (none data-free) */
    float *imp = h ? malloc((size_t)k * sizeof *imp) : NULL;
    if (h && !imp) { free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    for (int64_t c = 0; h && c < k; c++) imp[c] = h[c * k + c];
    sq_qmatrix q;
    sq_status s = sq_quant_rtn_weighted(w, n, k, &r->o->q, imp, &q, err);
    if (s) { free(w); free(dq); free(imp); return s; }
    sq_qmatrix_dequant(&q, dq);
    rep->err_rtn = rep->err = output_error(w, dq, h, n, k);
    rep->err_grid[0] = rep->err_grid[1] = NAN;
    rep->err_grid[r->o->q.grid] = rep->err_rtn;
    if (h) { /* RTN on the other grid too, for spotq.json */
        sq_qparams other = r->o->q;
        other.grid = other.grid == SQ_GRID_MSE ? SQ_GRID_MINMAX : SQ_GRID_MSE;
        sq_qmatrix q2;
        if ((s = sq_quant_rtn_weighted(w, n, k, &other, imp, &q2, err))) { sq_qmatrix_free(&q); free(w); free(dq); free(imp); return s; }
        sq_qmatrix_dequant(&q2, dq);
        sq_qmatrix_free(&q2);
        rep->err_grid[other.grid] = output_error(w, dq, h, n, k);
        sq_qmatrix_dequant(&q, dq);
    }
    free(imp);
    if (r->o->method == SQ_METHOD_GPTQ) {
        sq_qmatrix_free(&q);
        s = sq_quant_gptq_on(calib_backend(r->o), w, &r->hs[unit], n, k, &r->o->q, &q, err);
        if (s) { free(w); free(dq); return s; }
        sq_qmatrix_dequant(&q, dq);
        rep->err = output_error(w, dq, h, n, k);
        rep->damp = q.damp_used;
        if (q.fallback) snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
    }
    r->t_quant += sq_pl_now() - t;
    rep->quantized = true;
    r->n_weights_q += n * k;
    s = sq_pl_write_packed(r, rep->name, &q, err);
    sq_qmatrix_free(&q);
    free(w);
    if (!s) {
        sq_wmat dw = {.dtype = SQ_DT_F32, .rows = n, .cols = k, .data = dq};
        s = sq_model_set_linear_unit(r->m, l, unit, which, &dw, err);
    }
    if (s) { free(dq); return s; }
    free(r->deq[unit * SQ_LIN_COUNT + which]);
    r->deq[unit * SQ_LIN_COUNT + which] = dq;
    return SQ_OK;
}

/* NaN or Inf in a source tensor is an error naming it: never silent garbage in the output. */
sq_status sq_pl_check_finite(const run *r, const char *name, sq_dtype dt, const void *data, int64_t numel, sq_err *err) {
    if (dt != SQ_DT_F32 && dt != SQ_DT_F16 && dt != SQ_DT_BF16) return SQ_OK;
    float buf[4096];
    for (int64_t i = 0; i < numel; i += 4096) {
        int64_t m = numel - i < 4096 ? numel - i : 4096;
        sq_dtype_to_f32(dt, (const char *)data + i * sq_dtype_size(dt), buf, (size_t)m);
        for (int64_t j = 0; j < m; j++)
            if (!isfinite(buf[j]))
                return sq_fail(err, SQ_ERR_NUMERIC, "%s: tensor '%s' has a NaN or Inf at element %lld", r->o->model, name, (long long)(i + j));
    }
    return SQ_OK;
}

static sq_status keep_linear(run *r, int l, int unit, sq_lin which, const char *why, sq_err *err) {
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    lin_report *rep = new_report(r, l, unit, which, wm);
    snprintf(rep->note, sizeof rep->note, "%s", why);
    r->n_weights_kept += wm->rows * wm->cols;
    char wname[200];
    snprintf(wname, sizeof wname, "%s.weight", rep->name);
    sq_status s = sq_pl_check_finite(r, wname, wm->dtype, wm->data, wm->rows * wm->cols, err);
    if (s) return s;
    return add_tensor(r, rep->name, "weight", wm->dtype, 2, wm->rows, wm->cols, wm->data, err);
}

/* Runs layer l on every calibration window (in place when x is r->x, else into r->tmp per window). */
static sq_status run_layer(run *r, int l, bool keep_outputs, sq_err *err) {
    int64_t T = r->o->seqlen, H = r->c->hidden;
    double t = sq_pl_now();
    for (int smp = 0; smp < r->o->nsamples; smp++) {
        float *xs = r->x + smp * T * H;
        float *buf = keep_outputs ? xs : r->tmp;
        if (!keep_outputs) memcpy(buf, xs, (size_t)(T * H) * sizeof *buf);
        sq_status s = sq_layer_forward(r->st, l, buf, (int)T, keep_outputs ? NULL : tap, r, err);
        if (s) return s;
    }
    r->t_forward += sq_pl_now() - t;
    return SQ_OK;
}

/* ---------------------------------------------------------------- FP8 */

/* max |w| of a weight in its source dtype (NaN and Inf are left to sq_fp8_quantize to report). */
static float weight_absmax(const sq_wmat *wm) {
    float buf[4096], m = 0;
    int64_t numel = wm->rows * wm->cols;
    for (int64_t i = 0; i < numel; i += 4096) {
        int64_t c = numel - i < 4096 ? numel - i : 4096;
        sq_dtype_to_f32(wm->dtype, (const char *)wm->data + i * sq_dtype_size(wm->dtype), buf, (size_t)c);
        for (int64_t j = 0; j < c; j++)
            if (isfinite(buf[j])) m = fmaxf(m, fabsf(buf[j]));
    }
    return m;
}

/* The scales a stage's FP8 linears share. vLLM runs q, k, v (and gate, up) as one fused matrix with
 * one input scale (the max of theirs) and, per tensor, one weight scale (it requantises all three to
 * the largest): giving them the same scales here makes what is written exactly what vLLM runs. The
 * input scale is max |x| at the site over every calibration token, / 448. */
static sq_status fp8_stage(run *r, int l, size_t si, int unit, const char (*why)[128], float *tensor_absmax, float *in_scale,
                           sq_err *err) {
    *tensor_absmax = 0;
    *in_scale = 0;
    if (!r->o->fp8_per_channel)
        for (int j = 0; j < stages[si].n; j++)
            if (!why[stages[si].lin[j]][0])
                *tensor_absmax = fmaxf(*tensor_absmax, weight_absmax(sq_model_linear_unit(r->m, l, unit, stages[si].lin[j])));
    if (r->o->act != SQ_ACT_STATIC) return SQ_OK;
    /* vLLM's fused MoE runs every expert with one input scale, the largest of theirs */
    float m = r->act_absmax[unit];
    if (unit < r->c->n_experts && sq_config_moe_layer(r->c, l))
        for (int e = 0; e < r->c->n_experts; e++) m = fmaxf(m, r->act_absmax[e]);
    if (!isfinite(m)) {
        char name[160];
        sq_lin_name_unit(r->c, l, unit, stages[si].lin[0], name, sizeof name);
        return sq_fail(err, SQ_ERR_NUMERIC, "%s: the calibration inputs of %s are not finite (NaN or Inf)", r->o->model, name);
    }
    *in_scale = sq_fp8_scale(m);
    return SQ_OK;
}

/* Quantises linear `which` of layer l to E4M3, writes it, and makes the model run it as FP8 (its
 * activations too, with in_scale when static), so later sites calibrate on what deployment computes. */
static sq_status fp8_linear(run *r, int l, int unit, sq_lin which, float tensor_absmax, float in_scale, sq_err *err) {
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    int64_t n = wm->rows, k = wm->cols, ns = r->o->fp8_per_channel ? n : 1;
    bool pc = r->o->fp8_per_channel;
    lin_report *rep = new_report(r, l, unit, which, wm);
    const float *h = r->hs[unit].h;
    rep->act_scale = in_scale;
    char what[300];
    snprintf(what, sizeof what, "%s: tensor '%s.weight'", r->o->model, rep->name);
    /* one block: the kernels' description, the scales (ns), the codes (n, k) */
    sq_fp8weight *f = malloc(sizeof *f + (size_t)ns * sizeof(float) + (size_t)(n * k));
    float *w = malloc((size_t)(n * k) * sizeof *w), *dq = malloc((size_t)(n * k) * sizeof *dq);
    if (!f || !w || !dq) { free(f); free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    float *scale = (float *)(f + 1);
    uint8_t *codes = (uint8_t *)(scale + ns);
    sq_dtype_to_f32(wm->dtype, wm->data, w, (size_t)(n * k));
    double t = sq_pl_now();
    sq_status s = sq_fp8_quantize(w, n, k, pc, tensor_absmax, codes, scale, what, err);
    if (!s) {
        sq_fp8_dequant(codes, scale, n, k, pc, dq);
        rep->err_rtn = rep->err = output_error(w, dq, h, n, k);
    }
    if (!s && r->o->method == SQ_METHOD_FP8_GPTQ) {
        s = sq_fp8_gptq(w, h, n, k, pc, scale, r->o->q.act_order, r->o->q.damp, codes, &rep->damp, err);
        if (!s && rep->damp < 0) {
            rep->damp = 0;
            snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
        }
        if (!s) {
            sq_fp8_dequant(codes, scale, n, k, pc, dq);
            rep->err = output_error(w, dq, h, n, k);
        }
    }
    r->t_quant += sq_pl_now() - t;
    free(w);
    free(dq);
    if (s) { free(f); return s; }
    rep->quantized = true;
    r->n_weights_q += n * k;
    sq_qlinear fl = {.kind = SQ_SCHEME_FP8, .n = n, .k = k, .codes = codes, .scale = scale, .per_channel = pc, .input_scale = in_scale};
    s = sq_pl_write_linear(r, rep->name, &fl, err);
    *f = (sq_fp8weight){.scale = scale, .per_channel = pc, .input_scale = in_scale,
                        .act = r->o->act == SQ_ACT_STATIC ? SQ_FP8_ACT_STATIC : r->o->act == SQ_ACT_DYNAMIC ? SQ_FP8_ACT_DYNAMIC_TOKEN : SQ_FP8_ACT_NONE};
    sq_wmat fw = {.dtype = SQ_DT_F8_E4M3, .rows = n, .cols = k, .data = codes, .f8 = f};
    if (!s) s = sq_model_set_linear_unit(r->m, l, unit, which, &fw, err);
    if (s) { free(f); return s; }
    free(r->f8buf[unit * SQ_LIN_COUNT + which]);
    r->f8buf[unit * SQ_LIN_COUNT + which] = f;
    return SQ_OK;
}

static void free_hessians(run *r) {
    for (int u = r->u0; u < r->u1; u++) sq_hessian_free(&r->hs[u]);
}

/* One pass of layer l over the calibration windows that collects, at the stage's site, the Hessians
 * of FFN units u0 .. u1-1 of its `units` (one at attention sites) and, when counting (the stage's
 * first pass), every unit's token count and largest |x|. */
static sq_status collect(run *r, int l, size_t si, int units, int u0, int u1, bool counting, sq_err *err) {
    sq_status s = SQ_OK;
    r->units = units;
    r->u0 = r->u1 = u0;
    r->counting = counting;
    for (int u = u0; u < u1 && !s; u++, r->u1++) {
        int64_t k = sq_model_linear_unit(r->m, l, u, stages[si].lin[0])->cols; /* the shared expert may be wider */
        s = sq_hessian_init_on(&r->hs[u], calib_backend(r->o), k, err);
    }
    for (int u = 0; u < units && counting; u++) r->unit_tokens[u] = 0, r->act_absmax[u] = 0;
    r->want = stages[si].site;
    r->hess_err = (sq_err){0};
    if (!s) s = run_layer(r, l, false, err);
    if (!s && r->hess_err.code) s = (*err = r->hess_err).code;
    for (int u = u0; u < u1 && !s; u++) s = sq_hessian_finish(&r->hs[u], err);
    return s;
}

/* MoE, at the first FFN site: the tokens routed to each expert, for spotq.json; an expert routed fewer
 * tokens than its input width (its Hessian would be singular) is calibrated on every token instead,
 * as llm-compressor and GPTQModel do, for the rest of the block. Returns true when one is. */
static bool route_rare_experts(run *r, int l) {
    int64_t k = r->c->hidden;
    int E = r->c->n_experts, nrare = 0;
    for (int e = 0; e < E; e++) {
        r->moe_tokens[(int64_t)l * E + e] = r->unit_tokens[e];
        if (r->unit_tokens[e] < k) r->route_all[e] = r->moe_all[(int64_t)l * E + e] = 1, nrare++;
    }
    if (nrare)
        sq_log(SQ_LOG_INFO, "layer %d: %d of %d experts were routed fewer than %lld calibration tokens: calibrating them on every token", l,
               nrare, E, (long long)k);
    return nrare > 0;
}

/* How many units' Hessians one pass collects: as many as --max-hessian-memory holds (at least one). */
static int unit_group(const run *r, int l, size_t si, int units) {
    int64_t k = 0;
    for (int u = 0; u < units; u++) {
        int64_t ku = sq_model_linear_unit(r->m, l, u, stages[si].lin[0])->cols;
        if (ku > k) k = ku;
    }
    int64_t budget = r->o->max_hessian_bytes > 0 ? r->o->max_hessian_bytes : SQ_DEFAULT_HESSIAN_BYTES;
    int64_t g = budget / (k * k * (int64_t)sizeof(float));
    return g < 1 ? 1 : g > units ? units : (int)g;
}

/* The Hessians (and, on the first pass, the counts) of units u0 .. u1-1 of a stage; at an MoE layer's
 * first FFN site the first pass also decides which experts are calibrated on every token, and is
 * taken again if any is. */
static sq_status collect_group(run *r, int l, size_t si, int units, int u0, int u1, sq_err *err) {
    sq_status s = collect(r, l, si, units, u0, u1, u0 == 0, err);
    if (!s && u0 == 0 && stages[si].site == SQ_SITE_GATEUP && sq_config_moe_layer(r->c, l) && route_rare_experts(r, l)) {
        free_hessians(r);
        s = collect(r, l, si, units, u0, u1, true, err);
    }
    return s;
}

/* --stats: the Hessians of a stage's units from the statistics file instead of a calibration pass. */
static sq_status load_stats(run *r, int l, size_t si, int units, int u0, int u1, sq_err *err) {
    sq_status s = SQ_OK;
    r->units = units;
    r->u0 = r->u1 = u0;
    for (int u = 0; u < units && !s; u++) {
        int64_t k = sq_model_linear_unit(r->m, l, u, stages[si].lin[0])->cols;
        const sq_stat_entry *e = sq_stats_find(&r->stats, l, stages[si].site, u);
        if (!e || e->k != k)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: no statistics of width %lld for layer %d, site %d, unit %d", r->o->stats_in, (long long)k, l,
                           (int)stages[si].site, u);
        r->unit_tokens[u] = e->tokens; /* every unit's counts, as a counting pass gives them */
        r->act_absmax[u] = e->absmax;
        if (u < u0 || u >= u1) continue;
        if ((s = sq_hessian_init(&r->hs[u], k, err))) break;
        r->u1++;
        sq_stats_hessian(&r->stats, e, r->hs[u].h);
    }
    return s;
}

/* `spotq calib`: block l of the full-precision model: every site of every unit collected and kept
 * (rarely routed experts calibrated on every token, as quantize does), then the block's outputs. */
static sq_status calib_block(run *r, int l, sq_err *err) {
    if (r->c->n_experts) memset(r->route_all, 0, (size_t)r->c->n_experts);
    sq_status s = SQ_OK;
    for (size_t si = 0; si < sizeof stages / sizeof *stages && !s; si++) {
        bool ffn = stages[si].site == SQ_SITE_GATEUP || stages[si].site == SQ_SITE_DOWN;
        int units = ffn ? sq_model_ffn_units(r->m, l) : 1, group = unit_group(r, l, si, units);
        for (int u0 = 0; u0 < units && !s; u0 += group) {
            int u1 = u0 + group < units ? u0 + group : units;
            s = collect_group(r, l, si, units, u0, u1, err);
            for (int u = u0; u < u1 && !s; u++)
                s = sq_stats_add(&r->stats, l, stages[si].site, u, r->hs[u].k, r->unit_tokens[u], r->act_absmax[u], r->hs[u].h, err);
            free_hessians(r);
        }
    }
    return s ? s : run_layer(r, l, true, err);
}

/* One true-sequential stage of block l, for every FFN unit it has: the inputs of its site collected
 * in one pass, then each unit's linears quantised (or kept, with the reason). */
static sq_status quantize_stage(run *r, int l, size_t si, sq_err *err) {
    bool ffn = stages[si].site == SQ_SITE_GATEUP || stages[si].site == SQ_SITE_DOWN, fp8 = sq_pl_is_fp8(r->o->method);
    int units = ffn ? sq_model_ffn_units(r->m, l) : 1, todo = 0;
    char (*why)[SQ_LIN_COUNT][128] = malloc((size_t)units * sizeof *why);
    if (!why) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    for (int u = 0; u < units; u++)
        for (int j = 0; j < stages[si].n; j++) {
            sq_lin which = stages[si].lin[j];
            const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, which);
            char name[160];
            sq_lin_name_unit(r->c, l, u, which, name, sizeof name);
            sq_pl_keep_reason(r, name, wm->rows, wm->cols, why[u][which], sizeof why[u][which]);
            todo += why[u][which][0] == 0;
        }
    sq_status s = SQ_OK;
    int group = todo ? unit_group(r, l, si, units) : units;
    for (int u0 = 0; u0 < units && todo && !s; u0 += group) {
        int u1 = u0 + group < units ? u0 + group : units;
        if (r->o->stats_in) s = load_stats(r, l, si, units, u0, u1, err);
        else if (r->x) s = collect_group(r, l, si, units, u0, u1, err);
        else { /* data-free (rtn, fp8 without static scales): no Hessians, no error report */
            for (int u = u0; u < u1; u++) r->hs[u] = (sq_hessian){0};
            r->u0 = u0, r->u1 = u1;
        }
        for (int u = u0; u < u1 && !s; u++) {
            float tensor_absmax = 0, in_scale = 0;
            if (fp8) s = fp8_stage(r, l, si, u, (const char (*)[128])why[u], &tensor_absmax, &in_scale, err);
            for (int j = 0; j < stages[si].n && !s; j++)
                if (!why[u][stages[si].lin[j]][0])
                    s = fp8 ? fp8_linear(r, l, u, stages[si].lin[j], tensor_absmax, in_scale, err)
                            : quantize_linear(r, l, u, stages[si].lin[j], err);
        }
        free_hessians(r);
    }
    for (int u = 0; u < units && !s; u++)
        for (int j = 0; j < stages[si].n && !s; j++)
            if (why[u][stages[si].lin[j]][0]) s = keep_linear(r, l, u, stages[si].lin[j], why[u][stages[si].lin[j]], err);
    free(why);
    return s;
}

static sq_status quantize_block(run *r, int l, sq_err *err) {
    if (r->c->n_experts) memset(r->route_all, 0, (size_t)r->c->n_experts);
    for (size_t si = 0; si < sizeof stages / sizeof *stages; si++) {
        sq_status s = quantize_stage(r, l, si, err);
        if (s) return s;
    }
    /* The quantised block's outputs are the next block's inputs. */
    return r->x ? run_layer(r, l, true, err) : SQ_OK;
}

/* Every tensor that is not a linear weight goes to the output unchanged (embeddings, norms, biases,
 * lm_head, routers). */
static sq_status copy_others(run *r, const sq_st *st, sq_err *err) {
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
        if (sq_pl_is_awq(r->o->method) && (strstr(t->name, "layernorm.weight") || (strstr(t->name, "_proj.bias") && strstr(t->name, "model.layers."))))
            continue; /* AWQ folds its scales into these: written with their block */
        if ((s = sq_pl_check_finite(r, t->name, t->dtype, t->data, t->numel, err))) break;
        double t0 = sq_pl_now();
        s = sq_shards_add(r->w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
        r->t_write += sq_pl_now() - t0;
    }
    free(linear);
    return s;
}

/* Calls fn on every linear of the model (name, matrix, the reason it stays in full precision under r's
 * settings, "" when it is quantised) until fn returns true; returns whether one did. */
typedef bool (*linear_fn)(const char *name, const sq_wmat *wm, const char *keep, void *user);
static bool find_linear(const run *r, linear_fn fn, void *user) {
    for (int l = 0; l < r->c->n_layers; l++)
        for (int u = 0; u < sq_model_ffn_units(r->m, l); u++)
            for (int j = u ? SQ_LIN_GATE : 0; j < SQ_LIN_COUNT; j++) {
                const sq_wmat *wm = sq_model_linear_unit(r->m, l, u, (sq_lin)j);
                char name[160], keep[160];
                sq_lin_name_unit(r->c, l, u, (sq_lin)j, name, sizeof name);
                sq_pl_keep_reason(r, name, wm->rows, wm->cols, keep, sizeof keep);
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
static sq_status check_some_linear_fits(run *r, sq_err *err) {
    kept_count k = {0};
    if (find_linear(r, quantised_or_count, &k) || !k.total) return SQ_OK;
    char fits[128] = "", suffix[160] = "";
    if (r->o->q.group_size > 0) { /* which group sizes would have let some linear in */
        sq_quantize_opts t = *r->o;
        run probe = *r;
        probe.o = &t;
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
    const run *r;
    const sq_quantize_opts *o;
    char why[512];
} marlin_probe;

/* A quantised linear that vLLM's Marlin could not take as GPTQ v1 (its reason into p->why). */
static bool marlin_refuses(const char *name, const sq_wmat *wm, const char *keep, void *user) {
    marlin_probe *p = user;
    if (keep[0]) return false;
    sq_serve_linear v;
    sq_serve_plan(p->r->c, name, wm->rows, wm->cols, SQ_SERVE_AS_GPTQ, p->o->q.bits, p->o->q.group_size, true, 1, &v);
    if (v.verdict != SQ_SERVE_REJECT) return false;
    snprintf(p->why, sizeof p->why, "vLLM serves GPTQ v1 only through Marlin, which cannot take %s (%s)", name, v.rule);
    return true;
}

/* SQ_FORMAT_AUTO: GPTQ v1 only where vLLM would load it (it serves GPTQ v1 through Marlin alone:
 * symmetric, Marlin's group sizes and shapes for every linear quantised), else compressed-tensors
 * pack-quantized, with one line saying why. Act-order there takes static groups (no g_idx). */
static void resolve_format(run *r, sq_quantize_opts *o) {
    marlin_probe p = {r, o, ""};
    if (!o->q.sym) snprintf(p.why, sizeof p.why, "asymmetric weights (zero points): vLLM serves GPTQ v1 only through Marlin, which takes them symmetric");
    else find_linear(r, marlin_refuses, &p);
    o->format = p.why[0] ? SQ_FORMAT_CT : SQ_FORMAT_GPTQ;
    if (!p.why[0]) return;
    bool stat = o->q.act_order && !o->q.static_groups; /* said with the summary, so that an error stays the only line */
    o->q.static_groups |= stat;
    snprintf(r->format_note, sizeof r->format_note, "wrote compressed-tensors pack-quantized%s: %s; --format gptq writes GPTQ v1 anyway",
             stat ? " (act-order with static groups: the format stores no g_idx)" : "", p.why);
}

/* ---------------------------------------------------------------- the pipeline */

sq_status sq_quantize_model(const sq_quantize_opts *o, sq_err *err) {
    double t0 = sq_pl_now();
    run r = {.o = o};
    sq_exec *ex = NULL;
    sq_tok *tok = NULL;
    sq_outdir *od = NULL;
    int *ids = NULL;
    int64_t nids = 0;
    sq_status s;
    if (o->q.bits != 4 && o->q.bits != 8) return sq_fail(err, SQ_ERR_ARG, "--bits %d: spotq writes 4 or 8 bits", o->q.bits);
    if (!sq_pl_is_fp8(o->method) && (o->q.group_size == 0 || o->q.group_size < -1 || (o->q.group_size > 0 && o->q.group_size % (32 / o->q.bits))))
        return sq_fail(err, SQ_ERR_ARG, "--group-size %d: use -1 (one group per output channel) or a positive multiple of %d (the %d-bit packing)",
                       o->q.group_size, 32 / o->q.bits, o->q.bits);
    if (!(o->q.damp > 0)) return sq_fail(err, SQ_ERR_ARG, "--damp must be positive");
    if (o->format == SQ_FORMAT_AUTO && (sq_pl_is_fp8(o->method) || sq_pl_is_awq(o->method)))
        return sq_fail(err, SQ_ERR_ARG, "--method %s: give --format (the automatic choice is for rtn and gptq)", sq_method_name(o->method));
    if (o->q.grid == SQ_GRID_MSE && (o->method == SQ_METHOD_AWQ || sq_pl_is_fp8(o->method)))
        return sq_fail(err, SQ_ERR_ARG, "--grid mse applies to rtn, gptq and awq+gptq (--method %s has a grid of its own)", sq_method_name(o->method));
    if (o->method == SQ_METHOD_GPTQ && !calib_backend(o)->supports(SQ_OP_GPTQ, o->q.grid == SQ_GRID_MSE ? SQ_QGRID_INT_MSE : SQ_QGRID_INT_MINMAX))
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "--grid %s: GPTQ on the %s backend lacks that grid (use --grid minmax or --device cpu)",
                       o->q.grid == SQ_GRID_MSE ? "mse" : "minmax", calib_backend(o)->name);
    if (o->format != SQ_FORMAT_GPTQ && o->format != SQ_FORMAT_AUTO && !sq_pl_is_fp8(o->method) && o->q.act_order && !o->q.static_groups)
        return sq_fail(err, SQ_ERR_ARG, "--act-order with --format %s needs --static-groups (the format stores no g_idx)", sq_format_name(o->format));
    if (o->format != SQ_FORMAT_AUTO && !o->stats_out) { /* the output format holds the scheme */
        char why[256];
        sq_scheme sc = sq_pl_scheme(o);
        if (!sq_pl_format(o)->can_hold(&sc, 0, 0, why, sizeof why))
            return sq_fail(err, SQ_ERR_ARG, "--format %s cannot hold this scheme: %s", sq_format_name(o->format), why);
    }
    bool data_free = o->method == SQ_METHOD_RTN || (o->method == SQ_METHOD_FP8 && o->act != SQ_ACT_STATIC);
    if (o->stats_out && !o->calib) return sq_fail(err, SQ_ERR_ARG, "calib needs --calib FILE (calibration text)");
    if (o->stats_in && (o->calib || sq_pl_is_awq(o->method)))
        return sq_fail(err, SQ_ERR_ARG, "--stats replaces --calib, for rtn, gptq, fp8 and fp8+gptq (awq needs the activations themselves)");
    if (!o->calib && !data_free && !o->stats_in)
        return sq_fail(err, SQ_ERR_ARG, "--method %s%s needs --calib FILE (calibration text) or --stats STATS", sq_method_name(o->method),
                       o->method == SQ_METHOD_FP8 ? " --act static" : "");
    if ((s = sq_exec_new(&ex, "cpu", o->threads, err))) return s;
    if ((s = sq_model_open(&r.m, o->model, ex, err))) goto done;
    r.c = sq_model_config(r.m);
    const sq_ckpt *ck = sq_model_ckpt(r.m);
    { /* the output is none of the inputs, holds none and lies in none: checked before anything is written */
        const char *in[] = {ck->dir, ck->weights_path, o->calib, o->stats_in};
        const char *what[] = {"the model's directory", "the model's weights", "the calibration text", "the statistics file"};
        if ((s = sq_path_check_output(o->stats_out ? o->stats_out : o->out, in, what, 4, err))) goto done;
        struct stat st;
        if (o->stats_out && !o->force && stat(o->stats_out, &st) == 0) {
            s = sq_fail(err, SQ_ERR_ARG, "%s: already exists (use --force to replace it)", o->stats_out);
            goto done;
        }
    }
    if (r.c->n_experts && sq_pl_is_awq(o->method)) {
        s = sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: --method %s on a mixture of experts (%s) is not supported yet (rtn, gptq, fp8 are)", o->model,
                    sq_method_name(o->method), r.c->model_type);
        goto done;
    }
    if (!o->stats_out && (s = check_some_linear_fits(&r, err))) goto done;
    sq_quantize_opts resolved = *o; /* the format chosen for SQ_FORMAT_AUTO */
    if (o->format == SQ_FORMAT_AUTO) {
        resolve_format(&r, &resolved);
        o = r.o = &resolved;
    }
    if (o->stats_in) {
        if ((s = sq_stats_read(&r.stats, o->stats_in, err))) goto done;
        if (strcmp(r.stats.arch, sq_arch_name(r.c->arch)) || r.stats.hidden != r.c->hidden || r.stats.n_layers != r.c->n_layers ||
            r.stats.vocab != r.c->vocab || r.stats.n_experts != r.c->n_experts) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: statistics of another model (%s, %d layers, hidden %d), not of %s", o->stats_in, r.stats.arch,
                        r.stats.n_layers, r.stats.hidden, o->model);
            goto done;
        }
    }
    sq_quantize_opts eff = *o; /* --seqlen 0: 2048, or the model's maximum if smaller */
    if (eff.seqlen <= 0) eff.seqlen = r.c->max_pos < 2048 ? r.c->max_pos : 2048;
    if (!o->calib) eff.nsamples = eff.seqlen = 0;
    o = r.o = &eff;
    if (o->calib && !ck->tokenizer_path[0]) {
        s = sq_fail(err, SQ_ERR_IO, "%s: no tokenizer.json beside the model (needed for --calib)", o->model);
        goto done;
    }
    if (o->calib && ((s = sq_tok_load(&tok, ck->tokenizer_path, err)) || (s = sq_text_tokens(tok, o->calib, false, &ids, &nids, err))))
        goto done;
    r.bos_id = tok ? sq_tok_bos(tok) : -1;
    r.bos_rule = tok ? sq_tok_bos_rule(tok) : "";
    for (int64_t i = 0; i < nids; i++)
        if (ids[i] < 0 || ids[i] >= r.c->vocab) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: token %d of the calibration text is outside the model's vocabulary of %d (%s)", o->calib,
                        ids[i], r.c->vocab, ck->tokenizer_path);
            goto done;
        }
    if (o->calib && (s = sq_calib_windows(ids, nids, o->calib, o->nsamples, o->seqlen, o->seed, &r.win, err))) goto done;
    int64_t T = o->seqlen, H = r.c->hidden, ntok = (int64_t)o->nsamples * T;
    if (o->calib) { /* r.x stays NULL without calibration */
        r.x = sq_malloc((size_t)(ntok * H) * sizeof *r.x, err);
        r.tmp = sq_malloc((size_t)(T * H) * sizeof *r.tmp, err);
        if (!r.x || !r.tmp) { s = SQ_ERR_NOMEM; goto done; }
    }
    int64_t nlin = 0;
    for (int l = 0; l < r.c->n_layers; l++) {
        int u = sq_model_ffn_units(r.m, l);
        nlin += 4 + 3 * u;
        if (u > r.max_units) r.max_units = u;
    }
    int64_t E = r.c->n_experts > 0 ? r.c->n_experts : 1;
    r.rep = sq_calloc((size_t)nlin, sizeof *r.rep, err);
    r.hs = sq_calloc((size_t)r.max_units, sizeof *r.hs, err);
    r.unit_tokens = sq_calloc((size_t)r.max_units, sizeof *r.unit_tokens, err);
    r.act_absmax = sq_calloc((size_t)r.max_units, sizeof *r.act_absmax, err);
    r.deq = sq_calloc((size_t)r.max_units * SQ_LIN_COUNT, sizeof *r.deq, err);
    r.f8buf = sq_calloc((size_t)r.max_units * SQ_LIN_COUNT, sizeof *r.f8buf, err);
    r.route_all = sq_calloc((size_t)E, 1, err);
    r.moe_tokens = sq_calloc((size_t)(E * r.c->n_layers), sizeof *r.moe_tokens, err);
    r.moe_all = sq_calloc((size_t)(E * r.c->n_layers), 1, err);
    if (!r.rep || !r.hs || !r.unit_tokens || !r.act_absmax || !r.deq || !r.f8buf || !r.route_all || !r.moe_tokens ||
        !r.moe_all) {
        s = SQ_ERR_NOMEM;
        goto done;
    }
    if (o->calib) {
        if ((s = sq_state_new(&r.st, r.m, (int)T, (int)T, err))) goto done;
        sq_state_route_all(r.st, r.route_all);
        for (int smp = 0; smp < o->nsamples; smp++) sq_model_embed(r.m, r.win + smp * T, (int)T, r.x + smp * T * H);
    }

    if (o->stats_out) { /* spotq calib: statistics only */
        snprintf(r.stats.arch, sizeof r.stats.arch, "%s", sq_arch_name(r.c->arch));
        snprintf(r.stats.calib, sizeof r.stats.calib, "%s", o->calib);
        snprintf(r.stats.hash, sizeof r.stats.hash, "%016llx", (unsigned long long)sq_calib_hash(r.win, ntok));
        r.stats.hidden = r.c->hidden, r.stats.n_layers = r.c->n_layers, r.stats.vocab = r.c->vocab, r.stats.n_experts = r.c->n_experts;
        r.stats.text_tokens = nids, r.stats.nsamples = o->nsamples, r.stats.seqlen = o->seqlen, r.stats.seed = o->seed;
        for (int l = 0; l < r.c->n_layers && !s; l++) {
            s = calib_block(&r, l, err);
            if (!s && o->progress) fprintf(stderr, "\rspotq: calib: block %d/%d, %.1f s   ", l + 1, r.c->n_layers, sq_pl_now() - t0);
        }
        if (o->progress) fputc('\n', stderr);
        if (!s) s = sq_stats_write(&r.stats, o->stats_out, err);
        if (!s)
            sq_log(SQ_LOG_INFO, "kept %lld statistics (%.1f MiB of Hessians before compression) of %d x %d tokens in %.1f s", (long long)r.stats.n,
                   (double)r.stats.data_len * 4.0 / 1048576.0, o->nsamples, o->seqlen, sq_pl_now() - t0);
        goto done;
    }
    if ((s = sq_outdir_begin(&od, o->out, o->force, err))) goto done;
    if ((s = sq_shards_open(&r.w, sq_outdir_tmp(od), o->max_shard_bytes > 0 ? o->max_shard_bytes : SQ_DEFAULT_SHARD_BYTES, err))) goto done;
    if ((s = copy_others(&r, ck->st, err))) goto done;
    for (int64_t i = 0; i < sq_st_count(ck->st); i++) /* embeddings, lm_head: written, not needed again */
        if (strncmp(sq_st_get(ck->st, i)->name, "model.layers.", 13) != 0) sq_st_release(ck->st, sq_st_get(ck->st, i));
    for (int l = 0; l < r.c->n_layers; l++) {
        if ((s = sq_pl_is_awq(o->method) ? sq_pl_awq_block(&r, l, err) : quantize_block(&r, l, err))) goto done;
        /* Done with this block's weights: out of resident memory, so the peak stays about one block. */
        char prefix[64];
        int np = snprintf(prefix, sizeof prefix, "model.layers.%d.", l);
        for (int64_t i = 0; i < sq_st_count(ck->st); i++)
            if (strncmp(sq_st_get(ck->st, i)->name, prefix, (size_t)np) == 0) sq_st_release(ck->st, sq_st_get(ck->st, i));
        if (o->progress) { /* the ETA from the blocks so far (each block costs about the same) */
            double el = sq_pl_now() - t0, eta = el / (l + 1) * (r.c->n_layers - l - 1);
            fprintf(stderr, "\rspotq: quantize: block %d/%d, %.1f s, ETA %d:%02d   ", l + 1, r.c->n_layers, el, (int)eta / 60, (int)eta % 60);
        }
    }
    if (o->progress) fputc('\n', stderr);
    int nkept = 0;
    for (int i = 0; i < r.nrep; i++) nkept += !r.rep[i].quantized;
    if (nkept)
        sq_log(SQ_LOG_WARN, "%d of %d linear layers stay in full precision (see kept_in_full_precision in spotq.json), e.g. %s: %s",
               nkept, r.nrep, r.rep[0].quantized ? r.rep[r.nrep - 1].name : r.rep[0].name,
               r.rep[0].quantized ? r.rep[r.nrep - 1].note : r.rep[0].note);
    r.out_bytes = sq_shards_bytes(r.w);
    char src_scheme[128]; /* the source's parameters and size, counted as bench counts them */
    sq_ckpt_describe(ck, src_scheme, sizeof src_scheme, &r.src_params, &r.src_bytes);
    double tw = sq_pl_now();
    int nshards;
    s = sq_shards_finish(r.w, &nshards, err);
    r.w = NULL;
    if (!s && nshards > 1) sq_log(SQ_LOG_INFO, "weights written as %d shards of at most %lld bytes", nshards, (long long)o->max_shard_bytes);
    r.t_write += sq_pl_now() - tw;
    if (s) goto done;
    if ((s = sq_pl_write_config(&r, od, ck->config_path, err))) goto done;
    static const char *copy[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                 "generation_config.json", "LICENSE"};
    for (size_t i = 0; i < sizeof copy / sizeof *copy && !s; i++) s = sq_outdir_copy(od, ck->dir, copy[i], true, err);
    if (s) goto done;
    { /* the serving check on what was written: one warning when vLLM would not load it */
        sq_ckpt *oc = NULL;
        sq_err e2 = {0};
        if (sq_ckpt_open(&oc, sq_outdir_tmp(od), &e2) == SQ_OK && sq_serve_check(oc, 1, NULL, NULL, &r.serve, &e2) == SQ_OK) {
            r.serve_checked = true;
            if (r.serve.n_reject)
                sq_log(SQ_LOG_WARN, "vLLM would not load %s: %d of %d linears break its kernel rules, e.g. %s: %s (spotq check %s lists them)",
                       o->out, r.serve.n_reject, r.serve.n_linear, r.serve.first_reject.name, r.serve.first_reject.rule, o->out);
        }
        sq_ckpt_close(oc);
    }
    if ((s = sq_pl_write_report(&r, od, r.win ? sq_calib_hash(r.win, ntok) : 0, nids, sq_pl_now() - t0, err))) goto done;
    s = sq_outdir_commit(od, err);
    od = NULL;
    if (!s && r.format_note[0]) sq_log(SQ_LOG_INFO, "%s", r.format_note);
    if (!s) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char a[32], b[32];
        sq_human_bytes(r.src_bytes, a, sizeof a);
        sq_human_bytes(r.out_bytes, b, sizeof b);
        sq_log(SQ_LOG_INFO, "quantized %d of %d linear layers (%.2f bits per quantized weight): the checkpoint %.2f bits per weight, %s "
               "(source %s, %.2f bits per weight) in %.1f s: forward %.1f, hessian %.1f, %s %.1f, write %.1f; peak RSS %.0f MiB",
               r.nrep - nkept, r.nrep, r.n_weights_q ? 8.0 * r.packed_bytes / (double)r.n_weights_q : 0.0,
               r.src_params ? 8.0 * (double)r.out_bytes / (double)r.src_params : 0.0, b, a,
               r.src_params ? 8.0 * (double)r.src_bytes / (double)r.src_params : 0.0, sq_pl_now() - t0, r.t_forward,
               r.t_hessian, sq_method_name(o->method), r.t_quant, r.t_write, (double)ru.ru_maxrss / 1024.0);
    }
done:
    sq_shards_abort(r.w);
    sq_outdir_abort(od);
    for (int j = 0; j < r.max_units * SQ_LIN_COUNT; j++) {
        if (r.deq) free(r.deq[j]);
        if (r.f8buf) free(r.f8buf[j]);
    }
    for (int j = 0; j < SQ_LIN_COUNT; j++) free(r.wf[j]);
    for (int i = 0; i < 4; i++) free(r.feat[i]);
    free(r.deq);
    free(r.f8buf);
    free(r.hs);
    free(r.unit_tokens);
    free(r.act_absmax);
    free(r.route_all);
    free(r.moe_tokens);
    free(r.moe_all);
    free(r.x);
    free(r.tmp);
    free(r.rep);
    free(r.win);
    free(ids);
    sq_state_free(r.st);
    sq_stats_free(&r.stats);
    sq_tok_free(tok);
    sq_model_close(r.m);
    sq_exec_free(ex);
    return s;
}
