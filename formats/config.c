/* config.c: config.json -> sq_config for the llama, mistral, qwen2 and MoE families. */
#include "config.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *model_type; sq_arch arch; } arch_table[] = {
    {"llama", SQ_ARCH_LLAMA},       {"mistral", SQ_ARCH_MISTRAL},     {"qwen2", SQ_ARCH_QWEN2},
    {"mixtral", SQ_ARCH_MIXTRAL},   {"qwen2_moe", SQ_ARCH_QWEN2_MOE}, {"qwen3_moe", SQ_ARCH_QWEN3_MOE},
};

const char *sq_arch_name(sq_arch a) {
    for (size_t i = 0; i < sizeof arch_table / sizeof *arch_table; i++)
        if (arch_table[i].arch == a) return arch_table[i].model_type;
    return "unknown";
}

/* Field readers: each fails with a message naming the file and the key. */
typedef struct {
    const cJSON *root;
    const char *path;
    sq_err *err;
    sq_status status;
} reader;

static const cJSON *get(reader *r, const char *key) { return cJSON_GetObjectItemCaseSensitive(r->root, key); }

static int get_int(reader *r, const char *key, int required, int dflt, int min) {
    const cJSON *v = get(r, key);
    if (!v || cJSON_IsNull(v)) {
        if (required && !r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: missing field '%s'", r->path, key);
        return dflt;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < min || v->valuedouble > 1e9) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: field '%s' must be an integer >= %d", r->path, key, min);
        return dflt;
    }
    return (int)v->valuedouble;
}

static double get_num(reader *r, const cJSON *obj, const char *key, int required, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required && !r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: missing field '%s'", r->path, key);
        return dflt;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: field '%s' must be a number", r->path, key);
        return dflt;
    }
    return v->valuedouble;
}

/* Qwen MoE's mlp_only_layers: a list of layer indices whose FFN stays dense. */
static void parse_mlp_only(reader *r, sq_config *c) {
    const cJSON *a = get(r, "mlp_only_layers"), *v;
    if (!a || cJSON_IsNull(a)) return;
    if (!cJSON_IsArray(a)) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: field 'mlp_only_layers' must be a list of layer indices", r->path);
        return;
    }
    cJSON_ArrayForEach(v, a) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 || v->valuedouble >= SQ_CONFIG_MAX_LAYERS) {
            if (!r->status)
                r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: 'mlp_only_layers' holds a value that is not a layer index below %d",
                                    r->path, SQ_CONFIG_MAX_LAYERS);
            return;
        }
        int l = (int)v->valuedouble;
        c->mlp_only[l / 64] |= 1ull << (l % 64);
    }
}

bool sq_config_moe_layer(const sq_config *c, int l) {
    if (c->n_experts <= 0 || l < 0) return false;
    if (c->arch == SQ_ARCH_MIXTRAL) return true;
    if (l < SQ_CONFIG_MAX_LAYERS && (c->mlp_only[l / 64] >> (l % 64) & 1)) return false;
    return (l + 1) % c->decoder_sparse_step == 0;
}

static bool dense_layers(const sq_config *c) {
    for (int l = 0; l < c->n_layers; l++)
        if (!sq_config_moe_layer(c, l)) return true;
    return false;
}

static bool get_bool(reader *r, const cJSON *obj, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    if (!cJSON_IsBool(v)) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: field '%s' must be true or false", r->path, key);
        return dflt;
    }
    return cJSON_IsTrue(v);
}

/* Sliding-window attention. transformers 5 lists layer_types ("sliding_attention" / "full_attention");
 * before it, Mistral and Mixtral slide every layer when sliding_window is set, and Qwen the layers
 * from max_window_layers on when use_sliding_window is true. */
