/* method_fp4.c: the nvfp4, nvfp4+gptq, mxfp4 and mxfp4+gptq rows: E2M1 weights in groups along K as
 * compressed-tensors 0.20 quantises them (quantization/utils/helpers.py calculate_qparams, generate_gparam;
 * lifecycle/forward_helpers.py _quantize; quantization/utils/mxfp_utils.py generate_mx_scales):
 *   NVFP4 (groups of 16): gs = 448 * 6 / amax(W), shared by the linears vLLM fuses (q, k, v; gate, up:
 *     llm-compressor's FUSED_LAYER_NAMES, since vLLM takes one global scale per fused matrix);
 *     s_g = e4m3(clamp(gs * (amax_g / 6), +-448)) (0 -> 0.125, _get_dtype_eps); code = e2m1(clamp(w / (s_g / gs), +-6));
 *   MXFP4 (groups of 32): e = clamp(127 + floor(log2(round_to_power_2(amax_g))) - 2, 0, 255), round_to_power_2
 *     adding a quarter of the mantissa before masking it; code = e2m1(clamp(w / 2^(e - 127), +-6)).
 * GPTQ keeps those scales (from the original W) and sweeps the columns on the FP4 grid (kernels' SQ_QGRID_FP4).
 * W4A4 (NVFP4 --act dynamic): input_global_scale = 448 * 6 / max|x| of the calibration at the linear's input
 * (static_minmax; the max over the fused linears' shared input, and over a MoE layer's experts as vLLM's
 * fused MoE takes one); the model then runs the activations through FP4 per group of 16 as vLLM does. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "../kernels/qmath.h"
#include "method.h"

#define stages sq_calib_stages

typedef struct {
    void **buf;              /* (max_units, SQ_LIN_COUNT): each quantised linear's kernel weight, in use by the model */
    float absmax, in_absmax; /* the unit's shared weight amax (NVFP4's global scale) and input amax */
} fp4_state;

sq_status sq_fp4_init(sq_qrun *r, sq_err *err) {
    fp4_state *f = sq_calloc(1, sizeof *f, err);
    if (!f) return SQ_ERR_NOMEM;
    r->ms = f;
    f->buf = sq_pl_slots_new(r, err);
    return f->buf ? SQ_OK : SQ_ERR_NOMEM;
}

void sq_fp4_fini(sq_qrun *r) {
    fp4_state *f = r->ms;
    if (!f) return;
    sq_pl_slots_free(r, f->buf);
    free(f);
    r->ms = NULL;
}

sq_status sq_fp4_unit_begin(sq_qrun *r, int l, int si, int unit, const char (*why)[128], sq_err *err) {
    fp4_state *f = r->ms;
    f->absmax = 0;
    f->in_absmax = 0;
    for (int j = 0; j < stages[si].n; j++)
        if (!why[stages[si].lin[j]][0]) f->absmax = fmaxf(f->absmax, sq_pl_wmat_absmax(sq_model_linear_unit(r->m, l, unit, stages[si].lin[j])));
    if (r->o->act == SQ_ACT_NONE) return SQ_OK;
    float m = r->cal->act_absmax[unit];
    if (unit < r->c->n_experts && sq_config_moe_layer(r->c, l))
        for (int e = 0; e < r->c->n_experts; e++) m = fmaxf(m, r->cal->act_absmax[e]);
    if (!isfinite(m)) {
        char name[160];
        sq_lin_name_unit(r->c, l, unit, stages[si].lin[0], name, sizeof name);
        return sq_fail(err, SQ_ERR_NUMERIC, "%s: the calibration inputs of %s are not finite (NaN or Inf)", r->o->model, name);
    }
    f->in_absmax = m;
    return SQ_OK;
}

float sq_fp4_global_scale(float amax) {
    float g = (448.0f * 6.0f) / fmaxf(amax, FLT_MIN); /* generate_gparam: clamp(min = tiny), NaN/Inf -> 1 */
    return isfinite(g) ? g : 1.0f;
}

uint8_t sq_fp4_mx_exponent(float amax) {
    uint32_t u;
    memcpy(&u, &amax, 4);
    uint32_t e = ((u + (1u << 21)) & 0x7F800000u) >> 23; /* round_to_power_2 on float32: + (1 << (23 - 1 - 1)), masked */
    if (e == 0) return 0;                                 /* log2(0) = -inf: clamped to 0 */
    int v = (int)e - 2;                                   /* 127 + (e - 127) - floor(log2 6) */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

void sq_fp4_scales(const float *w, int64_t n, int64_t k, sq_fp4_variant v, float gs, uint8_t *raw, float *eff) {
    int64_t g = v == SQ_FP4_NV ? SQ_NVFP4_GROUP : SQ_MXFP4_GROUP, ng = k / g;
    for (int64_t r = 0; r < n; r++)
        for (int64_t b = 0; b < ng; b++) {
            float m = 0;
            for (int64_t j = b * g; j < (b + 1) * g; j++) m = fmaxf(m, fabsf(w[r * k + j]));
            if (v == SQ_FP4_NV) {
                float s = gs * (m / 6.0f);
                uint8_t c = sq_qm_e4m3_encode(fmaxf(-448.0f, fminf(s, 448.0f)));
                if (c == 0) c = sq_qm_e4m3_encode(0.125f); /* a zero scale -> the E4M3 eps */
                raw[r * ng + b] = c;
                eff[r * ng + b] = sq_qm_e4m3_decode(c) / gs;
            } else {
                uint8_t e = sq_fp4_mx_exponent(m);
                raw[r * ng + b] = e;
                eff[r * ng + b] = sq_qm_e8m0_decode(e);
            }
        }
}

void sq_fp4_pack(const uint8_t *codes, int64_t n, int64_t k, uint8_t *packed) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j += 2) packed[r * (k / 2) + j / 2] = (uint8_t)((codes[r * k + j] & 0xF) | (codes[r * k + j + 1] << 4));
}

