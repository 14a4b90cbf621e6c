/* pipeline.c: the quantize pipeline: calibration windows -> block-by-block calibration (each block
 * sees the outputs of the already quantised blocks before it, true-sequential inside the block:
 * [k, v, q], [o], [gate, up], [down]) -> RTN or GPTQ per linear -> packed tensors, config and
 * spotq.json, written into a temporary directory renamed into place at the end. */
#include "pipeline.h"

#include <cJSON.h>
#include <cblas.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../calib/calib.h"
#include "../formats/dtype.h"
#include "awq.h"
#include "fp8.h"
#include "gptq_cuda.h"
#include "../formats/outdir.h"
#include "../formats/text.h"
#include "../formats/tokenizer.h"
#include "../runtime/runtime.h"

const char *sq_method_name(sq_method m) {
    static const char *names[] = {"rtn", "gptq", "awq", "awq+gptq", "fp8"};
    return m >= 0 && m < (int)(sizeof names / sizeof *names) ? names[m] : "?";
}
const char *sq_format_name(sq_format f) {
    return f == SQ_FORMAT_CT ? "compressed-tensors" : f == SQ_FORMAT_AWQ ? "awq" : f == SQ_FORMAT_FP8 ? "fp8" : "gptq";
}

static bool is_awq(sq_method m) { return m == SQ_METHOD_AWQ || m == SQ_METHOD_AWQ_GPTQ; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What happened to one linear layer, for spotq.json. */
typedef struct {
    char name[160];
    int64_t n, k;
    bool quantized;
    char note[128];              /* why it was kept, or the GPTQ fallback */
    double err_rtn, err;         /* relative output error ||WX - QX|| / ||WX|| */
    double damp;
    double alpha;                /* AWQ: the chosen exponent of its scale set (-1: not scaled) */
    float act_scale;             /* FP8: the static input scale (0: none) */
} lin_report;

/* The true-sequential stages of a Llama block and the site whose input each needs. */
static const struct { sq_site site; int n; sq_lin lin[3]; } stages[] = {
    {SQ_SITE_QKV, 3, {SQ_LIN_K, SQ_LIN_V, SQ_LIN_Q}},
    {SQ_SITE_O, 1, {SQ_LIN_O}},
    {SQ_SITE_GATEUP, 2, {SQ_LIN_GATE, SQ_LIN_UP}},
    {SQ_SITE_DOWN, 1, {SQ_LIN_DOWN}},
};

typedef struct {
    const sq_quantize_opts *o;
    const sq_config *c;
    sq_model *m;
    sq_state *st;
    sq_stw *w;
    int *win;                    /* (nsamples, seqlen) calibration token windows */
    float *x;                    /* (nsamples, seqlen, hidden) the current block's inputs */
    float *tmp;                  /* (seqlen, hidden) */
    sq_site want;                /* the site the tap collects */
    sq_hessian hs;
    lin_report *rep;
    int nrep;
    float *deq[SQ_LIN_COUNT];    /* this block's dequantised weights, in use by the model */
    double t_forward, t_hessian, t_quant, t_write;
    int64_t n_weights_q, n_weights_kept;
    double packed_bytes;         /* bytes of every quantised tensor written (codes, scales, zeros, g_idx) */
    /* AWQ: the block's site inputs (full precision, over every calibration token) and its weights as floats */
    float *feat[4];              /* (nsamples * seqlen, dim of the site) */
    int feat_dim[4];
    int cur_sample;
    float *wf[SQ_LIN_COUNT];     /* (rows, cols) */
    /* FP8: max |x| at the site the tap collects; this block's quantised linears, in use by the model */
    float act_absmax;
    sq_fp8weight *f8buf[SQ_LIN_COUNT]; /* with its scales and codes in the same allocation */
    double fold_diff_max;        /* AWQ: the largest relative change folding made to a block's output */
} run;

static bool tap(void *user, sq_site site, const float *x, int n, int dim) {
    run *r = user;
    if (site != r->want) return false;
    double t = now();
    sq_hessian_add(&r->hs, x, n);
    if (r->o->method == SQ_METHOD_FP8) {
        int64_t bad;
        float m = sq_fp8_absmax(x, (int64_t)n * dim, &bad);
        r->act_absmax = m < 0 ? INFINITY : fmaxf(r->act_absmax, m);
    }
    r->t_hessian += now() - t;
    return true; /* nothing after this site is needed */
}

/* Why a linear stays in full precision ("" when it is quantised). */
static void keep_reason(const run *r, const char *name, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    for (int i = 0; i < r->o->n_ignore; i++)
        if (fnmatch(r->o->ignore[i], name, 0) == 0) {
            snprintf(why, cap, "ignored (--ignore %s)", r->o->ignore[i]);
            return;
        }
    if (r->o->method == SQ_METHOD_FP8) return; /* E4M3 takes any shape */
    const sq_qparams *p = &r->o->q;
    int pack = 32 / p->bits;
    if (k % pack) snprintf(why, cap, "in_features %lld is not a multiple of %d (the %d-bit packing)", (long long)k, pack, p->bits);
    else if (n % pack) snprintf(why, cap, "out_features %lld is not a multiple of %d (the zero-point packing)", (long long)n, pack);
    else if (p->group_size > 0 && k % p->group_size)
        snprintf(why, cap, "in_features %lld is not a multiple of the group size %d", (long long)k, p->group_size);
}

static sq_status add_tensor(run *r, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                            const void *data, sq_err *err) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    int64_t shape[2] = {d0, d1};
    double t = now();
    sq_status s = sq_stw_add(r->w, name, dt, nd, shape, data, err);
    r->t_write += now() - t;
    return s;
}

