/* serving.h: which vLLM kernel will serve each linear of a checkpoint, or which of its rules the linear
 * breaks, so that a checkpoint that `spotq eval` accepts but vLLM would refuse to load fails in CI first.
 *
 * The rules are vLLM's, read from its source at commit 007d50058a06 (2026):
 *   vllm/model_executor/layers/quantization/utils/marlin_utils.py
 *     MARLIN_SUPPORTED_GROUP_SIZES = [-1, 32, 64, 128]; GPTQ_MARLIN_MIN_THREAD_N = 64 (out_features per
 *     shard), GPTQ_MARLIN_MIN_THREAD_K = 128 (in_features per shard), in_features per shard a multiple of
 *     the group size when the group is smaller than in_features (verify_marlin_supports_shape); types
 *     without zero points uint4b8 and uint8b128 (GPTQ sym 4 and 8 bits), with zero points uint4 only
 *     (query_marlin_supported_quant_types); MoE experts: hidden % 128 == 0 and intermediate per shard a
 *     multiple of max(64, group) (check_moe_marlin_supports_layer), else the MoE WNA16 kernels.
 *   vllm/model_executor/layers/quantization/gptq_marlin.py (is_gptq_marlin_compatible): GPTQ v1
 *     checkpoints run only where Marlin takes (bits, sym) in {(4, sym), (8, sym)} (vLLM PR #38288 removed
 *     the old GPTQ kernels, so anything else does not load).
 *   AWQ: awq_marlin.py (4-bit with zero points through Marlin) and the AWQ GEMM kernel (awq.py) otherwise.
 *   compressed-tensors pack-quantized (W4A16/W8A16): the mixed-precision kernel chooser tries Marlin among
 *     others; where Marlin's rules fail spotq says so (a fallback, not checked further).
 *   FP8: served by the scaled-mm kernels; spotq checks no shape rule for them yet.
 *   FP8 block-wise (quantization/utils/fp8_utils.py, read in several copies of 2026; see FORMATS-2026.md §3):
 *     validate_fp8_block_shape: with TP > 1 a row-parallel linear's in_features per shard must be a
 *     multiple of block_k; with TP > 1 every column shard, and in a merged linear (q/k/v, gate/up) every
 *     output partition but the last, a multiple of block_n. per_token_group_quant_fp8 asserts the
 *     activations' K % block_k == 0 (the load passes, the first forward fails: rejected here). Kernels
 *     (W8A8BlockFp8LinearOp): DeepGEMM where installed, else CUTLASS block FP8 for 128 x 128 blocks with
 *     N % 128 == 0 and K % 128 == 0, else the Triton w8a8_block_fp8_matmul (any block). MoE experts
 *     (Fp8MoEMethod / CompressedTensorsW8A8Fp8MoEMethod): the intermediate size per shard a multiple of
 *     block_n (and of block_k with TP > 1). */
#ifndef SQ_SERVING_H
#define SQ_SERVING_H

#include "checkpoint.h"

typedef enum {
    SQ_SERVE_KERNEL = 0, /* a named kernel serves it */
    SQ_SERVE_FALLBACK,   /* the preferred kernel's rule fails; vLLM has a slower path that may take it */
    SQ_SERVE_FULL,       /* not quantised: a plain BF16/F16 GEMM */
    SQ_SERVE_REJECT,     /* vLLM would refuse to load the checkpoint */
} sq_serve_verdict;

typedef struct {
    char name[200];         /* module, e.g. model.layers.0.self_attn.q_proj */
    int64_t n, k;           /* out_features, in_features (whole, before tensor parallelism) */
    sq_serve_verdict verdict;
    char kernel[64];        /* the kernel that serves it (or would have) */
    char rule[256];         /* the rule broken, "" when none */
} sq_serve_linear;

typedef struct {
    int n_linear, n_kernel, n_fallback, n_full, n_reject;
    sq_serve_linear first_reject; /* valid when n_reject > 0 */
} sq_serve_summary;

/* Checks every linear of ck for tensor parallelism tp (>= 1: q/k/v and gate/up split their outputs,
 * o and down their inputs). fn (may be NULL) gets each linear in order. Fails only on bad arguments. */
typedef void (*sq_serve_fn)(const sq_serve_linear *lin, void *user);
sq_status sq_serve_check(const sq_ckpt *ck, int tp, sq_serve_fn fn, void *user, sq_serve_summary *sum /* OUT */, sq_err *err);

const char *sq_serve_verdict_name(sq_serve_verdict v);

/* How a linear would be stored, for checking a plan before anything is written. */
typedef enum { SQ_SERVE_AS_FULL, SQ_SERVE_AS_GPTQ, SQ_SERVE_AS_AWQ, SQ_SERVE_AS_CT_INT, SQ_SERVE_AS_FP8, SQ_SERVE_AS_FP8_BLOCK, SQ_SERVE_AS_FP4 } sq_serve_storage;

/* The verdict on one linear (module name as in sq_serve_linear, n x k) of a model with config c stored
 * as `as` with the given integer scheme, at tensor parallelism tp (>= 1); fills *out. */
void sq_serve_plan(const sq_config *c, const char *name, int64_t n, int64_t k, sq_serve_storage as, int bits, int group_size, bool sym,
                   int tp, sq_serve_linear *out /* OUT */);

#endif
