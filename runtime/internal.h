/* internal.h: the runtime's private structures, shared by model.c, forward.c and eval.c.
 * Shapes use hidden = cfg.hidden, q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim,
 * f = the FFN width. */
#ifndef SQ_RUNTIME_INTERNAL_H
#define SQ_RUNTIME_INTERNAL_H

#include "../formats/qpack.h"
#include "runtime.h"

struct sq_exec {
    const sq_backend_i *be;
    sq_kctx *kc;
};

/* A SwiGLU MLP: down(silu(gate x) * up x). */
typedef struct {
    sq_wmat gate, up;            /* (f, hidden) */
    sq_wmat down;                /* (hidden, f) */
    float *b_gate, *b_up;        /* (f), NULL unless mlp_bias */
    float *b_down;               /* (hidden), NULL unless mlp_bias */
} sq_mlp;

/* The feed-forward half of a block: a dense MLP, or a mixture of experts: a router picks top_k of
 * n_experts MLPs per token, weighted by the softmax of its logits (renormalised over the chosen ones
 * when norm_topk), plus, for Qwen2-MoE, a shared expert scaled by sigmoid(shared_gate . x). */
typedef enum { SQ_FFN_DENSE, SQ_FFN_MOE } sq_ffn_kind;
typedef struct {
    sq_ffn_kind kind;
    sq_mlp mlp;                  /* dense */
    sq_wmat router;              /* (n_experts, hidden) */
    int n_experts, top_k;
    bool norm_topk;
    sq_mlp *experts;             /* (n_experts) */
    bool has_shared;
    sq_mlp shared;
    sq_wmat shared_gate;         /* (1, hidden) */
} sq_ffn;

typedef struct {
    float *attn_norm;            /* (hidden) input_layernorm */
    float *ffn_norm;             /* (hidden) post_attention_layernorm */
    sq_wmat wq;                  /* (q_dim, hidden) */
    sq_wmat wk, wv;              /* (kv_dim, hidden) */
    sq_wmat wo;                  /* (hidden, q_dim) */
    float *bq;                   /* (q_dim), NULL without attention bias */
    float *bk, *bv;              /* (kv_dim), NULL without attention bias */
    float *bo;                   /* (hidden), NULL unless the checkpoint has o_proj.bias */
    float *q_norm, *k_norm;      /* (head_dim) Qwen3: RMSNorm of each head of q and k before RoPE; else NULL */
    sq_ffn ffn;
} sq_layer;

struct sq_model {
    sq_ckpt *ck;                 /* owned */
    sq_exec *ex;                 /* borrowed */
    sq_config cfg;
    int q_dim, kv_dim, ffn_max;  /* ffn_max: the widest FFN activation of any layer */
    sq_wmat embed;               /* (vocab, hidden) */
    sq_wmat lm_head;             /* (vocab, hidden); the embedding itself when tied */
    float *final_norm;           /* (hidden) */
    sq_layer *layers;            /* (n_layers) */
    double *inv_freq;            /* (head_dim / 2) RoPE frequencies, scaling applied */
    sq_qweight **qweights;       /* owned: the repacked quantised linears (see qlinear.c) */
    int n_qweights;
    sq_fp8weight **fp8;          /* owned: the scales of the FP8 linears (see qlinear.c) */
    int n_fp8;
};

/* qlinear.c: when the checkpoint holds `weight_name` ("<module>.weight") in a quantised form (any row
 * of the format table, formats/format.h), reads it through that row, puts it in the kernels' layout (an
 * sq_qweight or sq_fp8weight the model owns; FP8 codes alias the mmap) and points w at it; *found =
 * false when there is none. rows and cols are the shape the architecture expects. */
sq_status sq_rt_load_qlinear(sq_model *m, const char *weight_name, int64_t rows, int64_t cols, sq_wmat *w, bool *found, sq_err *err);
void sq_rt_free_qweights(sq_model *m);
void sq_rt_free_fp8(sq_model *m);
/* A quantised matrix in the kernels' layout (what names it in errors); freed by sq_rt_qweight_free. */
sq_status sq_rt_qweight_new(const sq_qmatrix *qm, const char *what, sq_qweight **out /* OUT */, sq_err *err);
void sq_rt_qweight_free(sq_qweight *q); /* NULL is fine */
/* lm_head (F32/F16/BF16, columns a multiple of 4) replaced by an 8-bit copy the model owns: per-row RTN,
 * s = max|w| / 127, codes + 128, zero 128 (sq_model_draft_head's rule decides when; runtime.h). */
sq_status sq_rt_head_int8(sq_model *m, sq_err *err);

#endif
