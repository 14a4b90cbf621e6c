/* cpu.h: the CPU backend's private interface: its thread pool, its execution context, and every
 * kernel in two versions, the scalar reference (_ref) and the fast one (OpenBLAS, AVX2, threads).
 * backend_cpu.c puts them in the two backend tables; tests/unit/test_kernels.c holds each fast
 * kernel to its reference. */
#ifndef SQ_KERNELS_CPU_H
#define SQ_KERNELS_CPU_H

#include <stdatomic.h>

#include "../backend.h"

/* The fast kernels use AVX2, FMA and F16C, enabled per function so that the library still compiles
 * (and runs the reference kernels) where the compiler is not told to target x86-64-v3. */
#define SQ_AVX2 __attribute__((target("avx2,fma,f16c")))
/* AVX-512 F/BW/VL with VNNI (vpdpbusd), for the variants chosen at run time (sq_cpu_isa). */
#define SQ_AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
bool sq_cpu_has_avx2(void); /* sq_cpu_isa() >= SQ_ISA_AVX2 */
const char *sq_cpu_blas_core(void); /* the OpenBLAS kernels in use ("SkylakeX", "Haswell", ...): see backend_cpu.c */
/* The mse grid search of eight groups side by side (lane j of value i at x[i * stride + j]), the bits of
 * sq_qm_grid_search on each lane (AVX2 for the squared error; the _ref, and other norms, lane by lane). */
void sq_cpu_grid_search8(const float *x, int64_t stride, const float *d, int64_t m, int bits, bool sym, double norm, float *scale,
                         int32_t *zero);
void sq_cpu_grid_search8_ref(const float *x, int64_t stride, const float *d, int64_t m, int bits, bool sym, double norm, float *scale,
                             int32_t *zero);

/* The instruction set the kernels use, from one binary: the most the CPU has (cpuid), lowered by
 * SPOTQ_CPU_ISA=scalar|avx2|avx512 (read once; a name above what the CPU has is taken as its most).
 * avx512 means F, BW, VL and VNNI together. sq_cpu_set_isa changes it (tests run every variant the
 * machine has) and returns the level now in force; sq_cpu_isa_max is what the CPU has. */
typedef enum { SQ_ISA_SCALAR, SQ_ISA_AVX2, SQ_ISA_AVX512 } sq_isa;
sq_isa sq_cpu_isa(void);
sq_isa sq_cpu_isa_max(void);
sq_isa sq_cpu_set_isa(sq_isa want);
const char *sq_cpu_isa_name(sq_isa isa);

/* ---------------------------------------------------------------- thread pool */

/* A fixed set of threads that run one function together: fn(arg, ith, nth) on every thread
 * (ith 0 is the caller). Idle workers spin briefly (a decode step dispatches dozens of kernels a
 * token), then sleep. */
typedef struct sq_pool sq_pool;
typedef void (*sq_pool_fn)(void *arg, int ith, int nth);
sq_status sq_pool_new(sq_pool **out /* OUT */, int threads, sq_err *err);
void sq_pool_free(sq_pool *p); /* NULL is fine */
int sq_pool_threads(const sq_pool *p);
void sq_pool_run(sq_pool *p, sq_pool_fn fn, void *arg);
/* Below this many multiply-adds a kernel runs on the calling thread alone: waking the others would
 * cost more than it saves (and on a loaded machine, much more). */
#define SQ_PAR_MIN_WORK (1 << 16)
/* fn(arg, c, ith) for every chunk c in [0, nchunks), on `threads` threads (ith < threads, the caller
 * being 0) that take the chunks in turn (a pool of its own for the call; threads < 2: the caller
 * alone): for work whose chunks are fixed by its size, so that the result does not depend on the
 * thread count. At most SQ_PAR_MAX_THREADS threads. */
#define SQ_PAR_MAX_THREADS 256
void sq_cpu_par_chunks(int threads, int64_t nchunks, void (*fn)(void *arg, int64_t c, int ith), void *arg);

/* sq_pool_run when work is worth the threads, else fn on the caller alone. */
static inline void sq_pool_run_work(sq_pool *p, sq_pool_fn fn, void *arg, int64_t work) {
    if (work < SQ_PAR_MIN_WORK) fn(arg, 0, 1);
    else sq_pool_run(p, fn, arg);
}

/* The part [*lo, *hi) of 0..n that thread ith of nth takes, boundaries rounded to multiples of align. */
static inline void sq_split(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t blocks = (n + align - 1) / align;
    int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
    *lo = b0 * align < n ? b0 * align : n;
    *hi = b1 * align < n ? b1 * align : n;
}

/* Work handed out in chunks: each thread takes the next chunk [*lo, *hi) of 0..n (step items) until
 * none are left. A thread that runs slowly (a busy core, another process) then takes fewer chunks
 * instead of holding the others up, as a static split would. *next starts at 0. */
