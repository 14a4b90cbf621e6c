/* grid.c: the mse grid search (kernels/qmath.h's sq_qm_grid_search) of eight groups at once, the
 * groups side by side in memory (lane j of value i at x[i * stride + j]: eight rows of W^T in GPTQ's
 * sweep, or a transposed tile of eight rows of W in RTN). Each lane does the scalar search's float
 * and double operations in the scalar order (no contraction: the build is -std=c11, fp-contract off),
 * so the scales and zeros are the scalar reference's bits; test_kernels holds it to that. */
#include <immintrin.h>
#include <math.h>

#include "../qmath.h"
#include "cpu.h"

/* The scalar reference: each lane through sq_qm_grid_search. */
void sq_cpu_grid_search8_ref(const float *x, int64_t stride, const float *d, int64_t m, int bits, bool sym, double norm, float *scale,
                             int32_t *zero) {
    for (int j = 0; j < 8; j++) sq_qm_grid_search(x + j, stride, d, m, bits, sym, norm, &scale[j], &zero[j]);
}

#define NCAND (1 + SQ_QM_GRID_SHRINK_STEPS)

/* err[c][j]: lane j's squared error (weighted by d) on candidate c, in the scalar order; or +inf for a
 * candidate whose every lane's partial sum (checked each PRUNE_EVERY values) reached the least error
 * of the candidates before it: its terms are >= 0, so its sum cannot fall below that, and the search
 * takes a candidate only when strictly below the best so far (the scalar search's choice unchanged). */
#define PRUNE_EVERY 8
static SQ_AVX2 void errors8(const float *x, int64_t stride, const float *d, int64_t m, int maxq, float cs[][8], float cz[][8],
                            double err[][8]) {
    const __m256 zero8 = _mm256_setzero_ps(), maxq8 = _mm256_set1_ps((float)maxq);
    __m256d b0 = _mm256_set1_pd(INFINITY), b1 = b0; /* the least error so far, lanes 0-3 and 4-7 */
    for (int c = 0; c < NCAND; c++) {
        __m256 s = _mm256_loadu_ps(cs[c]), z = _mm256_loadu_ps(cz[c]);
        __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
        bool pruned = false;
        for (int64_t i0 = 0; i0 < m && !pruned; i0 += PRUNE_EVERY) {
            int64_t i1 = i0 + PRUNE_EVERY < m ? i0 + PRUNE_EVERY : m;
            for (int64_t i = i0; i < i1; i++) {
                __m256 xi = _mm256_loadu_ps(x + i * stride);
                __m256 q = _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(xi, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
                /* q < 0 ? 0 : q > maxq ? maxq : q */
                q = _mm256_blendv_ps(q, zero8, _mm256_cmp_ps(q, zero8, _CMP_LT_OQ));
                q = _mm256_blendv_ps(q, maxq8, _mm256_cmp_ps(q, maxq8, _CMP_GT_OQ));
                __m256 e = _mm256_sub_ps(_mm256_mul_ps(s, _mm256_sub_ps(q, z)), xi);
                __m256d e0 = _mm256_cvtps_pd(_mm256_castps256_ps128(e)), e1 = _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1));
                __m256d t0 = _mm256_mul_pd(e0, e0), t1 = _mm256_mul_pd(e1, e1);
                if (d) {
                    __m256d di = _mm256_set1_pd((double)d[i]);
                    t0 = _mm256_mul_pd(di, t0), t1 = _mm256_mul_pd(di, t1);
                }
                a0 = _mm256_add_pd(a0, t0), a1 = _mm256_add_pd(a1, t1);
            }
            pruned = i1 < m && _mm256_movemask_pd(_mm256_cmp_pd(a0, b0, _CMP_GE_OQ)) == 15 && _mm256_movemask_pd(_mm256_cmp_pd(a1, b1, _CMP_GE_OQ)) == 15;
        }
        if (pruned) {
            for (int j = 0; j < 8; j++) err[c][j] = INFINITY;
            continue;
        }
        _mm256_storeu_pd(err[c], a0);
        _mm256_storeu_pd(err[c] + 4, a1);
        b0 = _mm256_min_pd(b0, a0), b1 = _mm256_min_pd(b1, a1);
    }
}

#define SQ_AVX512F __attribute__((target("avx2,fma,f16c,avx512f")))

/* errors8 on 512-bit registers: two candidates at once (candidate c in the low eight lanes, c + 1 in
 * the high eight, x broadcast to both), each lane's operations those of errors8, in its order; a pair
 * stops when all 16 lanes' partial sums reached the least error of the candidates before it. */
