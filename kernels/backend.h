/* backend.h: the compute backend interface. The CPU backend is the reference; CUDA is optional and
 * linked in only by `make CUDA=1` (its constructor then replaces the weak NULL below).
 *
 * A backend is a table of function pointers: a device query, an execution context (threads,
 * scratch), and the numeric kernels the runtime is built from. A backend may leave the kernels NULL
 * (the runtime then refuses to run on it); supports() says which ops it has. All pointers given to the
 * kernels are host memory; a statistic a backend builds (sq_hess) stays in the backend's memory (the
 * device's for CUDA) until the op that uses it, and is copied to the host only when finished. */
#ifndef SQ_BACKEND_H
#define SQ_BACKEND_H

#include "../base/base.h"
#include "../formats/dtype.h"
#include "../formats/qpack.h"

/* A weight matrix as the kernels read it: row-major (rows, cols), in the checkpoint's dtype.
 * data aliases the checkpoint's mmap and is never owned or copied whole; a kernel converts rows or
 * tiles to float as it goes. Quantised layouts will add kinds here. */
/* A quantised weight (INT4/INT8, per-group scales and zero points), as the kernels read it: the codes
 * of each output row packed along the input dimension, least significant bits first (the layout of
 * compressed-tensors' weight_packed), with the columns of each scale group contiguous.
 * W[r, perm[j]] = scale[r, j / group_size] * (code(r, j) - zero[r, j / group_size]). */
typedef struct {
    int bits;                /* 4 or 8 */
    int group_size;          /* columns per group (cols: one group) */
    int64_t n_groups;        /* cols / group_size */
    const uint32_t *codes;   /* (rows, cols * bits / 32) */
    const float *scale;      /* (rows, n_groups) */
    const float *zero;       /* (rows, n_groups) */
    const int32_t *perm;     /* (cols) the input column of each packed column (act-order); NULL: identity */
    bool zero_uniform;       /* every zero equals zero[0] (symmetric schemes): kernels may skip reading them */
} sq_qweight;

/* An FP8 weight: the codes are the sq_wmat's data, E4M3 (rows, cols) read in place, and
 * W[r, c] = e4m3(data[r, c]) * scale[per_channel ? r : 0]. The activations x the matmul multiplies
 * by it are first put through E4M3 as a Hopper FP8 GEMM sees them (vLLM's quantisation kernels):
 * x' = e4m3(clamp(x * (1/s), -448, 448)) * s, with s the static input_scale, or per token (row of x)
 * max(max|x_t| / 448, 1 / (448 * 512)), or one such scale over all the rows of x; or x kept in float. */
/* Block-wise (block_n, block_k > 0): W[r, c] = e4m3(data[r, c]) * scale[r / block_n, c / block_k] and the
 * activations per token and group of block_k along K (SQ_FP8_ACT_DYNAMIC_GROUP), as vLLM's
 * W8A8BlockFp8LinearOp runs them: y[t, r] = sum_b a_s[t, b] * b_s[r / block_n, b] * sum_{c in b} e4m3(x) e4m3(w). */
typedef enum { SQ_FP8_ACT_NONE, SQ_FP8_ACT_STATIC, SQ_FP8_ACT_DYNAMIC_TOKEN, SQ_FP8_ACT_DYNAMIC_TENSOR, SQ_FP8_ACT_DYNAMIC_GROUP } sq_fp8_act;
typedef struct {
    const float *scale;      /* (rows) when per_channel, (ceil(rows / block_n), ceil(cols / block_k)) block-wise, else (1) */
    bool per_channel;
    sq_fp8_act act;
    float input_scale;       /* SQ_FP8_ACT_STATIC: s (> 0) */
    int block_n, block_k;    /* > 0: block-wise scales; 0: per tensor or per channel */
} sq_fp8weight;
/* The number of scales f holds for a rows x cols weight. */
static inline int64_t sq_fp8weight_nscales(const sq_fp8weight *f, int64_t rows, int64_t cols) {
    if (f->block_n > 0) return ((rows + f->block_n - 1) / f->block_n) * ((cols + f->block_k - 1) / f->block_k);
    return f->per_channel ? rows : 1;
}

/* An FP4 weight (NVFP4, MXFP4): data holds E2M1 codes packed two a byte, (rows, cols / 2), column 2j in
 * the low nibble of byte j and 2j + 1 in the high one (compressed-tensors' pack_fp4_to_uint8), and
 * W[r, c] = e2m1(code[r, c]) * scale[r, c / group]: the effective scale of each group of `group` inputs
 * (NVFP4: e4m3 group scale / global scale; MXFP4: 2^(e - 127)). act_fp4: the activations are quantised
 * as vLLM's NVFP4 W4A4 does at run time (scaled_fp4_quant; kernels/cpu/fp4matmul.c): per group of 16,
 * s = e4m3(clamp(gs_in * max|x_g| / 6, +-448)), x' = e2m1(clamp(x * gs_in / s, +-6)) * s / gs_in. */
