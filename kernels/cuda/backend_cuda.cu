/* backend_cuda.cu: the CUDA backend's table: the device query and the calibration ops it has
 * (Hessian accumulation, damped factorisation, the GPTQ sweep and RTN on every grid kind; one file
 * each beside this one). The runtime ops, the output error and absmax are not on the GPU yet. */
#include "cuda.cuh"

static sq_status cuda_query(char *desc, size_t cap, sq_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: no CUDA GPU found (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess) return sq_fail(err, SQ_ERR_DEVICE, "cudaGetDeviceProperties: %s", cudaGetErrorString(e));
    snprintf(desc, cap, "cuda: %s, %.1f GiB, sm_%d%d, %d SMs", p.name, p.totalGlobalMem / 1073741824.0, p.major, p.minor,
             p.multiProcessorCount);
    return SQ_OK;
}

static bool cuda_supports(sq_op op, sq_qgrid_kind grid) {
    switch (op) {
    case SQ_OP_HESSIAN:
    case SQ_OP_FACTOR: return true;
    case SQ_OP_GPTQ:
    case SQ_OP_RTN: return grid >= 0 && grid < SQ_QGRID_COUNT && grid != SQ_QGRID_INT8_CHANNEL; /* W8A8 solves on the CPU */
    default: return false;
    }
}

static sq_backend_i make_table(void) {
    sq_backend_i b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.query = cuda_query;
    b.supports = cuda_supports;
    b.hess_new = sq_cuda_hess_new;
    b.hess_add = sq_cuda_hess_add;
    b.hess_finish = sq_cuda_hess_finish;
    b.hess_free = sq_cuda_hess_free;
    b.factor = sq_cuda_factor;
    b.gptq = sq_cuda_gptq;
    b.rtn = sq_cuda_rtn;
    return b;
}

static const sq_backend_i cuda_backend = make_table();

extern "C" const sq_backend_i *sq_backend_cuda_impl(void) { return &cuda_backend; }
