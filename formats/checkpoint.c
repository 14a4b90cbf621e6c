/* checkpoint.c: finding a model's files and checking its tensors against its architecture. */
#include "checkpoint.h"

#include "../base/par.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

static sq_status resolve(sq_ckpt *ck, const char *model, sq_err *err) {
    sq_status s;
    if (sq_is_dir(model)) {
        snprintf(ck->dir, sizeof ck->dir, "%s", model);
        char p[SQ_PATH_MAX];
        if ((s = sq_path_join(p, sizeof p, model, "model.safetensors.index.json", err))) return s;
        if (!file_exists(p) && (s = sq_path_join(p, sizeof p, model, "model.safetensors", err))) return s;
        if (!file_exists(p))
            return sq_fail(err, SQ_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in this directory", model);
        snprintf(ck->weights_path, sizeof ck->weights_path, "%s", p);
    } else {
        if (!file_exists(model)) return sq_fail(err, SQ_ERR_IO, "%s: no such file or directory", model);
        if (strlen(model) >= sizeof ck->weights_path) return sq_fail(err, SQ_ERR_ARG, "%s: path too long", model);
        snprintf(ck->weights_path, sizeof ck->weights_path, "%s", model);
        const char *slash = strrchr(model, '/');
        if (slash) snprintf(ck->dir, sizeof ck->dir, "%.*s", (int)(slash - model), model);
        else snprintf(ck->dir, sizeof ck->dir, ".");
        if (!ck->dir[0]) snprintf(ck->dir, sizeof ck->dir, "/");
    }
    if ((s = sq_path_join(ck->config_path, sizeof ck->config_path, ck->dir, "config.json", err))) return s;
    if (!file_exists(ck->config_path))
        return sq_fail(err, SQ_ERR_IO, "%s: missing config.json (needed beside the weights)", ck->config_path);
    if ((s = sq_path_join(ck->tokenizer_path, sizeof ck->tokenizer_path, ck->dir, "tokenizer.json", err))) return s;
    if (!file_exists(ck->tokenizer_path)) ck->tokenizer_path[0] = 0;
    return SQ_OK;
}

sq_status sq_ckpt_open(sq_ckpt **out, const char *model, sq_err *err) {
    *out = NULL;
    sq_ckpt *ck = sq_calloc(1, sizeof *ck, err);
    if (!ck) return SQ_ERR_NOMEM;
    sq_status s = resolve(ck, model, err);
    if (!s) s = sq_config_load(&ck->cfg, ck->config_path, err);
    if (!s) s = sq_st_open(&ck->st, ck->weights_path, err);
    if (!s) s = sq_ckpt_check(ck, err);
    if (s) {
        sq_ckpt_close(ck);
        return s;
    }
    *out = ck;
    return SQ_OK;
}

void sq_ckpt_close(sq_ckpt *ck) {
    if (!ck) return;
    sq_st_close(ck->st);
    free(ck);
}

/* ---------------------------------------------------------------- expected tensors */

typedef struct {
    sq_ckpt_tensor_fn fn;
    void *user;
    char name[256];
} walker;

static int emit(walker *w, bool linear, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int emit(walker *w, bool linear, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->name, sizeof w->name, fmt, ap);
    va_end(ap);
    int64_t shape[2] = {d0, d1};
    return w->fn(w->name, ndim, shape, linear, w->user);
}

/* A SwiGLU FFN of width f under prefix p (names gate/up/down, or Mixtral's w1/w3/w2). */
static int emit_ffn(walker *w, const sq_config *c, const char *p, int64_t f, bool mixtral_names) {
    int64_t h = c->hidden;
    int r;
    const char *g = mixtral_names ? "w1" : "gate_proj", *u = mixtral_names ? "w3" : "up_proj", *d = mixtral_names ? "w2" : "down_proj";
    if ((r = emit(w, true, 2, f, h, "%s.%s.weight", p, g))) return r;
    if ((r = emit(w, true, 2, f, h, "%s.%s.weight", p, u))) return r;
    if ((r = emit(w, true, 2, h, f, "%s.%s.weight", p, d))) return r;
    if (c->mlp_bias && !mixtral_names) {
        if ((r = emit(w, false, 1, f, 0, "%s.%s.bias", p, g))) return r;
        if ((r = emit(w, false, 1, f, 0, "%s.%s.bias", p, u))) return r;
        if ((r = emit(w, false, 1, h, 0, "%s.%s.bias", p, d))) return r;
    }
    return 0;
}

static int emit_layer(walker *w, const sq_config *c, int l) {
    int64_t h = c->hidden, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int r;
    char p[128];
    snprintf(p, sizeof p, "model.layers.%d", l);
    if ((r = emit(w, false, 1, h, 0, "%s.input_layernorm.weight", p))) return r;
    if ((r = emit(w, false, 1, h, 0, "%s.post_attention_layernorm.weight", p))) return r;
    if ((r = emit(w, true, 2, q, h, "%s.self_attn.q_proj.weight", p))) return r;
    if ((r = emit(w, true, 2, kv, h, "%s.self_attn.k_proj.weight", p))) return r;
    if ((r = emit(w, true, 2, kv, h, "%s.self_attn.v_proj.weight", p))) return r;
    if ((r = emit(w, true, 2, h, q, "%s.self_attn.o_proj.weight", p))) return r;
    if (c->attn_bias) {
        if ((r = emit(w, false, 1, q, 0, "%s.self_attn.q_proj.bias", p))) return r;
        if ((r = emit(w, false, 1, kv, 0, "%s.self_attn.k_proj.bias", p))) return r;
        if ((r = emit(w, false, 1, kv, 0, "%s.self_attn.v_proj.bias", p))) return r;
    }
    if (c->arch == SQ_ARCH_QWEN3_MOE) {
        if ((r = emit(w, false, 1, c->head_dim, 0, "%s.self_attn.q_norm.weight", p))) return r;
        if ((r = emit(w, false, 1, c->head_dim, 0, "%s.self_attn.k_norm.weight", p))) return r;
    }
    char e[192];
    if (c->arch == SQ_ARCH_MIXTRAL) {
        if ((r = emit(w, false, 2, c->n_experts, h, "%s.block_sparse_moe.gate.weight", p))) return r;
        for (int j = 0; j < c->n_experts; j++) {
            snprintf(e, sizeof e, "%s.block_sparse_moe.experts.%d", p, j);
            if ((r = emit_ffn(w, c, e, c->intermediate, true))) return r;
        }
        return 0;
    }
    snprintf(e, sizeof e, "%s.mlp", p);
    if (!sq_config_moe_layer(c, l)) return emit_ffn(w, c, e, c->intermediate, false);
    if ((r = emit(w, false, 2, c->n_experts, h, "%s.mlp.gate.weight", p))) return r;
    for (int j = 0; j < c->n_experts; j++) {
        snprintf(e, sizeof e, "%s.mlp.experts.%d", p, j);
        if ((r = emit_ffn(w, c, e, c->moe_intermediate, false))) return r;
    }
    if (c->shared_expert_intermediate) {
        snprintf(e, sizeof e, "%s.mlp.shared_expert", p);
        if ((r = emit_ffn(w, c, e, c->shared_expert_intermediate, false))) return r;
        if ((r = emit(w, false, 2, 1, h, "%s.mlp.shared_expert_gate.weight", p))) return r;
    }
    return 0;
}

static int count_params(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user) {
    (void)name, (void)is_linear;
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) n *= shape[k];
    *(int64_t *)user += n;
    return 0;
}