static inline bool sq_chunk_next(_Atomic int64_t *next, int64_t n, int64_t step, int64_t *lo, int64_t *hi) {
    int64_t c = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
    if (c >= (n + step - 1) / step) return false;
    *lo = c * step;
    *hi = *lo + step < n ? *lo + step : n;
    return true;
}

/* y (n, rows) += bias over the output rows [lo, hi) a thread computed (bias may be NULL). */
static inline void sq_cpu_add_bias(float *y, const float *bias, int n, int64_t rows, int64_t lo, int64_t hi) {
    if (!bias) return;
    for (int t = 0; t < n; t++)
        for (int64_t r = lo; r < hi; r++) y[(int64_t)t * rows + r] += bias[r];
}

/* ---------------------------------------------------------------- execution context */

struct sq_kctx {
    sq_pool *pool;
    int threads;
    int int_rows;                /* matmul: rows of x up to which INT4/INT8 weights run the integer kernels, and dense
                                  * weights (AVX-512) the decode step's sums (dense_prefill, matmul.c) */
    /* Per-thread scratch (float), grown by sq_kctx_reserve from the calling thread only. */
    float **scratch;
    size_t *scratch_cap;         /* in floats */
    /* One buffer all threads read (e.g. a matmul's quantised activations), grown by sq_kctx_shared. */
    void *shared;
    size_t shared_cap;           /* in bytes */
};
sq_status sq_cpu_ctx_new(sq_kctx **out, int threads, sq_err *err);
sq_status sq_cpu_ctx_new_ref(sq_kctx **out, int threads, sq_err *err); /* always one thread */
void sq_cpu_ctx_free(sq_kctx *c);
int sq_cpu_ctx_threads(const sq_kctx *c);
void sq_cpu_ctx_set_int_rows(sq_kctx *c, int rows);
/* Makes every thread's scratch hold at least n floats. */
sq_status sq_kctx_reserve(sq_kctx *c, size_t n, sq_err *err);
/* The shared buffer, at least `bytes` long and 64-byte aligned (its contents are not kept when it
 * grows); NULL (err set) when out of memory. Calling thread only, between kernels. */
void *sq_kctx_shared(sq_kctx *c, size_t bytes, sq_err *err);

/* ---------------------------------------------------------------- kernels (see backend.h) */

/* Quantised weights (w->q set): dequantisation inside the dot product (GEMV), or per row tile into
 * scratch for sgemm (prefill). sq_cpu_matmul and sq_cpu_matmul_ref dispatch to these. */
sq_status sq_cpu_qmatmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_qmatmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
/* The integer GEMV (qmatmul.c) runs 4- and 8-bit weights against activations quantised per block of
 * 32 to int8 (d = max|x| / 127, codes round(x / d), ties to even): sum_j s (q_j - z) x_j becomes
 * s sum_b d_b (sum_{j in b} q_j c_j) - s z sum_b d_b sum_{j in b} c_j, the inner sums in integers.
 * It takes up to c->int_rows rows of x (SQ_CPU_INT_ROWS, decode and verify steps, unless the
 * context was set for more: ctx_set_int_rows) where cols is a multiple of 64 and the group size a
 * multiple of 32; more rows keep the float path. Each token's y is the same whatever the rows beside
 * it. Against the exact product the error is at most sum_b (d_b / 2) sum_{j in b} |W_j| (the rounding
 * of x) plus float rounding. c NULL: the default limit. */
#define SQ_CPU_INT_ROWS 8
bool sq_cpu_qmatmul_int_ok(const sq_kctx *c, const sq_wmat *w, int n);
/* One row x (cols, a multiple of 32) quantised for the integer GEMV: codes (cols) (for 4-bit weights
 * each 64 columns stored as their 32 even then their 32 odd ones, the order of the packed nibbles),
 * block scales d (cols / 32) and ds = d * the sum of the block's codes. The fast version equals the
 * reference bit for bit. */
void sq_cpu_q8_quantize(const float *x, int64_t cols, int bits, int8_t *codes, float *d, float *ds);
void sq_cpu_q8_quantize_ref(const float *x, int64_t cols, int bits, int8_t *codes, float *d, float *ds);
/* Row r of a quantised weight as floats, in packed (group-contiguous) column order. */
void sq_cpu_qrow_to_f32(const sq_wmat *w, int64_t r, float *dst);
/* FP8 weights (w->f8 set, fp8matmul.c): the activations through E4M3 as the weight asks, then the
 * codes converted inside the dot product (GEMV) or per row tile into scratch for sgemm. */
sq_status sq_cpu_f8matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_f8matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
/* out (n, k) = x (n, k) as the FP8 GEMM sees it under f's activation scheme (a copy for none). The
 * fast version equals the reference bit for bit. */
