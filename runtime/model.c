/* model.c: the execution context, and a checkpoint turned into weight views for the forward pass. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

sq_status sq_exec_new(sq_exec **out, const char *backend, int threads, sq_err *err) {
    *out = NULL;
    const sq_backend_i *be;
    sq_status s = sq_backend_get(backend ? backend : "cpu", &be, err);
    if (s) return s;
    if (!be->ctx_new || !be->matmul || !be->attention)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "backend %s has no runtime kernels yet", be->name);
    sq_exec *ex = sq_calloc(1, sizeof *ex, err);
    if (!ex) return SQ_ERR_NOMEM;
    ex->be = be;
    if ((s = be->ctx_new(&ex->kc, threads, err))) {
        free(ex);
        return s;
    }
    *out = ex;
    return SQ_OK;
}

void sq_exec_free(sq_exec *ex) {
    if (!ex) return;
    ex->be->ctx_free(ex->kc);
    free(ex);
}

int sq_exec_threads(const sq_exec *ex) { return ex->be->ctx_threads(ex->kc); }
void sq_exec_set_int_prefill(sq_exec *ex, bool on) {
    if (ex->be->ctx_set_int_rows) ex->be->ctx_set_int_rows(ex->kc, on ? INT_MAX : 0);
}
const char *sq_exec_backend(const sq_exec *ex) { return ex->be->name; }

/* ---------------------------------------------------------------- weights */

typedef struct {
    sq_model *m;
    sq_err *err;
} loader;

/* A tensor the architecture needs (sq_ckpt_open has checked its presence, dtype and shape). */
static sq_status find(loader *ld, const char *name, const sq_tensor **t) {
    *t = sq_st_find(ld->m->ck->st, name);
    if (!*t) return sq_fail(ld->err, SQ_ERR_FORMAT, "%s: missing tensor '%s'", ld->m->ck->weights_path, name);
    /* The kernels read elements in place: the data must be aligned to its element size. */
    if ((uintptr_t)(*t)->data % (uintptr_t)sq_dtype_size((*t)->dtype))
        return sq_fail(ld->err, SQ_ERR_UNSUPPORTED, "%s: tensor '%s' is not aligned to its %d-byte elements in the file",
                       ld->m->ck->weights_path, name, sq_dtype_size((*t)->dtype));
    return SQ_OK;
}

static sq_status mat(loader *ld, sq_wmat *w, const char *fmt, int l) {
    char name[256];
    snprintf(name, sizeof name, fmt, l);
    const sq_tensor *t;
    sq_status s = find(ld, name, &t);
    if (s) return s;
    if (t->ndim != 2) return sq_fail(ld->err, SQ_ERR_FORMAT, "%s: tensor '%s' is not a matrix", ld->m->ck->weights_path, name);
    *w = (sq_wmat){.dtype = t->dtype, .rows = t->shape[0], .cols = t->shape[1], .data = t->data};
    return SQ_OK;
}

/* A linear layer's weight of the expected shape: quantised when the checkpoint holds it so, else dense. */
static sq_status lin(loader *ld, sq_wmat *w, const char *fmt, int l, int64_t rows, int64_t cols) {
    if (ld->m->cfg.quant_method != SQ_FORMAT_NONE) {
        char name[256];
        snprintf(name, sizeof name, fmt, l);
        bool found;
        sq_status s = sq_rt_load_qlinear(ld->m, name, rows, cols, w, &found, ld->err);
        if (s || found) return s;
    }
    sq_status s = mat(ld, w, fmt, l);
    if (!s && (w->rows != rows || w->cols != cols)) {
        char name[256];
        snprintf(name, sizeof name, fmt, l);
        s = sq_fail(ld->err, SQ_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld], config.json implies [%lld, %lld]",
                    ld->m->ck->weights_path, name, (long long)w->rows, (long long)w->cols, (long long)rows, (long long)cols);
    }
    return s;
}

