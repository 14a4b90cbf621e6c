/* method_fp8.c: the fp8 and fp8+gptq rows: E4M3 weights per tensor or per channel, with the scales a
 * stage's fused linears share (and their static input scale), or per 128 x 128 block (each block its own
 * scale: nothing shared), the codes by round-to-nearest or by GPTQ's error compensation; the FP8 linears
 * then run in the model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "fp8.h"
#include "method.h"

#define add_tensor sq_pl_add_tensor
#define stages sq_calib_stages

/* FP8's buffers: this run's quantised linears, in use by the model, (max_units, SQ_LIN_COUNT), each
 * with its scales and codes in the same allocation; the scales of the unit at hand. */
typedef struct {
    void **f8buf; /* sq_pl_slots: the sq_fp8weight each quantised linear runs as */
    float tensor_absmax, in_scale;
} fp8_state;

sq_status sq_fp8_init(sq_qrun *r, sq_err *err) {
    fp8_state *f = sq_calloc(1, sizeof *f, err);
    if (!f) return SQ_ERR_NOMEM;
    r->ms = f;
    f->f8buf = sq_pl_slots_new(r, err);
    return f->f8buf ? SQ_OK : SQ_ERR_NOMEM;
}

void sq_fp8_fini(sq_qrun *r) {
    fp8_state *f = r->ms;
    if (!f) return;
    sq_pl_slots_free(r, f->f8buf);
    free(f);
    r->ms = NULL;
}

/* The scales a stage's FP8 linears share. vLLM runs q, k, v (and gate, up) as one fused matrix with
 * one input scale (the max of theirs) and, per tensor, one weight scale (it requantises all three to
 * the largest): giving them the same scales here makes what is written exactly what vLLM runs. The
 * input scale is max |x| at the site over every calibration token, / 448. */
sq_status sq_fp8_unit_begin(sq_qrun *r, int l, int si, int unit, const char (*why)[128], sq_err *err) {
    fp8_state *f = r->ms;
    float *tensor_absmax = &f->tensor_absmax, *in_scale = &f->in_scale;
    *tensor_absmax = 0;
    *in_scale = 0;
    if (!r->o->fp8_per_channel && !r->o->fp8_block)
        for (int j = 0; j < stages[si].n; j++)
            if (!why[stages[si].lin[j]][0])
                *tensor_absmax = fmaxf(*tensor_absmax, sq_pl_wmat_absmax(sq_model_linear_unit(r->m, l, unit, stages[si].lin[j])));
    if (r->o->act != SQ_ACT_STATIC) return SQ_OK;
    /* vLLM's fused MoE runs every expert with one input scale, the largest of theirs */
    float m = r->cal->act_absmax[unit];
    if (unit < r->c->n_experts && sq_config_moe_layer(r->c, l))
        for (int e = 0; e < r->c->n_experts; e++) m = fmaxf(m, r->cal->act_absmax[e]);
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
static sq_status fp8_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, bool gptq, sq_err *err) {
    const float *h = hs->h;
    fp8_state *f8s = r->ms;
    float tensor_absmax = f8s->tensor_absmax, in_scale = f8s->in_scale;
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    const int64_t B = SQ_FP8_BLOCK;
    bool pc = r->o->fp8_per_channel, blk = r->o->fp8_block;
    int64_t n = wm->rows, k = wm->cols, ns = blk ? ((n + B - 1) / B) * ((k + B - 1) / B) : pc ? n : 1;
    sq_report_row *rep = sq_pl_new_row(r, l, unit, which, wm);
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
    double den = NAN; /* tr(W H W^T), shared by both errors */
    sq_status s = blk ? sq_fp8_quantize_block(w, n, k, codes, scale, what, err) : sq_fp8_quantize(w, n, k, pc, tensor_absmax, codes, scale, what, err);
    if (!s) {
        if (blk) sq_fp8_dequant_block(codes, scale, n, k, dq);
        else sq_fp8_dequant(codes, scale, n, k, pc, dq);
        rep->err_rtn = rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
    }
    if (!s && gptq) {
        bool kept = false;
        s = blk ? sq_fp8_gptq_block(w, h, n, k, scale, r->o->q.act_order, r->o->q.damp, r->o->threads, codes, &rep->damp, &kept, err)
                : sq_fp8_gptq(w, h, n, k, pc, scale, r->o->q.act_order, r->o->q.damp, r->o->threads, codes, &rep->damp, &kept, err);
        if (!s && rep->damp < 0) {
            rep->damp = 0;
            snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
        }
        if (!s) {
            if (blk) sq_fp8_dequant_block(codes, scale, n, k, dq);
            else sq_fp8_dequant(codes, scale, n, k, pc, dq);
            rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
            /* the sweep's updates (n k^2) and the factor of H^-1 (4/3 k^3), unless kept from the last solve */
            r->f_quant += (double)n * (double)k * (double)k + (kept ? 0 : 4.0 / 3.0 * (double)k * (double)k * (double)k);
        }
    }
    r->t_quant += sq_pl_now() - t;
    free(w);
    free(dq);
    if (s) { free(f); return s; }
    sq_qlinear fl = {.kind = SQ_SCHEME_FP8, .n = n, .k = k, .codes = codes, .scale = scale, .per_channel = pc, .input_scale = in_scale,
                     .block_n = blk ? SQ_FP8_BLOCK : 0, .block_k = blk ? SQ_FP8_BLOCK : 0};
    *f = (sq_fp8weight){.scale = scale, .per_channel = pc, .input_scale = in_scale,
                        .act = r->o->act == SQ_ACT_STATIC ? SQ_FP8_ACT_STATIC : r->o->act == SQ_ACT_DYNAMIC ? SQ_FP8_ACT_DYNAMIC_TOKEN : SQ_FP8_ACT_NONE,
                        .block_n = blk ? SQ_FP8_BLOCK : 0, .block_k = blk ? SQ_FP8_BLOCK : 0};
    if (blk) f->act = SQ_FP8_ACT_DYNAMIC_GROUP; /* per token and group of 128, as vLLM's block-wise linear */
    sq_wmat fw = {.dtype = SQ_DT_F8_E4M3, .rows = n, .cols = k, .data = codes, .f8 = f};
    return sq_pl_finish_coded(r, rep, l, unit, which, &fl, &fw, f8s->f8buf, f, err);
}


sq_status sq_fp8_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return fp8_linear(r, l, unit, which, hs, false, err);
}

sq_status sq_fp8_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return fp8_linear(r, l, unit, which, hs, true, err);
}
