/* gptq_cuda.h: GPTQ and RTN of one matrix, and the Hessian accumulator, on the GPU (kernels/cuda),
 * behind the same contracts as quant.h's CPU functions, which are the reference they are tested against
 * (make test-cuda: >= 99.9% identical codes and output error within 1% for GPTQ, identical RTN).
 * Built without CUDA, or run without a usable GPU, every call fails with SQ_ERR_DEVICE and one line. */
#ifndef SQ_GPTQ_CUDA_H
#define SQ_GPTQ_CUDA_H

#include "../kernels/gptq_gpu.h"
#include "quant.h"

/* What a GPTQ call on the GPU will use: pure host arithmetic, no device needed. */
typedef struct {
    int64_t block_size;  /* lazy-batch width actually used (p->block_size, or 128) */
    int64_t n_groups;    /* scale groups per row */
    double bytes;        /* estimated peak device memory of the call (its own buffers, cuSOLVER workspace
                          * approximated; not the CUDA context) */
} sq_gptq_cuda_plan;

/* Checks the arguments (shapes within the 32-bit sizes cuBLAS and cuSOLVER take, bits 4 or 8, block
 * size 1 .. 1024) and plans the call. h_on_device: H already on the GPU (no upload buffer). */
sq_status sq_quant_gptq_cuda_plan(int64_t n, int64_t k, const sq_qparams *p, bool h_on_device, sq_gptq_cuda_plan *out /* OUT */,
                                  sq_err *err);

/* sq_quant_gptq on the GPU: same arguments, same result contract (damping raised tenfold up to three
 * times, then RTN with out->fallback = 1 and a warning). */
sq_status sq_quant_gptq_cuda(const float *w, const float *h, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out /* OUT */,
                             sq_err *err);
/* The same, with H possibly on the device (an sq_gptq_gpu_i hessian_data pointer) and the stage times
 * (st may be NULL). W is always host memory. */
sq_status sq_quant_gptq_cuda_ex(const float *w, const float *h, bool h_on_device, int64_t n, int64_t k, const sq_qparams *p,
                                sq_qmatrix *out /* OUT */, sq_gptq_gpu_stats *st /* OUT */, sq_err *err);
/* sq_quant_rtn on the GPU: bit-identical codes, scales and zeros. */
sq_status sq_quant_rtn_cuda(const float *w, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out /* OUT */, sq_err *err);

/* An sq_hessian that accumulates on the GPU: sq_hessian_add uploads x and runs syrk there,
 * sq_hessian_finish copies H into hs->h, sq_hessian_free releases both. Device failures inside add and
 * finish (which return nothing) are kept and reported by sq_hessian_check. */
sq_status sq_hessian_init_cuda(sq_hessian *hs, int64_t k, sq_err *err);

/* The GPU table, or SQ_ERR_DEVICE naming why not (built without CUDA). */
sq_status sq_gptq_cuda_get(const sq_gptq_gpu_i **out /* OUT */, sq_err *err);

#endif
