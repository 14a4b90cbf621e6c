/* gptq_gpu.c: finds the GPU GPTQ table (kernels/cuda) when spotq was built with it. */
#include "gptq_gpu.h"

#include "backend.h"

/* In libspotq_cuda.so (kernels/cuda), loaded on first use; NULL without it. */
const sq_gptq_gpu_i *sq_gptq_gpu_cuda(void) {
    const sq_gptq_gpu_i *(*impl)(void) = (const sq_gptq_gpu_i *(*)(void))sq_cuda_symbol("sq_gptq_gpu_cuda_impl", NULL, 0);
    return impl ? impl() : NULL;
}