static void parse_sliding(reader *r, sq_config *c) {
    bool qwen = c->arch == SQ_ARCH_QWEN2 || c->arch == SQ_ARCH_QWEN2_MOE || c->arch == SQ_ARCH_QWEN3_MOE;
    if (c->arch == SQ_ARCH_LLAMA) return;
    if (qwen && !get_bool(r, r->root, "use_sliding_window", false)) return;
    c->sliding_window = get_int(r, "sliding_window", 0, 0, 0);
    if (!c->sliding_window) return;
    if (c->n_layers > SQ_CONFIG_MAX_LAYERS) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_UNSUPPORTED, "%s: sliding-window attention over more than %d layers", r->path,
                                            SQ_CONFIG_MAX_LAYERS);
        return;
    }
    const cJSON *types = get(r, "layer_types");
    int from = qwen ? get_int(r, "max_window_layers", 0, 28, 0) : 0;
    for (int l = 0; l < c->n_layers; l++) {
        bool on = l >= from;
        if (cJSON_IsArray(types)) {
            const cJSON *t = cJSON_GetArrayItem(types, l);
            if (!cJSON_IsString(t) || (strcmp(t->valuestring, "sliding_attention") && strcmp(t->valuestring, "full_attention"))) {
                if (!r->status)
                    r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: layer_types must list \"full_attention\" or \"sliding_attention\" for each of the %d layers",
                                        r->path, c->n_layers);
                return;
            }
            on = !strcmp(t->valuestring, "sliding_attention");
        }
        if (on) c->sliding[l / 64] |= 1ull << (l % 64);
    }
}

int sq_config_window(const sq_config *c, int l) {
    if (!c->sliding_window || l < 0 || l >= SQ_CONFIG_MAX_LAYERS) return 0;
    return (c->sliding[l / 64] >> (l % 64) & 1) ? c->sliding_window : 0;
}

/* RoPE: transformers 5 writes rope_parameters {rope_type, rope_theta, and the scaling's fields};
 * older configs a top-level rope_theta and rope_scaling {rope_type or type, fields} (or null). */
static void parse_rope(reader *r, const cJSON *root, sq_config *c) {
    const char *key = "rope_parameters";
    const cJSON *rs = get(r, key);
    bool params = rs && !cJSON_IsNull(rs);
    c->rope_scaling.type = SQ_ROPE_NONE;
    c->rope_theta = get_num(r, root, "rope_theta", 0, 10000.0);
    if (!params) rs = get(r, key = "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return;
    if (!cJSON_IsObject(rs)) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: %s must be an object or null", r->path, key);
        return;
    }
    if (params) c->rope_theta = get_num(r, rs, "rope_theta", 0, c->rope_theta);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(t)) {
        if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: %s has no rope_type", r->path, key);
        return;
    }
    if (strcmp(t->valuestring, "default") == 0) return;
    if (strcmp(t->valuestring, "llama3") == 0) {
        c->rope_scaling.type = SQ_ROPE_LLAMA3;
        c->rope_scaling.factor = get_num(r, rs, "factor", 1, 1);
        c->rope_scaling.low_freq_factor = get_num(r, rs, "low_freq_factor", 1, 1);
        c->rope_scaling.high_freq_factor = get_num(r, rs, "high_freq_factor", 1, 4);
        double omax = get_num(r, rs, "original_max_position_embeddings", 1, 8192);
        if (!r->status && !(omax >= 1 && omax <= 1e9))
            r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: %s original_max_position_embeddings out of range", r->path, key);
        c->rope_scaling.original_max_pos = r->status ? 0 : (int)omax;
    } else if (strcmp(t->valuestring, "linear") == 0) {
        c->rope_scaling.type = SQ_ROPE_LINEAR;
        c->rope_scaling.factor = get_num(r, rs, "factor", 1, 1);
    } else if (!r->status)
        r->status = sq_fail(r->err, SQ_ERR_UNSUPPORTED, "%s: %s type '%s' is not supported (llama3, linear)", r->path, key,
                            t->valuestring);
    if (!r->status && !(c->rope_scaling.factor > 0))
        r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: %s factor must be positive", r->path, key);
}

