/* fp8matmul.c: y = x . W^T for FP8 (E4M3) weights read in place, the activations first put through
 * E4M3 when the weight asks for it (static or dynamic scales, as a Hopper FP8 GEMM sees them: vLLM
 * quantises x * (1/s), clamped to +-448, rounded to nearest even). The weight's scale is applied once
 * per output: y[t, r] = s_w(r) * sum_c e4m3(W[r, c]) x'[t, c].
 * A few rows of x: a threaded AVX2 GEMV that turns 16 codes at a time into floats (an E4M3 code
 * shifted left by 7 is the fp16 pattern of its value / 256, so F16C converts it; the 256 goes into
 * the scale). More rows: tiles of rows converted into scratch for sgemm (sq_cpu_tiled_gemm). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

#define GEMV_MAX_N 8
#define ROW_ALIGN 16
#define E4M3_MAX 448.0f
/* vLLM's floor on a dynamic scale: an all-zero token must not divide by zero. */
#define MIN_DYN_SCALE (1.0f / (E4M3_MAX * 512.0f))

static inline float wscale(const sq_fp8weight *f, int64_t r) { return f->scale[f->per_channel ? r : 0]; }

static float dyn_scale(float absmax) {
    float s = absmax / E4M3_MAX;
    return s > MIN_DYN_SCALE ? s : MIN_DYN_SCALE;
}

/* ---------------------------------------------------------------- activations */

/* The scale of row t of x (n, k) under f's activation scheme; 0 for SQ_FP8_ACT_NONE. tensor_absmax:
 * max |x| over all rows (SQ_FP8_ACT_DYNAMIC_TENSOR only). */
static float act_scale(const sq_fp8weight *f, const float *xt, int64_t k, float tensor_absmax) {
    switch (f->act) {
    case SQ_FP8_ACT_STATIC: return f->input_scale;
    case SQ_FP8_ACT_DYNAMIC_TENSOR: return dyn_scale(tensor_absmax);
    case SQ_FP8_ACT_DYNAMIC_TOKEN: {
        float m = 0;
        for (int64_t c = 0; c < k; c++) m = fmaxf(m, fabsf(xt[c]));
        return dyn_scale(m);
    }
    default: return 0;
    }
}

static float absmax_all(const float *x, int64_t m) {
    float a = 0;
    for (int64_t i = 0; i < m; i++) a = fmaxf(a, fabsf(x[i]));
    return a;
}

void sq_cpu_fp8_act_ref(const sq_fp8weight *f, const float *x, float *out, int n, int64_t k) {
    float tmax = f->act == SQ_FP8_ACT_DYNAMIC_TENSOR ? absmax_all(x, (int64_t)n * k) : 0;
    for (int t = 0; t < n; t++) {
        const float *xt = x + (int64_t)t * k;
        float *ot = out + (int64_t)t * k;
        if (f->act == SQ_FP8_ACT_NONE) {
            memcpy(ot, xt, (size_t)k * sizeof *ot);
            continue;
        }
        float s = act_scale(f, xt, k, tmax), inv = 1.0f / s;
        for (int64_t c = 0; c < k; c++) {
            float v = fmaxf(-E4M3_MAX, fminf(xt[c] * inv, E4M3_MAX)); /* NaN -> 448, as fmin/fmax do on the GPU */
            ot[c] = sq_e4m3_to_f32(sq_f32_to_e4m3(v)) * s;
        }
    }
}

/* 8 floats rounded to the nearest E4M3 value, ties to even (|v| <= 448, not NaN): normal values keep
 * 3 mantissa bits (the f32 pattern rounded at bit 20), those below 2^-6 a multiple of 2^-9. */
SQ_AVX2 static inline __m256 round_e4m3(__m256 v) {
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 sign = _mm256_and_ps(v, signmask), a = _mm256_andnot_ps(signmask, v);
    __m256i b = _mm256_castps_si256(a);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 20), _mm256_set1_epi32(1));
    b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7FFFF), lsb));
    __m256 normal = _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32(~0xFFFFF)));
    __m256 sub = _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(512.0f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                               _mm256_set1_ps(0x1p-9f));
    __m256 r = _mm256_blendv_ps(normal, sub, _mm256_cmp_ps(a, _mm256_set1_ps(0x1p-6f), _CMP_LT_OQ));
    return _mm256_or_ps(r, sign);
}