void sq_cpu_fp8_act(const sq_fp8weight *f, const float *x, float *out, int n, int64_t k);
void sq_cpu_fp8_act_ref(const sq_fp8weight *f, const float *x, float *out, int n, int64_t k);
/* Block-wise FP8 weights (w->f8->block_n > 0, fp8block.c): the activations per token and group of block_k
 * through E4M3, the products summed per K block times both scales (vLLM's W8A8BlockFp8LinearOp); the
 * reference in double, the fast path through the tiled sgemm. act: x as that GEMM sees it (q * s). */
sq_status sq_cpu_fp8b_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_fp8b_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
void sq_cpu_fp8b_act_ref(const sq_fp8weight *f, const float *x, float *out, int n, int64_t k);
void sq_cpu_fp8b_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
void sq_cpu_fp8b_row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst);
/* FP4 weights (w->f4 set, fp4matmul.c): NVFP4 / MXFP4 packed E2M1 codes with group scales; W4A4 activations
 * through NVFP4 per group of 16 first (sq_cpu_fp4_act_ref). */
sq_status sq_cpu_fp4_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_fp4_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
void sq_cpu_fp4_act_ref(const sq_fp4weight *f, const float *x, float *out, int n, int64_t k);
void sq_cpu_fp4_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
void sq_cpu_fp4_row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst);
/* INT8 W8A8 weights (w->f8 set, dtype I8, w8a8matmul.c): activations INT8 dynamic per token, int32 sums,
 * y = s_x * (s_w * acc) + bias as vLLM's CUTLASS scaled_mm; the fast path equals the reference bit for bit.
 * act_ref: x as that GEMM sees it (code * s_x). */
sq_status sq_cpu_w8a8_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_w8a8_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
void sq_cpu_w8a8_act_ref(const sq_wmat *w, const float *x, float *out, int n);
void sq_cpu_w8a8_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
void sq_cpu_w8a8_row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst);
/* Dense weights (F32, F16, BF16; matmul.c, ref.c). */
sq_status sq_cpu_dense_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_dense_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
/* Any weight kind, through the traits table (traits.c). */
sq_status sq_cpu_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
sq_status sq_cpu_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
void sq_cpu_embed(sq_kctx *c, const sq_wmat *w, const int *ids, int n, float *out);
void sq_cpu_embed_ref(sq_kctx *c, const sq_wmat *w, const int *ids, int n, float *out);
void sq_cpu_rmsnorm(sq_kctx *c, const float *x, const float *g, float eps, float *y, int n, int d);
void sq_cpu_rmsnorm_ref(sq_kctx *c, const float *x, const float *g, float eps, float *y, int n, int d);
void sq_cpu_rope(sq_kctx *c, float *x, int n, int stride, int n_heads, int head_dim, const float *cos, const float *sin);
void sq_cpu_rope_ref(sq_kctx *c, float *x, int n, int stride, int n_heads, int head_dim, const float *cos, const float *sin);
sq_status sq_cpu_attention(sq_kctx *c, const sq_attn *a, sq_err *err);
sq_status sq_cpu_attention_ref(sq_kctx *c, const sq_attn *a, sq_err *err);
void sq_cpu_swiglu(sq_kctx *c, const float *gate, const float *up, float *out, int64_t m);
void sq_cpu_swiglu_ref(sq_kctx *c, const float *gate, const float *up, float *out, int64_t m);
void sq_cpu_add(sq_kctx *c, float *y, const float *x, int64_t m);
void sq_cpu_add_ref(sq_kctx *c, float *y, const float *x, int64_t m);

/* ---------------------------------------------------------------- building blocks */

/* Rows r0 .. r0+m-1 of w as floats into dst (m, w->cols), in the column order x is given in. */
typedef void (*sq_rows_fn)(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
/* y (n, rows) = x (n, cols) . W^T + bias for a prefill-sized n: W's rows converted by to_f32 one tile
 * at a time into the thread's scratch (never the whole matrix), then sgemm on the tile; to_f32 NULL
 * means W is F32 and is read in place. Tiles have a fixed number of rows, taken as threads come free,
 * so every sgemm call, and so y, is the same whatever the number of threads. */
sq_status sq_cpu_tiled_gemm(sq_kctx *c, const sq_wmat *w, sq_rows_fn to_f32, const float *bias, const float *x, float *y, int n,
                            sq_err *err);

/* Row r of a weight matrix as float (n = w->cols values). */
void sq_cpu_row_to_f32(const sq_wmat *w, int64_t r, float *dst);
/* Rows r0 .. r0+m-1 as floats, per kind: dense (matmul.c), quantised (qmatmul.c, packed column order), FP8 (fp8matmul.c). */
void sq_cpu_dense_rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
void sq_cpu_qrows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
void sq_cpu_f8rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst);
/* Row r of an FP8 weight as floats, scalar. */
void sq_cpu_f8row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst);

