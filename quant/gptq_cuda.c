/* gptq_cuda.c: the host side of GPTQ on the GPU: argument checks, planning, the RTN fallback, and the
 * device Hessian behind sq_hessian. The numeric work is in kernels/cuda (through sq_gptq_gpu_i). */
#include <limits.h>
#include <string.h>

#include "gptq_cuda.h"
#include "quant_internal.h"

sq_status sq_gptq_cuda_get(const sq_gptq_gpu_i **out, sq_err *err) {
    *out = sq_gptq_gpu_cuda();
    if (!*out) return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: this spotq was built without CUDA (rebuild with make CUDA=1)");
    return SQ_OK;
}

/* cuSOLVER's potrf/potri take 32-bit sizes and index K x K with them. */
enum { MAX_K = 46340 };

sq_status sq_quant_gptq_cuda_plan(int64_t n, int64_t k, const sq_qparams *p, bool h_on_device, sq_gptq_cuda_plan *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    if (n <= 0 || k <= 0) return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: empty matrix [%lld x %lld]", (long long)n, (long long)k);
    if (p->bits != 4 && p->bits != 8) return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: %d bits (use 4 or 8)", p->bits);
    if (p->grid != SQ_GRID_MINMAX) /* kernels/cuda has its own copy of the minmax grid only */
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "GPTQ on the GPU: the minmax grid only (--grid mse runs on the CPU)");
    if (p->block_size < 0 || p->block_size > 1024)
        return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: block size %d (use 1 .. 1024)", p->block_size);
    if (k > MAX_K)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "GPTQ on the GPU: K = %lld is past cuSOLVER's 32-bit limit (%d); use --device cpu",
                       (long long)k, MAX_K);
    if (n > INT_MAX / 2) return sq_fail(err, SQ_ERR_UNSUPPORTED, "GPTQ on the GPU: N = %lld is too large", (long long)n);
    int64_t gs = p->group_size > 0 ? p->group_size : k;
    out->block_size = p->block_size > 0 ? p->block_size : 128;
    out->n_groups = (k + gs - 1) / gs;
    double kk = (double)k * (double)k * 4, nk = (double)n * (double)k, grids = (double)out->n_groups * (double)n * 8;
    double stat = p->static_groups && p->group_size > 0 ? grids : 0, small = 13.0 * (double)k;
    /* The three high points of gptq_run: permuting H (upload, hp), factoring (hp, u, workspace), the blocks. */
    double prep = (h_on_device ? 0 : kk) + kk + 8 * nk + grids + stat + small;
    double factor = 2 * kk + 4.0 * (double)k * 256 + 4 * nk + grids + stat + small;
    double update = kk + 4 * nk + 8.0 * (double)out->block_size * (double)n + nk + grids + stat + small;
    double peak = prep > factor ? prep : factor;
    out->bytes = (peak > update ? peak : update) + 64.0 * 1048576; /* cuSOLVER/cuBLAS slack */
    return SQ_OK;
}

static sq_gptq_gpu_params gpu_params(const sq_qparams *p, int64_t bs) {
    return (sq_gptq_gpu_params){.bits = p->bits, .group_size = p->group_size, .sym = p->sym, .act_order = p->act_order,
                                .static_groups = p->static_groups, .damp = p->damp, .block_size = (int)bs};
}

sq_status sq_quant_gptq_cuda_ex(const float *w, const float *h, bool h_on_device, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out,
                                sq_gptq_gpu_stats *st, sq_err *err) {
    memset(out, 0, sizeof *out);
    sq_gptq_cuda_plan plan;
    const sq_gptq_gpu_i *gpu;
    sq_status s = sq_quant_gptq_cuda_plan(n, k, p, h_on_device, &plan, err);
    if (s || (s = sq_gptq_cuda_get(&gpu, err))) return s;
    size_t free_b = 0, total_b = 0;
    if ((s = gpu->mem_info(&free_b, &total_b, err))) return s;
    if ((double)free_b < plan.bytes)
        return sq_fail(err, SQ_ERR_DEVICE, "GPTQ [%lld x %lld] on the GPU needs about %.2f GiB; %.2f GiB free", (long long)n, (long long)k,
                       plan.bytes / 1073741824.0, free_b / 1073741824.0);
    if ((s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err))) return s;
    sq_gptq_gpu_params gp = gpu_params(p, plan.block_size);
    bool factored = false;
    if ((s = gpu->gptq(w, h, h_on_device, n, k, &gp, out, &factored, st, err))) {
        sq_qmatrix_free(out);
        return s;
    }
    if (!factored) {
        sq_log(SQ_LOG_WARN, "GPTQ: Hessian [%lld x %lld] will not factor even with damping %.3g; using RTN for this matrix",
               (long long)k, (long long)k, p->damp * 1000);
        sq_qmatrix_free(out);
        if ((s = sq_quant_rtn(w, n, k, p, out, err))) return s;
        out->fallback = 1;
    }
    return SQ_OK;
}

sq_status sq_quant_gptq_cuda(const float *w, const float *h, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    return sq_quant_gptq_cuda_ex(w, h, false, n, k, p, out, NULL, err);
}

sq_status sq_quant_rtn_cuda(const float *w, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    sq_gptq_cuda_plan plan;
    const sq_gptq_gpu_i *gpu;
    sq_status s = sq_quant_gptq_cuda_plan(n, k, p, true, &plan, err);
    if (s || (s = sq_gptq_cuda_get(&gpu, err))) return s;
    if ((s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err))) return s;
    sq_gptq_gpu_params gp = gpu_params(p, plan.block_size);
    if ((s = gpu->rtn(w, n, k, &gp, out, err))) sq_qmatrix_free(out);
    return s;
}

/* ---------------------------------------------------------------- the device Hessian behind sq_hessian */

sq_status sq_hessian_init_cuda(sq_hessian *hs, int64_t k, sq_err *err) {
    const sq_gptq_gpu_i *gpu;
    sq_status s = sq_hessian_init(hs, k, err);
    if (s) return s;
    sq_hessian_gpu *dev = NULL;
    if ((s = sq_gptq_cuda_get(&gpu, err)) || (s = gpu->hessian_new(&dev, k, err))) {
        sq_hessian_free(hs);
        return s;
    }
    hs->dev = dev;
    return SQ_OK;
}

void sq_hessian_cuda_add(sq_hessian *hs, const float *x, int64_t t) {
    if (hs->dev_err.code || t <= 0) return;
    if (sq_gptq_gpu_cuda()->hessian_add(hs->dev, x, false, t, &hs->dev_err) == SQ_OK) hs->tokens += t;
}

void sq_hessian_cuda_finish(sq_hessian *hs) {
    if (!hs->dev_err.code) sq_gptq_gpu_cuda()->hessian_finish(hs->dev, hs->h, &hs->dev_err);
}

void sq_hessian_cuda_free(sq_hessian *hs) {
    if (hs->dev) sq_gptq_gpu_cuda()->hessian_free(hs->dev);
    hs->dev = NULL;
}
