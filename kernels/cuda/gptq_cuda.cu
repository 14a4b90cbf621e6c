/* gptq_cuda.cu: GPTQ calibration on the GPU (Hessian with cuBLAS syrk, damped Cholesky inverse with
 * cuSOLVER, the block update as one kernel plus cuBLAS GEMM, RTN), following quant/gptq.c step for step.
 * Three layers, as everywhere in kernels/cuda: __global__ kernels (k_*), launchers taking raw device
 * pointers and a stream (launch_*), and ops taking the context (op_* and the table's functions).
 *
 * Matching the CPU reference bit for bit where it can be matched: the grid (fp16-rounded scales, zero >=
 * 1 for asym) and the codes use IEEE division and explicit no-FMA products like the C code (which is
 * compiled in ISO mode, so without contraction); the in-block update uses fmaf like OpenBLAS's saxpy.
 * What differs is the summation order inside cuBLAS/cuSOLVER: the FP32 GEMMs and factorisations, hence
 * the 99.9%-of-codes / 1%-of-output-error tolerance `make test-cuda` holds this path to. No TF32 is
 * used anywhere here (the handle keeps CUBLAS_DEFAULT_MATH, which never picks TF32 for FP32 GEMMs). */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "../gptq_gpu.h"
}

/* ------------------------------------------------------------------ checking macros
 * Each wraps one CUDA, cuBLAS or cuSOLVER call: on failure it fills err naming the call, sets s and
 * jumps to the function's `done:` label, where everything allocated is released. */
#define CK_CUDA(call)                                                                                       \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: %s", #call, cudaGetErrorString(e_)); goto done; } \
    } while (0)
#define CK_BLAS(call)                                                                                       \
    do {                                                                                                    \
        cublasStatus_t e_ = (call);                                                                         \
        if (e_ != CUBLAS_STATUS_SUCCESS) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: cuBLAS status %d", #call, (int)e_); goto done; } \
    } while (0)
#define CK_SOLV(call)                                                                                       \
    do {                                                                                                    \
        cusolverStatus_t e_ = (call);                                                                       \
        if (e_ != CUSOLVER_STATUS_SUCCESS) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: cuSOLVER status %d", #call, (int)e_); goto done; } \
    } while (0)
/* A status-returning op: propagate its failure the same way. */
#define CK(call)                                                                                            \
    do {                                                                                                    \
        if ((s = (call)) != SQ_OK) goto done;                                                               \
    } while (0)

/* ------------------------------------------------------------------ context
 * One per process, made on first use: a stream, the cuBLAS and cuSOLVER handles, and the tally of
 * device memory spotq's own buffers hold (for the benchmark's peak). Not thread-safe, like sq_kctx. */
typedef struct {
    bool ready;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    size_t cur, peak;
    std::vector<std::pair<void *, size_t>> *live;
} cuda_ctx;

static cuda_ctx g_ctx;

static sq_status ctx_get(cuda_ctx **out, sq_err *err) {
    sq_status s = SQ_OK;
    *out = NULL;
    if (!g_ctx.ready) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess || n == 0)
            return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: no CUDA GPU found (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        CK_CUDA(cudaStreamCreateWithFlags(&g_ctx.stream, cudaStreamNonBlocking));
        CK_BLAS(cublasCreate(&g_ctx.blas));
        CK_BLAS(cublasSetStream(g_ctx.blas, g_ctx.stream));
        CK_BLAS(cublasSetMathMode(g_ctx.blas, CUBLAS_DEFAULT_MATH));
        CK_SOLV(cusolverDnCreate(&g_ctx.solver));
        CK_SOLV(cusolverDnSetStream(g_ctx.solver, g_ctx.stream));
        g_ctx.live = new std::vector<std::pair<void *, size_t>>();
        g_ctx.ready = true;
    }
    *out = &g_ctx;
done:
    return s;
}

static sq_status dmalloc(cuda_ctx *c, void **p, size_t bytes, sq_err *err) {
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

static void dfree(cuda_ctx *c, void *p) {
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

static unsigned grid1(int64_t total, int threads) {
    int64_t b = (total + threads - 1) / threads;
    return (unsigned)std::min<int64_t>(std::max<int64_t>(b, 1), 65535 * 16);
}

/* ------------------------------------------------------------------ device grid (quant/grid.c) */

__device__ static int64_t dev_min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ static void dev_grid_params(float xmin, float xmax, int bits, bool sym, float *scale, int32_t *zero) {
    int maxq = (1 << bits) - 1;
    xmin = fminf(xmin, 0.0f);
    xmax = fmaxf(xmax, 0.0f);
    if (sym) {
        xmax = fmaxf(-xmin, xmax);
        if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) { xmin = -1; xmax = 1; }
    float s = __fdiv_rn(__fsub_rn(xmax, xmin), (float)maxq);
    int32_t z = sym ? (maxq + 1) / 2 : (int32_t)rintf(__fdiv_rn(-xmin, s));
    if (!sym && z == 0) {
        z = 1;
        s = __fdiv_rn(xmax, (float)(maxq - 1));
    }
    float h = __half2float(__float2half_rn(s));
    if (!(h > 0)) h = 5.9604645e-08f;
    if (isinf(h)) h = 65504.0f;
    *scale = h;
    *zero = z;
}

__device__ static uint8_t dev_grid_quant(float x, float s, int32_t z, int maxq) {
    float q = __fadd_rn(rintf(__fdiv_rn(x, s)), (float)z);
    q = q < 0 ? 0 : q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}

/* ------------------------------------------------------------------ kernels */

/* Hessian: the lower triangle (row-major) from the upper one that syrk keeps. */
__global__ static void k_sym_lower_from_upper(float *h, int64_t k) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * k; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / k, j = idx % k;
        if (j < i) h[idx] = h[j * k + i];
    }
}

/* The factor: the upper triangle (row-major) from the lower one potri leaves. */
__global__ static void k_sym_upper_from_lower(float *u, int64_t k) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < k * k; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / k, j = idx % k;
        if (j > i) u[idx] = u[j * k + i];
    }
}

