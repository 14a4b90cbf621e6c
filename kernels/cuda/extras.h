/* extras.h: what the CUDA backend offers beyond the backend interface, for benchmarks (compiled by cc
 * and nvcc): device buffers and their peak, random fills, the measured GEMM rates, a Hessian fed from
 * device memory, and the stage times of the last GPTQ sweep. Found with
 * sq_cuda_symbol("sq_cuda_extras_impl") (kernels/backend.h); NULL without CUDA. */
#ifndef SQ_CUDA_EXTRAS_H
#define SQ_CUDA_EXTRAS_H

#include "../backend.h"

/* Seconds per stage of one GPTQ sweep (CUDA events) and nominal FLOPs. */
typedef struct {
    double t_prep;       /* upload of W (and H), dead columns, permutation, static grids */
    double t_factor;     /* damping, Cholesky, inverse, Cholesky of the inverse (every attempt) */
    double t_update;     /* the column loop in each block plus the trailing GEMMs */
    double t_copy;       /* codes and grids back to the host */
    double flop_factor;  /* (4/3) K^3 per attempt */
    double flop_update;  /* N cnt (cnt - 1) per block in the column loop + 2 N cnt (K - i2) per trailing GEMM */
    int attempts;        /* factorisations tried (1 .. 4) */
} sq_cuda_gptq_stats;

typedef struct {
    sq_status (*mem_info)(size_t *free_bytes /* OUT */, size_t *total_bytes /* OUT */, sq_err *err);
    /* Device buffers from dev_alloc count towards mem_peak, as do every buffer the ops allocate (not the
     * CUDA context nor cuBLAS's own workspace). */
    sq_status (*dev_alloc)(void **p /* OUT */, size_t bytes, sq_err *err);
    void (*dev_free)(void *p);
    /* x [rows, cols] on device: uniform in [-amp, amp) times a per-column spread in [0.25, 4), from seed. */
    sq_status (*fill_random)(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, sq_err *err);
    /* Measured rate of a square-ish GEMM (m, n, k), FP32 (cublasSgemm) or TF32 (cublasGemmEx), in TFLOP/s. */
    sq_status (*gemm_rate)(int m, int n, int k, bool tf32, double *tflops /* OUT */, sq_err *err);
    size_t (*mem_peak)(void);
    void (*mem_reset_peak)(void);
    /* hess_add with x [T, K] in device memory. */
    sq_status (*hess_add_device)(sq_hess *hs, const float *x, int64_t t, sq_err *err);
    /* The stage times of the last gptq op. */
    void (*last_gptq_stats)(sq_cuda_gptq_stats *out /* OUT */);
} sq_cuda_extras_i;

#endif
