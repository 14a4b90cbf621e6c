/* method_int8.c: the int8 and int8+gptq rows (INT8 W8A8): per output channel symmetric INT8 weights with
 * compressed-tensors 0.20's grid (s = max|w_row| / 127.5, calculate_qparams over the int8 range 255; code =
 * clamp(round(w / s), -128, 127)), the codes by round-to-nearest or by GPTQ's error compensation with the
 * scales fixed from the original W (as llm-compressor's GPTQModifier runs a channel strategy); the linear
 * then runs in the model as vLLM runs it (activations INT8 per token), so later sites calibrate on what
 * deployment computes. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "../kernels/qmath.h"
#include "method.h"
#include "smooth.h"

/* The run's INT8 linears, in use by the model: (max_units, SQ_LIN_COUNT), each scales then codes in one allocation. */
typedef struct {
    void **buf;                  /* sq_pl_slots */
    sq_smooth *sm;               /* --smoothquant; else NULL */
} int8_state;

sq_status sq_int8_init(sq_qrun *r, sq_err *err) {
    int8_state *s = sq_calloc(1, sizeof *s, err);
    if (!s) return SQ_ERR_NOMEM;
    r->ms = s;
    s->buf = sq_pl_slots_new(r, err);
    if (!s->buf) return SQ_ERR_NOMEM;
    return r->o->smoothquant ? sq_smooth_new(&s->sm, r, err) : SQ_OK;
}

/* --smoothquant: block l smoothed before its stages, its norms and routers written after them. */
sq_status sq_int8_block_begin(sq_qrun *r, int l, sq_err *err) {
    int8_state *s = r->ms;
    return s->sm ? sq_smooth_block(r, s->sm, l, err) : SQ_OK;
}

sq_status sq_int8_block_end(sq_qrun *r, int l, sq_err *err) {
    int8_state *s = r->ms;
    sq_status st = s->sm ? sq_smooth_write_block(r, s->sm, l, err) : SQ_OK;
    return st ? st : sq_calib_forward(r->cal, l, NULL, NULL, err);
}

bool sq_int8_writes_tensor(const sq_qrun *r, const char *name) { return r->o->smoothquant && sq_smooth_writes_tensor(name); }

void sq_int8_report_figures(const sq_qrun *r, sq_qreport *rep) {
    const int8_state *s = r->ms;
    rep->smooth = s ? s->sm : NULL;
}

void sq_int8_fini(sq_qrun *r) {
    int8_state *s = r->ms;
    if (!s) return;
    sq_pl_slots_free(r, s->buf);
    sq_smooth_free(s->sm, r);
    free(s);
    r->ms = NULL;
}

/* compressed-tensors' scale of a row whose largest magnitude is m; a zero row gets the F32 eps floor
 * (observers clamp a zero scale to torch.finfo(dtype).eps). */
static float row_scale(float m) {
    float s = m / 127.5f;
    return s > 0 ? s : FLT_EPSILON;
}

static void dequant(const int8_t *codes, const float *scale, int64_t n, int64_t k, float *out) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) out[r * k + j] = (float)codes[r * k + j] * scale[r];
}

sq_status sq_int8_quantize(const float *w, int64_t n, int64_t k, int8_t *codes, float *scale, const char *what, sq_err *err) {
    for (int64_t r = 0; r < n; r++) {
        float m = 0;
        for (int64_t j = 0; j < k; j++) {
            float v = w[r * k + j];
            if (!isfinite(v))
                return sq_fail(err, SQ_ERR_NUMERIC, "%s has a NaN or Inf at element %lld (row %lld, column %lld)", what, (long long)(r * k + j),
                               (long long)r, (long long)j);
            m = fmaxf(m, fabsf(v));
        }
        scale[r] = row_scale(m);
    }
    sq_qgrid g = {.kind = SQ_QGRID_INT8_CHANNEL, .fp8_scale = scale};
    sq_qout o = {.codes = (uint8_t *)codes};
    return sq_backend_cpu()->rtn(w, n, k, &g, &o, err);
}

static sq_status int8_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, bool gptq, sq_err *err) {
    const float *h = hs->h;
    int8_state *st = r->ms;
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    int64_t n = wm->rows, k = wm->cols;
    sq_report_row *rep = sq_pl_new_row(r, l, unit, which, wm);
    char what[300];
    snprintf(what, sizeof what, "%s: tensor '%s.weight'", r->o->model, rep->name);
    sq_fp8weight *f = malloc(sizeof *f + (size_t)n * sizeof(float) + (size_t)(n * k));
    float *w = malloc((size_t)(n * k) * sizeof *w), *dq = malloc((size_t)(n * k) * sizeof *dq);
    if (!f || !w || !dq) { free(f); free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    float *scale = (float *)(f + 1);
    int8_t *codes = (int8_t *)(scale + n);
    sq_dtype_to_f32(wm->dtype, wm->data, w, (size_t)(n * k));
    double t = sq_pl_now();
    double den = NAN; /* tr(W H W^T), shared by both errors */
    sq_status s = sq_int8_quantize(w, n, k, codes, scale, what, err);
    if (!s) {
        dequant(codes, scale, n, k, dq);
        rep->err_rtn = rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
    }
    if (!s && gptq && h) {
        sq_qgrid g = {.kind = SQ_QGRID_INT8_CHANNEL, .fp8_scale = scale, .threads = r->o->threads};
        sq_gptq_args a = {.act_order = r->o->q.act_order, .damp = r->o->q.damp, .block_size = 128};
        sq_qout o = {.codes = (uint8_t *)codes};
        s = sq_backend_cpu()->gptq(w, h, NULL, n, k, &g, &a, &o, &rep->damp, err);
        if (!s && rep->damp < 0) { /* the sweep leaves the codes as they were */
            rep->damp = 0;
            sq_int8_quantize(w, n, k, codes, scale, what, err);
            snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
        }
        if (!s) {
            dequant(codes, scale, n, k, dq);
            rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
            /* the sweep's updates (n k^2) and the factor of H^-1 (4/3 k^3), unless kept from the last solve */
            r->f_quant += (double)n * (double)k * (double)k + (o.factor_kept ? 0 : 4.0 / 3.0 * (double)k * (double)k * (double)k);
        }
    }
    r->t_quant += sq_pl_now() - t;
    free(w);
    free(dq);
    if (s) { free(f); return s; }
    sq_qlinear ql = {.kind = SQ_SCHEME_W8A8, .n = n, .k = k, .codes = (const uint8_t *)codes, .scale = scale, .per_channel = true};
    *f = (sq_fp8weight){.scale = scale, .per_channel = true, .act = SQ_FP8_ACT_DYNAMIC_TOKEN};
    sq_wmat iw = {.dtype = SQ_DT_I8, .rows = n, .cols = k, .data = codes, .f8 = f};
    return sq_pl_finish_coded(r, rep, l, unit, which, &ql, &iw, st->buf, f, err);
}

sq_status sq_int8_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return int8_linear(r, l, unit, which, hs, false, err);
}

sq_status sq_int8_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return int8_linear(r, l, unit, which, hs, true, err);
}
