/* fmt_ct_float.c: compressed-tensors float-quantized FP8 (quant_method "compressed-tensors", format
 * "float-quantized"): E4M3 weight [N, K], F32 weight_scale [1] per tensor or [N, 1] per channel, F32
 * input_scale [1] with static activations; activations none, static or dynamic per token. Block-wise
 * (compressed-tensors' FP8_BLOCK preset, quantization/quant_scheme.py 0.20): weights strategy "block",
 * block_structure [128, 128], weight_scale [ceil(N/128), ceil(K/128)] (amax of each block, the edge blocks
 * zero-padded, / 448; F32, the dtype compressed-tensors gives an F32 model's scales), input_activations
 * dynamic, strategy "group", group_size 128. */
#include <cJSON.h>
#include <stdio.h>
#include <string.h>

#include "fmt_internal.h"
#include "qcheck.h"

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    if (s->kind != SQ_SCHEME_FP8) snprintf(why, cap, "float-quantized holds FP8 weights, not integer codes");
    else if (!s->sym) snprintf(why, cap, "FP8 weights are symmetric (no zero points)");
    else if (s->fp8_block && s->act != SQ_ACT_DYNAMIC) snprintf(why, cap, "block-wise FP8 runs its activations dynamic per group (vLLM asserts it)");
    return !why[0]; /* E4M3 takes any shape */
}

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    int64_t n = l->n, k = l->k, ns = l->per_channel ? n : 1;
    bool pc = l->per_channel;
    if (l->block_n > 0) { /* [ceil(N / bn), ceil(K / bk)], as initialize.py shapes a block strategy's scale */
        int64_t nb = (n + l->block_n - 1) / l->block_n, kb = (k + l->block_k - 1) / l->block_k;
        *bytes = (double)(n * k) + 4.0 * (double)(nb * kb);
        sq_status s = sq_fmt_add(out, module, "weight", SQ_DT_F8_E4M3, 2, n, k, l->codes, err);
        return s ? s : sq_fmt_add(out, module, "weight_scale", SQ_DT_F32, 2, nb, kb, l->scale, err);
    }
    *bytes = (double)(n * k) + 4.0 * (double)ns + (l->input_scale > 0 ? 4.0 : 0.0);
    /* [1], or [N, 1] per channel (as compressed-tensors' initialisation shapes them) */
    sq_status s;
    if (!(s = sq_fmt_add(out, module, "weight", SQ_DT_F8_E4M3, 2, n, k, l->codes, err)) &&
        !(s = sq_fmt_add(out, module, "weight_scale", SQ_DT_F32, pc ? 2 : 1, pc ? n : 1, 1, l->scale, err)) && l->input_scale > 0)
        s = sq_fmt_add(out, module, "input_scale", SQ_DT_F32, 1, 1, 0, &l->input_scale, err);
    return s;
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    return cfg->quant_method != SQ_FORMAT_FP8 && sq_fmt_has_e4m3(src, module);
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t n, int64_t k, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    return sq_fmt_read_e4m3(src, module, n, k, cfg, out, err);
}

static cJSON *config(const sq_scheme *p, cJSON *kept) {
    cJSON *g0, *q = sq_fmt_ct_open("float-quantized", &g0);
    cJSON *wq = cJSON_AddObjectToObject(g0, "weights");
    cJSON_AddNumberToObject(wq, "num_bits", 8);
    cJSON_AddStringToObject(wq, "type", "float");
    cJSON_AddStringToObject(wq, "strategy", p->fp8_block ? "block" : p->fp8_per_channel ? "channel" : "tensor");
    cJSON_AddBoolToObject(wq, "symmetric", true);
    cJSON_AddBoolToObject(wq, "dynamic", false);
    cJSON_AddNullToObject(wq, "group_size");
    if (p->fp8_block) {
        cJSON *bs = cJSON_AddArrayToObject(wq, "block_structure");
        cJSON_AddItemToArray(bs, cJSON_CreateNumber(SQ_FP8_BLOCK));
        cJSON_AddItemToArray(bs, cJSON_CreateNumber(SQ_FP8_BLOCK));
    }
    if (p->act == SQ_ACT_NONE) cJSON_AddNullToObject(g0, "input_activations");
    else {
        cJSON *ia = cJSON_AddObjectToObject(g0, "input_activations");
        cJSON_AddNumberToObject(ia, "num_bits", 8);
        cJSON_AddStringToObject(ia, "type", "float");
        cJSON_AddStringToObject(ia, "strategy", p->fp8_block ? "group" : p->act == SQ_ACT_STATIC ? "tensor" : "token");
        cJSON_AddBoolToObject(ia, "symmetric", true);
        cJSON_AddBoolToObject(ia, "dynamic", p->act == SQ_ACT_DYNAMIC);
        if (p->fp8_block) cJSON_AddNumberToObject(ia, "group_size", SQ_FP8_BLOCK);
    }
    return sq_fmt_ct_close(q, g0, "float-quantized", kept);
}