/* A vector (norm weight or bias) as an owned float copy. optional: absent gives NULL. */
static sq_status vec(loader *ld, float **out, int64_t len, bool optional, const char *fmt, int l) {
    char name[256];
    snprintf(name, sizeof name, fmt, l);
    *out = NULL;
    if (optional && !sq_st_find(ld->m->ck->st, name)) return SQ_OK;
    const sq_tensor *t;
    sq_status s = find(ld, name, &t);
    if (s) return s;
    if (t->numel != len || t->ndim != 1)
        return sq_fail(ld->err, SQ_ERR_FORMAT, "%s: tensor '%s' has %lld elements, expected %lld", ld->m->ck->weights_path, name,
                       (long long)t->numel, (long long)len);
    if (t->dtype != SQ_DT_F32 && t->dtype != SQ_DT_F16 && t->dtype != SQ_DT_BF16)
        return sq_fail(ld->err, SQ_ERR_FORMAT, "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", ld->m->ck->weights_path,
                       name, sq_dtype_name(t->dtype));
    *out = sq_malloc((size_t)len * sizeof(float), ld->err);
    if (!*out) return SQ_ERR_NOMEM;
    sq_dtype_to_f32(t->dtype, t->data, *out, (size_t)len);
    return SQ_OK;
}

/* The MLP under prefix (a format with %d for the layer): gate_proj/up_proj/down_proj, or Mixtral's
 * experts' w1/w3/w2. */
static sq_status load_mlp(loader *ld, sq_mlp *mlp, const char *prefix, int l, int64_t f, bool mixtral_names) {
    const sq_config *c = &ld->m->cfg;
    char fmt[192];
    sq_status s;
#define MLP_PART(field, part, rows, cols)                                                          \
    snprintf(fmt, sizeof fmt, "%s.%s.weight", prefix, part);                                       \
    if ((s = lin(ld, &mlp->field, fmt, l, rows, cols))) return s;
    MLP_PART(gate, mixtral_names ? "w1" : "gate_proj", f, c->hidden)
    MLP_PART(up, mixtral_names ? "w3" : "up_proj", f, c->hidden)
    MLP_PART(down, mixtral_names ? "w2" : "down_proj", c->hidden, f)
#undef MLP_PART
    if (c->mlp_bias && !mixtral_names) {
        snprintf(fmt, sizeof fmt, "%s.gate_proj.bias", prefix);
        if ((s = vec(ld, &mlp->b_gate, f, false, fmt, l))) return s;
        snprintf(fmt, sizeof fmt, "%s.up_proj.bias", prefix);
        if ((s = vec(ld, &mlp->b_up, f, false, fmt, l))) return s;
        snprintf(fmt, sizeof fmt, "%s.down_proj.bias", prefix);
        if ((s = vec(ld, &mlp->b_down, c->hidden, false, fmt, l))) return s;
    }
    return SQ_OK;
}

static sq_status load_moe(loader *ld, sq_ffn *f, int l) {
    const sq_config *c = &ld->m->cfg;
    bool mixtral = c->arch == SQ_ARCH_MIXTRAL;
    const char *block = mixtral ? "model.layers.%d.block_sparse_moe" : "model.layers.%d.mlp";
    char fmt[192];
    sq_status s;
    f->kind = SQ_FFN_MOE;
    f->n_experts = c->n_experts;
    f->top_k = c->n_experts_per_tok;
    f->norm_topk = c->norm_topk_prob;
    snprintf(fmt, sizeof fmt, "%s.gate.weight", block);
    if ((s = mat(ld, &f->router, fmt, l))) return s;
    if (!(f->experts = sq_calloc((size_t)c->n_experts, sizeof *f->experts, ld->err))) return SQ_ERR_NOMEM;
    for (int e = 0; e < c->n_experts; e++) {
        snprintf(fmt, sizeof fmt, "%s.experts.%d", block, e);
        if ((s = load_mlp(ld, &f->experts[e], fmt, l, c->moe_intermediate, mixtral))) return s;
    }
    if (c->shared_expert_intermediate > 0) {
        f->has_shared = true;
        if ((s = load_mlp(ld, &f->shared, "model.layers.%d.mlp.shared_expert", l, c->shared_expert_intermediate, false))) return s;
        if ((s = mat(ld, &f->shared_gate, "model.layers.%d.mlp.shared_expert_gate.weight", l))) return s;
    }
    return SQ_OK;
}

