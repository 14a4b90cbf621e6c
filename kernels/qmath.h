/* qmath.h: the quantisation grids' arithmetic, one copy for the CPU (cc) and the GPU (nvcc): fp16 and
 * E4M3 rounding on bit patterns, the integer grid of a group (scale and zero from its min and max, or
 * searched for the least importance-weighted error), code rounding, and the E4M3 code of a scaled
 * value. Every function is `static inline` (host and device under nvcc); the CPU's and the GPU's grids
 * are therefore the same expressions. nvcc must not contract a * b + c here (the Makefile builds the
 * CUDA code with -fmad=false; the kernels write fmaf where they mean it).
 *
 * The fp16 and E4M3 conversions are base/fpbits.h's, the very code formats/dtype.c runs. */
#ifndef SQ_KERNELS_QMATH_H
#define SQ_KERNELS_QMATH_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "../base/fpbits.h"

#ifdef __CUDACC__
#define SQ_QM static inline __host__ __device__
#define SQ_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define SQ_QM static inline
#define SQ_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* ---------------------------------------------------------------- packed layouts */

/* Integer codes are packed LSB first into 32-bit words along the packing dimension: 32 / bits a word. */
#define SQ_QM_PACK(bits) (32 / (bits))
SQ_STATIC_ASSERT(sizeof(uint32_t) * 8 == 32, "a packed word is 32 bits");
SQ_STATIC_ASSERT(SQ_QM_PACK(4) == 8 && SQ_QM_PACK(4) * 4 == 32, "INT4: 8 codes a word, no padding");
SQ_STATIC_ASSERT(SQ_QM_PACK(8) == 4 && SQ_QM_PACK(8) * 8 == 32, "INT8: 4 codes a word, no padding");
SQ_STATIC_ASSERT(sizeof(uint8_t) == 1, "an E4M3 code is one byte");
SQ_STATIC_ASSERT(sizeof(uint16_t) == 2, "an fp16 scale is two bytes");
SQ_STATIC_ASSERT(sizeof(float) == 4 && sizeof(int32_t) == 4, "float scales and int32 zeros are four bytes");

/* The largest E4M3 magnitude. */
#define SQ_QM_FP8_MAX 448.0f

/* ---------------------------------------------------------------- bit patterns */

SQ_QM uint32_t sq_qm_bits(float f) { return sq_fp_bits(f); }

SQ_QM float sq_qm_float(uint32_t u) { return sq_fp_float(u); }

/* f32 -> F16 bits, round to nearest even. */
SQ_QM uint32_t sq_qm_f16_narrow(uint32_t x) { return sq_fp_f16_narrow(x); }

/* F16 bits -> f32 bits. */
SQ_QM uint32_t sq_qm_f16_widen(uint16_t h) { return sq_fp_f16_widen(h); }

/* E4M3 (fn) code -> f32: S.1111.111 is NaN; no Inf. */
SQ_QM float sq_qm_e4m3_decode(uint8_t b) { return sq_fp_float(sq_fp_e4m3_widen(b)); }

/* f32 -> E4M3 (fn) code, round to nearest even, saturating at +-448; NaN gives 0x7F | sign. */
SQ_QM uint8_t sq_qm_e4m3_encode(float f) { return (uint8_t)sq_fp_e4m3_narrow(sq_fp_bits(f)); }

/* The E4M3 code of w with scale s: e4m3(clamp(w / s, +-448)) (the clamp matters only for the last ulp
 * of the division, but it is what the peers do). */
SQ_QM uint8_t sq_qm_fp8_code(float w, float s) { return sq_qm_e4m3_encode(fmaxf(-SQ_QM_FP8_MAX, fminf(w / s, SQ_QM_FP8_MAX))); }

/* Block-wise FP8 grids: one scale per SQ_QM_FP8_BLOCK x SQ_QM_FP8_BLOCK block of W [N, K] (the last blocks
 * of a row or column short), scales (ceil(N/128), ceil(K/128)) row-major. */
#define SQ_QM_FP8_BLOCK 128
/* The index of the scale of element (r, c) of an n x k FP8 weight: per tensor 0, per channel r, block-wise
 * the (r / 128, c / 128) block. */
SQ_QM int64_t sq_qm_fp8_scale_idx(bool per_channel, bool block, int64_t r, int64_t c, int64_t k) {
    if (block) return (r / SQ_QM_FP8_BLOCK) * ((k + SQ_QM_FP8_BLOCK - 1) / SQ_QM_FP8_BLOCK) + c / SQ_QM_FP8_BLOCK;
    return per_channel ? r : 0;
}