/* Writes one quantised matrix in the output format. */
static sq_status write_packed(run *r, const char *module, const sq_qmatrix *q, sq_err *err) {
    int per = 32 / q->bits;
    int64_t n = q->n, k = q->k, G = q->n_groups;
    sq_status s = SQ_ERR_NOMEM;
    /* bits per weight: codes, fp16 scales, packed zeros, g_idx, as each format stores them */
    double codes = (double)(n * k) * q->bits / 8, scales = (double)(G * n) * 2, zeros = (double)(G * n) * q->bits / 8;
    r->packed_bytes += codes + scales +
                       (r->o->format == SQ_FORMAT_GPTQ ? zeros + 4.0 * (double)k : r->o->format == SQ_FORMAT_AWQ ? zeros : r->o->q.sym ? 0 : zeros);
    if (r->o->format == SQ_FORMAT_AWQ) {
        int32_t *qw = malloc((size_t)(k * n / 8) * 4), *qz = malloc((size_t)(G * n / 8) * 4);
        uint16_t *sc = malloc((size_t)(G * n) * 2);
        if (qw && qz && sc) {
            sq_pack_awq(q, qw, qz, sc);
            if (!(s = add_tensor(r, module, "qweight", SQ_DT_I32, 2, k, n / 8, qw, err)) &&
                !(s = add_tensor(r, module, "qzeros", SQ_DT_I32, 2, G, n / 8, qz, err)))
                s = add_tensor(r, module, "scales", SQ_DT_F16, 2, G, n, sc, err);
        } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
        free(qw); free(qz); free(sc);
        return s;
    }
    if (r->o->format == SQ_FORMAT_GPTQ) {
        int32_t *qw = malloc((size_t)(k / per * n) * 4), *qz = malloc((size_t)(G * n / per) * 4), *gi = malloc((size_t)k * 4);
        uint16_t *sc = malloc((size_t)(G * n) * 2);
        if (qw && qz && gi && sc) {
            sq_pack_gptq(q, qw, qz, sc, gi);
            if (!(s = add_tensor(r, module, "qweight", SQ_DT_I32, 2, k / per, n, qw, err)) &&
                !(s = add_tensor(r, module, "qzeros", SQ_DT_I32, 2, G, n / per, qz, err)) &&
                !(s = add_tensor(r, module, "scales", SQ_DT_F16, 2, G, n, sc, err)))
                s = add_tensor(r, module, "g_idx", SQ_DT_I32, 1, k, 0, gi, err);
        } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
        free(qw); free(qz); free(gi); free(sc);
        return s;
    }
    int32_t *wp = malloc((size_t)(n * k / per) * 4), *zp = r->o->q.sym ? NULL : malloc((size_t)(n / per * G) * 4);
    uint16_t *ws = malloc((size_t)(n * G) * 2);
    int64_t shape[2] = {n, k};
    if (wp && ws && (r->o->q.sym || zp)) {
        sq_pack_ct(q, wp, ws, zp);
        if (!(s = add_tensor(r, module, "weight_packed", SQ_DT_I32, 2, n, k / per, wp, err)) &&
            !(s = add_tensor(r, module, "weight_scale", SQ_DT_F16, 2, n, G, ws, err)) &&
            !(s = add_tensor(r, module, "weight_shape", SQ_DT_I64, 1, 2, 0, shape, err)) && zp)
            s = add_tensor(r, module, "weight_zero_point", SQ_DT_I32, 2, n / per, G, zp, err);
    } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
    free(wp); free(zp); free(ws);
    return s;
}

/* Quantises linear `which` of layer l with the Hessian in r->hs; swaps the dequantised weights into
 * the model so the rest of the block runs on them. */