/* Dead inputs: dead[c] = H[c,c] == 0; diag[c] the diagonal as GPTQ sees it (1 where dead). */
__global__ static void k_dead(const float *h, int64_t k, uint8_t *dead, float *diag) {
    int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c >= k) return;
    float d = h[c * k + c];
    dead[c] = d == 0;
    diag[c] = d == 0 ? 1.0f : d;
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

/* Grids of rows [c0, c0 + gs) of wt for every group g (blockIdx.y) into scale/zero [G, N]. */
__global__ static void k_group_grids(const float *wt, int64_t n, int64_t k, int64_t gs, int bits, bool sym, float *scale, int32_t *zero) {
    int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, g = blockIdx.y;
    if (r >= n) return;
    int64_t c0 = g * gs, c1 = dev_min64(c0 + gs, k);
    float lo = wt[c0 * n + r], hi = lo;
    for (int64_t c = c0 + 1; c < c1; c++) { lo = fminf(lo, wt[c * n + r]); hi = fmaxf(hi, wt[c * n + r]); }
    dev_grid_params(lo, hi, bits, sym, &scale[g * n + r], &zero[g * n + r]);
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

/* One lazy block [i1, i1 + cnt) of GPTQ: one thread per output row r, the column loop in order.
 * w1 [cnt, N] the block's working copy, e1 [cnt, N] its scaled errors, q [K, N] codes at perm[col].
 * Grids as the reference times them: per channel (gs 0) fixed, static ones from sscale at perm[col] / gs,
 * otherwise recomputed from wt (not the block copy) at the start of each group. */
__global__ static void k_gptq_block(const float *__restrict__ wt, float *__restrict__ w1, float *__restrict__ e1,
                                    const float *__restrict__ u, int64_t n, int64_t k, int64_t i1, int cnt, int64_t gs, bool stat,
                                    const int64_t *__restrict__ perm, const float *__restrict__ sscale, const int32_t *__restrict__ szero,
                                    float *__restrict__ scale, int32_t *__restrict__ zero, uint8_t *__restrict__ q, int bits, bool sym) {
    int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= n) return;
    int maxq = (1 << bits) - 1;
    float s = 0;
    int32_t z = 0;
    if (gs <= 0) { s = scale[r]; z = zero[r]; }
    else if (!stat) { int64_t g = i1 / gs; s = scale[g * n + r]; z = zero[g * n + r]; }
    for (int i = 0; i < cnt; i++) {
        int64_t col = i1 + i;
        if (gs > 0) {
            if (stat) {
                int64_t g = perm[col] / gs;
                s = sscale[g * n + r];
                z = szero[g * n + r];
            } else if (col % gs == 0) {
                int64_t g = col / gs, c1 = dev_min64(col + gs, k);
                float lo = wt[col * n + r], hi = lo;
                for (int64_t c = col + 1; c < c1; c++) { lo = fminf(lo, wt[c * n + r]); hi = fmaxf(hi, wt[c * n + r]); }
                dev_grid_params(lo, hi, bits, sym, &s, &z);
                scale[g * n + r] = s;
                zero[g * n + r] = z;
            }
        }
        const float *urow = u + col * k + i1;
        float d = urow[i], w = w1[i * n + r];
        uint8_t qq = dev_grid_quant(w, s, z, maxq);
        q[perm[col] * n + r] = qq;
        float dq = __fmul_rn(s, (float)((int32_t)qq - z));
        float e = __fdiv_rn(__fsub_rn(w, dq), d);
        e1[i * n + r] = e;
#pragma unroll 8
        for (int j = i + 1; j < cnt; j++) w1[j * n + r] = fmaf(-urow[j], e, w1[j * n + r]);
    }
}