/* ---------------------------------------------------------------- weight kinds (traits.c) */

/* Every kind of weight the kernels read, as ggml's type traits: what sq_cpu_matmul dispatches on. */
typedef enum { SQ_WKIND_F32, SQ_WKIND_F16, SQ_WKIND_BF16, SQ_WKIND_INT4, SQ_WKIND_INT8, SQ_WKIND_FP8_E4M3, SQ_WKIND_FP8_BLOCK, SQ_WKIND_FP4, SQ_WKIND_W8A8, SQ_WKIND_COUNT } sq_wkind;
typedef struct {
    const char *name;
    /* Rows r0 .. r0+m-1 as floats (fast; the quantised kinds in packed column order), for the tiled sgemm. */
    sq_rows_fn rows_to_f32;
    /* Row r as floats, the scalar reference. */
    void (*row_to_f32_ref)(const sq_wmat *w, int64_t r, float *dst);
    /* y = x . W^T + bias: the GEMV/GEMM, and the scalar reference (see backend.h's matmul). */
    sq_status (*matmul)(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
    sq_status (*matmul_ref)(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err);
    /* The activations as the kind's GEMM sees them, out (n, cols), fast and reference (NULL: x as given;
     * the integer GEMV quantises its activations itself, sq_cpu_q8_quantize). */
    void (*act)(const sq_wmat *w, const float *x, float *out, int n);
    void (*act_ref)(const sq_wmat *w, const float *x, float *out, int n);
} sq_wkind_traits;
/* The kind of w, or -1 when the kernels cannot read it (an unsupported dtype). */
int sq_cpu_wkind_of(const sq_wmat *w);
const sq_wkind_traits *sq_cpu_wkind_traits(sq_wkind kind);
/* Dot products of row r of w with x: the fast AVX2 version and the scalar reference. */
float sq_cpu_dot_row(const sq_wmat *w, int64_t r, const float *x);
/* exp(x) for a vector of floats, AVX2 (relative error < 2e-7 over the float range; -inf -> 0). */
void sq_cpu_vexp(float *x, int64_t n);

/* ---------------------------------------------------------------- calibration ops (calib.c) */

/* One version each, OpenBLAS and LAPACK: the reference the other backends are held to. */
bool sq_cpu_supports(sq_op op, sq_qgrid_kind grid);
sq_status sq_cpu_hess_new(sq_hess **out, int64_t k, float *h, sq_err *err);
sq_status sq_cpu_hess_add(sq_hess *hs, const float *x, int64_t t, sq_err *err);
sq_status sq_cpu_hess_finish(sq_hess *hs, sq_err *err);
void sq_cpu_hess_free(sq_hess *hs);
sq_status sq_cpu_factor(const float *h, float *u, int64_t k, double damp, double *damp_used, sq_err *err);
sq_status sq_cpu_gptq(const float *w, const float *h, const sq_hess *hs, int64_t n, int64_t k, const sq_qgrid *g, const sq_gptq_args *a,
                      sq_qout *out, double *damp_used, sq_err *err);
sq_status sq_cpu_rtn(const float *w, int64_t n, int64_t k, const sq_qgrid *g, sq_qout *out, sq_err *err);
sq_status sq_cpu_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads, double *out, sq_err *err);
float sq_cpu_absmax(const float *x, int64_t n, int64_t *bad);
sq_status sq_cpu_quad_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads, double *out, sq_err *err);
sq_status sq_cpu_gram(const float *x, int64_t t, int64_t k, int threads, float *h, sq_err *err); /* awq.c */
sq_status sq_cpu_awq_candidate(const float *w, const float *s, int64_t n, int64_t k, int gs, int bits, int threads, float *out, sq_err *err);
sq_status sq_cpu_awq_clip(float *w, int64_t n, int64_t k, int gs, int bits, const float *x, int64_t t, int threads, float *max_val,
                          sq_err *err); /* awq.c */
#define SQ_CPU_CALIB_OPS                                                                                          \
    .supports = sq_cpu_supports, .hess_new = sq_cpu_hess_new, .hess_add = sq_cpu_hess_add, .hess_finish = sq_cpu_hess_finish, \
    .hess_free = sq_cpu_hess_free, .factor = sq_cpu_factor, .gptq = sq_cpu_gptq, .rtn = sq_cpu_rtn,                 \
    .output_error = sq_cpu_output_error, .absmax = sq_cpu_absmax, .awq_clip = sq_cpu_awq_clip, \
    .quad_error = sq_cpu_quad_error, .gram = sq_cpu_gram, .awq_candidate = sq_cpu_awq_candidate

#endif
