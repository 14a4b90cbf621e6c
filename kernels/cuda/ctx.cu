/* ctx.cu: the CUDA backend's context (stream, cuBLAS and cuSOLVER handles, device memory tally), its
 * allocator, and the extras a benchmark uses (kernels/cuda/extras.h). */
#include "cuda.cuh"

cuda_ctx sq_cuda_g_ctx;

sq_status sq_cuda_ctx_get(cuda_ctx **out, sq_err *err) {
    sq_status s = SQ_OK;
    *out = NULL;
    if (!sq_cuda_g_ctx.ready) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess || n == 0)
            return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: no CUDA GPU found (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        CK_CUDA(cudaStreamCreateWithFlags(&sq_cuda_g_ctx.stream, cudaStreamNonBlocking));
        CK_BLAS(cublasCreate(&sq_cuda_g_ctx.blas));
        CK_BLAS(cublasSetStream(sq_cuda_g_ctx.blas, sq_cuda_g_ctx.stream));
        CK_BLAS(cublasSetMathMode(sq_cuda_g_ctx.blas, CUBLAS_DEFAULT_MATH));
        CK_SOLV(cusolverDnCreate(&sq_cuda_g_ctx.solver));
        CK_SOLV(cusolverDnSetStream(sq_cuda_g_ctx.solver, sq_cuda_g_ctx.stream));
        sq_cuda_g_ctx.live = new std::vector<std::pair<void *, size_t>>();
        sq_cuda_g_ctx.ready = true;
    }
    *out = &sq_cuda_g_ctx;
done:
    return s;
}

sq_status sq_cuda_dmalloc(cuda_ctx *c, void **p, size_t bytes, sq_err *err) {
    *p = NULL;
    if (bytes == 0) bytes = 1;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return sq_fail(err, SQ_ERR_NOMEM, "cudaMalloc of %.2f GiB: %s", bytes / 1073741824.0, cudaGetErrorString(e));
    }
    c->live->push_back({*p, bytes});
    c->cur += bytes;
    c->peak = std::max(c->peak, c->cur);
    return SQ_OK;
}

void sq_cuda_dfree(cuda_ctx *c, void *p) {
    if (!p) return;
    for (size_t i = 0; i < c->live->size(); i++)
        if ((*c->live)[i].first == p) {
            c->cur -= (*c->live)[i].second;
            (*c->live)[i] = c->live->back();
            c->live->pop_back();
            break;
        }
    cudaFree(p);
}

__device__ static uint64_t dev_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

__global__ static void k_fill_random(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < rows * cols; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = idx % cols;
        float u = (float)(dev_mix(seed ^ (uint64_t)idx * 0x2545F4914F6CDD1Dull) >> 40) * (1.0f / 16777216.0f);
        float spread = exp2f(-2.0f + 4.0f * (float)(dev_mix(seed * 31 + (uint64_t)c) >> 40) * (1.0f / 16777216.0f));
        x[idx] = amp * spread * (2.0f * u - 1.0f);
    }
}

cudaError_t sq_cuda_launch_fill_random(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, cudaStream_t st) {
    k_fill_random<<<grid1(rows * cols, 256), 256, 0, st>>>(x, rows, cols, seed, amp);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ extras */

static sq_status t_mem_info(size_t *free_b, size_t *total_b, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(sq_cuda_ctx_get(&c, err));
    CK_CUDA(cudaMemGetInfo(free_b, total_b));
done:
    return s;
}

static sq_status t_dev_alloc(void **p, size_t bytes, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(sq_cuda_ctx_get(&c, err));
    CK(sq_cuda_dmalloc(c, p, bytes, err));
done:
    return s;
}

static void t_dev_free(void *p) {
    if (sq_cuda_g_ctx.ready) sq_cuda_dfree(&sq_cuda_g_ctx, p);
}

static sq_status t_fill_random(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(sq_cuda_ctx_get(&c, err));
    CK_CUDA(sq_cuda_launch_fill_random(x, rows, cols, seed, amp, c->stream));
done:
    return s;
}

static sq_status t_gemm_rate(int m, int n, int k, bool tf32, double *tflops, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    float *a = NULL, *b = NULL, *d = NULL;
    const float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0 = NULL, e1 = NULL;
    const int reps = 10;
    float ms = 0;
    *tflops = 0;
    CK(sq_cuda_ctx_get(&c, err));
    CK(sq_cuda_dmalloc(c, (void **)&a, (size_t)m * k * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&b, (size_t)k * n * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d, (size_t)m * n * sizeof(float), err));
    CK_CUDA(sq_cuda_launch_fill_random(a, m, k, 1, 1.0f, c->stream));
    CK_CUDA(sq_cuda_launch_fill_random(b, k, n, 2, 1.0f, c->stream));
    CK_CUDA(cudaEventCreate(&e0));
    CK_CUDA(cudaEventCreate(&e1));
    for (int it = -2; it < reps; it++) { /* two warm-up runs */
        if (it == 0) CK_CUDA(cudaEventRecord(e0, c->stream));
        if (tf32)
            CK_BLAS(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_32F, m, b, CUDA_R_32F, k, &beta, d, CUDA_R_32F,
                                 m, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
        else
            CK_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, m, b, k, &beta, d, m));
    }
    CK_CUDA(cudaEventRecord(e1, c->stream));
    CK_CUDA(cudaEventSynchronize(e1));
    CK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    *tflops = 2.0 * m * n * (double)k * reps / (ms / 1000.0) / 1e12;
done:
    if (c) cudaStreamSynchronize(c->stream);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (c) { sq_cuda_dfree(c, a); sq_cuda_dfree(c, b); sq_cuda_dfree(c, d); }
    return s;
}

static size_t t_mem_peak(void) { return sq_cuda_g_ctx.peak; }
static void t_mem_reset_peak(void) { sq_cuda_g_ctx.peak = sq_cuda_g_ctx.cur; }

static void t_last_gptq_stats(sq_cuda_gptq_stats *out) { *out = sq_cuda_g_ctx.last; }

static const sq_cuda_extras_i extras_table = {
    t_mem_info, t_dev_alloc, t_dev_free, t_fill_random, t_gemm_rate, t_mem_peak, t_mem_reset_peak, sq_cuda_hess_add_device, t_last_gptq_stats,
};

extern "C" const sq_cuda_extras_i *sq_cuda_extras_impl(void) { return &extras_table; }
