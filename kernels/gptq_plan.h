/* gptq_plan.h: what GPTQ of one matrix on a device will use, as pure host arithmetic (no device
 * needed): argument checks against the 32-bit sizes cuBLAS and cuSOLVER take, the lazy-block width and
 * the peak device memory. The CUDA backend's gptq op checks free memory against it. */
#ifndef SQ_GPTQ_PLAN_H
#define SQ_GPTQ_PLAN_H

#include "backend.h"

typedef struct {
    int64_t block_size;  /* lazy-batch width actually used (block_size, or 128) */
    int64_t n_groups;    /* scale groups per row (1 for FP8) */
    double bytes;        /* estimated peak device memory of the call (its own buffers, cuSOLVER workspace
                          * approximated; not the CUDA context) */
} sq_gptq_plan;

/* Checks the arguments (bits 4 or 8 for integer grids, block size 0 .. 1024, K within cuSOLVER's
 * 32-bit limit) and plans the call. h_on_device: H already on the device (no upload buffer). */
sq_status sq_gptq_plan_device(int64_t n, int64_t k, const sq_qgrid *g, int block_size, bool h_on_device, sq_gptq_plan *out /* OUT */,
                              sq_err *err);

#endif
