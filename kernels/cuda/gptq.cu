/* gptq.cu: the CUDA backend's GPTQ sweep and damped factorisation (damped Cholesky inverse with
 * cuSOLVER, the block update as one kernel plus a cuBLAS GEMM), following kernels/cpu/calib.c step for
 * step on every grid kind: integer minmax and mse (kernels/qmath.h, the same expressions as the CPU's)
 * and FP8 E4M3 per tensor, per channel or per 128x128 block.
 *
 * Matching the CPU reference bit for bit where it can be matched: the grid (fp16-rounded scales, zero >=
 * 1 for asym) and the codes use IEEE division and no contraction like the C code (compiled in ISO mode;
 * nvcc with -fmad=false); the in-block update uses fmaf like OpenBLAS's saxpy. What differs is the
 * summation order inside cuBLAS/cuSOLVER: the FP32 GEMMs and factorisations, hence the 99.9%-of-codes /
 * 1%-of-output-error tolerance tests/unit/test_backend_ops.c holds this op to. No TF32 is used here (the
 * handle keeps CUBLAS_DEFAULT_MATH, which never picks TF32 for FP32 GEMMs). */
#include "cuda.cuh"

/* ------------------------------------------------------------------ kernels */

__device__ static int64_t dev_min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* The factor: the upper triangle (row-major) from the lower one potri leaves. */
__global__ static void k_sym_upper_from_lower(float *u, int64_t k) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * k; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / k, j = idx % k;
        if (j > i) u[idx] = u[j * k + i];
    }
}

/* Dead inputs: dead[c] = H[c,c] == 0; diag[c] the diagonal as GPTQ sees it (1 where dead); raw[c] H[c,c]. */
__global__ static void k_dead(const float *h, int64_t k, uint8_t *dead, float *diag, float *raw) {
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c >= k) return;
    float d = h[c * k + c];
    dead[c] = d == 0;
    diag[c] = d == 0 ? 1.0f : d;
    raw[c] = d;
}

/* hp [K, K] = H permuted, with the dead fix on the diagonal. */
__global__ static void k_perm_h(const float *h, const int64_t *perm, int64_t k, float *hp) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * k; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / k, j = idx % k, pi = perm[i], pj = perm[j];
        float v = h[pi * k + pj];
        hp[idx] = (pi == pj && v == 0) ? 1.0f : v;
    }
}

/* wt [K, N] = W [N, K] transposed, dead columns zeroed; 32x32 tiles through shared memory. */
__global__ static void k_transpose_dead(const float *w, const uint8_t *dead, int64_t n, int64_t k, float *wt) {
    __shared__ float tile[32][33];
    int64_t c0 = (int64_t)blockIdx.x * 32, r0 = (int64_t)blockIdx.y * 32;
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
        int64_t r = r0 + y, c = c0 + threadIdx.x;
        if (r < n && c < k) tile[y][threadIdx.x] = dead[c] ? 0.0f : w[r * k + c];
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
        int64_t c = c0 + y, r = r0 + threadIdx.x;
        if (r < n && c < k) wt[c * n + r] = tile[threadIdx.x][y];
    }
}

/* dst [K, N] row c = src row perm[c]. */
__global__ static void k_perm_rows(const float *src, const int64_t *perm, int64_t n, int64_t k, float *dst) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * n; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = idx / n, r = idx % n;
        dst[idx] = src[perm[c] * n + r];
    }
}

/* The integer grid of rows [c0, c1) of wt ([K, N]) for row r, as calib.c's group_grid: mse weighs
 * column c by imp[c]. */
__device__ static void dev_group_grid(const float *wt, int64_t n, int64_t r, int64_t c0, int64_t c1, sq_qgrid_kind kind, int bits, bool sym,
                                      double norm, const float *imp, float *scale, int32_t *zero) {
    if (kind == SQ_QGRID_INT_MSE) {
        sq_qm_grid_search(wt + c0 * n + r, n, imp + c0, c1 - c0, bits, sym, norm, scale, zero);
        return;
    }
    float lo = wt[c0 * n + r], hi = lo;
    for (int64_t c = c0 + 1; c < c1; c++) { lo = fminf(lo, wt[c * n + r]); hi = fmaxf(hi, wt[c * n + r]); }
    sq_qm_grid_params(lo, hi, bits, sym, scale, zero);
}

