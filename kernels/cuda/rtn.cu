/* rtn.cu: the CUDA backend's round to nearest on every grid kind: one thread per (row, group) for the
 * integer grids (kernels/qmath.h, as kernels/cpu/calib.c's), one per code for FP8; bit-identical to the CPU. */
#include "cuda.cuh"

__global__ static void k_rtn_int(const float *w, int64_t n, int64_t k, int64_t gs, int64_t ng, sq_qgrid_kind kind, int bits, bool sym,
                                 double norm, const float *imp, uint8_t *q, float *scale, int32_t *zero) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n * ng) return;
    int64_t g = idx / n, r = idx % n, c0 = g * gs, c1 = c0 + gs < k ? c0 + gs : k;
    const float *row = w + r * k;
    float sc;
    int32_t z;
    if (kind == SQ_QGRID_INT_MSE) sq_qm_grid_search(row + c0, 1, imp ? imp + c0 : NULL, c1 - c0, bits, sym, norm, &sc, &z);
    else {
        float lo = row[c0], hi = row[c0];
        for (int64_t c = c0; c < c1; c++) { lo = fminf(lo, row[c]); hi = fmaxf(hi, row[c]); }
        sq_qm_grid_params(lo, hi, bits, sym, &sc, &z);
    }
    scale[g * n + r] = sc;
    zero[g * n + r] = z;
    int maxq = (1 << bits) - 1;
    for (int64_t c = c0; c < c1; c++) q[c * n + r] = sq_qm_grid_quant(row[c], sc, z, maxq);
}

__global__ static void k_rtn_fp4(const float *w, int64_t n, int64_t k, const float *scale, int64_t gs, uint8_t *codes) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n * k; idx += (int64_t)gridDim.x * blockDim.x)
        codes[idx] = sq_qm_fp4_code(w[idx], scale[(idx / k) * (k / gs) + (idx % k) / gs]);
}

__global__ static void k_rtn_fp8(const float *w, int64_t n, int64_t k, const float *scale, bool per_channel, bool block, uint8_t *codes) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n * k; idx += (int64_t)gridDim.x * blockDim.x)
        codes[idx] = sq_qm_fp8_code(w[idx], scale[sq_qm_fp8_scale_idx(per_channel, block, idx / k, idx % k, k)]);
}

static cudaError_t launch_rtn_int(const float *w, int64_t n, int64_t k, int64_t gs, int64_t ng, const sq_qgrid *g, const float *imp, uint8_t *q,
                                  float *scale, int32_t *zero, cudaStream_t st) {
    k_rtn_int<<<(unsigned)((n * ng + 127) / 128), 128, 0, st>>>(w, n, k, gs, ng, g->kind, g->bits, g->sym, g->norm, imp, q, scale, zero);
    return cudaGetLastError();
}

static cudaError_t launch_rtn_fp8(const float *w, int64_t n, int64_t k, const float *scale, bool per_channel, bool block, uint8_t *codes,
                                  cudaStream_t st) {
    k_rtn_fp8<<<grid1(n * k, 256), 256, 0, st>>>(w, n, k, scale, per_channel, block, codes);
    return cudaGetLastError();
}

sq_status sq_cuda_rtn(const float *w, int64_t n, int64_t k, const sq_qgrid *g, sq_qout *out, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    bool blk = g->kind == SQ_QGRID_FP8_BLOCK, fp4 = g->kind == SQ_QGRID_FP4, fp8 = g->kind == SQ_QGRID_FP8_TENSOR || g->kind == SQ_QGRID_FP8_CHANNEL || blk || fp4,
         pc = g->kind == SQ_QGRID_FP8_CHANNEL;
    const int64_t B = SQ_QM_FP8_BLOCK;
    int64_t gs = !fp8 && g->group_size > 0 ? g->group_size : k, ng = fp8 ? 1 : out->q ? out->q->n_groups : 0,
            ns = fp4 ? (g->group_size > 0 ? n * (k / g->group_size) : 0) : blk ? ((n + B - 1) / B) * ((k + B - 1) / B) : pc ? n : 1;
    float *d_w = NULL, *d_scale = NULL, *d_imp = NULL;
    int32_t *d_zero = NULL;
    uint8_t *d_q = NULL;
    if (fp8 ? !out->codes || !g->fp8_scale || (fp4 && (g->group_size <= 0 || k % g->group_size)) : !out->q || (g->bits != 4 && g->bits != 8))
        return sq_fail(err, SQ_ERR_ARG, "RTN on the GPU: the %s grid lacks its output or its settings", sq_qgrid_name(g->kind));
    CK(sq_cuda_ctx_get(&c, err));
    CK(sq_cuda_dmalloc(c, (void **)&d_w, (size_t)(n * k) * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_q, (size_t)(n * k), err));
    CK_CUDA(cudaMemcpyAsync(d_w, w, (size_t)(n * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    if (fp8) {
        CK(sq_cuda_dmalloc(c, (void **)&d_scale, (size_t)ns * sizeof(float), err));
        CK_CUDA(cudaMemcpyAsync(d_scale, g->fp8_scale, (size_t)ns * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        if (fp4) {
            k_rtn_fp4<<<grid1(n * k, 256), 256, 0, c->stream>>>(d_w, n, k, d_scale, g->group_size, d_q);
            CK_CUDA(cudaGetLastError());
        } else CK_CUDA(launch_rtn_fp8(d_w, n, k, d_scale, pc, blk, d_q, c->stream));
        CK_CUDA(cudaMemcpyAsync(out->codes, d_q, (size_t)(n * k), cudaMemcpyDeviceToHost, c->stream));
        CK_CUDA(cudaStreamSynchronize(c->stream));
        goto done;
    }
    CK(sq_cuda_dmalloc(c, (void **)&d_scale, (size_t)(ng * n) * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_zero, (size_t)(ng * n) * sizeof(int32_t), err));
    if (g->kind == SQ_QGRID_INT_MSE && g->imp) {
        CK(sq_cuda_dmalloc(c, (void **)&d_imp, (size_t)k * sizeof(float), err));
        CK_CUDA(cudaMemcpyAsync(d_imp, g->imp, (size_t)k * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    }
    CK_CUDA(launch_rtn_int(d_w, n, k, gs, ng, g, d_imp, d_q, d_scale, d_zero, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->q->q, d_q, (size_t)(n * k), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->q->scale, d_scale, (size_t)(ng * n) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->q->zero, d_zero, (size_t)(ng * n) * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    for (int64_t col = 0; col < k; col++) out->q->g_idx[col] = (int32_t)(col / gs);
done:
    if (c) {
        cudaStreamSynchronize(c->stream);
        sq_cuda_dfree(c, d_w);
        sq_cuda_dfree(c, d_q);
        sq_cuda_dfree(c, d_scale);
        sq_cuda_dfree(c, d_zero);
        sq_cuda_dfree(c, d_imp);
    }
    return s;
}