/* ---------------------------------------------------------------- FP4 (E2M1) */
/* E2M1: bit 3 the sign, bits 2..0 the magnitude index 0, 0.5, 1, 1.5, 2, 3, 4, 6 (OCP MX spec; vLLM's
 * kE2M1ToFloat, compressed-tensors 0.20 compressors/nvfp4/helpers.py). Encoding rounds to nearest, ties to
 * the even code, as compressed-tensors' cast_to_fp4 (quantization/utils/fp4_utils.py 0.20) does: |x| <= 0.25
 * -> 0, < 0.75 -> 0.5, <= 1.25 -> 1, < 1.75 -> 1.5, <= 2.5 -> 2, < 3.5 -> 3, <= 5 -> 4, else 6; NaN -> 6
 * (the peers never see one: the quantisers refuse NaN weights). -0 keeps its sign bit. */
#define SQ_QM_FP4_MAX 6.0f
SQ_QM float sq_qm_e2m1_decode(uint8_t c) {
    uint32_t i = c & 7u; /* i < 4: i / 2; else 2^((i >> 1) - 1) * (1 + (i & 1) / 2) */
    float m = i < 4u ? 0.5f * (float)i : (float)(1u << ((i >> 1) - 1u)) * ((i & 1u) ? 1.5f : 1.0f);
    return (c & 8u) ? -m : m;
}
SQ_QM uint8_t sq_qm_e2m1_encode(float x) {
    uint8_t sign = (sq_qm_bits(x) >> 31) ? 8u : 0u;
    float a = fabsf(x);
    uint8_t i = a <= 0.25f ? 0u : a < 0.75f ? 1u : a <= 1.25f ? 2u : a < 1.75f ? 3u : a <= 2.5f ? 4u : a < 3.5f ? 5u : a <= 5.0f ? 6u : 7u;
    return (uint8_t)(sign | i);
}
/* The E2M1 code of w with the (effective) scale s: e2m1(clamp(w / s, +-6)), compressed-tensors' _quantize. */
SQ_QM uint8_t sq_qm_fp4_code(float w, float s) { return sq_qm_e2m1_encode(fmaxf(-SQ_QM_FP4_MAX, fminf(w / s, SQ_QM_FP4_MAX))); }
/* E8M0 (float8_e8m0fnu): 2^(e - 127); 255 is NaN. */
SQ_QM float sq_qm_e8m0_decode(uint8_t e) { return e == 255u ? sq_qm_float(0x7FC00000u) : e == 0u ? sq_qm_float(0x00400000u) : sq_qm_float((uint32_t)e << 23); }
/* ---------------------------------------------------------------- INT8 W8A8 */

/* x rounded half to even and saturated to [-128, 127]: CUDA's cvt.rni.sat.s8.f32, vLLM's float_to_int8_rn
 * (csrc/quantization/w8a8/int8/scaled_quant.cu, vLLM main 2026). nearbyintf under the default rounding mode. */
SQ_QM int8_t sq_qm_i8_rn(float x) {
    float r = nearbyintf(x);
    r = r != r ? 0.0f : r; /* NaN: 0, as cvt.rni.sat gives */
    r = r < -128.0f ? -128.0f : r > 127.0f ? 127.0f : r;
    return (int8_t)r;
}

/* The INT8 code of weight w with scale s, as compressed-tensors 0.20 quantizes (forward.py _quantize:
 * clamp(w / s, -128, 127) then torch.round, half to even); s = max|w_row| / 127.5 (calculate_qparams: the
 * absmax over half the int8 range 255). */
SQ_QM int8_t sq_qm_i8_code(float w, float s) { return sq_qm_i8_rn(fmaxf(-128.0f, fminf(w / s, 127.0f))); }

/* ---------------------------------------------------------------- the integer grid */

/* s rounded to the fp16 value the file will hold, kept positive and finite. */
SQ_QM float sq_qm_f16_scale(float s) {
    float h = sq_qm_float(sq_qm_f16_widen((uint16_t)sq_qm_f16_narrow(sq_qm_bits(s))));
    if (!(h > 0)) h = 5.9604645e-08f; /* smallest fp16 subnormal */
    if (isinf(h)) h = 65504.0f;
    return h;
}

/* Code of x on the grid: clamp(round_half_even(x / s) + z, 0, maxq). */
SQ_QM uint8_t sq_qm_grid_quant(float x, float s, int32_t z, int maxq) {
    float q = nearbyintf(x / s) + (float)z;
    q = q < 0 ? 0 : q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}

/* AWQ's zero-point grid (AutoAWQ's pseudo_quantize_tensor) for a group spanning [lo, hi]: scale
 * max(hi - lo, 1e-5) / maxq, zero clamp(-round(lo / scale), 0, maxq); kept in float. */
