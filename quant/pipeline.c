/* pipeline.c: the quantize pipeline: calibration windows -> block-by-block calibration (each block
 * sees the outputs of the already quantised blocks before it, true-sequential inside the block:
 * [k, v, q], [o], [gate, up], [down]) -> RTN or GPTQ per linear -> packed tensors, config and
 * spotq.json, written into a temporary directory renamed into place at the end. */
#include "pipeline.h"

#include <cJSON.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../calib/calib.h"
#include "../formats/dtype.h"
#include "../formats/outdir.h"
#include "../formats/text.h"
#include "../formats/tokenizer.h"
#include "../runtime/runtime.h"

const char *sq_method_name(sq_method m) { return m == SQ_METHOD_GPTQ ? "gptq" : "rtn"; }
const char *sq_format_name(sq_format f) { return f == SQ_FORMAT_CT ? "compressed-tensors" : "gptq"; }

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
} run;

static bool tap(void *user, sq_site site, const float *x, int n, int dim) {
    run *r = user;
    if (site != r->want) return false;
    double t = now();
    sq_hessian_add(&r->hs, x, n);
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
    /* bits per weight: codes, fp16 scales, packed zeros (asymmetric or GPTQ v1), g_idx (GPTQ only) */
    r->packed_bytes += (double)(n * k / per * 4 + G * n * 2) +
                       (r->o->format == SQ_FORMAT_GPTQ ? (double)(G * n / per * 4 + k * 4) : r->o->q.sym ? 0.0 : (double)(G * n / per * 4));
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
        if ((s = sq_quant_gptq(w, r->hs.h, n, k, &r->o->q, &q, err))) { free(w); free(dq); return s; }
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
            sq_status s = sq_hessian_init(&r->hs, k, err);
            r->want = stages[si].site;
            if (!s) s = run_layer(r, l, false, err);
            if (!s) sq_hessian_finish(&r->hs);
            for (int j = 0; j < stages[si].n && !s; j++)
                if (!why[stages[si].lin[j]][0]) s = quantize_linear(r, l, stages[si].lin[j], err);
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

static cJSON *quant_config(const run *r) {
    const sq_qparams *p = &r->o->q;
    cJSON *q = cJSON_CreateObject();
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
            if (o->method == SQ_METHOD_GPTQ) cJSON_AddNumberToObject(e, "damp", p->damp);
        }
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
        if ((s = quantize_block(&r, l, err))) goto done;
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
    for (int j = 0; j < SQ_LIN_COUNT; j++) free(r.deq[j]);
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
