/* fmt_ct_int.c: compressed-tensors int-quantized INT8 W8A8 (quant_method "compressed-tensors", format
 * "int-quantized", compressed-tensors 0.20's IntQuantizationCompressor, compressors/naive_quantized/base.py):
 * weight I8 [N, K] (code = clamp(round(w / s), -128, 127)), weight_scale [N, 1] in the model's dtype (F32
 * for an F32 model; F16 and BF16 read too), no zero point (symmetric: _remove_symmetric_zp); config_groups
 * weights {num_bits 8, type int, strategy channel, symmetric}, input_activations {num_bits 8, type int,
 * strategy token, dynamic} (the W8A8 preset of quantization/quant_scheme.py). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "fmt_internal.h"
#include "qcheck.h"

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) {
    (void)n, (void)k;
    why[0] = 0;
    if (s->kind != SQ_SCHEME_W8A8) snprintf(why, cap, "int-quantized holds INT8 W8A8 weights (--method int8, int8+gptq)");
    else if (!s->sym) snprintf(why, cap, "INT8 W8A8 weights are symmetric (vLLM's CUTLASS scaled_mm takes no weight zero point)");
    return !why[0]; /* any shape: INT8 codes are not packed */
}

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    (void)sc;
    *bytes = (double)(l->n * l->k) + 4.0 * (double)l->n;
    sq_status s = sq_fmt_add(out, module, "weight", SQ_DT_I8, 2, l->n, l->k, l->codes, err);
    return s ? s : sq_fmt_add(out, module, "weight_scale", SQ_DT_F32, 2, l->n, 1, l->scale, err);
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    const sq_tensor *wt = sq_fmt_tensor(src, module, "weight");
    return cfg->quant_method == SQ_FORMAT_CT && wt && wt->dtype == SQ_DT_I8;
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t N, int64_t K, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    (void)cfg;
    memset(out, 0, sizeof *out);
    const char *path = src->path;
    const sq_tensor *wt, *ws = sq_fmt_tensor(src, module, "weight_scale");
    sq_status s = sq_fmt_need(src, module, "weight", SQ_DT_I8, 2, N, K, &wt, err);
    if (s) return s;
    if (!ws) return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.weight_scale'", path, module);
    if (ws->dtype != SQ_DT_F32 && ws->dtype != SQ_DT_F16 && ws->dtype != SQ_DT_BF16)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_scale' has dtype %s (expected F32, F16 or BF16)", path, module,
                       sq_dtype_name(ws->dtype));
    if (!(ws->numel == N && ws->shape[0] == N && (ws->ndim == 1 || (ws->ndim == 2 && ws->shape[1] == 1))))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_scale' is not one scale per output channel ([%lld, 1])", path, module,
                       (long long)N);
    float *scale = sq_malloc((size_t)(N > 0 ? N : 1) * sizeof *scale, err);
    if (!scale) return SQ_ERR_NOMEM;
    sq_dtype_to_f32(ws->dtype, ws->data, scale, (size_t)N);
    for (int64_t i = 0; i < N; i++)
        if (!(isfinite(scale[i]) && scale[i] > 0)) {
            double bad = scale[i];
            free(scale);
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_scale' holds %g at %lld (scales must be finite and positive)", path,
                           module, bad, (long long)i);
        }
    *out = (sq_qlinear){.kind = SQ_SCHEME_W8A8, .n = N, .k = K, .codes = wt->data, .scale = scale, .per_channel = true};
    return SQ_OK;
}

static cJSON *config(const sq_scheme *p, cJSON *kept) {
    (void)p;
    cJSON *g0, *q = sq_fmt_ct_open("int-quantized", &g0);
    cJSON *wq = cJSON_AddObjectToObject(g0, "weights");
    cJSON_AddNumberToObject(wq, "num_bits", 8);
    cJSON_AddStringToObject(wq, "type", "int");
    cJSON_AddStringToObject(wq, "strategy", "channel");
    cJSON_AddBoolToObject(wq, "symmetric", true);
    cJSON_AddBoolToObject(wq, "dynamic", false);
    cJSON_AddNullToObject(wq, "group_size");
    cJSON *ia = cJSON_AddObjectToObject(g0, "input_activations");
    cJSON_AddNumberToObject(ia, "num_bits", 8);
    cJSON_AddStringToObject(ia, "type", "int");
    cJSON_AddStringToObject(ia, "strategy", "token");
    cJSON_AddBoolToObject(ia, "symmetric", true);
    cJSON_AddBoolToObject(ia, "dynamic", true);
    return sq_fmt_ct_close(q, g0, "int-quantized", kept);
}

static bool recognise(const sq_config *cfg) { return cfg->quant_method == SQ_FORMAT_CT && !strcmp(cfg->quant_format, "int-quantized"); }

/* The Linear group's weights against weight I8 [N, K] + weight_scale [N, 1]; activations dynamic per token. */
static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    (void)K;
    const sq_tensor *ws = sq_qc_tensor(x, module, "weight_scale");
    if (!ws) return; /* the loader's message */
    const char *type = sq_qc_str(x->w, "type"), *strat = sq_qc_str(x->w, "strategy"), *g = x->group;
    const char *ias = x->ia && !cJSON_IsNull(x->ia) ? sq_qc_str(x->ia, "strategy") : NULL;
    if (!cJSON_IsObject(x->w)) sq_qc_bad(x, ".config_groups.%s has no weights", g);
    else if (sq_qc_int(x->w, "num_bits", 0) != 8 || !type || strcmp(type, "int"))
        sq_qc_bad(x, ".config_groups.%s.weights is %d-bit %s, but %s holds I8 weights", g, sq_qc_int(x->w, "num_bits", 0), type ? type : "(no type)", module);
    else if (sq_qc_bool(x->w, "symmetric", 1) != 1)
        sq_qc_bad(x, ".config_groups.%s.weights.symmetric is not true, but %s holds no weight_zero_point", g, module);
    else if (!strat || strcmp(strat, "channel") || ws->numel != N)
        sq_qc_bad(x, ".config_groups.%s.weights.strategy is '%s', but %s holds %lld weight scales for %lld outputs (spotq reads per-channel INT8)", g,
                  strat ? strat : "absent", module, (long long)ws->numel, (long long)N);
    else if (!ias || strcmp(ias, "token") || sq_qc_bool(x->ia, "dynamic", 0) != 1)
        sq_qc_bad(x, ".config_groups.%s.input_activations is not dynamic per token, as spotq runs INT8 weights (W8A8)", g);
}

const sq_fmt sq_fmt_ct_int = {
    .name = "ct-int", .format = SQ_FORMAT_CT, .kind = SQ_SCHEME_W8A8, .quant_method = "compressed-tensors", .ct_format = "int-quantized",
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = config, .recognise = recognise,
    .tensors = "INT8 weights", .ignores = sq_fmt_ct_ignores, .check_config = sq_fmt_ct_group, .check = check,
};