static sq_status quantize_linear(run *r, int l, sq_lin which, sq_err *err) {
    const sq_wmat *wm = sq_model_linear(r->m, l, which);
    int64_t n = wm->rows, k = wm->cols;
    lin_report *rep = &r->rep[r->nrep++];
    memset(rep, 0, sizeof *rep);
    sq_lin_name(r->c, l, which, rep->name, sizeof rep->name);
    rep->n = n;
    rep->k = k;
    float *w = malloc((size_t)(n * k) * sizeof *w), *dq = malloc((size_t)(n * k) * sizeof *dq);
    if (!w || !dq) { free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    sq_dtype_to_f32(wm->dtype, wm->data, w, (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++)
        if (!isfinite(w[i])) {
            free(w); free(dq);
            return sq_fail(err, SQ_ERR_NUMERIC, "%s: tensor '%s.weight' has a NaN or Inf at element %lld", r->o->model, rep->name,
                           (long long)i);
        }
    double t = now();
    sq_qmatrix q;
    sq_status s = sq_quant_rtn(w, n, k, &r->o->q, &q, err);
    if (s) { free(w); free(dq); return s; }
    sq_qmatrix_dequant(&q, dq);
    rep->err_rtn = rep->err = sq_quant_output_error(w, dq, r->hs.h, n, k);
    if (r->o->method == SQ_METHOD_GPTQ) {
        sq_qmatrix_free(&q);
        s = r->o->device == SQ_DEVICE_CUDA ? sq_quant_gptq_cuda(w, r->hs.h, n, k, &r->o->q, &q, err)
                                           : sq_quant_gptq(w, r->hs.h, n, k, &r->o->q, &q, err);
        if (s) { free(w); free(dq); return s; }
        sq_qmatrix_dequant(&q, dq);
        rep->err = sq_quant_output_error(w, dq, r->hs.h, n, k);
        rep->damp = q.damp_used;
        if (q.fallback) snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
    }
    r->t_quant += now() - t;
    rep->quantized = true;
    r->n_weights_q += n * k;
    s = write_packed(r, rep->name, &q, err);
    sq_qmatrix_free(&q);
    free(w);
    if (!s) {
        sq_wmat dw = {.dtype = SQ_DT_F32, .rows = n, .cols = k, .data = dq};
        s = sq_model_set_linear(r->m, l, which, &dw, err);
    }
    if (s) { free(dq); return s; }
    free(r->deq[which]);
    r->deq[which] = dq;
    return SQ_OK;
}

/* NaN or Inf in a source tensor is an error naming it: never silent garbage in the output. */
static sq_status check_finite(const run *r, const char *name, sq_dtype dt, const void *data, int64_t numel, sq_err *err) {
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

static sq_status keep_linear(run *r, int l, sq_lin which, const char *why, sq_err *err) {
    const sq_wmat *wm = sq_model_linear(r->m, l, which);
    lin_report *rep = &r->rep[r->nrep++];
    memset(rep, 0, sizeof *rep);
    sq_lin_name(r->c, l, which, rep->name, sizeof rep->name);
    rep->n = wm->rows;
    rep->k = wm->cols;
    snprintf(rep->note, sizeof rep->note, "%s", why);
    r->n_weights_kept += wm->rows * wm->cols;
    char wname[200];
    snprintf(wname, sizeof wname, "%s.weight", rep->name);
    sq_status s = check_finite(r, wname, wm->dtype, wm->data, wm->rows * wm->cols, err);
    if (s) return s;
    return add_tensor(r, rep->name, "weight", wm->dtype, 2, wm->rows, wm->cols, wm->data, err);
}

/* Runs layer l on every calibration window (in place when x is r->x, else into r->tmp per window). */
static sq_status run_layer(run *r, int l, bool keep_outputs, sq_err *err) {
    int64_t T = r->o->seqlen, H = r->c->hidden;
    double t = now();
    for (int smp = 0; smp < r->o->nsamples; smp++) {
        float *xs = r->x + smp * T * H;
        float *buf = keep_outputs ? xs : r->tmp;
        if (!keep_outputs) memcpy(buf, xs, (size_t)(T * H) * sizeof *buf);
        sq_status s = sq_layer_forward(r->st, l, buf, (int)T, keep_outputs ? NULL : tap, r, err);
        if (s) return s;
    }
    r->t_forward += now() - t;
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
static sq_status fp8_stage(run *r, int l, size_t si, const char (*why)[128], float *tensor_absmax, float *in_scale, sq_err *err) {
    *tensor_absmax = 0;
    *in_scale = 0;
    if (!r->o->fp8_per_channel)
        for (int j = 0; j < stages[si].n; j++)
            if (!why[stages[si].lin[j]][0]) *tensor_absmax = fmaxf(*tensor_absmax, weight_absmax(sq_model_linear(r->m, l, stages[si].lin[j])));
    if (r->o->act != SQ_ACT_STATIC) return SQ_OK;
    if (!isfinite(r->act_absmax)) {
        char name[160];
        sq_lin_name(r->c, l, stages[si].lin[0], name, sizeof name);
        return sq_fail(err, SQ_ERR_NUMERIC, "%s: the calibration inputs of %s are not finite (NaN or Inf)", r->o->model, name);
    }
    *in_scale = sq_fp8_scale(r->act_absmax);
    return SQ_OK;
}

/* Quantises linear `which` of layer l to E4M3, writes it, and makes the model run it as FP8 (its
 * activations too, with in_scale when static), so later sites calibrate on what deployment computes. */
static sq_status fp8_linear(run *r, int l, sq_lin which, float tensor_absmax, float in_scale, sq_err *err) {
    const sq_wmat *wm = sq_model_linear(r->m, l, which);
    int64_t n = wm->rows, k = wm->cols, ns = r->o->fp8_per_channel ? n : 1;
    bool vllm = r->o->format == SQ_FORMAT_FP8, pc = r->o->fp8_per_channel;
    lin_report *rep = &r->rep[r->nrep++];
    memset(rep, 0, sizeof *rep);
    sq_lin_name(r->c, l, which, rep->name, sizeof rep->name);
    rep->n = n;
    rep->k = k;
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
    double t = now();
    sq_status s = sq_fp8_quantize(w, n, k, pc, tensor_absmax, codes, scale, what, err);
    if (!s) {
        sq_fp8_dequant(codes, scale, n, k, pc, dq);
        rep->err_rtn = rep->err = sq_quant_output_error(w, dq, r->hs.h, n, k);
    }
    r->t_quant += now() - t;
    free(w);
    free(dq);
    if (s) { free(f); return s; }
    rep->quantized = true;
    r->n_weights_q += n * k;
    r->packed_bytes += (double)(n * k) + 4.0 * (double)ns + (in_scale > 0 ? 4.0 : 0.0);
    /* vLLM's fp8: F32 scalars; compressed-tensors: [1], or [N, 1] per channel (as its initialisation shapes them) */
    if (!(s = add_tensor(r, rep->name, "weight", SQ_DT_F8_E4M3, 2, n, k, codes, err)) &&
        !(s = add_tensor(r, rep->name, "weight_scale", SQ_DT_F32, vllm ? 0 : pc ? 2 : 1, pc ? n : 1, 1, scale, err)) && in_scale > 0)
        s = add_tensor(r, rep->name, "input_scale", SQ_DT_F32, vllm ? 0 : 1, 1, 0, &in_scale, err);
    *f = (sq_fp8weight){.scale = scale, .per_channel = pc, .input_scale = in_scale,
                        .act = r->o->act == SQ_ACT_STATIC ? SQ_FP8_ACT_STATIC : r->o->act == SQ_ACT_DYNAMIC ? SQ_FP8_ACT_DYNAMIC_TOKEN : SQ_FP8_ACT_NONE};
    sq_wmat fw = {.dtype = SQ_DT_F8_E4M3, .rows = n, .cols = k, .data = codes, .f8 = f};
    if (!s) s = sq_model_set_linear(r->m, l, which, &fw, err);
    if (s) { free(f); return s; }
    free(r->f8buf[which]);
    r->f8buf[which] = f;
    return SQ_OK;
}

static sq_status quantize_block(run *r, int l, sq_err *err) {
    for (size_t si = 0; si < sizeof stages / sizeof *stages; si++) {
        char why[SQ_LIN_COUNT][128];
        int todo = 0;
        for (int j = 0; j < stages[si].n; j++) {
            sq_lin which = stages[si].lin[j];
            const sq_wmat *wm = sq_model_linear(r->m, l, which);
            char name[160];
            sq_lin_name(r->c, l, which, name, sizeof name);
            keep_reason(r, name, wm->rows, wm->cols, why[which], sizeof why[which]);
            todo += why[which][0] == 0;
        }
        if (todo) {
            int64_t k = sq_model_linear(r->m, l, stages[si].lin[0])->cols;
            bool gpu = r->o->device == SQ_DEVICE_CUDA && r->o->method == SQ_METHOD_GPTQ;
            sq_status s = gpu ? sq_hessian_init_cuda(&r->hs, k, err) : sq_hessian_init(&r->hs, k, err);
            r->want = stages[si].site;
            r->act_absmax = 0;
            if (!s) s = run_layer(r, l, false, err);
            if (!s) sq_hessian_finish(&r->hs);
            if (!s) s = sq_hessian_check(&r->hs, err);
            float tensor_absmax = 0, in_scale = 0;
            bool fp8 = r->o->method == SQ_METHOD_FP8;
            if (!s && fp8) s = fp8_stage(r, l, si, why, &tensor_absmax, &in_scale, err);
            for (int j = 0; j < stages[si].n && !s; j++)
                if (!why[stages[si].lin[j]][0])
                    s = fp8 ? fp8_linear(r, l, stages[si].lin[j], tensor_absmax, in_scale, err) : quantize_linear(r, l, stages[si].lin[j], err);
            sq_hessian_free(&r->hs);
            if (s) return s;
        }
        for (int j = 0; j < stages[si].n; j++) {
            sq_lin which = stages[si].lin[j];
            if (why[which][0]) {
                sq_status s = keep_linear(r, l, which, why[which], err);
                if (s) return s;
            }
        }
    }
    /* The quantised block's outputs are the next block's inputs. */
    return run_layer(r, l, true, err);
}

/* ---------------------------------------------------------------- AWQ */

static const sq_site lin_site[SQ_LIN_COUNT] = {SQ_SITE_QKV, SQ_SITE_QKV, SQ_SITE_QKV, SQ_SITE_O,
                                               SQ_SITE_GATEUP, SQ_SITE_GATEUP, SQ_SITE_DOWN};

/* Collects every site's input over every calibration token (the full-precision block). */
static bool tap_all(void *user, sq_site site, const float *x, int n, int dim) {
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
    double t0 = now();
    if ((st = awq_module(&ctx, NULL, fp))) goto done;
    sq_awq_params p = {.gs = r->o->q.group_size, .bits = r->o->q.bits, .duo = r->o->awq_duo};
    double best_loss;
    st = sq_awq_search(ws, ns, set->nl, k, x_mean, &p, awq_loss, &ctx, s, alpha_out, &best_loss, err);
    if (!st && ctx.status) st = ctx.status;
    r->t_quant += now() - t0;
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
    sq_status s = sq_stw_add(r->w, name, t->dtype, t->ndim, t->shape, buf, err);
    free(buf);
    return s;
}

static sq_status awq_block(run *r, int l, sq_err *err) {
    const sq_config *c = r->c;
    int64_t ntok = (int64_t)r->o->nsamples * r->o->seqlen;
    sq_status s = SQ_OK;
    char why[SQ_LIN_COUNT][128];
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        const sq_wmat *wm = sq_model_linear(r->m, l, (sq_lin)j);
        char name[160];
        sq_lin_name(c, l, (sq_lin)j, name, sizeof name);
        keep_reason(r, name, wm->rows, wm->cols, why[j], sizeof why[j]);
        char wname[200];
        snprintf(wname, sizeof wname, "%s.weight", name);
        if ((s = check_finite(r, wname, wm->dtype, wm->data, wm->rows * wm->cols, err))) return s;
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
    double t0 = now();
    int64_t T = r->o->seqlen, H = c->hidden;
    float *x0 = malloc((size_t)(T * H) * sizeof *x0); /* window 0's input, to check the folding below */
    if (!x0) return sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory");
    memcpy(x0, r->x, (size_t)(T * H) * sizeof *x0);
    for (int smp = 0; smp < r->o->nsamples && !s; smp++) {
        r->cur_sample = smp;
        s = sq_layer_forward(r->st, l, r->x + smp * T * H, (int)T, tap_all, r, err);
    }
    r->t_forward += now() - t0;
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
        double tc = now();
        s = sq_awq_clip(r->wf[j], wm->rows, wm->cols, r->o->q.group_size, r->o->q.bits, r->feat[lin_site[j]], ntok, NULL, err);
        r->t_quant += now() - tc;
        if (s) return s;
    }
    /* Quantise (AWQ grid, or GPTQ on the scaled weights with the scaled inputs' Hessian) and write. */
    for (int i = 0; i < 4; i++) {
        int todo = 0;
        for (int j = 0; j < SQ_LIN_COUNT; j++) todo += lin_site[j] == (sq_site)i && !why[j][0];
        if (!todo) continue;
        double th = now();
        if ((s = sq_hessian_init(&r->hs, r->feat_dim[i], err))) return s;
        sq_hessian_add(&r->hs, r->feat[i], ntok);
        sq_hessian_finish(&r->hs);
        r->t_hessian += now() - th;
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
            double tq = now();
            sq_qmatrix q;
            s = r->o->method == SQ_METHOD_AWQ_GPTQ ? sq_quant_gptq(r->wf[j], r->hs.h, n, k, &r->o->q, &q, err)
                                                   : sq_awq_quantize(r->wf[j], n, k, r->o->q.group_size, r->o->q.bits,
                                                                     r->o->format == SQ_FORMAT_GPTQ, &q, err);
            if (s) return s;
            /* Errors in the scaled domain: the scaled inputs' Hessian with the scaled full-precision weights
             * measures the same ||W X - Q X|| as the original ones. */
            float *dq = malloc((size_t)(n * k) * sizeof *dq);
            if (!dq) { sq_qmatrix_free(&q); return sq_fail(err, SQ_ERR_NOMEM, "out of memory"); }
            sq_qmatrix_dequant(&q, dq);
            rep->err = sq_quant_output_error(r->wf[j], dq, r->hs.h, n, k);
            if (q.fallback) snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
            rep->damp = q.damp_used;
            sq_qmatrix rq;
            if (!(s = sq_awq_quantize(r->wf[j], n, k, r->o->q.group_size, r->o->q.bits, false, &rq, err))) {
                sq_qmatrix_dequant(&rq, dq);
                rep->err_rtn = sq_quant_output_error(r->wf[j], dq, r->hs.h, n, k);
                sq_qmatrix_free(&rq);
            }
            r->t_quant += now() - tq;
            free(dq);
            rep->quantized = true;
            r->n_weights_q += n * k;
            if (!s) s = write_packed(r, rep->name, &q, err);
            sq_qmatrix_free(&q);
        }
        sq_hessian_free(&r->hs);
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

/* Every tensor that is not a linear weight goes to the output unchanged (embeddings, norms, biases,
 * lm_head, routers). */
static sq_status copy_others(run *r, const sq_st *st, sq_err *err) {
    for (int64_t i = 0; i < sq_st_count(st); i++) {
        const sq_tensor *t = sq_st_get(st, i);
        bool linear = false;
        for (int l = 0; l < r->c->n_layers && !linear; l++)
            for (int j = 0; j < SQ_LIN_COUNT && !linear; j++) {
                char name[192];
                sq_lin_name(r->c, l, (sq_lin)j, name, sizeof name);
                size_t nl = strlen(name);
                linear = strncmp(t->name, name, nl) == 0 && strcmp(t->name + nl, ".weight") == 0;
            }
        if (linear) continue;
        if (is_awq(r->o->method) && (strstr(t->name, "layernorm.weight") || (strstr(t->name, "_proj.bias") && strstr(t->name, "model.layers."))))
            continue; /* AWQ folds its scales into these: written with their block */
        sq_status s = check_finite(r, t->name, t->dtype, t->data, t->numel, err);
        if (s) return s;
        double t0 = now();
        s = sq_stw_add(r->w, t->name, t->dtype, t->ndim, t->shape, t->data, err);
        r->t_write += now() - t0;
        if (s) return s;
    }
    return SQ_OK;
}

/* ---------------------------------------------------------------- config.json and spotq.json */

static cJSON *kept_modules(const run *r) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < r->nrep; i++)
        if (!r->rep[i].quantized) cJSON_AddItemToArray(a, cJSON_CreateString(r->rep[i].name));
    return a;
}

static const char *act_name(sq_act a) { return a == SQ_ACT_STATIC ? "static" : a == SQ_ACT_DYNAMIC ? "dynamic" : "none"; }

/* FP8's quantization_config: vLLM's fp8 {quant_method, activation_scheme, ignored_layers}, or
 * compressed-tensors float-quantized with one config group (FORMATS.md). */
static cJSON *fp8_config(const run *r) {
    const sq_quantize_opts *o = r->o;
    cJSON *q = cJSON_CreateObject(), *ign = kept_modules(r);
    cJSON_InsertItemInArray(ign, 0, cJSON_CreateString("lm_head"));
    if (o->format == SQ_FORMAT_FP8) {
        cJSON_AddStringToObject(q, "quant_method", "fp8");
        cJSON_AddStringToObject(q, "activation_scheme", act_name(o->act));
        cJSON_AddItemToObject(q, "ignored_layers", ign);
        return q;
    }
    cJSON_AddStringToObject(q, "quant_method", "compressed-tensors");
    cJSON_AddStringToObject(q, "format", "float-quantized");
    cJSON_AddStringToObject(q, "quantization_status", "compressed");
    cJSON *g0 = cJSON_AddObjectToObject(cJSON_AddObjectToObject(q, "config_groups"), "group_0");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(g0, "targets"), cJSON_CreateString("Linear"));
    cJSON *wq = cJSON_AddObjectToObject(g0, "weights");
    cJSON_AddNumberToObject(wq, "num_bits", 8);
    cJSON_AddStringToObject(wq, "type", "float");
    cJSON_AddStringToObject(wq, "strategy", o->fp8_per_channel ? "channel" : "tensor");
    cJSON_AddBoolToObject(wq, "symmetric", true);
    cJSON_AddBoolToObject(wq, "dynamic", false);
    cJSON_AddNullToObject(wq, "group_size");
    if (o->act == SQ_ACT_NONE) cJSON_AddNullToObject(g0, "input_activations");
    else {
        cJSON *ia = cJSON_AddObjectToObject(g0, "input_activations");
        cJSON_AddNumberToObject(ia, "num_bits", 8);
        cJSON_AddStringToObject(ia, "type", "float");
        cJSON_AddStringToObject(ia, "strategy", o->act == SQ_ACT_STATIC ? "tensor" : "token");
        cJSON_AddBoolToObject(ia, "symmetric", true);
        cJSON_AddBoolToObject(ia, "dynamic", o->act == SQ_ACT_DYNAMIC);
    }
    cJSON_AddNullToObject(g0, "output_activations");
    cJSON_AddStringToObject(g0, "format", "float-quantized");
    cJSON_AddItemToObject(q, "ignore", ign);
    cJSON_AddNullToObject(q, "kv_cache_scheme");
    return q;
}

static cJSON *quant_config(const run *r) {
    if (r->o->method == SQ_METHOD_FP8) return fp8_config(r);
    const sq_qparams *p = &r->o->q;
    cJSON *q = cJSON_CreateObject();
    if (r->o->format == SQ_FORMAT_AWQ) {
        cJSON_AddStringToObject(q, "quant_method", "awq");
        cJSON_AddNumberToObject(q, "bits", p->bits);
        cJSON_AddNumberToObject(q, "group_size", p->group_size > 0 ? p->group_size : -1);
        cJSON_AddBoolToObject(q, "zero_point", true);
        cJSON_AddStringToObject(q, "version", "gemm");
        cJSON_AddItemToObject(q, "modules_to_not_convert", kept_modules(r));
        cJSON_AddStringToObject(q, "quantizer", "spotq " SQ_VERSION);
        return q;
    }
    if (r->o->format == SQ_FORMAT_GPTQ) {
        cJSON_AddStringToObject(q, "quant_method", "gptq");
        cJSON_AddNumberToObject(q, "bits", p->bits);
        cJSON_AddNumberToObject(q, "group_size", p->group_size > 0 ? p->group_size : -1);
        cJSON_AddBoolToObject(q, "desc_act", p->act_order && !p->static_groups);
        cJSON_AddBoolToObject(q, "sym", p->sym);
        cJSON_AddNumberToObject(q, "damp_percent", p->damp);
        cJSON_AddBoolToObject(q, "true_sequential", true);
        cJSON_AddBoolToObject(q, "static_groups", p->static_groups);
        cJSON_AddStringToObject(q, "checkpoint_format", "gptq");
        /* Modules kept in full precision: GPTQModel's and vLLM's "dynamic" negative matches. */
        cJSON *dyn = cJSON_CreateObject();
        for (int i = 0; i < r->nrep; i++)
            if (!r->rep[i].quantized) {
                char key[256], *o = key + 2;
                strcpy(key, "-:");
                for (const char *c = r->rep[i].name; *c && o < key + sizeof key - 3; c++) {
                    if (*c == '.') *o++ = '\\';
                    *o++ = *c;
                }
                *o = 0;
                cJSON_AddItemToObject(dyn, key, cJSON_CreateObject());
            }
        cJSON_AddItemToObject(q, "dynamic", dyn);
        cJSON_AddStringToObject(q, "quantizer", "spotq " SQ_VERSION);
    } else {
        cJSON_AddStringToObject(q, "quant_method", "compressed-tensors");
        cJSON_AddStringToObject(q, "format", "pack-quantized");
        cJSON_AddStringToObject(q, "quantization_status", "compressed");
        cJSON *groups = cJSON_AddObjectToObject(q, "config_groups");
        cJSON *g0 = cJSON_AddObjectToObject(groups, "group_0");
        cJSON *t = cJSON_AddArrayToObject(g0, "targets");
        cJSON_AddItemToArray(t, cJSON_CreateString("Linear"));
        cJSON *wq = cJSON_AddObjectToObject(g0, "weights");
        cJSON_AddNumberToObject(wq, "num_bits", p->bits);
        cJSON_AddStringToObject(wq, "type", "int");
        cJSON_AddBoolToObject(wq, "symmetric", p->sym);
        cJSON_AddStringToObject(wq, "strategy", p->group_size > 0 ? "group" : "channel");
        if (p->group_size > 0) cJSON_AddNumberToObject(wq, "group_size", p->group_size);
        else cJSON_AddNullToObject(wq, "group_size");
        if (p->act_order) cJSON_AddStringToObject(wq, "actorder", "static");
        else cJSON_AddNullToObject(wq, "actorder");
        cJSON_AddBoolToObject(wq, "dynamic", false);
        cJSON_AddNullToObject(g0, "input_activations");
        cJSON_AddNullToObject(g0, "output_activations");
        cJSON_AddStringToObject(g0, "format", "pack-quantized");
        cJSON *ign = kept_modules(r);
        cJSON_InsertItemInArray(ign, 0, cJSON_CreateString("lm_head"));
        cJSON_AddItemToObject(q, "ignore", ign);
        cJSON_AddNullToObject(q, "kv_cache_scheme");
    }
    return q;
}

static sq_status write_config(run *r, sq_outdir *od, const char *src_config, sq_err *err) {
    char *text;
    size_t len;
    sq_status s = sq_read_file(src_config, &text, &len, err);
    if (s) return s;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cfg) return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid JSON", src_config);
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "quantization_config");
    cJSON_AddItemToObject(cfg, "quantization_config", quant_config(r));
    char *out = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    if (!out) return sq_fail(err, SQ_ERR_NOMEM, "out of memory printing config.json");
    s = sq_outdir_write(od, "config.json", out, err);
    free(out);
    return s;
}