typedef struct {
    const float *scale;      /* (rows, cols / group) */
    int group;               /* 16 (NVFP4) or 32 (MXFP4) */
    bool act_fp4;            /* W4A4 */
    float input_global_scale; /* act_fp4: gs_in = 448 * 6 / max|x| of the calibration (> 0) */
} sq_fp4weight;

typedef struct {
    sq_dtype dtype;          /* F32, F16 or BF16 (unused when q is set); F8_E4M3 when f8 is set */
    int64_t rows, cols;
    const void *data;        /* (rows, cols) */
    const sq_qweight *q;     /* non-NULL: a quantised weight, data unused */
    const sq_fp8weight *f8;  /* non-NULL: an FP8 weight, data its E4M3 codes; with dtype I8 an INT8 W8A8 weight, data its
                              * signed codes, f8->scale one per row (per_channel), activations INT8 per token */
    const sq_fp4weight *f4;  /* non-NULL: an FP4 weight, data its packed E2M1 codes (dtype U8) */
} sq_wmat;

/* Causal grouped-query attention of n new queries at positions pos0 .. pos0+n-1 over the keys and
 * values of positions 0 .. pos0+n-1 (with a sliding window W, the query at position P sees only
 * P-W+1 .. P). Query head h reads KV head h / (n_heads / n_kv_heads). */
typedef struct {
    const float *q;          /* (n, n_heads * head_dim), RoPE applied */
    const float *k, *v;      /* (pos0 + n, kv_stride): this layer's cache; KV head g at column g * head_dim */
    float *out;              /* (n, n_heads * head_dim) */
    int n, pos0;
    int n_heads, n_kv_heads, head_dim, kv_stride;
    float scale;             /* applied to q.k, usually 1 / sqrt(head_dim) */
    int window;              /* sliding window in positions (Mistral, Qwen2's sliding layers); 0: none */
} sq_attn;

/* The first key position the query at position pos sees. */
static inline int sq_attn_first_key(const sq_attn *a, int pos) { return a->window > 0 && pos >= a->window ? pos - a->window + 1 : 0; }

/* An execution context: worker threads and per-thread scratch. One per process is enough; models
 * share it. Kernels on one context must not be called from two threads at once. */
typedef struct sq_kctx sq_kctx;

/* ---------------------------------------------------------------- calibration ops' types */

/* Every op of the interface, for supports(). */
typedef enum {
    SQ_OP_MATMUL, SQ_OP_EMBED, SQ_OP_RMSNORM, SQ_OP_ROPE, SQ_OP_ATTENTION, SQ_OP_SWIGLU, SQ_OP_ADD,
    SQ_OP_HESSIAN,       /* hess_new / hess_add / hess_finish / hess_free */
    SQ_OP_FACTOR,        /* damped Cholesky factorisation and inverse */
    SQ_OP_GPTQ,          /* the GPTQ sweep (per grid kind: supports_grid) */
    SQ_OP_RTN,           /* round to nearest (per grid kind) */
    SQ_OP_OUTPUT_ERROR,
    SQ_OP_ABSMAX,
    SQ_OP_AWQ_CLIP,      /* AWQ's clipping search */
    SQ_OP_GRAM,          /* X^T X */
    SQ_OP_AWQ_CANDIDATE, /* a scale search's fake-quantised weights */
    SQ_OP_COUNT
} sq_op;
const char *sq_op_name(sq_op op);

/* The grid a quantiser rounds onto. Integer grids: per-group scale and zero (kernels/qmath.h), from the
 * group's min and max or searched for the least importance-weighted error (mse); FP8: E4M3 with fixed
 * scales, one per tensor, one per output channel, or one per 128 x 128 block (kernels/qmath.h's sq_qm_fp8_scale_idx);
 * FP4: E2M1 codes with fixed group scales; INT8 channel (W8A8): signed codes (N, K) in codes (two's complement bytes)
 * with fixed F32 scales per output row in fp8_scale, code = clamp(round_half_even(w / s), -128, 127) (kernels/qmath.h's sq_qm_i8_code). */
typedef enum { SQ_QGRID_INT_MINMAX, SQ_QGRID_INT_MSE, SQ_QGRID_FP8_TENSOR, SQ_QGRID_FP8_CHANNEL, SQ_QGRID_FP8_BLOCK, SQ_QGRID_FP4, SQ_QGRID_INT8_CHANNEL, SQ_QGRID_COUNT } sq_qgrid_kind;
const char *sq_qgrid_name(sq_qgrid_kind kind);