static bool recognise(const sq_config *cfg) {
    return cfg->quant_method == SQ_FORMAT_CT && (!strcmp(cfg->quant_format, "float-quantized") || !strcmp(cfg->quant_format, "naive-quantized"));
}

/* The first Linear group's weight strategy against weight_scale, its input_activations against input_scale. */
static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    sq_fmt_ct_group_of(x, module);
    const sq_tensor *ws = sq_qc_tensor(x, module, "weight_scale"), *is = sq_qc_tensor(x, module, "input_scale");
    if (!ws) return; /* the loader's message */
    const sq_config *c = &x->ck->cfg;
    bool block = c->quant_block_n > 0, per_channel = !block && ws->numel != 1;
    int64_t nb = block ? (N + c->quant_block_n - 1) / c->quant_block_n : 0, kb = block ? (K + c->quant_block_k - 1) / c->quant_block_k : 0;
    const char *fmt = sq_qc_str(x->q, "format"), *type = sq_qc_str(x->w, "type"), *strat = sq_qc_str(x->w, "strategy"), *g = x->group;
    const char *ias = x->ia && !cJSON_IsNull(x->ia) ? sq_qc_str(x->ia, "strategy") : NULL;
    if (fmt && strcmp(fmt, "float-quantized") && strcmp(fmt, "naive-quantized"))
        sq_qc_bad(x, ".format is '%s', but %s holds FP8 weights (float-quantized)", fmt, module);
    else if (!cJSON_IsObject(x->w)) sq_qc_bad(x, ".config_groups.%s has no weights", g);
    else if (sq_qc_int(x->w, "num_bits", 0) != 8 || !type || strcmp(type, "float"))
        sq_qc_bad(x, ".config_groups.%s.weights is %d-bit %s, but %s holds F8_E4M3 weights", g, sq_qc_int(x->w, "num_bits", 0), type ? type : "(no type)", module);
    else if (block && !(ws->ndim == 2 && ws->shape[0] == nb && ws->shape[1] == kb))
        sq_qc_bad(x, ".config_groups.%s.weights.block_structure is [%d, %d], but %s holds %lld weight scales (expected [%lld, %lld])", g,
                  c->quant_block_n, c->quant_block_k, module, (long long)ws->numel, (long long)nb, (long long)kb);
    else if (block && is) sq_qc_bad(x, ".config_groups.%s.weights.strategy is 'block', but %s holds an input_scale (block-wise activations are dynamic)", g, module);
    else if (block && ias && strcmp(ias, "group"))
        sq_qc_bad(x, ".config_groups.%s.input_activations.strategy is '%s', but block-wise FP8 runs activations per group (vLLM: per token and group of %d)", g, ias, c->quant_block_k);
    else if (block && ias && c->quant_act_group != c->quant_block_k)
        sq_qc_bad(x, ".config_groups.%s.input_activations.group_size is %d, but the weight blocks are %d wide", g, c->quant_act_group, c->quant_block_k);
    else if (block) return;
    else if (!strat || strcmp(strat, per_channel ? "channel" : "tensor"))
        sq_qc_bad(x, ".config_groups.%s.weights.strategy is '%s', but %s holds %lld weight scale%s", g, strat ? strat : "absent", module,
            (long long)ws->numel, ws->numel == 1 ? "" : "s");
    else if (per_channel && ws->numel != N)
        sq_qc_bad(x, ".config_groups.%s.weights.strategy is 'channel', but %s holds %lld weight scales for %lld outputs", g, module, (long long)ws->numel, (long long)N);
    else if ((!x->ia || cJSON_IsNull(x->ia)) && is)
        sq_qc_bad(x, ".config_groups.%s.input_activations is null, but %s holds an input_scale", g, module);
    else if (x->ia && !cJSON_IsNull(x->ia) && sq_qc_bool(x->ia, "dynamic", 0) != 0 && is)
        sq_qc_bad(x, ".config_groups.%s.input_activations.dynamic is true, but %s holds an input_scale", g, module);
    else if (x->ia && !cJSON_IsNull(x->ia) && sq_qc_bool(x->ia, "dynamic", 0) == 0 && !is) sq_qc_missing_input_scale(x, module);
}

const sq_fmt sq_fmt_ct_float = {
    .name = "ct-float", .format = SQ_FORMAT_CT, .kind = SQ_SCHEME_FP8, .quant_method = "compressed-tensors", .ct_format = "float-quantized", .several_schemes = true,
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = config, .recognise = recognise,
    .tensors = "FP8 weights", .ignores = sq_fmt_ct_ignores, .check_config = sq_fmt_ct_group, .check = check,
};