SQ_AVX2 static void act_fast(const sq_fp8weight *f, const float *x, float *out, int n, int64_t k) {
    float tmax = f->act == SQ_FP8_ACT_DYNAMIC_TENSOR ? absmax_all(x, (int64_t)n * k) : 0;
    const __m256 hi = _mm256_set1_ps(E4M3_MAX), lo = _mm256_set1_ps(-E4M3_MAX);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (int64_t)t * k;
        float *ot = out + (int64_t)t * k;
        float s = act_scale(f, xt, k, tmax), inv = 1.0f / s;
        __m256 vs = _mm256_set1_ps(s), vinv = _mm256_set1_ps(inv);
        int64_t c = 0;
        for (; c + 8 <= k; c += 8) {
            /* min_ps(v, 448) gives 448 for NaN v, like the reference's fminf */
            __m256 v = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(xt + c), vinv), hi), lo);
            _mm256_storeu_ps(ot + c, _mm256_mul_ps(round_e4m3(v), vs));
        }
        for (; c < k; c++) {
            float v = fmaxf(-E4M3_MAX, fminf(xt[c] * inv, E4M3_MAX));
            ot[c] = sq_e4m3_to_f32(sq_f32_to_e4m3(v)) * s;
        }
    }
}

void sq_cpu_fp8_act(const sq_fp8weight *f, const float *x, float *out, int n, int64_t k) {
    if (f->act == SQ_FP8_ACT_NONE || !sq_cpu_has_avx2()) sq_cpu_fp8_act_ref(f, x, out, n, k);
    else act_fast(f, x, out, n, k);
}

/* ---------------------------------------------------------------- matmul */

sq_status sq_cpu_f8matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    (void)c;
    const sq_fp8weight *f = w->f8;
    int64_t K = w->cols;
    float *xq = sq_malloc((size_t)((int64_t)n * K) * sizeof *xq + 1, err);
    if (!xq) return SQ_ERR_NOMEM;
    sq_cpu_fp8_act_ref(f, x, xq, n, K);
    const uint8_t *codes = w->data;
    for (int t = 0; t < n; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            double s = 0, ws = wscale(f, r);
            for (int64_t j = 0; j < K; j++) s += (double)sq_e4m3_to_f32(codes[r * K + j]) * ws * xq[(int64_t)t * K + j];
            y[(int64_t)t * w->rows + r] = (float)(s + (bias ? bias[r] : 0.0));
        }
    free(xq);
    return SQ_OK;
}

/* 16 codes as the fp16 patterns of their values / 256. */
SQ_AVX2 static inline __m256i codes_to_f16(const uint8_t *p) {
    __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
    __m256i mag = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(0x3F80));
    __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
    return _mm256_or_si256(mag, sign);
}

/* Rows r0 .. r0+m-1 of W, scale applied, as floats into dst (m, cols). */
SQ_AVX2 void sq_cpu_f8rows_to_f32(const sq_wmat *w, int64_t r0, int64_t m, float *dst) {
    const uint8_t *codes = w->data;
    int64_t K = w->cols;
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *row = codes + (r0 + i) * K;
        float *d = dst + i * K;
        __m256 s = _mm256_set1_ps(wscale(w->f8, r0 + i) * 256.0f);
        int64_t j = 0;
        for (; j + 16 <= K; j += 16) {
            __m256i h = codes_to_f16(row + j);
            _mm256_storeu_ps(d + j, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), s));
            _mm256_storeu_ps(d + j + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), s));
        }
        for (; j < K; j++) d[j] = sq_e4m3_to_f32(row[j]) * wscale(w->f8, r0 + i);
    }
}

void sq_cpu_f8row_to_f32_ref(const sq_wmat *w, int64_t r, float *dst) {
    const uint8_t *row = (const uint8_t *)w->data + r * w->cols;
    for (int64_t j = 0; j < w->cols; j++) dst[j] = sq_e4m3_to_f32(row[j]) * wscale(w->f8, r);
}

