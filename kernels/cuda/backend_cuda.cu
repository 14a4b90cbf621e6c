/* backend_cuda.cu: the CUDA backend. For now a device query behind the backend interface. */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "../backend.h"
}

/* Every CUDA call is checked: a failure becomes an sq_err naming the call. */
#define SQ_CUDA_CHECK(call, err)                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return sq_fail((err), SQ_ERR_DEVICE, "%s: %s", #call, cudaGetErrorString(e_));         \
    } while (0)

static sq_status cuda_query(char *desc, size_t cap, sq_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: no CUDA GPU found (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    cudaDeviceProp p;
    SQ_CUDA_CHECK(cudaGetDeviceProperties(&p, 0), err);
    snprintf(desc, cap, "cuda: %s, %.1f GiB, sm_%d%d", p.name, p.totalGlobalMem / 1073741824.0, p.major, p.minor);
    return SQ_OK;
}

static const sq_backend_i cuda_backend = {"cuda", cuda_query};

extern "C" const sq_backend_i *sq_backend_cuda_impl(void) { return &cuda_backend; }
