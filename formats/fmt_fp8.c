/* fmt_fp8.c: vLLM's native fp8 (quant_method "fp8"): E4M3 weight [N, K], one F32 weight_scale per
 * tensor (a scalar), an F32 scalar input_scale with static activations; activations static or dynamic
 * (the format has no weight-only or per-channel form). Block-wise (DeepSeek-V3 / Qwen3-FP8 style, vLLM
 * quantization/fp8.py Fp8Config @1436674b): weight_block_size [128, 128] in the config, the scales an F32
 * weight_scale_inv [ceil(N/128), ceil(K/128)] that, despite its name, multiplies (W = code * scale_inv),
 * activations dynamic per token and group of 128. */
#include <cJSON.h>
#include <stdio.h>
#include <string.h>

#include "fmt_internal.h"
#include "qcheck.h"

static const char *act_name(sq_act a) { return a == SQ_ACT_STATIC ? "static" : a == SQ_ACT_DYNAMIC ? "dynamic" : "none"; }

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    if (s->kind != SQ_SCHEME_FP8) snprintf(why, cap, "vLLM's fp8 holds FP8 weights, not integer codes");
    else if (!s->sym) snprintf(why, cap, "FP8 weights are symmetric (no zero points)");
    else if (s->fp8_per_channel) snprintf(why, cap, "vLLM's fp8 holds one weight scale per tensor");
    else if (s->act == SQ_ACT_NONE) snprintf(why, cap, "vLLM's fp8 has no weight-only form (activations static or dynamic)");
    else if (s->fp8_block && s->act != SQ_ACT_DYNAMIC) snprintf(why, cap, "vLLM's block-wise fp8 takes dynamic activations only");
    return !why[0];
}

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    int64_t n = l->n, k = l->k;
    if (l->per_channel) return sq_fail(err, SQ_ERR_ARG, "%s: vLLM's fp8 holds one weight scale per tensor", module);
    if (l->block_n > 0) {
        int64_t nb = (n + l->block_n - 1) / l->block_n, kb = (k + l->block_k - 1) / l->block_k;
        *bytes = (double)(n * k) + 4.0 * (double)(nb * kb);
        sq_status s = sq_fmt_add(out, module, "weight", SQ_DT_F8_E4M3, 2, n, k, l->codes, err);
        return s ? s : sq_fmt_add(out, module, "weight_scale_inv", SQ_DT_F32, 2, nb, kb, l->scale, err);
    }
    *bytes = (double)(n * k) + 4.0 + (l->input_scale > 0 ? 4.0 : 0.0);
    sq_status s;
    if (!(s = sq_fmt_add(out, module, "weight", SQ_DT_F8_E4M3, 2, n, k, l->codes, err)) &&
        !(s = sq_fmt_add(out, module, "weight_scale", SQ_DT_F32, 0, 1, 1, l->scale, err)) && l->input_scale > 0)
        s = sq_fmt_add(out, module, "input_scale", SQ_DT_F32, 0, 1, 0, &l->input_scale, err);
    return s;
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    return cfg->quant_method == SQ_FORMAT_FP8 && sq_fmt_has_e4m3(src, module);
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t n, int64_t k, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    return sq_fmt_read_e4m3(src, module, n, k, cfg, out, err);
}

static cJSON *config(const sq_scheme *p, cJSON *kept) {
    cJSON *q = cJSON_CreateObject();
    cJSON_InsertItemInArray(kept, 0, cJSON_CreateString("lm_head"));
    cJSON_AddStringToObject(q, "quant_method", "fp8");
    cJSON_AddStringToObject(q, "activation_scheme", act_name(p->act));
    if (p->fp8_block) {
        cJSON *bs = cJSON_AddArrayToObject(q, "weight_block_size");
        cJSON_AddItemToArray(bs, cJSON_CreateNumber(SQ_FP8_BLOCK));
        cJSON_AddItemToArray(bs, cJSON_CreateNumber(SQ_FP8_BLOCK));
    }
    cJSON_AddItemToObject(q, "ignored_layers", kept);
    return q;
}

static bool recognise(const sq_config *cfg) { return cfg->quant_method == SQ_FORMAT_FP8; }

/* ignored_layers: module names. */
static bool ignores(const cJSON *q, const char *module, const char **field) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(q, "ignored_layers"), *e;
    *field = ".ignored_layers";
    cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
        if (cJSON_IsString(e) && !strcmp(e->valuestring, module)) return true;
    return false;
}

/* One weight scale per tensor (or weight_scale_inv per block where weight_block_size says so); activation_scheme against input_scale. */
static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    const sq_config *c = &x->ck->cfg;
    const sq_tensor *ws = sq_qc_tensor(x, module, "weight_scale"), *is = sq_qc_tensor(x, module, "input_scale"),
                    *wi = sq_qc_tensor(x, module, "weight_scale_inv");
    const char *act = sq_qc_str(x->q, "activation_scheme");
    if (c->quant_block_n > 0) {
        int64_t nb = (N + c->quant_block_n - 1) / c->quant_block_n, kb = (K + c->quant_block_k - 1) / c->quant_block_k;
        if (!wi && ws) sq_qc_bad(x, ".weight_block_size is [%d, %d], but %s holds a weight_scale, not the block-wise weight_scale_inv", c->quant_block_n, c->quant_block_k, module);
        else if (wi && !(wi->ndim == 2 && wi->shape[0] == nb && wi->shape[1] == kb))
            sq_qc_bad(x, ".weight_block_size is [%d, %d], but %s holds %lld weight_scale_inv values (expected [%lld, %lld])", c->quant_block_n,
                      c->quant_block_k, module, (long long)wi->numel, (long long)nb, (long long)kb);
        else if (act && strcmp(act, "dynamic")) sq_qc_bad(x, ".activation_scheme is '%s', but block-wise fp8 (weight_block_size) runs dynamic activations", act);
        else if (is) sq_qc_bad(x, ".weight_block_size is set, but %s holds an input_scale (block-wise activations are dynamic)", module);
        return;
    }
    if (!ws && wi) {
        sq_qc_bad(x, " states no weight_block_size, but %s holds block-wise scales (weight_scale_inv)", module);
        return;
    }
    if (!ws) return; /* the loader's message */
    bool per_channel = ws->numel != 1;
    if (per_channel) sq_qc_bad(x, " (vLLM's fp8) holds one weight scale per tensor, but %s holds %lld", module, (long long)ws->numel);
    else if (act && !strcmp(act, "dynamic") && is) sq_qc_bad(x, ".activation_scheme is 'dynamic', but %s holds an input_scale", module);
    else if (act && !strcmp(act, "static") && !is) sq_qc_missing_input_scale(x, module);
}

const sq_fmt sq_fmt_fp8 = {
    .name = "fp8", .format = SQ_FORMAT_FP8, .kind = SQ_SCHEME_FP8, .quant_method = "fp8", .ct_format = NULL,
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = config, .recognise = recognise,
    .tensors = "FP8 weights", .ignores = ignores, .check_config = NULL, .check = check,
};
