/* hessian.cu: the CUDA backend's Hessian accumulator: H = 2/T sum x x^T as a running mean with cuBLAS
 * syrk, kept on the device until finished (then copied into the caller's host matrix, when given) and
 * read in place there by the gptq op. */
#include "cuda.cuh"

/* The lower triangle (row-major) from the upper one that syrk keeps. */
__global__ static void k_sym_lower_from_upper(float *h, int64_t k) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * k; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / k, j = idx % k;
        if (j < i) h[idx] = h[j * k + i];
    }
}

static cudaError_t launch_sym_lower_from_upper(float *h, int64_t k, cudaStream_t st) {
    k_sym_lower_from_upper<<<grid1(k * k, 256), 256, 0, st>>>(h, k);
    return cudaGetLastError();
}

sq_status sq_cuda_hess_new(sq_hess **out, int64_t k, float *h_host, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    sq_hess *hs = NULL;
    *out = NULL;
    CK(sq_cuda_ctx_get(&c, err));
    hs = (sq_hess *)calloc(1, sizeof *hs);
    if (!hs) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    hs->k = k;
    hs->h_host = h_host;
    CK(sq_cuda_dmalloc(c, (void **)&hs->h, (size_t)(k * k) * sizeof(float), err));
    CK_CUDA(cudaMemsetAsync(hs->h, 0, (size_t)(k * k) * sizeof(float), c->stream));
    *out = hs;
    hs = NULL;
done:
    if (hs) { sq_cuda_dfree(c, hs->h); free(hs); }
    return s;
}

void sq_cuda_hess_free(sq_hess *hs) {
    if (!hs) return;
    cuda_ctx *c = &sq_cuda_g_ctx;
    if (c->ready) {
        cudaStreamSynchronize(c->stream);
        sq_cuda_dfree(c, hs->h);
        sq_cuda_dfree(c, hs->x);
    }
    free(hs);
}

/* Running mean, as the CPU's: H *= n/(n+t); H += (2/(n+t)) X^T X. X [T, K] row-major is K x T
 * column-major, so H = X_cm X_cm^T is syrk with op N; column-major lower is row-major upper. */
static sq_status hess_add(sq_hess *hs, const float *x, bool x_on_device, int64_t t, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    int64_t total = hs->tokens + t;
    float keep, alpha;
    if (t <= 0) return SQ_OK;
    CK(sq_cuda_ctx_get(&c, err));
    if (!x_on_device) {
        if (t > hs->cap) {
            sq_cuda_dfree(c, hs->x);
            hs->x = NULL;
            hs->cap = 0;
            CK(sq_cuda_dmalloc(c, (void **)&hs->x, (size_t)(t * hs->k) * sizeof(float), err));
            hs->cap = t;
        }
        CK_CUDA(cudaMemcpyAsync(hs->x, x, (size_t)(t * hs->k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        x = hs->x;
    }
    keep = (float)((double)hs->tokens / (double)total);
    alpha = (float)(2.0 / (double)total);
    CK_BLAS(cublasSsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)hs->k, (int)t, &alpha, x, (int)hs->k, &keep, hs->h, (int)hs->k));
    hs->tokens = total;
    if (!x_on_device) CK_CUDA(cudaStreamSynchronize(c->stream)); /* the caller may reuse x */
done:
    return s;
}

sq_status sq_cuda_hess_add(sq_hess *hs, const float *x, int64_t t, sq_err *err) { return hess_add(hs, x, false, t, err); }
sq_status sq_cuda_hess_add_device(sq_hess *hs, const float *x, int64_t t, sq_err *err) { return hess_add(hs, x, true, t, err); }

sq_status sq_cuda_hess_finish(sq_hess *hs, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(sq_cuda_ctx_get(&c, err));
    CK_CUDA(launch_sym_lower_from_upper(hs->h, hs->k, c->stream));
    if (hs->h_host)
        CK_CUDA(cudaMemcpyAsync(hs->h_host, hs->h, (size_t)(hs->k * hs->k) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
done:
    return s;
}
