/* cuda.cuh: what the CUDA backend's files share: the checking macros, the process's context (stream,
 * cuBLAS and cuSOLVER handles, the tally of device memory) and its allocator. Three layers in every
 * file: __global__ kernels (k_*), launchers taking raw device pointers and a stream (launch_*), and ops
 * taking the context (the backend table's functions, kernels/backend.h). */
#ifndef SQ_CUDA_CUH
#define SQ_CUDA_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "../backend.h"
#include "../gptq_plan.h"
#include "../qmath.h"
#include "extras.h"
}

/* ------------------------------------------------------------------ checking macros
 * Each wraps one CUDA, cuBLAS or cuSOLVER call: on failure it fills err naming the call, sets s and
 * jumps to the function's `done:` label, where everything allocated is released. */
#define CK_CUDA(call)                                                                                       \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: %s", #call, cudaGetErrorString(e_)); goto done; } \
    } while (0)
#define CK_BLAS(call)                                                                                       \
    do {                                                                                                    \
        cublasStatus_t e_ = (call);                                                                         \
        if (e_ != CUBLAS_STATUS_SUCCESS) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: cuBLAS status %d", #call, (int)e_); goto done; } \
    } while (0)
#define CK_SOLV(call)                                                                                       \
    do {                                                                                                    \
        cusolverStatus_t e_ = (call);                                                                       \
        if (e_ != CUSOLVER_STATUS_SUCCESS) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: cuSOLVER status %d", #call, (int)e_); goto done; } \
    } while (0)
/* A status-returning op: propagate its failure the same way. */
#define CK(call)                                                                                            \
    do {                                                                                                    \
        if ((s = (call)) != SQ_OK) goto done;                                                               \
    } while (0)

/* ------------------------------------------------------------------ context
 * One per process, made on first use. Not thread-safe, like sq_kctx. */
typedef struct {
    bool ready;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    size_t cur, peak;
    std::vector<std::pair<void *, size_t>> *live;
    sq_cuda_gptq_stats last;     /* the last GPTQ sweep's stage times */
} cuda_ctx;

extern cuda_ctx sq_cuda_g_ctx;
sq_status sq_cuda_ctx_get(cuda_ctx **out, sq_err *err);
sq_status sq_cuda_dmalloc(cuda_ctx *c, void **p, size_t bytes, sq_err *err);
void sq_cuda_dfree(cuda_ctx *c, void *p); /* NULL is fine */

static inline unsigned grid1(int64_t total, int threads) {
    int64_t b = (total + threads - 1) / threads;
    return (unsigned)std::min<int64_t>(std::max<int64_t>(b, 1), 65535 * 16);
}

/* The CUDA ops (one file each), as the backend table in backend_cuda.cu takes them. */
struct sq_hess {
    int64_t k, tokens;
    float *h;            /* [K, K] on device; syrk keeps the row-major upper triangle (column-major lower) */
    float *h_host;       /* the caller's copy, filled when finished (may be NULL) */
    float *x;            /* [cap, K] staging for host activations */
    int64_t cap;
};
sq_status sq_cuda_hess_new(sq_hess **out, int64_t k, float *h, sq_err *err);
sq_status sq_cuda_hess_add(sq_hess *hs, const float *x, int64_t t, sq_err *err);
sq_status sq_cuda_hess_add_device(sq_hess *hs, const float *x, int64_t t, sq_err *err);
sq_status sq_cuda_hess_finish(sq_hess *hs, sq_err *err);
void sq_cuda_hess_free(sq_hess *hs);
sq_status sq_cuda_factor(const float *h, float *u, int64_t k, double damp, double *damp_used, sq_err *err);
sq_status sq_cuda_gptq(const float *w, const float *h, const sq_hess *hs, int64_t n, int64_t k, const sq_qgrid *g, const sq_gptq_args *a,
                       sq_qout *out, double *damp_used, sq_err *err);
sq_status sq_cuda_rtn(const float *w, int64_t n, int64_t k, const sq_qgrid *g, sq_qout *out, sq_err *err);
/* The damped factorisation on device: u = upper factor of (hp + d mean I)^-1, d from damp tenfold up
 * to three times; *damp_used -1 when none factors. hp and u [K, K] on device. */
sq_status sq_cuda_damped_factor(cuda_ctx *c, const float *hp, float *u, int64_t k, double damp, double mean, double *damp_used,
                                int *attempts, sq_err *err);
/* x [rows, cols] on device, random (see extras.h). */
cudaError_t sq_cuda_launch_fill_random(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, cudaStream_t st);

#endif