typedef struct {
    sq_qgrid_kind kind;
    int bits;                /* integer: 4 or 8 */
    int group_size;          /* integer: columns per group; <= 0: one group of K */
    bool sym;                /* integer */
    bool static_groups;      /* integer, GPTQ: every group's grid fixed from the original W */
    double norm;             /* mse: exponent of the error minimised (<= 0: 2) */
    const float *imp;        /* mse: importance of each input column [K] (NULL: all 1); GPTQ takes diag(H) itself */
    /* FP4 (SQ_QGRID_FP4): E2M1 with fixed effective scales (N, K / group_size) in fp8_scale. */
    const float *fp8_scale;  /* FP8: (N) per channel, (ceil(N/128), ceil(K/128)) block-wise (SQ_QM_FP8_BLOCK), or (1) */
    int threads;             /* CPU threads rtn and gptq may use (<= 1: one); the result is the same bits for every count */
} sq_qgrid;

/* Where a quantiser's codes go: integer grids fill q (allocated by the caller with
 * sq_qmatrix_alloc(n, k, bits, group_size)): codes, scales, zeros and g_idx; FP8 fills codes (N, K). */
typedef struct {
    sq_qmatrix *q;
    uint8_t *codes;
    bool factor_kept;        /* OUT (gptq): the factor of H^-1 was not computed but kept from the previous solve over the
                              * same H, damping and column order (q, k and v share one Hessian): the same bits */
} sq_qout;

/* GPTQ's settings besides the grid. */
typedef struct {
    bool act_order;          /* columns in descending diag(H) */
    double damp;             /* fraction of mean(diag H) added to the diagonal (raised tenfold up to 3 times) */
    int block_size;          /* lazy-batch width (<= 0: 128) */
} sq_gptq_args;

/* A Hessian accumulator on a backend: H = 2/T sum x x^T over T tokens, kept as a running mean. */
typedef struct sq_hess sq_hess;