/* RTN: one thread per (row, group), as quant/grid.c's sq_quant_rtn. */
__global__ static void k_rtn(const float *w, int64_t n, int64_t k, int64_t gs, int64_t ng, int bits, bool sym, uint8_t *q, float *scale,
                             int32_t *zero) {
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= n * ng) return;
    int64_t g = idx / n, r = idx % n, c0 = g * gs, c1 = dev_min64(c0 + gs, k);
    const float *row = w + r * k;
    float lo = row[c0], hi = row[c0];
    for (int64_t c = c0; c < c1; c++) { lo = fminf(lo, row[c]); hi = fmaxf(hi, row[c]); }
    float sc;
    int32_t z;
    dev_grid_params(lo, hi, bits, sym, &sc, &z);
    scale[g * n + r] = sc;
    zero[g * n + r] = z;
    int maxq = (1 << bits) - 1;
    for (int64_t c = c0; c < c1; c++) q[c * n + r] = dev_grid_quant(row[c], sc, z, maxq);
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

/* ------------------------------------------------------------------ launchers (raw pointers + stream) */

static cudaError_t launch_grid_loop(void (*kern)(float *, int64_t), float *a, int64_t k, cudaStream_t st) {
    kern<<<grid1(k * k, 256), 256, 0, st>>>(a, k);
    return cudaGetLastError();
}