/* Grids of rows [g gs, (g + 1) gs) of wt for every group g (blockIdx.y) into scale/zero [G, N]. */
__global__ static void k_group_grids(const float *wt, int64_t n, int64_t k, int64_t gs, sq_qgrid_kind kind, int bits, bool sym, double norm,
                                     const float *imp, float *scale, int32_t *zero) {
    int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, g = blockIdx.y;
    if (r >= n) return;
    int64_t c0 = g * gs, c1 = dev_min64(c0 + gs, k);
    dev_group_grid(wt, n, r, c0, c1, kind, bits, sym, norm, imp, &scale[g * n + r], &zero[g * n + r]);
}

__global__ static void k_add_diag(float *u, int64_t k, float v) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < k) u[i * k + i] += v;
}

/* Any non-finite entry in the upper triangle (row-major) sets *bad. */
__global__ static void k_check_upper(const float *u, int64_t k, int *bad) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * k; idx += (int64_t)gridDim.x * blockDim.x)
        if (idx % k >= idx / k && !isfinite(u[idx])) *bad = 1;
}

/* The grid of one sweep, as the block kernel reads it. */
typedef struct {
    sq_qgrid_kind kind;
    int bits;
    bool sym, stat;
    int64_t gs;              /* integer: columns per group; 0: per channel */
    double norm;
    const float *impp;       /* mse: diag(H) in the sweep's order [K] */
    const float *sscale;     /* static groups [G, N] */
    const int32_t *szero;
    float *scale;            /* integer [G, N] */
    int32_t *zero;
    uint8_t *q;              /* integer: codes [K, N] at perm[col] */
    const float *fscale;     /* FP8: (N) or (1); FP4: (N, K / fgs) */
    int64_t fgs;             /* FP4: columns per scale */
    uint8_t *codes;          /* FP8: codes [N, K] */
} dev_grid;

/* One lazy block [i1, i1 + cnt) of GPTQ: one thread per output row r, the column loop in order.
 * w1 [cnt, N] the block's working copy, e1 [cnt, N] its scaled errors. Grids as the reference times
 * them: per channel (gs 0) fixed, static ones from sscale at perm[col] / gs, otherwise recomputed from
 * wt (not the block copy) at the start of each group; FP8's scales fixed. */
__global__ static void k_gptq_block(const float *__restrict__ wt, float *__restrict__ w1, float *__restrict__ e1,
                                    const float *__restrict__ u, int64_t n, int64_t k, int64_t i1, int cnt, const int64_t *__restrict__ perm,
                                    dev_grid g) {
    int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= n) return;
    bool blk = g.kind == SQ_QGRID_FP8_BLOCK, fp4 = g.kind == SQ_QGRID_FP4, fp8 = g.kind == SQ_QGRID_FP8_TENSOR || g.kind == SQ_QGRID_FP8_CHANNEL || blk || fp4;
    int maxq = (1 << g.bits) - 1;
    float s = 0;
    int32_t z = 0;
    if (fp8 && !blk && !fp4) s = g.fscale[g.kind == SQ_QGRID_FP8_CHANNEL ? r : 0];
    else if (g.gs <= 0) { s = g.scale[r]; z = g.zero[r]; }
    else if (!g.stat) { int64_t q = i1 / g.gs; s = g.scale[q * n + r]; z = g.zero[q * n + r]; }
    for (int i = 0; i < cnt; i++) {
        int64_t col = i1 + i;
        if (!fp8 && g.gs > 0) {
            if (g.stat) {
                int64_t q = perm[col] / g.gs;
                s = g.sscale[q * n + r];
                z = g.szero[q * n + r];
            } else if (col % g.gs == 0) {
                int64_t q = col / g.gs;
                dev_group_grid(wt, n, r, col, dev_min64(col + g.gs, k), g.kind, g.bits, g.sym, g.norm, g.impp, &s, &z);
                g.scale[q * n + r] = s;
                g.zero[q * n + r] = z;
            }
        }
        const float *urow = u + col * k + i1;
        float d = urow[i], w = w1[i * n + r], dq;
        if (fp4) { /* the source column's group scale, fixed */
            s = g.fscale[r * (k / g.fgs) + perm[col] / g.fgs];
            uint8_t c = sq_qm_fp4_code(w, s);
            g.codes[r * k + perm[col]] = c;
            dq = __fmul_rn(sq_qm_e2m1_decode(c), s);
        } else if (fp8) {
            if (blk) s = g.fscale[sq_qm_fp8_scale_idx(false, true, r, perm[col], k)]; /* the source column's block, fixed */
            uint8_t c = sq_qm_fp8_code(w, s);
            g.codes[r * k + perm[col]] = c;
            dq = __fmul_rn(sq_qm_e4m3_decode(c), s);
        } else {
            uint8_t qq = sq_qm_grid_quant(w, s, z, maxq);
            g.q[perm[col] * n + r] = qq;
            dq = __fmul_rn(s, (float)((int32_t)qq - z));
        }
        float e = __fdiv_rn(__fsub_rn(w, dq), d);
        e1[i * n + r] = e;
#pragma unroll 8
        for (int j = i + 1; j < cnt; j++) w1[j * n + r] = fmaf(-urow[j], e, w1[j * n + r]);
    }
}

