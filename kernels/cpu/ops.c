/* ops.c: the fast elementwise and row kernels: RMSNorm, RoPE, SwiGLU, residual add, vector exp. */
#include <math.h>

#include "vec.h"

SQ_AVX2 void sq_cpu_vexp(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sq_exp8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float tmp[8] = {0};
        for (int64_t k = i; k < n; k++) tmp[k - i] = x[k];
        _mm256_storeu_ps(tmp, sq_exp8(_mm256_loadu_ps(tmp)));
        for (int64_t k = i; k < n; k++) x[k] = tmp[k - i];
    }
}

SQ_AVX2 void sq_cpu_rmsnorm(sq_kctx *c, const float *x, const float *g, float eps, float *y, int n, int d) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (int64_t)t * d;
        float *yr = y + (int64_t)t * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int i = 0;
        for (; i + 16 <= d; i += 16) {
            __m256 v0 = _mm256_loadu_ps(xr + i), v1 = _mm256_loadu_ps(xr + i + 8);
            a0 = _mm256_fmadd_ps(v0, v0, a0);
            a1 = _mm256_fmadd_ps(v1, v1, a1);
        }
        float ss = sq_hsum8(_mm256_add_ps(a0, a1));
        for (; i < d; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        __m256 vi = _mm256_set1_ps(inv);
        for (i = 0; i + 8 <= d; i += 8)
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), vi), _mm256_loadu_ps(g + i)));
        for (; i < d; i++) yr[i] = xr[i] * inv * g[i];
    }
}

SQ_AVX2 void sq_cpu_rope(sq_kctx *c, float *x, int n, int stride, int n_heads, int head_dim, const float *cos, const float *sin) {
    int half = head_dim / 2;
    for (int t = 0; t < n; t++) {
        const float *cs = cos + (int64_t)t * half, *sn = sin + (int64_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *a = x + (int64_t)t * stride + (int64_t)h * head_dim, *b = a + half;
            int i = 0;
            for (; i + 8 <= half; i += 8) {
                __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
                __m256 vc = _mm256_loadu_ps(cs + i), vs = _mm256_loadu_ps(sn + i);
                _mm256_storeu_ps(a + i, _mm256_fmsub_ps(va, vc, _mm256_mul_ps(vb, vs)));
                _mm256_storeu_ps(b + i, _mm256_fmadd_ps(vb, vc, _mm256_mul_ps(va, vs)));
            }
            for (; i < half; i++) {
                float va = a[i], vb = b[i];
                a[i] = va * cs[i] - vb * sn[i];
                b[i] = vb * cs[i] + va * sn[i];
            }
        }
    }
}

typedef struct {
    const float *gate, *up;
    float *out;
    int64_t m;
} swiglu_job;

SQ_AVX2 static void swiglu_part(void *arg, int ith, int nth) {
    const swiglu_job *j = arg;
    int64_t lo, hi;
    sq_split(j->m, ith, nth, 64, &lo, &hi);
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = lo;
    for (; i + 8 <= hi; i += 8) {
        __m256 g = _mm256_loadu_ps(j->gate + i);
        __m256 e = sq_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        _mm256_storeu_ps(j->out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(j->up + i)));
    }
    for (; i < hi; i++) {
        float g = j->gate[i];
        j->out[i] = g / (1.0f + expf(-g)) * j->up[i];
    }
}

void sq_cpu_swiglu(sq_kctx *c, const float *gate, const float *up, float *out, int64_t m) {
    swiglu_job j = {gate, up, out, m};
    if (m < (1 << 15)) swiglu_part(&j, 0, 1);
    else sq_pool_run(c->pool, swiglu_part, &j);
}

SQ_AVX2 void sq_cpu_add(sq_kctx *c, float *y, const float *x, int64_t m) {
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < m; i++) y[i] += x[i];
}