void sq_ckpt_describe(const sq_ckpt *ck, char *scheme, size_t cap, int64_t *params, int64_t *bytes) {
    const sq_config *c = &ck->cfg;
    *params = *bytes = 0;
    sq_ckpt_expected_tensors(c, count_params, params);
    for (int64_t i = 0; i < sq_st_count(ck->st); i++) *bytes += sq_st_get(ck->st, i)->nbytes;
    static const char *const acts[] = {"none", "static", "dynamic per token", "dynamic per tensor", "dynamic per token group"};
    const char *fmt = c->quant_format[0] ? c->quant_format : c->quant_method_name;
    if (c->quant_method == SQ_FORMAT_FP8 || !strcmp(c->quant_format, "float-quantized")) {
        const char *per = c->quant_block_n > 0 ? "per-block" : "?"; /* a weight_scale with no packed weight beside it is FP8's: one value per tensor or per row */
        for (int64_t i = 0; i < sq_st_count(ck->st); i++) {
            const sq_tensor *t = sq_st_get(ck->st, i);
            size_t n = strlen(t->name);
            if (c->quant_block_n <= 0 && n > 13 && !strcmp(t->name + n - 13, ".weight_scale")) {
                per = t->numel == 1 ? "per-tensor" : "per-channel";
                break;
            }
        }
        snprintf(scheme, cap, "fp8 %s, activations %s (%s)", per, acts[c->quant_act], fmt);
    } else if (strstr(c->quant_format, "fp4-pack-quantized")) {
        snprintf(scheme, cap, "%s g%d, activations %s (%s)", c->quant_format[0] == 'n' ? "nvfp4" : "mxfp4", c->quant_group_size,
                 c->quant_act != SQ_QACT_NONE ? "fp4 per group of 16" : "none", fmt);
    } else if (c->quant_method != SQ_FORMAT_NONE) {
        char g[24];
        if (c->quant_group_size > 0) snprintf(g, sizeof g, "g%d", c->quant_group_size);
        else snprintf(g, sizeof g, "per-channel");
        snprintf(scheme, cap, "int%d %s %s (%s)", c->quant_bits, g, c->quant_sym ? "sym" : "asym", fmt);
    } else {
        const sq_tensor *t = sq_st_find(ck->st, "model.layers.0.self_attn.q_proj.weight");
        snprintf(scheme, cap, "%s", t ? sq_dtype_name(t->dtype) : "?");
    }
}