static void parse_token_ids(reader *r, sq_config *c) {
    c->bos_id = get_int(r, "bos_token_id", 0, -1, 0);
    const cJSON *e = get(r, "eos_token_id");
    c->eos_id = -1;
    c->n_eos = 0;
    if (cJSON_IsArray(e)) {
        for (const cJSON *x = e->child; x && c->n_eos < 8; x = x->next) {
            if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble <= 1e9) || x->valuedouble != floor(x->valuedouble)) {
                if (!r->status) r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: eos_token_id entries must be integers >= 0", r->path);
                return;
            }
            c->eos_ids[c->n_eos++] = (int)x->valuedouble;
        }
        if (c->n_eos) c->eos_id = c->eos_ids[0];
    } else {
        c->eos_id = get_int(r, "eos_token_id", 0, -1, 0);
        if (c->eos_id >= 0) c->eos_ids[c->n_eos++] = c->eos_id;
    }
}

/* A block shape [block_n, block_k] of positive integers into c, or false with the error in r. */
static bool parse_block(reader *r, const cJSON *bs, const char *field, sq_config *c) {
    const cJSON *b0 = cJSON_GetArrayItem(bs, 0), *b1 = cJSON_GetArrayItem(bs, 1);
    if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2 || !cJSON_IsNumber(b0) || !cJSON_IsNumber(b1) || b0->valuedouble < 1 ||
        b1->valuedouble < 1 || b0->valuedouble > 1 << 16 || b1->valuedouble > 1 << 16 || b0->valuedouble != (int)b0->valuedouble ||
        b1->valuedouble != (int)b1->valuedouble) {
        r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: quantization_config: %s must be two positive integers [rows, cols]", r->path, field);
        return false;
    }
    c->quant_block_n = (int)b0->valuedouble;
    c->quant_block_k = (int)b1->valuedouble;
    return true;
}

/* The activation side of an FP8 config (vLLM's fp8, compressed-tensors' config groups), and
 * compressed-tensors' format and first config group's weights. */
static void parse_quant_act(reader *r, const cJSON *q, sq_config *c) {
    c->quant_act = SQ_QACT_NONE;
    if (r->status) return;
    if (c->quant_method == SQ_FORMAT_FP8) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(q, "activation_scheme");
        if (cJSON_IsString(a) && !strcmp(a->valuestring, "static")) c->quant_act = SQ_QACT_STATIC;
        else if (cJSON_IsString(a) && !strcmp(a->valuestring, "dynamic")) c->quant_act = SQ_QACT_DYNAMIC_TOKEN;
        else r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: quantization_config: activation_scheme must be \"static\" or \"dynamic\"", r->path);
        /* weight_block_size [block_n, block_k]: vLLM's Fp8Config; the activations then run per token and
         * group of block_k (Fp8LinearMethod: GroupShape(1, block_k)) and must be dynamic */
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
        if (!r->status && bs && !cJSON_IsNull(bs) && !parse_block(r, bs, "weight_block_size", c)) return;
        if (!r->status && c->quant_block_n && c->quant_act == SQ_QACT_DYNAMIC_TOKEN) {
            c->quant_act = SQ_QACT_DYNAMIC_GROUP;
            c->quant_act_group = c->quant_block_k;
        }
        return;
    }
    if (c->quant_method != SQ_FORMAT_CT) return;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(q, "format");
    if (cJSON_IsString(f)) snprintf(c->quant_format, sizeof c->quant_format, "%s", f->valuestring);
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(q, "config_groups");
    const cJSON *g0 = cJSON_IsObject(groups) ? groups->child : NULL;
    /* the first config group's weights (num_bits, strategy, group_size, symmetric), then its activations */
    const cJSON *w = cJSON_IsObject(g0) ? cJSON_GetObjectItemCaseSensitive(g0, "weights") : NULL;
    if (cJSON_IsObject(w)) {
        const cJSON *nb = cJSON_GetObjectItemCaseSensitive(w, "num_bits"), *gs = cJSON_GetObjectItemCaseSensitive(w, "group_size"),
                    *sy = cJSON_GetObjectItemCaseSensitive(w, "symmetric"), *ws = cJSON_GetObjectItemCaseSensitive(w, "strategy");
        if (cJSON_IsNumber(nb) && nb->valuedouble >= 1 && nb->valuedouble <= 32) c->quant_bits = (int)nb->valuedouble;
        if (cJSON_IsString(ws) && !strcmp(ws->valuestring, "channel")) c->quant_group_size = -1;
        else if (cJSON_IsNumber(gs) && gs->valuedouble >= 1 && gs->valuedouble <= 1 << 20) c->quant_group_size = (int)gs->valuedouble;
        if (cJSON_IsBool(sy)) c->quant_sym = cJSON_IsTrue(sy);
        if (cJSON_IsString(ws) && !strcmp(ws->valuestring, "block") &&
            !parse_block(r, cJSON_GetObjectItemCaseSensitive(w, "block_structure"), "weights.block_structure", c))
            return;
    }
    const cJSON *ia = cJSON_IsObject(g0) ? cJSON_GetObjectItemCaseSensitive(g0, "input_activations") : NULL;
    if (!ia || cJSON_IsNull(ia)) return;
    if (!cJSON_IsObject(ia)) {
        r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: quantization_config: input_activations must be an object or null", r->path);
        return;
    }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(ia, "strategy");
    const cJSON *dy = cJSON_GetObjectItemCaseSensitive(ia, "dynamic"); /* true, false, or "local" (group scales) */
    bool dynamic = cJSON_IsTrue(dy) || cJSON_IsString(dy);
    const cJSON *ag = cJSON_GetObjectItemCaseSensitive(ia, "group_size");
    if (!dynamic) c->quant_act = SQ_QACT_STATIC;
    else if (cJSON_IsString(st) && !strcmp(st->valuestring, "tensor")) c->quant_act = SQ_QACT_DYNAMIC_TENSOR;
    else if (cJSON_IsString(st) && !strcmp(st->valuestring, "group") && cJSON_IsNumber(ag) && ag->valuedouble >= 1 && ag->valuedouble <= 1 << 20) {
        c->quant_act = SQ_QACT_DYNAMIC_GROUP;
        c->quant_act_group = (int)ag->valuedouble;
    } else c->quant_act = SQ_QACT_DYNAMIC_TOKEN;
}