/* ------------------------------------------------------------------ launchers (raw pointers + stream) */

static cudaError_t launch_sym_upper_from_lower(float *u, int64_t k, cudaStream_t st) {
    k_sym_upper_from_lower<<<grid1(k * k, 256), 256, 0, st>>>(u, k);
    return cudaGetLastError();
}

static cudaError_t launch_dead(const float *h, int64_t k, uint8_t *dead, float *diag, float *raw, cudaStream_t st) {
    k_dead<<<grid1(k, 256), 256, 0, st>>>(h, k, dead, diag, raw);
    return cudaGetLastError();
}

static cudaError_t launch_perm_h(const float *h, const int64_t *perm, int64_t k, float *hp, cudaStream_t st) {
    k_perm_h<<<grid1(k * k, 256), 256, 0, st>>>(h, perm, k, hp);
    return cudaGetLastError();
}

static cudaError_t launch_transpose_dead(const float *w, const uint8_t *dead, int64_t n, int64_t k, float *wt, cudaStream_t st) {
    dim3 grid((unsigned)((k + 31) / 32), (unsigned)((n + 31) / 32)), block(32, 8);
    k_transpose_dead<<<grid, block, 0, st>>>(w, dead, n, k, wt);
    return cudaGetLastError();
}

static cudaError_t launch_perm_rows(const float *src, const int64_t *perm, int64_t n, int64_t k, float *dst, cudaStream_t st) {
    k_perm_rows<<<grid1(n * k, 256), 256, 0, st>>>(src, perm, n, k, dst);
    return cudaGetLastError();
}

static cudaError_t launch_group_grids(const float *wt, int64_t n, int64_t k, int64_t gs, int64_t ng, const sq_qgrid *g, const float *imp,
                                      float *scale, int32_t *zero, cudaStream_t st) {
    for (int64_t g0 = 0; g0 < ng; g0 += 65535) { /* gridDim.y is at most 65535 */
        int64_t cnt = std::min<int64_t>(ng - g0, 65535);
        dim3 grid((unsigned)((n + 127) / 128), (unsigned)cnt);
        k_group_grids<<<grid, 128, 0, st>>>(wt + g0 * gs * n, n, k - g0 * gs, gs, g->kind, g->bits, g->sym, g->norm, imp ? imp + g0 * gs : NULL,
                                            scale + g0 * n, zero + g0 * n);
    }
    return cudaGetLastError();
}

static cudaError_t launch_add_diag(float *u, int64_t k, float v, cudaStream_t st) {
    k_add_diag<<<grid1(k, 256), 256, 0, st>>>(u, k, v);
    return cudaGetLastError();
}

static cudaError_t launch_check_upper(const float *u, int64_t k, int *bad, cudaStream_t st) {
    k_check_upper<<<grid1(k * k, 256), 256, 0, st>>>(u, k, bad);
    return cudaGetLastError();
}