static sq_status load_layer(loader *ld, int l) {
    sq_model *m = ld->m;
    const sq_config *c = &m->cfg;
    sq_layer *L = &m->layers[l];
    sq_status s;
    if ((s = vec(ld, &L->attn_norm, c->hidden, false, "model.layers.%d.input_layernorm.weight", l))) return s;
    if ((s = vec(ld, &L->ffn_norm, c->hidden, false, "model.layers.%d.post_attention_layernorm.weight", l))) return s;
    if ((s = lin(ld, &L->wq, "model.layers.%d.self_attn.q_proj.weight", l, m->q_dim, c->hidden))) return s;
    if ((s = lin(ld, &L->wk, "model.layers.%d.self_attn.k_proj.weight", l, m->kv_dim, c->hidden))) return s;
    if ((s = lin(ld, &L->wv, "model.layers.%d.self_attn.v_proj.weight", l, m->kv_dim, c->hidden))) return s;
    if ((s = lin(ld, &L->wo, "model.layers.%d.self_attn.o_proj.weight", l, c->hidden, m->q_dim))) return s;
    bool bias = c->attn_bias;
    if ((s = vec(ld, &L->bq, m->q_dim, !bias, "model.layers.%d.self_attn.q_proj.bias", l))) return s;
    if ((s = vec(ld, &L->bk, m->kv_dim, !bias, "model.layers.%d.self_attn.k_proj.bias", l))) return s;
    if ((s = vec(ld, &L->bv, m->kv_dim, !bias, "model.layers.%d.self_attn.v_proj.bias", l))) return s;
    /* Llama with attention_bias also has an o_proj bias; Qwen2 has none. Used when present. */
    if ((s = vec(ld, &L->bo, c->hidden, true, "model.layers.%d.self_attn.o_proj.bias", l))) return s;
    if (c->arch == SQ_ARCH_QWEN3_MOE) {
        if ((s = vec(ld, &L->q_norm, c->head_dim, false, "model.layers.%d.self_attn.q_norm.weight", l))) return s;
        if ((s = vec(ld, &L->k_norm, c->head_dim, false, "model.layers.%d.self_attn.k_norm.weight", l))) return s;
    }
    if (!sq_config_moe_layer(c, l)) {
        L->ffn.kind = SQ_FFN_DENSE;
        return load_mlp(ld, &L->ffn.mlp, "model.layers.%d.mlp", l, c->intermediate, false);
    }
    return load_moe(ld, &L->ffn, l);
}

/* RoPE frequencies, in double: theta^(-2i/d), then the config's scaling (Llama 3: long wavelengths
 * divided by factor, short ones kept, a smooth blend between; linear: all divided by factor). */
static void rope_freqs(const sq_config *c, double *inv) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_scaling.type == SQ_ROPE_LINEAR) f /= c->rope_scaling.factor;
        else if (c->rope_scaling.type == SQ_ROPE_LLAMA3) {
            double factor = c->rope_scaling.factor, lo = c->rope_scaling.low_freq_factor, hi = c->rope_scaling.high_freq_factor;
            double old = c->rope_scaling.original_max_pos;
            double wavelen = 2 * M_PI / f;
            if (wavelen > old / lo) f /= factor;
            else if (wavelen >= old / hi) {
                double smooth = (old / wavelen - lo) / (hi - lo);
                f = (1 - smooth) * f / factor + smooth * f;
            }
        }
        inv[i] = f;
    }
}

sq_status sq_model_open(sq_model **out, const char *path, sq_exec *ex, sq_err *err) {
    *out = NULL;
    sq_model *m = sq_calloc(1, sizeof *m, err);
    if (!m) return SQ_ERR_NOMEM;
    m->ex = ex;
    sq_status s = sq_ckpt_open(&m->ck, path, err);
    if (s) goto fail;
    m->cfg = m->ck->cfg;
    const sq_config *c = &m->cfg;
    if (c->quant_method != SQ_FORMAT_NONE && c->quant_method != SQ_FORMAT_GPTQ && c->quant_method != SQ_FORMAT_CT &&
        c->quant_method != SQ_FORMAT_FP8 && c->quant_method != SQ_FORMAT_AWQ) {
        s = sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: quantised checkpoints (%s) cannot be run yet (gptq, awq, compressed-tensors, fp8)",
                    m->ck->config_path, c->quant_method_name);
        goto fail;
    }
    m->q_dim = c->n_heads * c->head_dim;
    m->kv_dim = c->n_kv_heads * c->head_dim;
    m->ffn_max = c->intermediate;
    if (c->n_experts > 0) {
        if (c->moe_intermediate > m->ffn_max) m->ffn_max = c->moe_intermediate;
        if (c->shared_expert_intermediate > m->ffn_max) m->ffn_max = c->shared_expert_intermediate;
    }
    loader ld = {m, err};
    m->layers = sq_calloc((size_t)c->n_layers, sizeof *m->layers, err);
    m->inv_freq = sq_calloc((size_t)c->head_dim / 2 + 1, sizeof *m->inv_freq, err);
    if (!m->layers || !m->inv_freq) {
        s = SQ_ERR_NOMEM;
        goto fail;
    }
    if ((s = mat(&ld, &m->embed, "model.embed_tokens.weight", 0))) goto fail;
    if (c->tied_embeddings) m->lm_head = m->embed;
    else if ((s = mat(&ld, &m->lm_head, "lm_head.weight", 0))) goto fail;
    if ((s = vec(&ld, &m->final_norm, c->hidden, false, "model.norm.weight", 0))) goto fail;
    for (int l = 0; l < c->n_layers; l++)
        if ((s = load_layer(&ld, l))) goto fail;
    rope_freqs(c, m->inv_freq);
    *out = m;
    return SQ_OK;