static void dequant(const uint8_t *codes, const float *eff, int64_t n, int64_t k, int64_t g, float *out) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) out[r * k + j] = sq_qm_e2m1_decode(codes[r * k + j]) * eff[r * (k / g) + j / g];
}

static sq_status fp4_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, bool gptq, sq_err *err) {
    fp4_state *st = r->ms;
    const sq_method_row *m = sq_method_row_of(r->o->method);
    sq_fp4_variant v = m->fp4;
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    int64_t n = wm->rows, k = wm->cols, g = v == SQ_FP4_NV ? SQ_NVFP4_GROUP : SQ_MXFP4_GROUP, ng = k / g;
    sq_report_row *rep = sq_pl_new_row(r, l, unit, which, wm);
    if (k % g) return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s: in_features %lld is not a multiple of the FP4 group %lld", r->o->model, rep->name,
                              (long long)k, (long long)g);
    bool w4a4 = r->o->act == SQ_ACT_DYNAMIC;
    float gs = v == SQ_FP4_NV ? sq_fp4_global_scale(st->absmax) : 0, gs_in = w4a4 ? sq_fp4_global_scale(st->in_absmax) : 0;
    rep->act_scale = gs_in;
    /* one block: the kernels' description, the effective scales, the packed codes */
    size_t bytes = sizeof(sq_fp4weight) + (size_t)(n * ng) * sizeof(float) + (size_t)(n * k / 2);
    void *blk = malloc(bytes);
    float *w = malloc((size_t)(n * k) * sizeof *w), *dq = malloc((size_t)(n * k) * sizeof *dq);
    uint8_t *codes = malloc((size_t)(n * k)), *raw = malloc((size_t)(n * ng));
    if (!blk || !w || !dq || !codes || !raw) {
        free(blk); free(w); free(dq); free(codes); free(raw);
        return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name);
    }
    sq_fp4weight *f = blk;
    float *eff = (float *)(f + 1);
    uint8_t *packed = (uint8_t *)(eff + n * ng);
    sq_dtype_to_f32(wm->dtype, wm->data, w, (size_t)(n * k));
    sq_status s = SQ_OK;
    int64_t bad;
    if (sq_backend_cpu()->absmax(w, n * k, &bad) < 0)
        s = sq_fail(err, SQ_ERR_NUMERIC, "%s: tensor '%s.weight' has a NaN or Inf at element %lld", r->o->model, rep->name, (long long)bad);
    double t = sq_pl_now();
    sq_qgrid grid = {.kind = SQ_QGRID_FP4, .group_size = (int)g, .fp8_scale = eff, .threads = r->o->threads};
    sq_qout qo = {.codes = codes};
    if (!s) {
        sq_fp4_scales(w, n, k, v, gs, raw, eff);
        s = sq_backend_cpu()->rtn(w, n, k, &grid, &qo, err);
    }
    double den = NAN; /* tr(W H W^T), shared by both errors */
    if (!s) {
        dequant(codes, eff, n, k, g, dq);
        rep->err_rtn = rep->err = sq_pl_output_error(r, w, dq, hs->h, n, k, &den);
    }
    if (!s && gptq) {
        sq_gptq_args a = {.act_order = r->o->q.act_order, .damp = r->o->q.damp, .block_size = 128};
        s = sq_backend_cpu()->gptq(w, hs->h, NULL, n, k, &grid, &a, &qo, &rep->damp, err);
        if (!s && rep->damp < 0) {
            rep->damp = 0;
            snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
        }
        if (!s) {
            dequant(codes, eff, n, k, g, dq);
            rep->err = sq_pl_output_error(r, w, dq, hs->h, n, k, &den);
            /* the sweep's updates (n k^2) and the factor of H^-1 (4/3 k^3), unless kept from the last solve */
            r->f_quant += (double)n * (double)k * (double)k + (qo.factor_kept ? 0 : 4.0 / 3.0 * (double)k * (double)k * (double)k);
        }
    }
    r->t_quant += sq_pl_now() - t;
    if (!s) sq_fp4_pack(codes, n, k, packed);
    free(w);
    free(dq);
    free(codes);
    if (s) { free(blk); free(raw); return s; }
    sq_qlinear fl = {.kind = SQ_SCHEME_FP4, .n = n, .k = k, .fp4 = v, .group = (int)g, .fp4_packed = packed, .fp4_scale = raw,
                     .global_scale = gs, .input_global_scale = gs_in};
    *f = (sq_fp4weight){.scale = eff, .group = (int)g, .act_fp4 = w4a4, .input_global_scale = gs_in};
    sq_wmat fw = {.dtype = SQ_DT_U8, .rows = n, .cols = k, .data = packed, .f4 = f};
    s = sq_pl_finish_coded(r, rep, l, unit, which, &fl, &fw, st->buf, blk, err);
    free(raw);
    return s;
}

sq_status sq_fp4_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return fp4_linear(r, l, unit, which, hs, false, err);
}

sq_status sq_fp4_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return fp4_linear(r, l, unit, which, hs, true, err);
}