static sq_status write_report(run *r, sq_outdir *od, uint64_t calib_hash, int64_t calib_tokens, double total, sq_err *err) {
    const sq_quantize_opts *o = r->o;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tool", "spotq");
    cJSON_AddStringToObject(j, "version", SQ_VERSION);
    cJSON_AddStringToObject(j, "command", o->cmdline ? o->cmdline : "");
    cJSON_AddStringToObject(j, "source", o->model);
    cJSON *a = cJSON_AddObjectToObject(j, "arguments");
    cJSON_AddStringToObject(a, "method", sq_method_name(o->method));
    cJSON_AddStringToObject(a, "format", sq_format_name(o->format));
    cJSON_AddNumberToObject(a, "bits", o->q.bits);
    cJSON_AddNumberToObject(a, "group_size", o->q.group_size);
    cJSON_AddBoolToObject(a, "sym", o->q.sym);
    cJSON_AddBoolToObject(a, "act_order", o->q.act_order);
    cJSON_AddBoolToObject(a, "static_groups", o->q.static_groups);
    cJSON_AddNumberToObject(a, "damp", o->q.damp);
    if (o->method == SQ_METHOD_FP8) {
        static const char *int_only[] = {"bits", "group_size", "sym", "act_order", "static_groups", "damp"};
        for (size_t i = 0; i < sizeof int_only / sizeof *int_only; i++) cJSON_DeleteItemFromObjectCaseSensitive(a, int_only[i]);
        cJSON_AddStringToObject(a, "fp8_scheme", o->fp8_per_channel ? "channel" : "tensor");
        cJSON_AddStringToObject(a, "act", act_name(o->act));
    }
    if (is_awq(o->method)) {
        cJSON_AddNumberToObject(j, "awq_fold_max_relative_change", r->fold_diff_max);
        cJSON_AddBoolToObject(a, "awq_duo", o->awq_duo);
        cJSON_AddBoolToObject(a, "awq_clip", o->awq_clip);
    }
    cJSON *c = cJSON_AddObjectToObject(j, "calibration");
    cJSON_AddStringToObject(c, "file", o->calib ? o->calib : "");
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)calib_hash);
    cJSON_AddStringToObject(c, "fnv1a64_of_window_ids", hex);
    cJSON_AddNumberToObject(c, "text_tokens", (double)calib_tokens);
    cJSON_AddNumberToObject(c, "nsamples", o->nsamples);
    cJSON_AddNumberToObject(c, "seqlen", o->seqlen);
    cJSON_AddNumberToObject(c, "seed", (double)o->seed);
    cJSON *layers = cJSON_AddArrayToObject(j, "layers");
    for (int i = 0; i < r->nrep; i++) {
        const lin_report *p = &r->rep[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", p->name);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)p->n));
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)p->k));
        cJSON_AddBoolToObject(e, "quantized", p->quantized);
        if (p->quantized) {
            cJSON_AddNumberToObject(e, "error_rtn", p->err_rtn);
            cJSON_AddNumberToObject(e, "error", p->err);
            if (o->method == SQ_METHOD_GPTQ || o->method == SQ_METHOD_AWQ_GPTQ) cJSON_AddNumberToObject(e, "damp", p->damp);
        }
        if (is_awq(o->method)) cJSON_AddNumberToObject(e, "awq_alpha", p->alpha);
        if (p->act_scale > 0) cJSON_AddNumberToObject(e, "input_scale", p->act_scale);
        if (p->note[0]) cJSON_AddStringToObject(e, "note", p->note);
        cJSON_AddItemToArray(layers, e);
    }
    cJSON_AddItemToObject(j, "kept_in_full_precision", kept_modules(r));
    cJSON_AddNumberToObject(j, "quantized_weights", (double)r->n_weights_q);
    cJSON_AddNumberToObject(j, "bits_per_quantized_weight", r->n_weights_q ? 8.0 * r->packed_bytes / (double)r->n_weights_q : 0);
    cJSON *t = cJSON_AddObjectToObject(j, "seconds");
    cJSON_AddNumberToObject(t, "forward", r->t_forward);
    cJSON_AddNumberToObject(t, "hessian", r->t_hessian);
    cJSON_AddNumberToObject(t, "quantize", r->t_quant);
    cJSON_AddNumberToObject(t, "write", r->t_write);
    cJSON_AddNumberToObject(t, "total", total);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    cJSON_AddNumberToObject(j, "peak_rss_mib", (double)ru.ru_maxrss / 1024.0);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    if (!out) return sq_fail(err, SQ_ERR_NOMEM, "out of memory printing spotq.json");
    sq_status s = sq_outdir_write(od, "spotq.json", out, err);
    free(out);
    return s;
}