fail:
    sq_model_close(m);
    return s;
}

static void free_mlp(sq_mlp *p) {
    free(p->b_gate);
    free(p->b_up);
    free(p->b_down);
}

void sq_model_close(sq_model *m) {
    if (!m) return;
    for (int l = 0; m->layers && l < m->cfg.n_layers; l++) {
        sq_layer *L = &m->layers[l];
        free(L->attn_norm);
        free(L->ffn_norm);
        free(L->bq);
        free(L->bk);
        free(L->bv);
        free(L->bo);
        free(L->q_norm);
        free(L->k_norm);
        free_mlp(&L->ffn.mlp);
        for (int e = 0; L->ffn.experts && e < L->ffn.n_experts; e++) free_mlp(&L->ffn.experts[e]);
        free(L->ffn.experts);
        free_mlp(&L->ffn.shared);
    }
    free(m->layers);
    sq_rt_free_qweights(m);
    sq_rt_free_fp8(m);
    free(m->final_norm);
    free(m->inv_freq);
    sq_ckpt_close(m->ck);
    free(m);
}

const sq_config *sq_model_config(const sq_model *m) { return &m->cfg; }
const sq_ckpt *sq_model_ckpt(const sq_model *m) { return m->ck; }

/* ---------------------------------------------------------------- calibration support */

void sq_lin_name_unit(const sq_config *c, int l, int unit, sq_lin which, char *buf, size_t cap) {
    static const char *attn[] = {"q_proj", "k_proj", "v_proj", "o_proj"}, *ffn[] = {"gate_proj", "up_proj", "down_proj"},
                      *mixtral[] = {"w1", "w3", "w2"};
    if (which < SQ_LIN_GATE) snprintf(buf, cap, "model.layers.%d.self_attn.%s", l, attn[which]);
    else if (!sq_config_moe_layer(c, l)) snprintf(buf, cap, "model.layers.%d.mlp.%s", l, ffn[which - SQ_LIN_GATE]);
    else if (c->arch == SQ_ARCH_MIXTRAL)
        snprintf(buf, cap, "model.layers.%d.block_sparse_moe.experts.%d.%s", l, unit, mixtral[which - SQ_LIN_GATE]);
    else if (unit < c->n_experts) snprintf(buf, cap, "model.layers.%d.mlp.experts.%d.%s", l, unit, ffn[which - SQ_LIN_GATE]);
    else snprintf(buf, cap, "model.layers.%d.mlp.shared_expert.%s", l, ffn[which - SQ_LIN_GATE]);
}

void sq_lin_name(const sq_config *c, int l, sq_lin which, char *buf, size_t cap) { sq_lin_name_unit(c, l, 0, which, buf, cap); }

int sq_model_ffn_units(const sq_model *m, int l) {
    if (l < 0 || l >= m->cfg.n_layers) return 0;
    const sq_ffn *f = &m->layers[l].ffn;
    return f->kind == SQ_FFN_MOE ? f->n_experts + f->has_shared : 1;
}

static sq_mlp *unit_mlp(sq_model *m, int l, int unit) {
    sq_ffn *f = &m->layers[l].ffn;
    if (f->kind == SQ_FFN_DENSE) return unit == 0 ? &f->mlp : NULL;
    if (unit >= 0 && unit < f->n_experts) return &f->experts[unit];
    return unit == f->n_experts && f->has_shared ? &f->shared : NULL;
}

