/* runtime.h: spotq's model runtime, the validator of everything spotq writes: a decoder-only
 * transformer (llama, mistral, qwen2) run from the mmap'd checkpoint, perplexity and divergence
 * evaluation, and token sampling.
 *
 * Objects and ownership:
 *   sq_exec   a backend and its threads. Owns its kernel context. Shared by every model run on it;
 *             must outlive them. Not for use from two threads at once.
 *   sq_model  the weights of one checkpoint, as views into its mmap (the checkpoint is owned by the
 *             model; only norms and biases are copied, as float). Borrows its sq_exec.
 *   sq_state  one sequence being run on a model: KV cache, RoPE tables, activations, and the final
 *             hidden states of the last sq_forward call. Borrows its model.
 * Every create has a matching free that accepts NULL. */
#ifndef SQ_RUNTIME_H
#define SQ_RUNTIME_H

#include "../formats/checkpoint.h"
#include "../kernels/backend.h"

/* ---------------------------------------------------------------- execution */

typedef struct sq_exec sq_exec;
/* backend: "cpu" (NULL means cpu), or "cpu-ref" (the scalar reference kernels, one thread).
 * threads <= 0: one per online CPU. */
sq_status sq_exec_new(sq_exec **out /* OUT */, const char *backend, int threads, sq_err *err);
void sq_exec_free(sq_exec *ex);
int sq_exec_threads(const sq_exec *ex);
const char *sq_exec_backend(const sq_exec *ex);
/* How forward passes of more than 8 tokens (a prefill, eval's windows) run INT4/INT8 weights. false
 * (the default): dequantised tiles against float activations, as the serving engines' W4A16/W8A16
 * kernels compute, so that eval's perplexities are the checkpoint's own. true: the integer kernels
 * of decode, the activations quantised per block of 32 to int8 (llama.cpp's q8 path; each token's
 * numbers then those of a decode step), ~1.5x faster on AVX512-VNNI; generate and bench set it.
 * Decode and verify steps (up to 8 tokens) always run the integer kernels. On AVX-512 it also runs
 * dense (F32, F16, BF16) weights' prefill in the decode step's order (each token's numbers its decode
 * step's) instead of sgemm's. No-op on a backend with one path. */
void sq_exec_set_int_prefill(sq_exec *ex, bool on);

/* ---------------------------------------------------------------- model */

typedef struct sq_model sq_model;
/* Opens MODEL (a Hugging Face directory, or a .safetensors with config.json beside it), checks every
 * tensor the architecture needs, and builds the weight views. No tokenizer is needed. */
sq_status sq_model_open(sq_model **out /* OUT */, const char *path, sq_exec *ex, sq_err *err);
void sq_model_close(sq_model *m);
const sq_config *sq_model_config(const sq_model *m);
const sq_ckpt *sq_model_ckpt(const sq_model *m);
/* For a model opened as a speculative draft: when its lm_head (F32/F16/BF16) is more bytes than all the
 * rest of its checkpoint (an INT4 copy of a small-hidden, large-vocabulary model: SmolLM's 49152 x 576
 * F32 head is 113 MB beside 66 MB of INT4 layers), the head is run in 8 bits instead (per-row RTN,
 * the integer GEMV), which a draft's proposals barely notice and its step time does; *changed says
 * whether it was. The target's numbers are never touched (the target checks every drafted token). */
sq_status sq_model_draft_head(sq_model *m, bool *changed /* OUT */, sq_err *err);

/* ---------------------------------------------------------------- running a sequence */

typedef struct sq_state sq_state;
/* A sequence of at most max_ctx positions. Prefill runs in chunks of at most max_batch tokens
 * (<= 0: 512), which bounds the activation memory. */