SQ_QM void sq_qm_awq_grid(float lo, float hi, int maxq, float *scale, float *zero) {
    float s = fmaxf(hi - lo, 1e-5f) / (float)maxq;
    float z = -nearbyintf(lo / s);
    *scale = s;
    *zero = z < 0 ? 0 : z > (float)maxq ? (float)maxq : z;
}
/* x through AWQ's grid: (clamp(round(x / s) + z, 0, maxq) - z) * s. */
SQ_QM float sq_qm_awq_fq(float x, float s, float z, int maxq) {
    float q = nearbyintf(x / s) + z;
    q = q < 0 ? 0 : q > (float)maxq ? (float)maxq : q;
    return (q - z) * s;
}

/* Scale and zero of a group whose values span [xmin, xmax] (the GPTQ reference's quantizer). */
SQ_QM void sq_qm_grid_params(float xmin, float xmax, int bits, bool sym, float *scale, int32_t *zero) {
    int maxq = (1 << bits) - 1;
    xmin = fminf(xmin, 0.0f);
    xmax = fmaxf(xmax, 0.0f);
    if (sym) {
        xmax = fmaxf(-xmin, xmax);
        if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) { xmin = -1; xmax = 1; }
    float s = (xmax - xmin) / (float)maxq;
    int32_t z = sym ? (maxq + 1) / 2 : (int32_t)nearbyintf(-xmin / s);
    if (!sym && z == 0) {
        /* GPTQ v1 stores zero - 1, and loaders disagree on how a stored -1 reads back: keep zero >= 1 by
         * giving the group one step below 0 (the range [xmin, xmax] still fits: |xmin| < s/2). */
        z = 1;
        s = xmax / (float)(maxq - 1);
    }
    *scale = sq_qm_f16_scale(s);
    *zero = z;
}

/* Sum d_i |x_i - dq(x_i)|^norm over m values x[i * stride] with importances d[i] (d NULL: all 1; norm <= 0: 2). */
SQ_QM double sq_qm_grid_error(const float *x, int64_t stride, const float *d, int64_t m, float scale, int32_t zero, int maxq, double norm) {
    double acc = 0;
    bool sq = !(norm > 0) || norm == 2;
    for (int64_t i = 0; i < m; i++) {
        float xi = x[i * stride];
        float e = scale * (float)((int32_t)sq_qm_grid_quant(xi, scale, zero, maxq) - zero) - xi;
        double t = sq ? (double)e * e : pow(fabs((double)e), norm);
        acc += d ? d[i] * t : t;
    }
    return acc;
}

/* The search's grid, as the GPTQ reference's quant.py (grid 100, maxshrink 0.8). */
#define SQ_QM_GRID_STEPS 100
#define SQ_QM_GRID_SHRINK_STEPS 80

/* The mse grid of m values x[i * stride] with importances d (see quant/quant_internal.h's sq_grid_search). */
SQ_QM void sq_qm_grid_search(const float *x, int64_t stride, const float *d, int64_t m, int bits, bool sym, double norm, float *scale,
                             int32_t *zero) {
    int maxq = (1 << bits) - 1;
    float lo = x[0], hi = x[0], ext = x[0]; /* ext: the value of the largest magnitude, with its sign */
    for (int64_t i = 1; i < m; i++) {
        float xi = x[i * stride];
        lo = fminf(lo, xi);
        hi = fmaxf(hi, xi);
        if (fabsf(xi) > fabsf(ext)) ext = xi;
    }
    sq_qm_grid_params(lo, hi, bits, sym, scale, zero);
    if (ext == 0) return;
    double best = sq_qm_grid_error(x, stride, d, m, *scale, *zero, maxq, norm);
    /* Symmetric: every format spotq writes reads all 2^b codes of a symmetric grid, the value being
     * s (q - 2^(b-1)) for q in [0, 2^b - 1], i.e. [-2^(b-1), 2^(b-1) - 1] steps: GPTQ v1 stores the zero 2^(b-1)
     * as 2^(b-1) - 1 and AutoGPTQ and vLLM's exllama kernel add the 1 back, vLLM's Marlin runs sym as
     * uint4b8 / uint8b128 (the same implicit zero), and compressed-tensors' sym int4 range is [-8, 7]
     * (offset binary in the file, uint4b8 in vLLM). So the largest magnitude, when negative, may sit on
     * -2^(b-1) exactly; the minmax grid (the reference's (2 amax) / maxq) puts neither end on a value. */
    int32_t half = (maxq + 1) / 2;
    float s0 = ext < 0 ? -ext / (float)half : ext / (float)(half - 1);
    for (int i = 0; i < SQ_QM_GRID_SHRINK_STEPS; i++) {
        float p = 1.0f - (float)i / (float)SQ_QM_GRID_STEPS, s;
        int32_t z;
        if (sym) {
            s = sq_qm_f16_scale(p * s0);
            z = half;
        } else sq_qm_grid_params(p * lo, p * hi, bits, false, &s, &z);
        double e = sq_qm_grid_error(x, stride, d, m, s, z, maxq, norm);
        if (e < best) {
            best = e;
            *scale = s;
            *zero = z;
        }
    }
}

#endif