static cudaError_t launch_dead(const float *h, int64_t k, uint8_t *dead, float *diag, cudaStream_t st) {
    k_dead<<<grid1(k, 256), 256, 0, st>>>(h, k, dead, diag);
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

static cudaError_t launch_group_grids(const float *wt, int64_t n, int64_t k, int64_t gs, int64_t ng, int bits, bool sym, float *scale,
                                      int32_t *zero, cudaStream_t st) {
    for (int64_t g0 = 0; g0 < ng; g0 += 65535) {
        int64_t cnt = std::min<int64_t>(ng - g0, 65535);
        dim3 grid((unsigned)((n + 127) / 128), (unsigned)cnt);
        k_group_grids<<<grid, 128, 0, st>>>(wt + g0 * gs * n, n, k - g0 * gs, gs, bits, sym, scale + g0 * n, zero + g0 * n);
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
                                     int64_t gs, bool stat, const int64_t *perm, const float *sscale, const int32_t *szero, float *scale,
                                     int32_t *zero, uint8_t *q, int bits, bool sym, cudaStream_t st) {
    /* 64 threads a block: a 4096-row matrix still spreads over 64 SMs (each thread's column loop is serial). */
    k_gptq_block<<<(unsigned)((n + 63) / 64), 64, 0, st>>>(wt, w1, e1, u, n, k, i1, cnt, gs, stat, perm, sscale, szero, scale, zero, q,
                                                             bits, sym);
    return cudaGetLastError();
}

static cudaError_t launch_rtn(const float *w, int64_t n, int64_t k, int64_t gs, int64_t ng, int bits, bool sym, uint8_t *q, float *scale,
                              int32_t *zero, cudaStream_t st) {
    k_rtn<<<(unsigned)((n * ng + 127) / 128), 128, 0, st>>>(w, n, k, gs, ng, bits, sym, q, scale, zero);
    return cudaGetLastError();
}

static cudaError_t launch_fill_random(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, cudaStream_t st) {
    k_fill_random<<<grid1(rows * cols, 256), 256, 0, st>>>(x, rows, cols, seed, amp);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------ ops (context) */

static double ev_seconds(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    return cudaEventElapsedTime(&ms, a, b) == cudaSuccess ? ms / 1000.0 : 0.0;
}

/* U = upper (row-major) Cholesky factor of (hp + damp * mean I)^-1, as quant/gptq.c's inverse_factor:
 * row-major 'L' is column-major 'U' for cuSOLVER. *ok false when it will not factor. */
static sq_status op_inverse_factor(cuda_ctx *c, const float *hp, float *u, int64_t k, double damp_frac, double mean, float *work,
                                   int lwork, int *d_info, int *ok, sq_err *err) {
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
    CK_CUDA(launch_grid_loop(k_sym_upper_from_lower, u, k, c->stream));
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

typedef struct { float diag; int64_t idx; } diag_item;

static sq_status gptq_run(const float *w, const float *h, bool h_on_device, int64_t n, int64_t k, const sq_gptq_gpu_params *p,
                          sq_qmatrix *out, bool *factored, sq_gptq_gpu_stats *st, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    int64_t gs = p->group_size > 0 ? p->group_size : 0, bs = p->block_size > 0 ? p->block_size : 128;
    int64_t ng = out->n_groups;
    bool stat = p->static_groups && gs > 0;
    float *d_h = NULL, *d_hp = NULL, *d_u = NULL, *d_w = NULL, *d_wt = NULL, *d_w1 = NULL, *d_e1 = NULL, *d_diag = NULL;
    float *d_scale = NULL, *d_sscale = NULL, *work = NULL;
    int32_t *d_zero = NULL, *d_szero = NULL;
    uint8_t *d_dead = NULL, *d_q = NULL;
    int64_t *d_perm = NULL;
    int *d_info = NULL;
    int lwork = 0, l1 = 0, l2 = 0, l3 = 0, ok = 0, attempts = 0;
    const float *hsrc = h;
    std::vector<float> diag((size_t)k);
    std::vector<diag_item> items((size_t)k);
    std::vector<int64_t> perm((size_t)k);
    double mean = 0, damp = p->damp, flop_update = 0;
    bool nan_diag = false;
    cudaEvent_t ev[5] = {0, 0, 0, 0, 0};
    *factored = false;
    if (st) memset(st, 0, sizeof *st);
    CK(ctx_get(&c, err));
    for (int i = 0; i < 5; i++) CK_CUDA(cudaEventCreate(&ev[i]));
    CK_CUDA(cudaEventRecord(ev[0], c->stream));

    /* Upload, dead columns, act-order permutation (sorted on the host, exactly as the CPU does). */
    if (!h_on_device) {
        CK(dmalloc(c, (void **)&d_h, (size_t)(k * k) * sizeof(float), err));
        CK_CUDA(cudaMemcpyAsync(d_h, h, (size_t)(k * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        hsrc = d_h;
    }
    CK(dmalloc(c, (void **)&d_dead, (size_t)k, err));
    CK(dmalloc(c, (void **)&d_diag, (size_t)k * sizeof(float), err));
    CK_CUDA(launch_dead(hsrc, k, d_dead, d_diag, c->stream));
    CK_CUDA(cudaMemcpyAsync(diag.data(), d_diag, (size_t)k * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK(dmalloc(c, (void **)&d_w, (size_t)(n * k) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_wt, (size_t)(n * k) * sizeof(float), err));
    CK_CUDA(cudaMemcpyAsync(d_wt, w, (size_t)(n * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CK_CUDA(launch_transpose_dead(d_wt, d_dead, n, k, d_w, c->stream)); /* d_w: [K, N], not yet permuted */
    CK(dmalloc(c, (void **)&d_scale, (size_t)(ng * n) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_zero, (size_t)(ng * n) * sizeof(int32_t), err));
    if (stat) {
        CK(dmalloc(c, (void **)&d_sscale, (size_t)(ng * n) * sizeof(float), err));
        CK(dmalloc(c, (void **)&d_szero, (size_t)(ng * n) * sizeof(int32_t), err));
        CK_CUDA(launch_group_grids(d_w, n, k, gs, ng, p->bits, p->sym, d_sscale, d_szero, c->stream));
    }
    CK_CUDA(cudaStreamSynchronize(c->stream));
    for (int64_t i = 0; i < k; i++) {
        items[(size_t)i] = {diag[(size_t)i], i};
        nan_diag |= diag[(size_t)i] != diag[(size_t)i];
    }
    /* (A NaN diagonal will not factor whatever the order: skip the sort rather than feed it NaN.) */
    if (p->act_order && !nan_diag)
        std::stable_sort(items.begin(), items.end(), [](const diag_item &a, const diag_item &b) { return a.diag > b.diag; });
    for (int64_t i = 0; i < k; i++) perm[(size_t)i] = items[(size_t)i].idx;
    for (int64_t i = 0; i < k; i++) mean += diag[(size_t)perm[(size_t)i]];
    mean /= (double)k;
    CK(dmalloc(c, (void **)&d_perm, (size_t)k * sizeof(int64_t), err));
    CK_CUDA(cudaMemcpyAsync(d_perm, perm.data(), (size_t)k * sizeof(int64_t), cudaMemcpyHostToDevice, c->stream));
    CK_CUDA(launch_perm_rows(d_w, d_perm, n, k, d_wt, c->stream)); /* d_wt: [K, N] permuted */
    CK(dmalloc(c, (void **)&d_hp, (size_t)(k * k) * sizeof(float), err));
    CK_CUDA(launch_perm_h(hsrc, d_perm, k, d_hp, c->stream));
    if (d_h) { dfree(c, d_h); d_h = NULL; }
    dfree(c, d_w);
    d_w = NULL;
    CK_CUDA(cudaEventRecord(ev[1], c->stream));

    /* Damping, Cholesky, inverse, Cholesky of the inverse; more damping when it will not factor. */
    CK(dmalloc(c, (void **)&d_u, (size_t)(k * k) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_info, sizeof(int), err));
    CK_SOLV(cusolverDnSpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_UPPER, (int)k, d_u, (int)k, &l1));
    CK_SOLV(cusolverDnSpotri_bufferSize(c->solver, CUBLAS_FILL_MODE_UPPER, (int)k, d_u, (int)k, &l2));
    CK_SOLV(cusolverDnSpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, (int)k, d_u, (int)k, &l3));
    lwork = std::max(l1, std::max(l2, l3));
    CK(dmalloc(c, (void **)&work, (size_t)lwork * sizeof(float), err));
    for (; attempts < 4 && !ok; attempts++, damp *= 10) CK(op_inverse_factor(c, d_hp, d_u, k, damp, mean, work, lwork, d_info, &ok, err));
    dfree(c, work);
    work = NULL;
    dfree(c, d_hp);
    d_hp = NULL;
    CK_CUDA(cudaEventRecord(ev[2], c->stream));
    if (!ok) goto done;
    out->damp_used = damp / 10;

    /* The blocks: the column loop (one kernel), then the trailing update wt[i2:] -= U[i1:i2, i2:]^T E1 as
     * one GEMM. Column-major view: wt is N x K (ld N), E1 N x cnt (ld N), U's block at u + i1 k + i2. */
    CK(dmalloc(c, (void **)&d_w1, (size_t)(bs * n) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_e1, (size_t)(bs * n) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_q, (size_t)(n * k), err));
    if (gs <= 0) CK_CUDA(launch_group_grids(d_wt, n, k, k, 1, p->bits, p->sym, d_scale, d_zero, c->stream));
    for (int64_t i1 = 0; i1 < k; i1 += bs) {
        int64_t i2 = std::min(i1 + bs, k), cnt = i2 - i1;
        CK_CUDA(cudaMemcpyAsync(d_w1, d_wt + i1 * n, (size_t)(cnt * n) * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
        CK_CUDA(launch_gptq_block(d_wt, d_w1, d_e1, d_u, n, k, i1, (int)cnt, gs, stat, d_perm, d_sscale, d_szero, d_scale, d_zero, d_q,
                                  p->bits, p->sym, c->stream));
        flop_update += (double)n * (double)cnt * (double)(cnt - 1);
        if (i2 < k) {
            const float alpha = -1.0f, beta = 1.0f;
            CK_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n, (int)(k - i2), (int)cnt, &alpha, d_e1, (int)n, d_u + i1 * k + i2,
                                (int)k, &beta, d_wt + i2 * n, (int)n));
            flop_update += 2.0 * (double)n * (double)cnt * (double)(k - i2);
        }
    }
    CK_CUDA(cudaEventRecord(ev[3], c->stream));
    CK_CUDA(cudaMemcpyAsync(out->q, d_q, (size_t)(n * k), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->scale, stat ? d_sscale : d_scale, (size_t)(ng * n) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->zero, stat ? d_szero : d_zero, (size_t)(ng * n) * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaEventRecord(ev[4], c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    /* g_idx as the reference leaves it: 0 per channel, k / gs with static groups, else the group that
     * column's position in the (permuted) order fell in. */
    for (int64_t col = 0; col < k; col++) out->g_idx[col] = (int32_t)(stat ? col / gs : 0);
    if (gs > 0 && !stat)
        for (int64_t col = 0; col < k; col++) out->g_idx[perm[(size_t)col]] = (int32_t)(col / gs);
    *factored = true;
    if (st) {
        st->t_prep = ev_seconds(ev[0], ev[1]);
        st->t_factor = ev_seconds(ev[1], ev[2]);
        st->t_update = ev_seconds(ev[2], ev[3]);
        st->t_copy = ev_seconds(ev[3], ev[4]);
        st->flop_update = flop_update;
    }
done:
    if (st) {
        st->attempts = attempts;
        st->flop_factor = attempts * (4.0 / 3.0) * (double)k * (double)k * (double)k;
        if (!*factored && ev[2]) {
            cudaStreamSynchronize(c->stream);
            st->t_prep = ev_seconds(ev[0], ev[1]);
            st->t_factor = ev_seconds(ev[1], ev[2]);
        }
    }
    if (c) {
        cudaStreamSynchronize(c->stream);
        void *bufs[] = {d_h, d_hp, d_u, d_w, d_wt, d_w1, d_e1, d_diag, d_scale, d_sscale, work, d_zero, d_szero, d_dead, d_q, d_perm, d_info};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) dfree(c, bufs[i]);
    }
    for (int i = 0; i < 5; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    return s;
}

static sq_status rtn_run(const float *w, int64_t n, int64_t k, const sq_gptq_gpu_params *p, sq_qmatrix *out, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    int64_t gs = p->group_size > 0 ? p->group_size : k, ng = out->n_groups;
    float *d_w = NULL, *d_scale = NULL;
    int32_t *d_zero = NULL;
    uint8_t *d_q = NULL;
    CK(ctx_get(&c, err));
    CK(dmalloc(c, (void **)&d_w, (size_t)(n * k) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_q, (size_t)(n * k), err));
    CK(dmalloc(c, (void **)&d_scale, (size_t)(ng * n) * sizeof(float), err));
    CK(dmalloc(c, (void **)&d_zero, (size_t)(ng * n) * sizeof(int32_t), err));
    CK_CUDA(cudaMemcpyAsync(d_w, w, (size_t)(n * k) * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CK_CUDA(launch_rtn(d_w, n, k, gs, ng, p->bits, p->sym, d_q, d_scale, d_zero, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->q, d_q, (size_t)(n * k), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->scale, d_scale, (size_t)(ng * n) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaMemcpyAsync(out->zero, d_zero, (size_t)(ng * n) * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
    for (int64_t col = 0; col < k; col++) out->g_idx[col] = (int32_t)(col / gs);
done:
    if (c) {
        cudaStreamSynchronize(c->stream);
        dfree(c, d_w);
        dfree(c, d_q);
        dfree(c, d_scale);
        dfree(c, d_zero);
    }
    return s;
}

/* ------------------------------------------------------------------ Hessian accumulator */

struct sq_hessian_gpu {
    int64_t k, tokens;
    float *h;            /* [K, K] on device; syrk keeps the row-major upper triangle (column-major lower) */
    float *x;            /* [cap, K] staging for host activations */
    int64_t cap;
};

static sq_status hess_new(sq_hessian_gpu **out, int64_t k, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    sq_hessian_gpu *hs = NULL;
    *out = NULL;
    CK(ctx_get(&c, err));
    hs = (sq_hessian_gpu *)calloc(1, sizeof *hs);
    if (!hs) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    hs->k = k;
    CK(dmalloc(c, (void **)&hs->h, (size_t)(k * k) * sizeof(float), err));
    CK_CUDA(cudaMemsetAsync(hs->h, 0, (size_t)(k * k) * sizeof(float), c->stream));
    *out = hs;
    hs = NULL;
done:
    if (hs) { dfree(c, hs->h); free(hs); }
    return s;
}

static void hess_free(sq_hessian_gpu *hs) {
    if (!hs) return;
    cuda_ctx *c = &g_ctx;
    if (c->ready) {
        cudaStreamSynchronize(c->stream);
        dfree(c, hs->h);
        dfree(c, hs->x);
    }
    free(hs);
}

/* Running mean, as sq_hessian_add: H *= n/(n+t); H += (2/(n+t)) X^T X. X [T, K] row-major is K x T
 * column-major, so H = X_cm X_cm^T is syrk with op N; column-major lower is row-major upper. */
static sq_status hess_add(sq_hessian_gpu *hs, const float *x, bool x_on_device, int64_t t, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    int64_t total = hs->tokens + t;
    float keep, alpha;
    if (t <= 0) return SQ_OK;
    CK(ctx_get(&c, err));
    if (!x_on_device) {
        if (t > hs->cap) {
            dfree(c, hs->x);
            hs->x = NULL;
            hs->cap = 0;
            CK(dmalloc(c, (void **)&hs->x, (size_t)(t * hs->k) * sizeof(float), err));
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

static sq_status hess_finish(sq_hessian_gpu *hs, float *h_host, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(ctx_get(&c, err));
    CK_CUDA(launch_grid_loop(k_sym_lower_from_upper, hs->h, hs->k, c->stream));
    if (h_host) CK_CUDA(cudaMemcpyAsync(h_host, hs->h, (size_t)(hs->k * hs->k) * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CK_CUDA(cudaStreamSynchronize(c->stream));
done:
    return s;
}

static const float *hess_data(const sq_hessian_gpu *hs) { return hs->h; }

/* ------------------------------------------------------------------ table entries */

static sq_status t_query(char *desc, size_t cap, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    cudaDeviceProp p;
    CK(ctx_get(&c, err));
    CK_CUDA(cudaGetDeviceProperties(&p, 0));
    snprintf(desc, cap, "%s, %.1f GiB, sm_%d%d, %d SMs", p.name, p.totalGlobalMem / 1073741824.0, p.major, p.minor, p.multiProcessorCount);
done:
    return s;
}

static sq_status t_mem_info(size_t *free_b, size_t *total_b, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(ctx_get(&c, err));
    CK_CUDA(cudaMemGetInfo(free_b, total_b));
done:
    return s;
}

static sq_status t_dev_alloc(void **p, size_t bytes, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(ctx_get(&c, err));
    CK(dmalloc(c, p, bytes, err));
done:
    return s;
}

static void t_dev_free(void *p) {
    if (g_ctx.ready) dfree(&g_ctx, p);
}

static sq_status t_fill_random(float *x, int64_t rows, int64_t cols, uint64_t seed, float amp, sq_err *err) {
    sq_status s = SQ_OK;
    cuda_ctx *c = NULL;
    CK(ctx_get(&c, err));
    CK_CUDA(launch_fill_random(x, rows, cols, seed, amp, c->stream));
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
    CK(ctx_get(&c, err));
    CK(dmalloc(c, (void **)&a, (size_t)m * k * sizeof(float), err));
    CK(dmalloc(c, (void **)&b, (size_t)k * n * sizeof(float), err));
    CK(dmalloc(c, (void **)&d, (size_t)m * n * sizeof(float), err));
    CK_CUDA(launch_fill_random(a, m, k, 1, 1.0f, c->stream));
    CK_CUDA(launch_fill_random(b, k, n, 2, 1.0f, c->stream));
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
    if (c) { dfree(c, a); dfree(c, b); dfree(c, d); }
    return s;
}

static size_t t_mem_peak(void) { return g_ctx.peak; }
static void t_mem_reset_peak(void) { g_ctx.peak = g_ctx.cur; }

static const sq_gptq_gpu_i gptq_cuda_table = {
    t_query, t_mem_info, gptq_run, rtn_run, hess_new, hess_add, hess_finish, hess_data, hess_free,
    t_dev_alloc, t_dev_free, t_fill_random, t_gemm_rate, t_mem_peak, t_mem_reset_peak,
};

extern "C" const sq_gptq_gpu_i *sq_gptq_gpu_cuda_impl(void) { return &gptq_cuda_table; }