sq_status sq_state_new(sq_state **out /* OUT */, sq_model *m, int max_ctx, int max_batch, sq_err *err);
void sq_state_free(sq_state *s);
int sq_state_pos(const sq_state *s);     /* positions held in the KV cache */
int sq_state_max_ctx(const sq_state *s);
double sq_state_flops(const sq_state *s); /* operations of the linears and attention run so far */
sq_model *sq_state_model(const sq_state *s);
/* Forgets every position from pos on (0: start afresh). A speculative step rewinds to its last
 * accepted token this way. */
sq_status sq_state_rewind(sq_state *s, int pos, sq_err *err);

/* Runs ids[0..n) at positions pos .. pos+n-1 and appends them to the KV cache. n == 1 is a decode
 * step; n > 1 a prefill, or the batched verify step of speculative decoding. Afterwards the final
 * (normed) hidden states of these n tokens are kept for sq_logits. Ids outside the vocabulary and
 * a full context are errors. */
sq_status sq_forward(sq_state *s, const int *ids, int n, sq_err *err);
/* logits (count, vocab) of tokens first .. first+count-1 of the last sq_forward call. Computed on
 * demand, so an eval can take them a few positions at a time. */
sq_status sq_logits(sq_state *s, int first, int count, float *out /* OUT: (count, vocab) */, sq_err *err);

/* ---------------------------------------------------------------- evaluation */

typedef enum {
    SQ_PPL_GPTQ,     /* every token of a window but the first is scored */
    SQ_PPL_LLAMACPP, /* the window's first token replaced by BOS, only its second half scored */
} sq_ppl_protocol;

typedef struct {
    int ctx;                     /* window length in tokens (>= 2) */
    sq_ppl_protocol protocol;
    int bos_id;                  /* SQ_PPL_LLAMACPP: the token put first in each window; -1 keeps it */
    /* Called after each window (may be NULL). */
    void (*progress)(void *user, int window, int n_windows, int64_t tokens_done, double seconds);
    void *progress_user;
} sq_eval_opts;

typedef struct {
    int64_t windows, scored;     /* windows evaluated, tokens scored in all */
    int64_t tokens;              /* tokens run through the model (windows * ctx) */
    double mean_nll, ppl;        /* ppl = exp(mean NLL) */
    double seconds;
    /* With a reference model: */
    bool has_ref;
    double ref_mean_nll, ref_ppl, ppl_ratio; /* ppl_ratio = ppl / ref_ppl */
    /* KL(ref || model) per scored position, in nats: mean, median, 99th percentile (nearest rank), max */
    double kld_mean, kld_median, kld_p99, kld_max;
    double top1;                 /* fraction of scored positions where both models' argmax agree */
} sq_eval_result;

/* The perplexity protocol of SPEC.md over the token stream ids[0..n): non-overlapping windows of
 * ctx tokens (the tail dropped), each run from position 0. With ref (may be NULL) also the
 * divergence of ref's next-token distribution to m's. Fails when n < ctx or an id is out of range. */
sq_status sq_eval_ppl(sq_model *m, sq_model *ref, const int *ids, int64_t n, const sq_eval_opts *o,
                      sq_eval_result *r /* OUT */, sq_err *err);

/* ---------------------------------------------------------------- sampling */

typedef struct sq_sampler sq_sampler;
/* temp <= 0: greedy (argmax). top_p in (0, 1]: nucleus sampling (1: off). seed: the generator's start. */
sq_status sq_sampler_new(sq_sampler **out /* OUT */, int vocab, float temp, float top_p, uint64_t seed, sq_err *err);
void sq_sampler_free(sq_sampler *s);
/* Picks a token from logits (vocab). Greedy never modifies logits; sampling may. */
int sq_sample(sq_sampler *s, float *logits);
/* probs (vocab) = the distribution sq_sample draws from for these logits: one-hot at the argmax when
 * greedy, else softmax(logits / temp) kept to the top-p nucleus and renormalised. probs may be logits. */