static void parse_quant(reader *r, sq_config *c) {
    const cJSON *q = get(r, "quantization_config");
    c->quant_method = SQ_FORMAT_NONE;
    if (!q || cJSON_IsNull(q)) return;
    const cJSON *m = cJSON_IsObject(q) ? cJSON_GetObjectItemCaseSensitive(q, "quant_method") : NULL;
    if (!cJSON_IsString(m)) {
        r->status = sq_fail(r->err, SQ_ERR_FORMAT, "%s: quantization_config has no quant_method", r->path);
        return;
    }
    snprintf(c->quant_method_name, sizeof c->quant_method_name, "%s", m->valuestring);
    const char *name = m->valuestring;
    c->quant_method = sq_format_of_quant_method(name);
    reader qr = {q, r->path, r->err, SQ_OK};
    c->quant_bits = get_int(&qr, "bits", 0, 0, 1);
    if (!c->quant_bits) c->quant_bits = get_int(&qr, "w_bit", 0, 0, 1);
    c->quant_group_size = get_int(&qr, "group_size", 0, 0, -1);
    if (!c->quant_group_size) c->quant_group_size = get_int(&qr, "q_group_size", 0, 0, -1);
    c->quant_sym = get_bool(&qr, q, "sym", false);
    c->quant_desc_act = get_bool(&qr, q, "desc_act", false);
    if (qr.status && !r->status) r->status = qr.status;
    parse_quant_act(r, q, c);
}