static sq_wmat *linear_slot(sq_model *m, int l, int unit, sq_lin which) {
    if (l < 0 || l >= m->cfg.n_layers) return NULL;
    sq_layer *L = &m->layers[l];
    sq_mlp *p = which >= SQ_LIN_GATE ? unit_mlp(m, l, unit) : NULL;
    switch (which) {
    case SQ_LIN_Q: return &L->wq;
    case SQ_LIN_K: return &L->wk;
    case SQ_LIN_V: return &L->wv;
    case SQ_LIN_O: return &L->wo;
    case SQ_LIN_GATE: return p ? &p->gate : NULL;
    case SQ_LIN_UP: return p ? &p->up : NULL;
    case SQ_LIN_DOWN: return p ? &p->down : NULL;
    default: return NULL;
    }
}

const sq_wmat *sq_model_linear_unit(const sq_model *m, int l, int unit, sq_lin which) {
    return linear_slot((sq_model *)m, l, unit, which);
}
const sq_wmat *sq_model_linear(const sq_model *m, int l, sq_lin which) { return linear_slot((sq_model *)m, l, 0, which); }

sq_status sq_model_set_linear(sq_model *m, int l, sq_lin which, const sq_wmat *w, sq_err *err) {
    return sq_model_set_linear_unit(m, l, 0, which, w, err);
}

sq_status sq_model_set_linear_unit(sq_model *m, int l, int unit, sq_lin which, const sq_wmat *w, sq_err *err) {
    sq_wmat *slot = linear_slot(m, l, unit, which);
    if (!slot) return sq_fail(err, SQ_ERR_ARG, "layer %d unit %d has no linear %d", l, unit, (int)which);
    if (w->rows != slot->rows || w->cols != slot->cols)
        return sq_fail(err, SQ_ERR_ARG, "layer %d linear %d: a [%lld, %lld] weight for a [%lld, %lld] slot", l, (int)which,
                       (long long)w->rows, (long long)w->cols, (long long)slot->rows, (long long)slot->cols);
    *slot = *w;
    return SQ_OK;
}

static sq_wmat *router_slot(sq_model *m, int l, int which) {
    if (l < 0 || l >= m->cfg.n_layers || m->layers[l].ffn.kind != SQ_FFN_MOE) return NULL;
    sq_ffn *f = &m->layers[l].ffn;
    return which == 0 ? &f->router : which == 1 && f->has_shared ? &f->shared_gate : NULL;
}

const sq_wmat *sq_model_router(const sq_model *m, int l, int which) { return router_slot((sq_model *)m, l, which); }

sq_status sq_model_set_router(sq_model *m, int l, int which, const sq_wmat *w, sq_err *err) {
    sq_wmat *slot = router_slot(m, l, which);
    if (!slot) return sq_fail(err, SQ_ERR_ARG, "layer %d has no router %d", l, which);
    if (w->rows != slot->rows || w->cols != slot->cols)
        return sq_fail(err, SQ_ERR_ARG, "layer %d router %d: a [%lld, %lld] weight for a [%lld, %lld] slot", l, which, (long long)w->rows,
                       (long long)w->cols, (long long)slot->rows, (long long)slot->cols);
    *slot = *w;
    return SQ_OK;
}

void sq_model_embed(sq_model *m, const int *ids, int n, float *out) { m->ex->be->embed(m->ex->kc, &m->embed, ids, n, out); }

float *sq_model_norm(sq_model *m, int l, int which) {
    if (l < 0 || l >= m->cfg.n_layers) return NULL;
    return which == 0 ? m->layers[l].attn_norm : m->layers[l].ffn_norm;
}

float *sq_model_bias(sq_model *m, int l, sq_lin which) {
    if (l < 0 || l >= m->cfg.n_layers) return NULL;
    sq_layer *L = &m->layers[l];
    switch (which) {
    case SQ_LIN_Q: return L->bq;
    case SQ_LIN_K: return L->bk;
    case SQ_LIN_V: return L->bv;
    case SQ_LIN_O: return L->bo;
    case SQ_LIN_GATE: return L->ffn.kind == SQ_FFN_DENSE ? L->ffn.mlp.b_gate : NULL; /* AWQ: dense layers only */
    case SQ_LIN_UP: return L->ffn.kind == SQ_FFN_DENSE ? L->ffn.mlp.b_up : NULL;
    case SQ_LIN_DOWN: return L->ffn.kind == SQ_FFN_DENSE ? L->ffn.mlp.b_down : NULL;
    default: return NULL;
    }
}