void sq_sampler_probs(sq_sampler *s, float *logits, float *probs);
/* A token drawn from probs (vocab, summing to 1) with the sampler's generator. */
int sq_sample_probs(sq_sampler *s, const float *probs);
/* Speculative sampling's rule for one drafted token (Leviathan et al. 2023, Chen et al. 2023): the
 * draft drew d from q; it is kept with probability min(1, p[d] / q[d]), else a token is drawn from
 * max(0, p - q) renormalised, so that the result is distributed as p whatever q is (greedy: one-hot
 * p and q, so d is kept exactly when it is the target's argmax, else the argmax is returned).
 * p is overwritten; *accepted says whether d was kept. */
int sq_spec_accept(sq_sampler *s, float *p, const float *q, int d, bool *accepted /* OUT */);
/* Index of the largest value (the first one on ties). */
int sq_argmax(const float *x, int n);

/* ---------------------------------------------------------------- speculative decoding */

typedef struct {
    int64_t steps;               /* target forward passes */
    int64_t drafted, accepted;   /* draft tokens proposed, and kept */
} sq_spec_stats;
/* Sees each new token in order; returns true to stop (an EOS). */
typedef bool (*sq_token_fn)(void *user, int token);
/* Continues ids[0..n_prompt) by up to n_new tokens (ids has room for n_prompt + n_new), drafting k
 * tokens a step with `draft` and verifying them with `target` in one batched forward pass, each
 * drafted token kept or replaced by sq_spec_accept: greedy output is the target's own greedy
 * continuation, sampled output keeps the target's distribution. smp samples for the target, dsmp
 * for the draft (the same temperature and top-p, another seed). Both states start empty with room
 * for n_prompt + n_new + k positions, and the models share a vocabulary. *n_out: tokens in ids. */
sq_status sq_speculate(sq_state *target, sq_state *draft, sq_sampler *smp, sq_sampler *dsmp, int k, int *ids, int n_prompt, int n_new,
                       sq_token_fn on_token, void *user, int *n_out /* OUT */, sq_spec_stats *st /* OUT */, sq_err *err);

/* ---------------------------------------------------------------- calibration support */

/* The linear layers of a dense block, and the sites whose inputs calibration collects. */
typedef enum { SQ_LIN_Q, SQ_LIN_K, SQ_LIN_V, SQ_LIN_O, SQ_LIN_GATE, SQ_LIN_UP, SQ_LIN_DOWN, SQ_LIN_COUNT } sq_lin;
typedef enum {
    SQ_SITE_QKV,    /* input_layernorm(x): input of q, k, v (n, hidden) */
    SQ_SITE_O,      /* attention output: input of o_proj (n, q_dim) */
    SQ_SITE_GATEUP, /* post_attention_layernorm(h): input of gate, up (n, hidden) */
    SQ_SITE_DOWN,   /* silu(gate) * up: input of down_proj (n, f) */
    SQ_SITE_ATTN_OUT, /* the attention's output, o_proj's (n, hidden, before the residual); see sq_state_tap_outputs */
    SQ_SITE_FFN_OUT,  /* the FFN's output (n, hidden, before the residual); see sq_state_tap_outputs */
} sq_site;
/* The FFN of a layer is made of units, each an MLP with its own gate, up and down: one for a dense
 * layer (unit 0); for a mixture of experts, expert e is unit e and the shared expert (Qwen2-MoE)
 * unit n_experts. The attention sites and linears are unit 0. A mixture of experts' whole input (every
 * token, before the router) is seen at SQ_SITE_GATEUP as unit sq_model_ffn_units(m, l). */
int sq_model_ffn_units(const sq_model *m, int l);
/* Sees the input x (n, dim) of a site of FFN unit `unit` (an expert sees the tokens routed to it);
 * returns true to stop the layer there (calibration needs nothing after the site it collects). */
typedef bool (*sq_tap_fn)(void *user, sq_site site, int unit, const float *x, int n, int dim);