/* ---------------------------------------------------------------- the pipeline */

sq_status sq_quantize_model(const sq_quantize_opts *o, sq_err *err) {
    double t0 = now();
    run r = {.o = o};
    sq_exec *ex = NULL;
    sq_tok *tok = NULL;
    sq_outdir *od = NULL;
    int *ids = NULL;
    int64_t nids = 0;
    sq_status s;
    if (o->q.bits != 4 && o->q.bits != 8) return sq_fail(err, SQ_ERR_ARG, "--bits %d: spotq writes 4 or 8 bits", o->q.bits);
    if (o->q.group_size == 0 || o->q.group_size < -1) return sq_fail(err, SQ_ERR_ARG, "--group-size %d: use -1 or a positive size", o->q.group_size);
    if (!(o->q.damp > 0)) return sq_fail(err, SQ_ERR_ARG, "--damp must be positive");
    if (o->format != SQ_FORMAT_GPTQ && o->q.act_order && !o->q.static_groups)
        return sq_fail(err, SQ_ERR_ARG, "--act-order with --format %s needs --static-groups (the format stores no g_idx)", sq_format_name(o->format));
    if (!o->calib) return sq_fail(err, SQ_ERR_ARG, "quantize needs --calib FILE (calibration text)");
    if ((s = sq_exec_new(&ex, "cpu", o->threads, err))) return s;
    if ((s = sq_model_open(&r.m, o->model, ex, err))) goto done;
    r.c = sq_model_config(r.m);
    const sq_ckpt *ck = sq_model_ckpt(r.m);
    if (r.c->n_experts) { s = sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: quantising %s (MoE) is not supported yet", o->model, r.c->model_type); goto done; }
    if (!ck->tokenizer_path[0]) { s = sq_fail(err, SQ_ERR_IO, "%s: no tokenizer.json beside the model (needed for --calib)", o->model); goto done; }
    if ((s = sq_tok_load(&tok, ck->tokenizer_path, err))) goto done;
    if ((s = sq_text_tokens(tok, o->calib, false, &ids, &nids, err))) goto done;
    for (int64_t i = 0; i < nids; i++)
        if (ids[i] < 0 || ids[i] >= r.c->vocab) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: token %d of the calibration text is outside the model's vocabulary of %d (%s)", o->calib,
                        ids[i], r.c->vocab, ck->tokenizer_path);
            goto done;
        }
    sq_quantize_opts eff = *o; /* --seqlen 0: 2048, or the model's maximum if smaller */
    if (eff.seqlen <= 0) eff.seqlen = r.c->max_pos < 2048 ? r.c->max_pos : 2048;
    o = r.o = &eff;
    if ((s = sq_calib_windows(ids, nids, o->calib, o->nsamples, o->seqlen, o->seed, &r.win, err))) goto done;
    int64_t T = o->seqlen, H = r.c->hidden, ntok = (int64_t)o->nsamples * T;
    r.x = sq_malloc((size_t)(ntok * H) * sizeof *r.x, err);
    r.tmp = sq_malloc((size_t)(T * H) * sizeof *r.tmp, err);
    r.rep = sq_calloc((size_t)r.c->n_layers * SQ_LIN_COUNT, sizeof *r.rep, err);
    if (!r.x || !r.tmp || !r.rep) { s = SQ_ERR_NOMEM; goto done; }
    if ((s = sq_state_new(&r.st, r.m, (int)T, (int)T, err))) goto done;
    for (int smp = 0; smp < o->nsamples; smp++) sq_model_embed(r.m, r.win + smp * T, (int)T, r.x + smp * T * H);

    if ((s = sq_outdir_begin(&od, o->out, o->force, err))) goto done;
    char path[4500];
    if ((s = sq_outdir_file(od, "model.safetensors", path, sizeof path, err))) goto done;
    if ((s = sq_stw_open(&r.w, path, err))) goto done;
    if ((s = copy_others(&r, ck->st, err))) goto done;
    for (int l = 0; l < r.c->n_layers; l++) {
        if ((s = is_awq(o->method) ? awq_block(&r, l, err) : quantize_block(&r, l, err))) goto done;
        if (o->progress)
            fprintf(stderr, "\rspotq: quantize: block %d/%d, %.1f s", l + 1, r.c->n_layers, now() - t0);
    }
    if (o->progress) fputc('\n', stderr);
    int nkept = 0;
    for (int i = 0; i < r.nrep; i++) nkept += !r.rep[i].quantized;
    if (nkept)
        sq_log(SQ_LOG_WARN, "%d of %d linear layers stay in full precision (see kept_in_full_precision in spotq.json), e.g. %s: %s",
               nkept, r.nrep, r.rep[0].quantized ? r.rep[r.nrep - 1].name : r.rep[0].name,
               r.rep[0].quantized ? r.rep[r.nrep - 1].note : r.rep[0].note);
    double tw = now();
    s = sq_stw_finish(r.w, err);
    r.w = NULL;
    r.t_write += now() - tw;
    if (s) goto done;
    if ((s = write_config(&r, od, ck->config_path, err))) goto done;
    static const char *copy[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                 "generation_config.json", "LICENSE"};
    for (size_t i = 0; i < sizeof copy / sizeof *copy && !s; i++) s = sq_outdir_copy(od, ck->dir, copy[i], true, err);
    if (s) goto done;
    if ((s = write_report(&r, od, sq_calib_hash(r.win, ntok), nids, now() - t0, err))) goto done;
    s = sq_outdir_commit(od, err);
    od = NULL;
    if (!s) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        sq_log(SQ_LOG_INFO, "quantized %d of %d linear layers (%.2f bits per weight) in %.1f s: forward %.1f, hessian %.1f, %s %.1f, write %.1f; peak RSS %.0f MiB",
               r.nrep - nkept, r.nrep, r.n_weights_q ? 8.0 * r.packed_bytes / (double)r.n_weights_q : 0.0, now() - t0, r.t_forward,
               r.t_hessian, sq_method_name(o->method), r.t_quant, r.t_write, (double)ru.ru_maxrss / 1024.0);
    }
done:
    sq_stw_abort(r.w);
    sq_outdir_abort(od);
    for (int j = 0; j < SQ_LIN_COUNT; j++) {
        free(r.deq[j]);
        free(r.wf[j]);
    }
    for (int i = 0; i < 4; i++) free(r.feat[i]);
    for (int j = 0; j < SQ_LIN_COUNT; j++) free(r.f8buf[j]);
    free(r.x);
    free(r.tmp);
    free(r.rep);
    free(r.win);
    free(ids);
    sq_state_free(r.st);
    sq_tok_free(tok);
    sq_model_close(r.m);
    sq_exec_free(ex);
    return s;
}