typedef struct {
    sq_kctx *c;
    const sq_wmat *w;
    const float *bias, *x;   /* x (n, cols), already through E4M3 when the weight asks */
    float *y;
    int n;
} f8_job;

/* Rows [lo, hi) against tokens t0 .. t0+NT-1 (NT a constant after inlining): 16 codes converted once
 * for all NT tokens. Each token's sum, sum_c e4m3(code_c) / 256 * x_c, runs in the same
 * order whatever NT, so y does not depend on how many rows of x came together. */
SQ_AVX2 static inline __attribute__((always_inline)) void f8_rows(const f8_job *j, int64_t lo, int64_t hi, int t0, int NT) {
    const sq_wmat *w = j->w;
    int64_t K = w->cols;
    const uint8_t *codes = w->data;
    for (int64_t r = lo; r < hi; r++) {
        const uint8_t *row = codes + r * K;
        __m256 a0[4], a1[4];
        _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) a0[t] = a1[t] = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 16 <= K; c += 16) {
            __m256i h = codes_to_f16(row + c);
            __m256 w0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h)), w1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
            _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) {
                const float *x = j->x + (int64_t)(t0 + t) * K + c;
                a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), a0[t]);
                a1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), a1[t]);
            }
        }
        float sc = wscale(w->f8, r) * 256.0f;
        _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++) {
            const float *x = j->x + (int64_t)(t0 + t) * K;
            float s = sq_hsum8(_mm256_add_ps(a0[t], a1[t]));
            for (int64_t i = c; i < K; i++) s += sq_e4m3_to_f32(row[i]) * 0x1p-8f * x[i];
            j->y[(int64_t)(t0 + t) * w->rows + r] = sc * s;
        }
    }
}

SQ_AVX2 static void f8_gemv(void *arg, int ith, int nth) {
    const f8_job *j = arg;
    int64_t lo, hi;
    sq_split(j->w->rows, ith, nth, ROW_ALIGN, &lo, &hi);
    int t = 0;
    for (; t + 4 <= j->n; t += 4) f8_rows(j, lo, hi, t, 4);
    switch (j->n - t) {
    case 3: f8_rows(j, lo, hi, t, 3); break;
    case 2: f8_rows(j, lo, hi, t, 2); break;
    case 1: f8_rows(j, lo, hi, t, 1); break;
    default: break;
    }
    sq_cpu_add_bias(j->y, j->bias, j->n, j->w->rows, lo, hi);
}

sq_status sq_cpu_f8matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    if (w->dtype != SQ_DT_F8_E4M3 || !w->data)
        return sq_fail(err, SQ_ERR_INTERNAL, "matmul: an FP8 weight must hold F8_E4M3 codes (has %s)", sq_dtype_name(w->dtype));
    if (w->rows > 0x7fffffff || w->cols > 0x7fffffff)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: a %lld x %lld matrix is too large for BLAS", (long long)w->rows, (long long)w->cols);
    if (n <= 0 || w->rows == 0) return SQ_OK;
    if (!sq_cpu_has_avx2()) return sq_cpu_f8matmul_ref(c, w, bias, x, y, n, err);
    int64_t K = w->cols;
    float *xq = NULL;
    const float *xin = x;
    if (w->f8->act != SQ_FP8_ACT_NONE) { /* into the context's shared buffer: no allocation a step */
        if (!(xq = sq_kctx_shared(c, (size_t)((int64_t)n * K) * sizeof *xq + 1, err))) return SQ_ERR_NOMEM;
        act_fast(w->f8, x, xq, n, K);
        xin = xq;
    }
    sq_status s = SQ_OK;
    if (n <= GEMV_MAX_N) {
        f8_job j = {c, w, bias, xin, y, n};
        sq_pool_run_work(c->pool, f8_gemv, &j, (int64_t)n * w->rows * K);
    } else s = sq_cpu_tiled_gemm(c, w, sq_cpu_f8rows_to_f32, bias, xin, y, n, err);
    return s;
}