/* The module name of a linear ("model.layers.3.self_attn.q_proj", "model.layers.3.mlp.experts.5.down_proj",
 * "model.layers.3.block_sparse_moe.experts.5.w2", no ".weight"); sq_lin_name is unit 0. */
void sq_lin_name_unit(const sq_config *c, int l, int unit, sq_lin which, char *buf, size_t cap);
void sq_lin_name(const sq_config *c, int l, sq_lin which, char *buf, size_t cap);
/* The weight the forward pass uses for a linear of layer l (of FFN unit `unit`); NULL when there is none. */
const sq_wmat *sq_model_linear_unit(const sq_model *m, int l, int unit, sq_lin which);
const sq_wmat *sq_model_linear(const sq_model *m, int l, sq_lin which);
/* MoE layer l's router (which 0: (n_experts, hidden)) or Qwen2-MoE's shared-expert gate (which 1:
 * (1, hidden)); NULL when there is none. AWQ compensates them for the scales it folds into the norm. */
const sq_wmat *sq_model_router(const sq_model *m, int l, int which);
sq_status sq_model_set_router(sq_model *m, int l, int which, const sq_wmat *w, sq_err *err);
/* Makes the forward pass use w (same shape; its data borrowed, must outlive every later use). */
sq_status sq_model_set_linear_unit(sq_model *m, int l, int unit, sq_lin which, const sq_wmat *w, sq_err *err);
sq_status sq_model_set_linear(sq_model *m, int l, sq_lin which, const sq_wmat *w, sq_err *err);
/* MoE calibration: the experts whose flag is set (flags: n_experts, borrowed; NULL: none) see every
 * token at their sites, not only those routed to them, as llm-compressor and GPTQModel calibrate
 * rarely chosen experts; the layer's output is unchanged (an unrouted token adds nothing). */
void sq_state_route_all(sq_state *s, const uint8_t *flags);
/* out (n, hidden) = the embeddings of ids (in range). */
void sq_model_embed(sq_model *m, const int *ids, int n, float *out);
/* Runs layer l alone on x (n, hidden), one sequence at positions 0 .. n-1, in place; tap (may be NULL)
 * sees the input of each site. When the tap stops the layer, x is left unchanged. n <= the state's
 * max_batch. */
sq_status sq_layer_forward(sq_state *s, int l, float *x, int n, sq_tap_fn tap, void *user, sq_err *err);
/* on: sq_layer_forward's tap also sees the outputs of the layer's two modules (SQ_SITE_ATTN_OUT,
 * SQ_SITE_FFN_OUT), the bits sq_layer_part gives for the same input; off (the default): the tap sees
 * the linears' inputs only. AWQ's scale search compares its candidates with those outputs. */
void sq_state_tap_outputs(sq_state *s, bool on);

/* The attention (q, k, v, attention, o_proj) or the FFN of layer l alone, on an already normed input
 * xn (n, hidden) of one sequence from position 0, into out (n, hidden), without the residual: the
 * modules whose outputs AWQ's scale search compares. */
typedef enum { SQ_PART_ATTENTION, SQ_PART_FFN } sq_layer_part_kind;
sq_status sq_layer_part(sq_state *s, int l, sq_layer_part_kind part, const float *xn, int n, float *out /* OUT */, sq_err *err);
/* y (n, w->rows) = x (n, w->cols) . W^T on the state's kernels (threaded, the same numbers for every
 * thread count), no bias: one linear alone, as AWQ's search runs a lone o or down projection window
 * by window. */
sq_status sq_state_matmul(sq_state *s, const sq_wmat *w, const float *x, float *y, int n, sq_err *err);
/* The norm weights the forward pass uses (hidden floats, owned by the model, writable: AWQ folds its
 * scales into them): which 0 = input_layernorm, 1 = post_attention_layernorm. */
float *sq_model_norm(sq_model *m, int l, int which);
/* The bias of a linear (its rows floats, owned by the model, writable), or NULL when it has none. */
float *sq_model_bias(sq_model *m, int l, sq_lin which);

#endif