static SQ_AVX512F void errors8_512(const float *x, int64_t stride, const float *d, int64_t m, int maxq, float cs[][8], float cz[][8],
                                   double err[][8]) {
    const __m512 zero16 = _mm512_setzero_ps(), maxq16 = _mm512_set1_ps((float)maxq);
    __m512d best = _mm512_set1_pd(INFINITY);
#define PAIR(a, b) _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(a)), _mm256_castps_pd(b), 1))
    for (int c = 0; c < NCAND; c += 2) {
        int c2 = c + 1 < NCAND ? c + 1 : c;
        __m512 s = PAIR(_mm256_loadu_ps(cs[c]), _mm256_loadu_ps(cs[c2])), z = PAIR(_mm256_loadu_ps(cz[c]), _mm256_loadu_ps(cz[c2]));
        __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
        bool pruned = false;
        for (int64_t i0 = 0; i0 < m && !pruned; i0 += PRUNE_EVERY) {
            int64_t i1 = i0 + PRUNE_EVERY < m ? i0 + PRUNE_EVERY : m;
            for (int64_t i = i0; i < i1; i++) {
                __m512 xi = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x + i * stride))));
                __m512 q = _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(xi, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
                q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, zero16, _CMP_LT_OQ), q, zero16);
                q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, maxq16, _CMP_GT_OQ), q, maxq16);
                __m512 e = _mm512_sub_ps(_mm512_mul_ps(s, _mm512_sub_ps(q, z)), xi);
                __m512d e0 = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
                __m512d e1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
                __m512d t0 = _mm512_mul_pd(e0, e0), t1 = _mm512_mul_pd(e1, e1);
                if (d) {
                    __m512d di = _mm512_set1_pd((double)d[i]);
                    t0 = _mm512_mul_pd(di, t0), t1 = _mm512_mul_pd(di, t1);
                }
                a0 = _mm512_add_pd(a0, t0), a1 = _mm512_add_pd(a1, t1);
            }
            pruned = i1 < m && _mm512_cmp_pd_mask(a0, best, _CMP_GE_OQ) == 0xFF && _mm512_cmp_pd_mask(a1, best, _CMP_GE_OQ) == 0xFF;
        }
        if (pruned) {
            for (int j = 0; j < 8; j++) err[c][j] = err[c2][j] = INFINITY;
            continue;
        }
        _mm512_storeu_pd(err[c], a0);
        if (c2 != c) _mm512_storeu_pd(err[c2], a1);
        best = _mm512_min_pd(best, _mm512_min_pd(a0, a1));
    }
#undef PAIR
}

void sq_cpu_grid_search8(const float *x, int64_t stride, const float *d, int64_t m, int bits, bool sym, double norm, float *scale,
                         int32_t *zero) {
    if (!sq_cpu_has_avx2() || (norm > 0 && norm != 2) || m <= 0) {
        sq_cpu_grid_search8_ref(x, stride, d, m, bits, sym, norm, scale, zero);
        return;
    }
    int maxq = (1 << bits) - 1;
    int32_t half = (maxq + 1) / 2;
    /* Every lane's candidates (the min/max grid first, then the 80 shrunk ones), as the scalar search. */
    float cs[NCAND][8], cz[NCAND][8];
    int32_t czi[NCAND][8];
    bool live[8];
    for (int j = 0; j < 8; j++) {
        float lo = x[j], hi = x[j], ext = x[j];
        for (int64_t i = 1; i < m; i++) {
            float xi = x[i * stride + j];
            lo = fminf(lo, xi);
            hi = fmaxf(hi, xi);
            if (fabsf(xi) > fabsf(ext)) ext = xi;
        }
        sq_qm_grid_params(lo, hi, bits, sym, &cs[0][j], &czi[0][j]);
        live[j] = ext != 0;
        float s0 = ext < 0 ? -ext / (float)half : ext / (float)(half - 1);
        for (int i = 0; i < SQ_QM_GRID_SHRINK_STEPS; i++) {
            float p = 1.0f - (float)i / (float)SQ_QM_GRID_STEPS;
            if (!live[j]) {
                cs[i + 1][j] = cs[0][j], czi[i + 1][j] = czi[0][j];
                continue;
            }
            if (sym) {
                cs[i + 1][j] = sq_qm_f16_scale(p * s0);
                czi[i + 1][j] = half;
            } else sq_qm_grid_params(p * lo, p * hi, bits, false, &cs[i + 1][j], &czi[i + 1][j]);
        }
        for (int c = 0; c < NCAND; c++) cz[c][j] = (float)czi[c][j];
    }
    double err[NCAND][8];
    if (sq_cpu_isa() >= SQ_ISA_AVX512) errors8_512(x, stride, d, m, maxq, cs, cz, err);
    else errors8(x, stride, d, m, maxq, cs, cz, err);
    for (int j = 0; j < 8; j++) {
        double best = err[0][j];
        scale[j] = cs[0][j], zero[j] = czi[0][j];
        for (int c = 1; c < NCAND && live[j]; c++)
            if (err[c][j] < best) best = err[c][j], scale[j] = cs[c][j], zero[j] = czi[c][j];
    }
}