int sq_ckpt_expected_tensors(const sq_config *c, sq_ckpt_tensor_fn fn, void *user) {
    walker w = {fn, user, {0}};
    int r;
    if ((r = emit(&w, false, 2, c->vocab, c->hidden, "model.embed_tokens.weight"))) return r;
    for (int l = 0; l < c->n_layers; l++)
        if ((r = emit_layer(&w, c, l))) return r;
    if ((r = emit(&w, false, 1, c->hidden, 0, "model.norm.weight"))) return r;
    if (!c->tied_embeddings && (r = emit(&w, false, 2, c->vocab, c->hidden, "lm_head.weight"))) return r;
    return 0;
}

typedef struct {
    const sq_ckpt *ck;
    sq_err *err;
    sq_status status;
} check_ctx;

static int check_one(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user) {
    check_ctx *x = user;
    const sq_ckpt *ck = x->ck;
    const sq_tensor *t = sq_st_find(ck->st, name);
    if (is_linear && ck->cfg.quant_method != SQ_FORMAT_NONE) return 0;
    if (!t) {
        x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: missing tensor '%s' (needed by %s)", ck->weights_path, name, ck->cfg.model_type);
        return 1;
    }
    if (t->dtype != SQ_DT_F32 && t->dtype != SQ_DT_F16 && t->dtype != SQ_DT_BF16) {
        x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", ck->weights_path, name,
                            sq_dtype_name(t->dtype));
        return 1;
    }
    bool ok = t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        char want[64], got[128];
        snprintf(want, sizeof want, ndim == 1 ? "[%lld]" : "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
        int n = snprintf(got, sizeof got, "[");
        for (int k = 0; k < t->ndim && n < 100; k++) n += snprintf(got + n, sizeof got - (size_t)n, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
        snprintf(got + n, sizeof got - (size_t)n, "]");
        x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies %s", ck->weights_path, name, got, want);
        return 1;
    }
    return 0;
}

sq_status sq_ckpt_check(const sq_ckpt *ck, sq_err *err) {
    check_ctx x = {ck, err, SQ_OK};
    sq_ckpt_expected_tensors(&ck->cfg, check_one, &x);
    return x.status ? x.status : sq_ckpt_check_quant(ck, err);
}

uint64_t sq_ckpt_hash(const sq_ckpt *ck, uint64_t h) {
    char *text = NULL;
    size_t len = 0;
    if (sq_read_file(ck->config_path, &text, &len, NULL) == SQ_OK) h = sq_par_hash(h, text, len);
    free(text);
    for (int i = 0; i < sq_st_nshards(ck->st); i++) {
        int64_t size = sq_st_shard_size(ck->st, i);
        h = sq_par_hash(h, &size, sizeof size);
    }
    for (int64_t i = 0; i < sq_st_count(ck->st); i++) {
        const sq_tensor *t = sq_st_get(ck->st, i);
        int64_t fields[3 + SQ_MAX_DIMS] = {t->dtype, t->ndim, t->shard};
        for (int d = 0; d < t->ndim && d < SQ_MAX_DIMS; d++) fields[3 + d] = t->shape[d];
        h = sq_par_hash(sq_par_hash(h, t->name, strlen(t->name) + 1), fields, sizeof fields);
    }
    return h;
}
