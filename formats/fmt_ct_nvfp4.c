/* fmt_ct_nvfp4.c: compressed-tensors nvfp4-pack-quantized (quant_method "compressed-tensors", format
 * "nvfp4-pack-quantized"; compressed-tensors 0.20 compressors/nvfp4/base.py, helpers.py): per linear
 *   weight_packed        U8      [N, K / 2]   E2M1 codes, column 2j in the low nibble (pack_fp4_to_uint8)
 *   weight_scale         F8_E4M3 [N, K / 16]  s_g = e4m3(gs * amax_g / 6) (already times the global scale)
 *   weight_global_scale  F32     [1]          gs = 448 * 6 / amax(W) (generate_gparam: a divisor)
 *   input_global_scale   F32     [1]          W4A4 only: 448 * 6 / max|x| of the calibration (static_minmax)
 * and W = e2m1(q) * s_g / gs. The config is the NVFP4 / NVFP4A16 preset (quantization/quant_scheme.py):
 * weights {num_bits 4, type float, strategy tensor_group, group_size 16, symmetric, dynamic false,
 * scale_dtype torch.float8_e4m3fn}; W4A4 adds input_activations the same with dynamic "local" and
 * observer static_minmax. Also the FP4 helpers the MXFP4 row (fmt_ct_mxfp4.c) shares. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fmt_internal.h"
#include "qcheck.h"

bool sq_fmt_fp4_shape(const sq_scheme *s, sq_fp4_variant v, int64_t n, int64_t k, char *why, size_t cap) {
    int g = v == SQ_FP4_NV ? SQ_NVFP4_GROUP : SQ_MXFP4_GROUP;
    const char *name = v == SQ_FP4_NV ? "nvfp4-pack-quantized" : "mxfp4-pack-quantized";
    why[0] = 0;
    if (s->kind != SQ_SCHEME_FP4) snprintf(why, cap, "%s holds FP4 (E2M1) weights", name);
    else if (s->fp4 != v) snprintf(why, cap, "%s holds %s", name, v == SQ_FP4_NV ? "NVFP4" : "MXFP4");
    else if (s->act == SQ_ACT_STATIC) snprintf(why, cap, "FP4 activations have no static form (use --act none or dynamic)");
    else if (v == SQ_FP4_MX && s->act != SQ_ACT_NONE)
        snprintf(why, cap, "MXFP4 is weight-only here (vLLM's compressed-tensors W4A4 MXFP4 scheme is an emulation that leaves activations in float)");
    else if (n || k) {
        if (k % g) snprintf(why, cap, "in_features %lld is not a multiple of the FP4 group %d", (long long)k, g);
    }
    return !why[0];
}

sq_status sq_fmt_fp4_write(const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    int64_t n = l->n, k = l->k, ng = k / l->group;
    bool nv = l->fp4 == SQ_FP4_NV;
    *bytes = (double)(n * k) / 2 + (double)(n * ng) + (nv ? 4.0 : 0.0) + (l->input_global_scale > 0 ? 4.0 : 0.0);
    sq_status s;
    if ((s = sq_fmt_add(out, module, "weight_packed", SQ_DT_U8, 2, n, k / 2, l->fp4_packed, err))) return s;
    if ((s = sq_fmt_add(out, module, "weight_scale", nv ? SQ_DT_F8_E4M3 : SQ_DT_U8, 2, n, ng, l->fp4_scale, err))) return s;
    if (nv && (s = sq_fmt_add(out, module, "weight_global_scale", SQ_DT_F32, 1, 1, 0, &l->global_scale, err))) return s;
    if (nv && l->input_global_scale > 0) s = sq_fmt_add(out, module, "input_global_scale", SQ_DT_F32, 1, 1, 0, &l->input_global_scale, err);
    return s;
}

static sq_status one_f32(const sq_tensor_src *src, const char *module, const char *suffix, float *out, sq_err *err) {
    const sq_tensor *t = sq_fmt_tensor(src, module, suffix);
    if (!t) return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.%s'", src->path, module, suffix);
    if (t->dtype != SQ_DT_F32 || t->numel != 1)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' must be one F32 value (it is %s with %lld values)", src->path, module, suffix,
                       sq_dtype_name(t->dtype), (long long)t->numel);
    memcpy(out, t->data, sizeof *out);
    if (!(isfinite(*out) && *out > 0))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' holds %g (a global scale must be finite and positive)", src->path, module, suffix,
                       (double)*out);
    return SQ_OK;
}

sq_status sq_fmt_fp4_read(const sq_tensor_src *src, const char *module, sq_fp4_variant v, int64_t N, int64_t K, const sq_config *cfg,
                          sq_qlinear *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    int g = v == SQ_FP4_NV ? SQ_NVFP4_GROUP : SQ_MXFP4_GROUP;
    if (K % g)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: in_features %lld is not a multiple of the FP4 group %d", src->path, module, (long long)K, g);
    const sq_tensor *wp, *ws;
    sq_status s;
    if ((s = sq_fmt_need(src, module, "weight_packed", SQ_DT_U8, 2, N, K / 2, &wp, err))) return s;
    if ((s = sq_fmt_need(src, module, "weight_scale", v == SQ_FP4_NV ? SQ_DT_F8_E4M3 : SQ_DT_U8, 2, N, K / g, &ws, err))) return s;
    const uint8_t *sc = ws->data;
    for (int64_t i = 0; i < N * (K / g); i++)
        if (v == SQ_FP4_NV ? (sc[i] & 0x7F) == 0x7F || (sc[i] & 0x80) : sc[i] == 0xFF)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_scale' holds %s at element %lld", src->path, module,
                           v == SQ_FP4_NV ? "a negative or NaN E4M3 scale" : "an E8M0 NaN (255)", (long long)i);
    *out = (sq_qlinear){.kind = SQ_SCHEME_FP4, .n = N, .k = K, .fp4 = v, .group = g, .fp4_packed = wp->data, .fp4_scale = sc};
    if (v == SQ_FP4_MX) return SQ_OK;
    if ((s = one_f32(src, module, "weight_global_scale", &out->global_scale, err))) return s;
    if (cfg->quant_act != SQ_QACT_NONE) {
        if (!sq_fmt_tensor(src, module, "input_global_scale"))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.input_global_scale' (config.json asks for FP4 activations)", src->path, module);
        s = one_f32(src, module, "input_global_scale", &out->input_global_scale, err);
    }
    return s;
}

cJSON *sq_fmt_fp4_config(const sq_scheme *p, cJSON *kept) {
    bool nv = p->fp4 == SQ_FP4_NV;
    const char *fmt = nv ? "nvfp4-pack-quantized" : "mxfp4-pack-quantized";
    cJSON *g0, *q = sq_fmt_ct_open(fmt, &g0);
    for (int a = 0; a < 2; a++) {
        if (a == 1 && p->act == SQ_ACT_NONE) {
            cJSON_AddNullToObject(g0, "input_activations");
            break;
        }
        cJSON *o = cJSON_AddObjectToObject(g0, a ? "input_activations" : "weights");
        cJSON_AddNumberToObject(o, "num_bits", 4);
        cJSON_AddStringToObject(o, "type", "float");
        cJSON_AddBoolToObject(o, "symmetric", true);
        cJSON_AddNumberToObject(o, "group_size", nv ? SQ_NVFP4_GROUP : SQ_MXFP4_GROUP);
        cJSON_AddStringToObject(o, "strategy", nv ? "tensor_group" : "group");
        if (a && nv) cJSON_AddStringToObject(o, "dynamic", "local");
        else cJSON_AddBoolToObject(o, "dynamic", a == 1);
        cJSON_AddStringToObject(o, "scale_dtype", nv ? "torch.float8_e4m3fn" : "torch.uint8");
        if (a && nv) cJSON_AddStringToObject(o, "observer", "static_minmax");
    }
    return sq_fmt_ct_close(q, g0, fmt, kept);
}

void sq_fmt_fp4_check(sq_qc *x, sq_fp4_variant v, const char *module) {
    bool nv = v == SQ_FP4_NV;
    int g = nv ? SQ_NVFP4_GROUP : SQ_MXFP4_GROUP;
    const char *type = sq_qc_str(x->w, "type"), *strat = sq_qc_str(x->w, "strategy"), *gn = x->group;
    if (!cJSON_IsObject(x->w)) sq_qc_bad(x, ".config_groups.%s has no weights", gn);
    else if (sq_qc_int(x->w, "num_bits", 0) != 4 || !type || strcmp(type, "float"))
        sq_qc_bad(x, ".config_groups.%s.weights is %d-bit %s, but %s holds FP4 (E2M1) weights", gn, sq_qc_int(x->w, "num_bits", 0),
                  type ? type : "(no type)", module);
    else if (sq_qc_int(x->w, "group_size", 0) != g)
        sq_qc_bad(x, ".config_groups.%s.weights.group_size is %d, but %s has %s scales per %d inputs", gn, sq_qc_int(x->w, "group_size", 0),
                  module, nv ? "NVFP4" : "MXFP4", g);
    else if (!strat || strcmp(strat, nv ? "tensor_group" : "group"))
        sq_qc_bad(x, ".config_groups.%s.weights.strategy is '%s', but %s needs '%s'", gn, strat ? strat : "absent", nv ? "NVFP4" : "MXFP4",
                  nv ? "tensor_group" : "group");
    else if (nv && (!x->ia || cJSON_IsNull(x->ia)) && sq_qc_tensor(x, module, "input_global_scale"))
        sq_qc_bad(x, ".config_groups.%s.input_activations is null, but %s holds an input_global_scale", gn, module);
}

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) { return sq_fmt_fp4_shape(s, SQ_FP4_NV, n, k, why, cap); }

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    (void)sc;
    return sq_fmt_fp4_write(module, l, out, bytes, err);
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    const sq_tensor *t = sq_fmt_tensor(src, module, "weight_packed");
    return t && t->dtype == SQ_DT_U8 && cfg->quant_method == SQ_FORMAT_CT && !strcmp(cfg->quant_format, "nvfp4-pack-quantized");
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t n, int64_t k, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    return sq_fmt_fp4_read(src, module, SQ_FP4_NV, n, k, cfg, out, err);
}

static bool recognise(const sq_config *cfg) { return cfg->quant_method == SQ_FORMAT_CT && !strcmp(cfg->quant_format, "nvfp4-pack-quantized"); }

static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    (void)N, (void)K;
    sq_fmt_fp4_check(x, SQ_FP4_NV, module);
}

const sq_fmt sq_fmt_ct_nvfp4 = {
    .name = "ct-nvfp4", .format = SQ_FORMAT_CT, .kind = SQ_SCHEME_FP4, .fp4 = SQ_FP4_NV, .quant_method = "compressed-tensors", .ct_format = "nvfp4-pack-quantized",
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = sq_fmt_fp4_config, .recognise = recognise,
    .tensors = "NVFP4 weights", .ignores = sq_fmt_ct_ignores, .check_config = sq_fmt_ct_group, .check = check,
};