sq_status sq_config_parse(sq_config *c, const char *json, size_t len, const char *path, sq_err *err) {
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid JSON", path);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: not a JSON object", path);
    }
    reader r = {root, path, err, SQ_OK};
    const cJSON *mt = get(&r, "model_type");
    if (!cJSON_IsString(mt)) {
        cJSON_Delete(root);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: missing field 'model_type'", path);
    }
    size_t k = 0, n = sizeof arch_table / sizeof *arch_table;
    while (k < n && strcmp(arch_table[k].model_type, mt->valuestring)) k++;
    if (k == n) {
        sq_status s = sq_fail(err, SQ_ERR_UNSUPPORTED,
                              "%s: unknown architecture '%.64s' (spotq supports llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe)",
                              path, mt->valuestring);
        cJSON_Delete(root);
        return s;
    }
    c->arch = arch_table[k].arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);

    c->hidden = get_int(&r, "hidden_size", 1, 0, 1);
    c->n_layers = get_int(&r, "num_hidden_layers", 1, 0, 1);
    c->n_heads = get_int(&r, "num_attention_heads", 1, 0, 1);
    c->n_kv_heads = get_int(&r, "num_key_value_heads", 0, c->n_heads, 1);
    c->vocab = get_int(&r, "vocab_size", 1, 0, 1);
    c->max_pos = get_int(&r, "max_position_embeddings", 0, 2048, 1);
    c->head_dim = get_int(&r, "head_dim", 0, 0, 1);
    if (!c->head_dim && c->n_heads) c->head_dim = c->hidden / c->n_heads;
    c->norm_eps = (float)get_num(&r, root, "rms_norm_eps", 1, 1e-6);
    parse_rope(&r, root, c);
    parse_sliding(&r, c);
    c->tied_embeddings = get_bool(&r, root, "tie_word_embeddings", false);
    c->attn_bias = c->arch == SQ_ARCH_QWEN2 || c->arch == SQ_ARCH_QWEN2_MOE || get_bool(&r, root, "attention_bias", false);
    c->mlp_bias = get_bool(&r, root, "mlp_bias", false);
    parse_token_ids(&r, c);

    bool moe = c->arch == SQ_ARCH_MIXTRAL || c->arch == SQ_ARCH_QWEN2_MOE || c->arch == SQ_ARCH_QWEN3_MOE;
    bool dense_ffn_needed = !moe || c->arch == SQ_ARCH_MIXTRAL;
    c->intermediate = get_int(&r, "intermediate_size", dense_ffn_needed, 0, 1);
    c->decoder_sparse_step = 1;
    if (moe) {
        c->n_experts = c->arch == SQ_ARCH_MIXTRAL ? get_int(&r, "num_local_experts", 1, 0, 1) : get_int(&r, "num_experts", 1, 0, 1);
        c->n_experts_per_tok = get_int(&r, "num_experts_per_tok", 1, 0, 1);
        c->moe_intermediate = c->arch == SQ_ARCH_MIXTRAL ? c->intermediate : get_int(&r, "moe_intermediate_size", 1, 0, 1);
        c->shared_expert_intermediate = c->arch == SQ_ARCH_QWEN2_MOE ? get_int(&r, "shared_expert_intermediate_size", 0, 0, 0) : 0;
        /* Mixtral always renormalises its top-k weights; Qwen reads the flag (default false). */
        c->norm_topk_prob = c->arch == SQ_ARCH_MIXTRAL ? true : get_bool(&r, root, "norm_topk_prob", false);
        if (c->arch != SQ_ARCH_MIXTRAL) {
            c->decoder_sparse_step = get_int(&r, "decoder_sparse_step", 0, 1, 1);
            parse_mlp_only(&r, c);
        }
        if (!r.status && c->n_experts_per_tok > c->n_experts)
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: num_experts_per_tok %d exceeds the %d experts", path, c->n_experts_per_tok,
                               c->n_experts);
    }
    parse_quant(&r, c);
    if (!r.status) {
        if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                               c->n_heads, c->n_kv_heads);
        else if (!(c->norm_eps > 0))
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: rms_norm_eps must be positive", path);
        else if (!(c->rope_theta > 0))
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: rope_theta must be positive", path);
        else if (c->head_dim % 2)
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: head_dim %d must be even for RoPE", path, c->head_dim);
        else if (c->intermediate <= 0 && dense_layers(c))
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: missing field 'intermediate_size' (a layer has a dense MLP)", path);
        else if (c->bos_id >= c->vocab || c->eos_id >= c->vocab)
            r.status = sq_fail(err, SQ_ERR_FORMAT, "%s: bos/eos token id outside the vocabulary of %d", path, c->vocab);
    }
    cJSON_Delete(root);
    return r.status;
}

sq_status sq_config_load(sq_config *c, const char *path, sq_err *err) {
    char *text;
    size_t len;
    sq_status s = sq_read_file(path, &text, &len, err);
    if (s) return s;
    s = sq_config_parse(c, text, len, path, err);
    free(text);
    return s;
}
