/* gptq_gpu.h: the GPU side of GPTQ calibration as a table of functions, compiled by cc and nvcc:
 * Hessian accumulation, damped Cholesky inverse, the column/block update, RTN, and the few device
 * helpers a benchmark needs. kernels/cuda fills the table when built with CUDA=1 (a weak symbol, like
 * the backend's); quant/gptq_cuda.c drives it. Plain types only: kernels know nothing of quant/.
 *
 * Layouts follow quant/: W [N, K] row-major, H [K, K] row-major symmetric, X [T, K] row-major.
 * Host pointers unless a parameter says "on device". The CPU code in quant/gptq.c is the reference. */
#ifndef SQ_GPTQ_GPU_H
#define SQ_GPTQ_GPU_H

#include "../base/base.h"
#include "../formats/qpack.h"

/* quant.h's sq_qparams, restated in the kernels layer (quant/gptq_cuda.c converts). */
typedef struct {
    int bits;            /* 4 or 8 */
    int group_size;      /* > 0, or <= 0 for one group of K */
    bool sym, act_order, static_groups;
    double damp;         /* fraction of mean(diag H) added to the diagonal (raised tenfold up to 3 times) */
    int block_size;      /* lazy-batch width, 1 .. 1024 */
} sq_gptq_gpu_params;

/* What one GPTQ call did, for the benchmark: seconds per stage (CUDA events) and nominal FLOPs. */
typedef struct {
    double t_prep;       /* upload of W (and H), dead columns, permutation, static grids */
    double t_factor;     /* damping, Cholesky, inverse, Cholesky of the inverse (every attempt) */
    double t_update;     /* the column loop in each block plus the trailing GEMMs */
    double t_copy;       /* codes and grids back to the host */
    double flop_factor;  /* (4/3) K^3 per attempt */
    double flop_update;  /* N cnt (cnt - 1) per block in the column loop + 2 N cnt (K - i2) per trailing GEMM */
    int attempts;        /* factorisations tried (1 .. 4) */
} sq_gptq_gpu_stats;

typedef struct sq_hessian_gpu sq_hessian_gpu;

typedef struct {
    /* One line naming the device (model, memory); fails clearly when none is usable. */
    sq_status (*query)(char *desc /* OUT */, size_t cap, sq_err *err);
    sq_status (*mem_info)(size_t *free_bytes /* OUT */, size_t *total_bytes /* OUT */, sq_err *err);

    /* GPTQ of W with H (on device when h_on_device; not modified). out is the caller's, allocated with
     * sq_qmatrix_alloc(n, k, bits, group_size): q, scale, zero, g_idx and damp_used are filled. When H will
     * not factor even with the damping raised three times, *factored is false and out holds nothing
     * useful (the caller falls back to RTN). st may be NULL. */
    sq_status (*gptq)(const float *w, const float *h, bool h_on_device, int64_t n, int64_t k, const sq_gptq_gpu_params *p,
                      sq_qmatrix *out, bool *factored /* OUT */, sq_gptq_gpu_stats *st /* OUT */, sq_err *err);
    /* Round-to-nearest of W into out (allocated as above): bit-identical to quant/grid.c's. */
    sq_status (*rtn)(const float *w, int64_t n, int64_t k, const sq_gptq_gpu_params *p, sq_qmatrix *out, sq_err *err);

    /* Hessian accumulator on the device: H = 2/T sum x x^T as a running mean, like sq_hessian's. */
    sq_status (*hessian_new)(sq_hessian_gpu **out /* OUT */, int64_t k, sq_err *err);
    sq_status (*hessian_add)(sq_hessian_gpu *hs, const float *x, bool x_on_device, int64_t t, sq_err *err);
    /* Fills the lower triangle; copies H into h_host [K, K] unless it is NULL. */
    sq_status (*hessian_finish)(sq_hessian_gpu *hs, float *h_host, sq_err *err);
    const float *(*hessian_data)(const sq_hessian_gpu *hs); /* [K, K] on device */
    void (*hessian_free)(sq_hessian_gpu *hs);               /* NULL is fine */

    /* Benchmark helpers. Device buffers from dev_alloc count towards mem_peak, as do every buffer the
     * functions above allocate (not the CUDA context nor cuBLAS's own workspace). */
    sq_status (*dev_alloc)(void **p /* OUT */, size_t bytes, sq_err *err);
    void (*dev_free)(void *p);
    /* x [rows, cols] on device: uniform in [-amp, amp) times a per-column spread in [0.25, 4), from seed. */
    sq_status (*fill_random)(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, sq_err *err);
    /* Measured rate of a square-ish GEMM (m, n, k), FP32 (cublasSgemm) or TF32 (cublasGemmEx), in TFLOP/s. */
    sq_status (*gemm_rate)(int m, int n, int k, bool tf32, double *tflops /* OUT */, sq_err *err);
    size_t (*mem_peak)(void);
    void (*mem_reset_peak)(void);
} sq_gptq_gpu_i;

/* NULL when spotq was built without CUDA. */
const sq_gptq_gpu_i *sq_gptq_gpu_cuda(void);

#endif