typedef struct sq_backend_i {
    const char *name;                  /* "cpu", "cpu-ref", "cuda" */
    /* Describes the device in one line (model, memory); fails when none is usable. */
    sq_status (*query)(char *desc /* OUT */, size_t cap, sq_err *err);

    /* Execution context with `threads` threads (the caller's included; <= 0: one per online CPU). */
    sq_status (*ctx_new)(sq_kctx **out /* OUT */, int threads, sq_err *err);
    void (*ctx_free)(sq_kctx *c); /* NULL is fine */
    int (*ctx_threads)(const sq_kctx *c);
    /* Up to how many rows of x a matmul of INT4/INT8 weights quantises x per block of 32 to int8 and
     * runs the integer kernels (llama.cpp's q8 path); more rows run dequantised weights against float
     * x (as the serving engines' W4A16 kernels do). Default 8 (decode and verify steps); NULL when the
     * backend has one path. */
    void (*ctx_set_int_rows)(sq_kctx *c, int rows);

    /* y (n, w->rows) = x (n, w->cols) . W^T + bias (w->rows, or NULL). x and y do not overlap. */
    sq_status (*matmul)(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
    /* out (n, w->cols) = rows ids[0..n) of w, as float. Ids are in range (the caller checks). */
    void (*embed)(sq_kctx *c, const sq_wmat *w, const int *ids, int n, float *out);
    /* y (n, d) = x (n, d) / sqrt(mean(x^2) + eps) * g (d). y may equal x. */
    void (*rmsnorm)(sq_kctx *c, const float *x, const float *g, float eps, float *y, int n, int d);
    /* Rotates, in place, n rows of x (row stride `stride`) holding n_heads heads of head_dim, in the
     * rotate-half layout (pairs i, i + head_dim/2); cos and sin are (n, head_dim / 2). */
    void (*rope)(sq_kctx *c, float *x, int n, int stride, int n_heads, int head_dim, const float *cos, const float *sin);
    sq_status (*attention)(sq_kctx *c, const sq_attn *a, sq_err *err);
    /* out (m) = silu(gate) * up; out may equal gate. */
    void (*swiglu)(sq_kctx *c, const float *gate, const float *up, float *out, int64_t m);
    /* y (m) += x (m) */
    void (*add)(sq_kctx *c, float *y, const float *x, int64_t m);

    /* Whether this backend has op (and, for SQ_OP_GPTQ and SQ_OP_RTN, that grid kind; ignored otherwise). */
    bool (*supports)(sq_op op, sq_qgrid_kind grid);

    /* ---- calibration ops (W [N, K] row-major, H [K, K] row-major symmetric, X [T, K]; host memory) ---- */
    /* A Hessian of K inputs that hess_finish makes symmetric and leaves in h [K, K], host memory the
     * caller owns (zeroed; the CPU accumulates in it, a device copies it there when finished). */
    sq_status (*hess_new)(sq_hess **out /* OUT */, int64_t k, float *h, sq_err *err);
    /* Adds T tokens x [T, K]. */
    sq_status (*hess_add)(sq_hess *hs, const float *x, int64_t t, sq_err *err);
    sq_status (*hess_finish)(sq_hess *hs, sq_err *err);
    void (*hess_free)(sq_hess *hs); /* NULL is fine */

    /* u [K, K] = the upper Cholesky factor of (H + d mean(diag H) I)^-1, trying d = damp, then tenfold up
     * to three times; *damp_used = the d that factored, or -1 (u then holds nothing useful). */
    sq_status (*factor)(const float *h, float *u, int64_t k, double damp, double *damp_used /* OUT */, sq_err *err);
    /* GPTQ's sweep of W with H onto grid g (IST-DASLab's reference step for step: dead inputs, act-order,
     * damped factorisation, lazy blocks). hs, when not NULL, is this backend's accumulator of the same H
     * (a device may use its own copy instead of h). *damp_used as factor's; -1: nothing was written. */
    sq_status (*gptq)(const float *w, const float *h, const sq_hess *hs, int64_t n, int64_t k, const sq_qgrid *g, const sq_gptq_args *a,
                      sq_qout *out, double *damp_used /* OUT */, sq_err *err);
    /* Round to nearest of W onto g (integer: g_idx c / group_size). */
    sq_status (*rtn)(const float *w, int64_t n, int64_t k, const sq_qgrid *g, sq_qout *out, sq_err *err);
    /* ||W X^T - Q X^T||_F / ||W X^T||_F from H: sqrt(tr(D H D^T) / tr(W H W^T)), D = W - Q. */
    sq_status (*output_error)(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads, double *out /* OUT */, sq_err *err);
    /* tr(D H D^T), D = W - Q (Q NULL: D = W), H [K, K]: output_error's two traces. */
    sq_status (*quad_error)(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads, double *out /* OUT */,
                            sq_err *err);
    /* out [N, K] = Q(W diag(s)) diag(s)^-1 on AWQ's zero-point grid (per group of gs: scale
     * max(max - min, 1e-5) / (2^bits - 1), zero clamp(-round(min / scale))): a scale search's candidate,
     * the same values as quant/awq.c's sq_awq_fake_quant of W diag(s), divided by s. */
    sq_status (*awq_candidate)(const float *w, const float *s, int64_t n, int64_t k, int gs, int bits, int threads, float *out /* OUT */,
                               sq_err *err);
    /* h [K, K] = X^T X (symmetric, both triangles) for x [T, K], on `threads` threads: the same bits for
     * every count. */
    sq_status (*gram)(const float *x, int64_t t, int64_t k, int threads, float *h /* OUT */, sq_err *err);
    /* max |x| over n values; NaN or Inf gives -1 with *bad its index (else -1). */
    float (*absmax)(const float *x, int64_t n, int64_t *bad /* OUT */);
    /* AWQ's clipping search for w [n, k] (scaled) with inputs x [t, k], every max(t / 512, 1)-th token
     * used: per row and group, max |w| shrunk by (1 - i/20), i = 0..9, keeping the least mean squared
     * error of the group's output over those tokens (the first on ties); w is clamped to the chosen
     * range in place, max_val (n, k / gs; may be NULL) gets it. The same bits for every thread count. */
    sq_status (*awq_clip)(float *w, int64_t n, int64_t k, int gs, int bits, const float *x, int64_t t, int threads, float *max_val /* OUT */,
                          sq_err *err);
} sq_backend_i;

const sq_backend_i *sq_backend_cpu(void);
/* The CPU backend's scalar reference kernels, one thread, no BLAS: what every fast kernel and every
 * other backend is tested against. */
const sq_backend_i *sq_backend_cpu_ref(void);
/* NULL when spotq was built without CUDA, or its CUDA library cannot be loaded. */
const sq_backend_i *sq_backend_cuda(void);
/* A symbol of the CUDA library (libspotq_cuda.so, beside the binary or one or two folders up, or named
 * by SPOTQ_CUDA_LIB), loaded on first use; NULL with the reason in why (may be NULL) when unavailable. */
void *sq_cuda_symbol(const char *name, char *why, size_t cap);
/* By name: "cpu", "cpu-ref" or "cuda". Fails with a clear message when unknown, not built, or no device. */
sq_status sq_backend_get(const char *name, const sq_backend_i **out /* OUT */, sq_err *err);

#endif
