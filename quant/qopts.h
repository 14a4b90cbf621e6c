/* qopts.h: the options of `spotq quantize` as a plain struct (sq_quantize_opts), apart from the pipeline that
 * runs them, so that the pre-passes the pipeline calls (budget_run.c) read them without including the pipeline. */
#ifndef SQ_QOPTS_H
#define SQ_QOPTS_H

#include "../formats/qscheme.h"
#include "quant.h"
/* SQ_METHOD_AWQ_GPTQ: AWQ's scales and clipping, then GPTQ on the scaled weights. SQ_METHOD_FP8_GPTQ:
 * E4M3 with the scales of SQ_METHOD_FP8, the codes chosen by GPTQ's error compensation. */
typedef enum { SQ_METHOD_RTN, SQ_METHOD_GPTQ, SQ_METHOD_AWQ, SQ_METHOD_AWQ_GPTQ, SQ_METHOD_FP8, SQ_METHOD_FP8_GPTQ, SQ_METHOD_NVFP4, SQ_METHOD_NVFP4_GPTQ, SQ_METHOD_MXFP4, SQ_METHOD_MXFP4_GPTQ, SQ_METHOD_INT8, SQ_METHOD_INT8_GPTQ } sq_method;
/* The output format (sq_format) and FP8 activations (sq_act): formats/qscheme.h. SQ_FORMAT_AUTO asks the
 * library to choose: for rtn and gptq GPTQ v1 where vLLM's Marlin takes every linear that is quantised,
 * else compressed-tensors pack-quantized; for awq AWQ GEMM; for fp8 vLLM's fp8 where it holds the
 * scheme, else compressed-tensors float-quantized. */

typedef enum { SQ_KEEP_AUTO, SQ_KEEP_SOURCE, SQ_KEEP_BF16 } sq_keep_dtype;

/* --awq-search-tokens auto: an eighth of the calibration tokens, at least 1024 (fewer: every token) */
#define SQ_AWQ_SEARCH_AUTO (-1)
#define SQ_AWQ_SEARCH_MIN 1024

typedef struct {
    const char *model;           /* source checkpoint */
    const char *out;             /* output directory */
    const char *calib;           /* .txt or .jsonl calibration text (required for gptq; rtn uses it for the error report) */
    sq_method method;
    sq_format format;
    sq_qparams q;
    bool grid_auto;              /* q.grid is the library's choice: mse where it runs (not AWQ's or FP8's own grid, the
                                  * GPU, or 8-bit rtn without data), else minmax */
    int nsamples, seqlen;
    uint64_t seed;
    int threads;
    bool force;
    const char *const *ignore;   /* fnmatch patterns on module names ("model.layers.*.mlp.down_proj") */
    int n_ignore;
    const char *cmdline;         /* recorded in spotq.json */
    /* after each block (may be NULL): what ("quantize"), blocks done of total, seconds so far */
    void (*progress)(void *user, const char *what, int done, int total, double seconds);
    void *progress_user;
    bool awq_duo;                /* AWQ: duo scaling (AutoAWQ's default); false: llm-awq's x_mean^alpha */
    bool awq_clip;               /* AWQ: the clipping search (default on; never on q and k) */
    int64_t awq_search_tokens;   /* AWQ: the scale search's subsample of whole windows (>= this many tokens) on which every
                                  * alpha is scored, its SQ_AWQ_RESCORE best then on every token; 0: every alpha on every token;
                                  * SQ_AWQ_SEARCH_AUTO (-1, the CLI's default): an eighth of the tokens, at least 1024 */
    bool fp8_per_channel;        /* fp8: one weight scale per output channel (compressed-tensors only); else per tensor */
    bool fp8_block;              /* fp8: one weight scale per 128 x 128 block, activations dynamic per token and group of 128 */
    sq_act act;                  /* fp8: activations (vLLM's fp8 format has no weight-only form: static or dynamic) */
    bool act_auto;               /* act is the library's choice: dynamic for block-wise FP8, else as given (none) */
    bool smoothquant;            /* int8, int8+gptq: SmoothQuant's migration of activation outliers into the weights (smooth.h) */
    double smooth_alpha;         /* its strength in [0, 1]; NaN: SQ_SMOOTH_DEFAULT_ALPHA (0.5) */
    const struct sq_backend_i *backend; /* gptq: the backend of the Hessian accumulation and the GPTQ solve (--device; NULL: the CPU) */
    int64_t max_shard_bytes;     /* tensor bytes per output shard (0: SQ_DEFAULT_SHARD_BYTES) */
    int64_t max_hessian_bytes;   /* Hessians collected in one pass, e.g. a group of experts (0: SQ_CALIB_DEFAULT_HESSIAN_BYTES) */
    const char *stats_in;        /* quantize from these statistics (spotq calib) instead of calibrating */
    /* Quantising to a budget (issue 18; quant/budget_run.c): one scheme per unit (q/k/v, o, gate/up, down, the
     * experts of a layer) chosen from the candidates by sens.h's measurement and budget.h's solver. */
    double target_bits;          /* > 0: bits per weight of the whole checkpoint, every tensor counted */
    double max_kld;              /* > 0: the most mean KLD on the calibration text's held-out windows */
    const char *schemes;         /* the candidates, comma-separated (sens.h's names; NULL: the defaults) */
    bool scheme_given;           /* --bits, --group-size, --sym or --asym was given (one scheme: no budget) */
    int budget_windows, budget_ctx; /* the measurement's held-out windows and their tokens (0: 8 of 128) */
    /* The per-linear plan (quant/plan.h): NULL: the library's (the options' scheme for every linear, its
     * group size lowered per linear to the largest servable one dividing in_features, for methods whose
     * row states plan_groups); else this plan, one entry per layer and sq_lin, fused sets sharing one
     * scheme (issue 18's --target-bits). Several distinct schemes need --format compressed-tensors
     * (auto chooses it). */
    const struct sq_plan *plan;
    bool strict_group_size;      /* no lowering: a group size that does not divide some linear is a usage error */
    /* --keep-dtype: the dtype of the matrices written unquantised (embeddings, lm_head, kept linears) when the
     * source stores them in F32. AUTO resolves (sq_quantize_resolve) to BF16 under a budget, whose bits per
     * weight count every tensor, else SOURCE; vectors (norms, biases) keep the source's dtype always. */
    sq_keep_dtype keep_dtype;
} sq_quantize_opts;

#endif
