/* gptq_gpu.c: finds the GPU GPTQ table (kernels/cuda) when spotq was built with it. */
#include "gptq_gpu.h"

/* Defined in kernels/cuda when built with CUDA=1; otherwise this weak reference stays NULL. */
extern const sq_gptq_gpu_i *sq_gptq_gpu_cuda_impl(void) __attribute__((weak));

const sq_gptq_gpu_i *sq_gptq_gpu_cuda(void) {
    return sq_gptq_gpu_cuda_impl ? sq_gptq_gpu_cuda_impl() : NULL;
}