static cudaError_t launch_gptq_block(const float *wt, float *w1, float *e1, const float *u, int64_t n, int64_t k, int64_t i1, int cnt,
                                     const int64_t *perm, const dev_grid *g, cudaStream_t st) {
    /* 64 threads a block: a 4096-row matrix still spreads over 64 SMs (each thread's column loop is serial). */
    k_gptq_block<<<(unsigned)((n + 63) / 64), 64, 0, st>>>(wt, w1, e1, u, n, k, i1, cnt, perm, *g);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ ops (context) */

static double ev_seconds(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    return cudaEventElapsedTime(&ms, a, b) == cudaSuccess ? ms / 1000.0 : 0.0;
}

/* U = upper (row-major) Cholesky factor of (hp + damp * mean I)^-1, as calib.c's inverse_factor:
 * row-major 'L' is column-major 'U' for cuSOLVER. *ok false when it will not factor. */
static sq_status inverse_factor(cuda_ctx *c, const float *hp, float *u, int64_t k, double damp_frac, double mean, float *work, int lwork,
                                int *d_info, int *ok, sq_err *err) {
    sq_status s = SQ_OK;
    int info = 0, bad = 0;
    int kk = (int)k;
    *ok = 0;
    CK_CUDA(cudaMemcpyAsync(u, hp, (size_t)(k * k) * sizeof *u, cudaMemcpyDeviceToDevice, c->stream));
    CK_CUDA(launch_add_diag(u, k, (float)(damp_frac * mean), c->stream));
    CK_SOLV(cusolverDnSpotrf(c->solver, CUBLAS_FILL_MODE_UPPER, kk, u, kk, work, lwork, d_info));
    CK_CUDA(cudaMemcpyAsync(&info, d_info, sizeof info, cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    if (info != 0) goto done;
    CK_SOLV(cusolverDnSpotri(c->solver, CUBLAS_FILL_MODE_UPPER, kk, u, kk, work, lwork, d_info));
    CK_CUDA(cudaMemcpyAsync(&info, d_info, sizeof info, cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    if (info != 0) goto done;
    CK_CUDA(launch_sym_upper_from_lower(u, k, c->stream));
    CK_SOLV(cusolverDnSpotrf(c->solver, CUBLAS_FILL_MODE_LOWER, kk, u, kk, work, lwork, d_info));
    CK_CUDA(cudaMemcpyAsync(&info, d_info, sizeof info, cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemsetAsync(d_info, 0, sizeof(int), c->stream));
    CK_CUDA(launch_check_upper(u, k, d_info, c->stream));
    CK_CUDA(cudaMemcpyAsync(&bad, d_info, sizeof bad, cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    *ok = info == 0 && bad == 0;
done:
    return s;
}

sq_status sq_cuda_damped_factor(cuda_ctx *c, const float *hp, float *u, int64_t k, double damp, double mean, double *damp_used, int *attempts,
                                sq_err *err) {
    sq_status s = SQ_OK;
    float *work = NULL;
    int *d_info = NULL;
    int lwork = 0, l1 = 0, l2 = 0, l3 = 0, ok = 0;
    *damp_used = -1;
    *attempts = 0;
    CK(sq_cuda_dmalloc(c, (void **)&d_info, sizeof(int), err));
    CK_SOLV(cusolverDnSpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_UPPER, (int)k, u, (int)k, &l1));
    CK_SOLV(cusolverDnSpotri_bufferSize(c->solver, CUBLAS_FILL_MODE_UPPER, (int)k, u, (int)k, &l2));
    CK_SOLV(cusolverDnSpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, (int)k, u, (int)k, &l3));
    lwork = std::max(l1, std::max(l2, l3));
    CK(sq_cuda_dmalloc(c, (void **)&work, (size_t)lwork * sizeof(float), err));
    for (; *attempts < 4 && !ok; (*attempts)++, damp *= 10) CK(inverse_factor(c, hp, u, k, damp, mean, work, lwork, d_info, &ok, err));
    if (ok) *damp_used = damp / 10;
done:
    sq_cuda_dfree(c, work);
    sq_cuda_dfree(c, d_info);
    return s;
}

sq_status sq_cuda_factor(const float *h, float *u, int64_t k, double damp, double *damp_used, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    float *d_h = NULL, *d_u = NULL;
    double mean = 0;
    int attempts = 0;
    *damp_used = -1;
    CK(sq_cuda_ctx_get(&c, err));
    for (int64_t i = 0; i < k; i++) mean += h[i * k + i];
    mean /= (double)k;
    CK(sq_cuda_dmalloc(c, (void **)&d_h, (size_t)(k * k) * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_u, (size_t)(k * k) * sizeof(float), err));
    CK_CUDA(cudaMemcpyAsync(d_h, h, (size_t)(k * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CK(sq_cuda_damped_factor(c, d_h, d_u, k, damp, mean, damp_used, &attempts, err));
    if (*damp_used >= 0) CK_CUDA(cudaMemcpyAsync(u, d_u, (size_t)(k * k) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
done:
    if (c) {
        cudaStreamSynchronize(c->stream);
        sq_cuda_dfree(c, d_h);
        sq_cuda_dfree(c, d_u);
    }
    return s;
}

typedef struct { float diag; int64_t idx; } diag_item;

sq_status sq_cuda_gptq(const float *w, const float *h, const sq_hess *hs, int64_t n, int64_t k, const sq_qgrid *g, const sq_gptq_args *a,
                       sq_qout *out, double *damp_used, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    bool fp8 = g->kind == SQ_QGRID_FP8_TENSOR || g->kind == SQ_QGRID_FP8_CHANNEL || g->kind == SQ_QGRID_FP8_BLOCK || g->kind == SQ_QGRID_FP4, mse = g->kind == SQ_QGRID_INT_MSE;
    bool h_on_device = hs && hs->k == k;
    int64_t gs = !fp8 && g->group_size > 0 ? g->group_size : 0, bs = 0, ng = 1;
    bool stat = !fp8 && g->static_groups && gs > 0;
    float *d_h = NULL, *d_hp = NULL, *d_u = NULL, *d_w = NULL, *d_wt = NULL, *d_w1 = NULL, *d_e1 = NULL, *d_diag = NULL, *d_raw = NULL;
    float *d_scale = NULL, *d_sscale = NULL, *d_imp = NULL, *d_impp = NULL, *d_fscale = NULL;
    int32_t *d_zero = NULL, *d_szero = NULL;
    uint8_t *d_dead = NULL, *d_q = NULL;
    int64_t *d_perm = NULL;
    int attempts = 0;
    const float *hsrc = h;
    std::vector<float> diag((size_t)k), raw((size_t)k), impp;
    std::vector<diag_item> items((size_t)k);
    std::vector<int64_t> perm((size_t)k);
    double mean = 0, flop_update = 0, damp = -1;
    bool nan_diag = false, factored = false;
    size_t free_b = 0, total_b = 0;
    sq_gptq_plan plan;
    sq_cuda_gptq_stats st;
    cudaEvent_t ev[5] = {0, 0, 0, 0, 0};
    dev_grid dg;
    memset(&st, 0, sizeof st);
    memset(&dg, 0, sizeof dg);
    *damp_used = -1;
    CK(sq_gptq_plan_device(n, k, g, a->block_size, h_on_device, &plan, err));
    if (fp8 ? !out->codes || !g->fp8_scale : !out->q) { s = sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: the %s grid lacks its output", sq_qgrid_name(g->kind)); goto done; }
    if (!h_on_device && !h) { s = sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: no Hessian given"); goto done; }
    bs = plan.block_size;
    ng = fp8 ? 1 : out->q->n_groups;
    CK(sq_cuda_ctx_get(&c, err));
    CK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    if ((double)free_b < plan.bytes) {
        s = sq_fail(err, SQ_ERR_DEVICE, "GPTQ [%lld x %lld] on the GPU needs about %.2f GiB; %.2f GiB free", (long long)n, (long long)k,
                    plan.bytes / 1073741824.0, free_b / 1073741824.0);
        goto done;
    }
    for (int i = 0; i < 5; i++) CK_CUDA(cudaEventCreate(&ev[i]));
    CK_CUDA(cudaEventRecord(ev[0], c->stream));

    /* Upload, dead columns, act-order permutation (sorted on the host, exactly as the CPU does). */
    if (h_on_device) hsrc = hs->h;
    else {
        CK(sq_cuda_dmalloc(c, (void **)&d_h, (size_t)(k * k) * sizeof(float), err));
        CK_CUDA(cudaMemcpyAsync(d_h, h, (size_t)(k * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        hsrc = d_h;
    }
    CK(sq_cuda_dmalloc(c, (void **)&d_dead, (size_t)k, err));
    CK(sq_cuda_dmalloc(c, (void **)&d_diag, (size_t)k * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_raw, (size_t)k * sizeof(float), err));
    CK_CUDA(launch_dead(hsrc, k, d_dead, d_diag, d_raw, c->stream));
    CK_CUDA(cudaMemcpyAsync(diag.data(), d_diag, (size_t)k * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(raw.data(), d_raw, (size_t)k * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK(sq_cuda_dmalloc(c, (void **)&d_w, (size_t)(n * k) * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_wt, (size_t)(n * k) * sizeof(float), err));
    CK_CUDA(cudaMemcpyAsync(d_wt, w, (size_t)(n * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CK_CUDA(launch_transpose_dead(d_wt, d_dead, n, k, d_w, c->stream)); /* d_w: [K, N], not yet permuted */
    if (fp8) {
        const int64_t B = SQ_QM_FP8_BLOCK;
        int64_t ns = g->kind == SQ_QGRID_FP4 ? (g->group_size > 0 ? n * (k / g->group_size) : 0) : g->kind == SQ_QGRID_FP8_BLOCK ? ((n + B - 1) / B) * ((k + B - 1) / B) : g->kind == SQ_QGRID_FP8_CHANNEL ? n : 1;
        CK(sq_cuda_dmalloc(c, (void **)&d_fscale, (size_t)ns * sizeof(float), err));
        CK_CUDA(cudaMemcpyAsync(d_fscale, g->fp8_scale, (size_t)ns * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    } else {
        CK(sq_cuda_dmalloc(c, (void **)&d_scale, (size_t)(ng * n) * sizeof(float), err));
        CK(sq_cuda_dmalloc(c, (void **)&d_zero, (size_t)(ng * n) * sizeof(int32_t), err));
        if (mse) d_imp = d_raw; /* the importances in source order: diag(H) */
        /* Per channel: one grid from the whole, not yet updated (nor permuted) W. Static groups: every
         * grid from the original W, before any update or permutation. */
        if (gs <= 0) CK_CUDA(launch_group_grids(d_w, n, k, k, 1, g, d_imp, d_scale, d_zero, c->stream));
        if (stat) {
            CK(sq_cuda_dmalloc(c, (void **)&d_sscale, (size_t)(ng * n) * sizeof(float), err));
            CK(sq_cuda_dmalloc(c, (void **)&d_szero, (size_t)(ng * n) * sizeof(int32_t), err));
            CK_CUDA(launch_group_grids(d_w, n, k, gs, ng, g, d_imp, d_sscale, d_szero, c->stream));
        }
    }
    CK_CUDA(cudaStreamSynchronize(c->stream));
    for (int64_t i = 0; i < k; i++) {
        items[(size_t)i] = {diag[(size_t)i], i};
        nan_diag |= diag[(size_t)i] != diag[(size_t)i];
    }
    /* (A NaN diagonal will not factor whatever the order: skip the sort rather than feed it NaN.) */
    if (a->act_order && !nan_diag)
        std::stable_sort(items.begin(), items.end(), [](const diag_item &x, const diag_item &y) { return x.diag > y.diag; });
    for (int64_t i = 0; i < k; i++) perm[(size_t)i] = items[(size_t)i].idx;
    for (int64_t i = 0; i < k; i++) mean += diag[(size_t)perm[(size_t)i]];
    mean /= (double)k;
    CK(sq_cuda_dmalloc(c, (void **)&d_perm, (size_t)k * sizeof(int64_t), err));
    CK_CUDA(cudaMemcpyAsync(d_perm, perm.data(), (size_t)k * sizeof(int64_t), cudaMemcpyHostToDevice, c->stream));
    if (mse) { /* the importances in the sweep's order */
        impp.resize((size_t)k);
        for (int64_t i = 0; i < k; i++) impp[(size_t)i] = raw[(size_t)perm[(size_t)i]];
        CK(sq_cuda_dmalloc(c, (void **)&d_impp, (size_t)k * sizeof(float), err));
        CK_CUDA(cudaMemcpyAsync(d_impp, impp.data(), (size_t)k * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    }
    CK_CUDA(launch_perm_rows(d_w, d_perm, n, k, d_wt, c->stream)); /* d_wt: [K, N] permuted */
    CK(sq_cuda_dmalloc(c, (void **)&d_hp, (size_t)(k * k) * sizeof(float), err));
    CK_CUDA(launch_perm_h(hsrc, d_perm, k, d_hp, c->stream));
    if (d_h) { sq_cuda_dfree(c, d_h); d_h = NULL; }
    sq_cuda_dfree(c, d_w);
    d_w = NULL;
    CK_CUDA(cudaEventRecord(ev[1], c->stream));

    /* Damping, Cholesky, inverse, Cholesky of the inverse; more damping when it will not factor. */
    CK(sq_cuda_dmalloc(c, (void **)&d_u, (size_t)(k * k) * sizeof(float), err));
    CK(sq_cuda_damped_factor(c, d_hp, d_u, k, a->damp, mean, &damp, &attempts, err));
    sq_cuda_dfree(c, d_hp);
    d_hp = NULL;
    CK_CUDA(cudaEventRecord(ev[2], c->stream));
    if (damp < 0) goto done;

    /* The blocks: the column loop (one kernel), then the trailing update wt[i2:] -= U[i1:i2, i2:]^T E1 as
     * one GEMM. Column-major view: wt is N x K (ld N), E1 N x cnt (ld N), U's block at u + i1 k + i2. */
    CK(sq_cuda_dmalloc(c, (void **)&d_w1, (size_t)(bs * n) * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_e1, (size_t)(bs * n) * sizeof(float), err));
    CK(sq_cuda_dmalloc(c, (void **)&d_q, (size_t)(n * k), err));
    dg.kind = g->kind;
    dg.fgs = g->kind == SQ_QGRID_FP4 ? g->group_size : 0;
    dg.bits = fp8 ? 8 : g->bits;
    dg.sym = g->sym;
    dg.stat = stat;
    dg.gs = gs;
    dg.norm = g->norm;
    dg.impp = d_impp;
    dg.sscale = d_sscale;
    dg.szero = d_szero;
    dg.scale = d_scale;
    dg.zero = d_zero;
    dg.q = d_q;
    dg.fscale = d_fscale;
    dg.codes = d_q;
    for (int64_t i1 = 0; i1 < k; i1 += bs) {
        int64_t i2 = std::min(i1 + bs, k), cnt = i2 - i1;
        CK_CUDA(cudaMemcpyAsync(d_w1, d_wt + i1 * n, (size_t)(cnt * n) * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
        CK_CUDA(launch_gptq_block(d_wt, d_w1, d_e1, d_u, n, k, i1, (int)cnt, d_perm, &dg, c->stream));
        flop_update += (double)n * (double)cnt * (double)(cnt - 1);
        if (i2 < k) {
            const float alpha = -1.0f, beta = 1.0f;
            CK_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n, (int)(k - i2), (int)cnt, &alpha, d_e1, (int)n, d_u + i1 * k + i2,
                                (int)k, &beta, d_wt + i2 * n, (int)n));
            flop_update += 2.0 * (double)n * (double)cnt * (double)(k - i2);
        }
    }
    CK_CUDA(cudaEventRecord(ev[3], c->stream));
    if (fp8) CK_CUDA(cudaMemcpyAsync(out->codes, d_q, (size_t)(n * k), cudaMemcpyDeviceToHost, c->stream));
    else {
        CK_CUDA(cudaMemcpyAsync(out->q->q, d_q, (size_t)(n * k), cudaMemcpyDeviceToHost, c->stream));
        CK_CUDA(cudaMemcpyAsync(out->q->scale, stat ? d_sscale : d_scale, (size_t)(ng * n) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
        CK_CUDA(cudaMemcpyAsync(out->q->zero, stat ? d_szero : d_zero, (size_t)(ng * n) * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    }
    CK_CUDA(cudaEventRecord(ev[4], c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    /* g_idx as the reference leaves it: 0 per channel, k / gs with static groups, else the group that
     * column's position in the (permuted) order fell in. */
    if (!fp8) {
        for (int64_t col = 0; col < k; col++) out->q->g_idx[col] = (int32_t)(stat ? col / gs : 0);
        if (gs > 0 && !stat)
            for (int64_t col = 0; col < k; col++) out->q->g_idx[perm[(size_t)col]] = (int32_t)(col / gs);
    }
    factored = true;
    *damp_used = damp;
    st.t_prep = ev_seconds(ev[0], ev[1]);
    st.t_factor = ev_seconds(ev[1], ev[2]);
    st.t_update = ev_seconds(ev[2], ev[3]);
    st.t_copy = ev_seconds(ev[3], ev[4]);
    st.flop_update = flop_update;
done:
    st.attempts = attempts;
    st.flop_factor = attempts * (4.0 / 3.0) * (double)k * (double)k * (double)k;
    if (c) {
        cudaStreamSynchronize(c->stream);
        if (!factored && ev[2]) {
            st.t_prep = ev_seconds(ev[0], ev[1]);
            st.t_factor = ev_seconds(ev[1], ev[2]);
        }
        c->last = st;
        void *bufs[] = {d_h, d_hp, d_u, d_w, d_wt, d_w1, d_e1, d_diag, d_raw, d_scale, d_sscale, d_impp, d_fscale, d_zero, d_szero, d_dead, d_q, d_perm};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) sq_cuda_dfree(c, bufs[i]);
    }
    for (int i = 0; i < 5; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    return s;
}
