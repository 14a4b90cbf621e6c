/* fpbits.h: the exact conversions between f32 and the narrow float types spotq stores (F16, BF16,
 * E4M3), on bit patterns, in one copy for the host compilers (cc) and nvcc (formats/dtype.c's bulk
 * loops, kernels/qmath.h's grids on both sides). Integer code only, so the answers depend neither on
 * the FPU's rounding mode nor on flush-to-zero (and, with no float operation that might trap, the
 * compiler may evaluate every path and select). Every NaN these functions return is quiet and keeps the
 * input's sign. They use selects rather than branches, and no bool arithmetic, so that dtype.c's bulk
 * loops vectorise. The narrowing ones return their code in a uint32_t for the same reason: with a
 * uint8_t result GCC 12 demotes the sign shift to an 8-bit vector shift, which x86 lacks, and gives up.
 * tests/unit/test_dtype.c and test_backend_ops.c hold them to references over every input code. */
#ifndef SQ_BASE_FPBITS_H
#define SQ_BASE_FPBITS_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SQ_FP static inline __host__ __device__
#else
#define SQ_FP static inline
#endif

SQ_FP uint32_t sq_fp_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

SQ_FP float sq_fp_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* F16 -> f32. NaN: sign | 0x7FC00000 | payload << 13 (quieted, payload kept, as x86 F16C does). */
SQ_FP uint32_t sq_fp_f16_widen(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7FFFu;
    uint32_t normal = (em << 13) + ((127u - 15u) << 23);
    uint32_t special = (em << 13) | 0x7F800000u | (em > 0x7C00u ? 0x00400000u : 0u);
    /* Subnormal (em < 0x400): em * 2^-24. Shift em up until bit 10 is set, by 8, 4, 2, 1 as
     * needed (a branch-free leading-zero count); each step taken halves the exponent. */
    uint32_t m = em, s = 0;
    s += m < 0x008u ? 8u : 0u, m = m < 0x008u ? m << 8 : m;
    s += m < 0x080u ? 4u : 0u, m = m < 0x080u ? m << 4 : m;
    s += m < 0x200u ? 2u : 0u, m = m < 0x200u ? m << 2 : m;
    s += m < 0x400u ? 1u : 0u, m = m < 0x400u ? m << 1 : m;
    uint32_t sub = em == 0 ? 0u : ((113u - s) << 23) | ((m & 0x3FFu) << 13);
    uint32_t r = em < 0x0400u ? sub : em >= 0x7C00u ? special : normal;
    return sign | r;
}

/* f32 -> F16, round to nearest even. |x| >= 65520 (the midpoint above 65504) gives Inf.
 * NaN: sign | 0x7E00 | the top 9 payload bits (quieted). */
SQ_FP uint32_t sq_fp_f16_narrow(uint32_t x) {
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7FFFFFFFu;
    /* Normal result: rebias, then round away the 13 low bits (a carry may step the exponent). */
    uint32_t n = a - ((127u - 15u) << 23);
    n = (n + 0x0FFFu + ((n >> 13) & 1u)) >> 13;
    /* Subnormal result (|x| < 2^-14): the code is round(|x| * 2^24) = round(m >> (126 - e)).
     * A shift of 25 or more (or an f32 subnormal) leaves less than half an F16 ulp: zero.
     * The shift is clamped for the lanes that take another path, so it is always defined. */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t sh = 126u - (e < 101u ? 101u : e > 112u ? 112u : e); /* clamped to [14, 25] */
    uint32_t q = (m + (1u << (sh - 1u)) - 1u + ((m >> sh) & 1u)) >> sh;
    uint32_t r = a < 0x38800000u ? q : n;
    r = a >= 0x477FF000u ? 0x7C00u : r;
    r = a > 0x7F800000u ? 0x7E00u | ((a >> 13) & 0x1FFu) : r;
    return sign | r;
}

/* BF16 -> f32: the top half of an f32. A signalling NaN is quieted like F16's. */
SQ_FP uint32_t sq_fp_bf16_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    return u | ((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x00400000u : 0u);
}

/* f32 -> BF16, round to nearest even; overflow carries into Inf by itself.
 * NaN: the top half with the quiet bit set (sign and top payload bits kept). */
SQ_FP uint32_t sq_fp_bf16_narrow(uint32_t x) {
    uint32_t r = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    r = (x & 0x7FFFFFFFu) > 0x7F800000u ? (x >> 16) | 0x0040u : r;
    return r;
}

/* E4M3 (fn) -> f32. S.1111.111 is NaN (sign | 0x7FC00000); there is no Inf. */
SQ_FP uint32_t sq_fp_e4m3_widen(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t em = b & 0x7Fu;
    uint32_t normal = (em << 20) + ((127u - 7u) << 23);
    /* Subnormal (em < 8): em * 2^-9, normalised like F16's above (bit 3 is the implicit one). */
    uint32_t m = em, s = 0;
    s += m < 0x4u ? 2u : 0u, m = m < 0x4u ? m << 2 : m;
    s += m < 0x8u ? 1u : 0u, m = m < 0x8u ? m << 1 : m;
    uint32_t sub = em == 0 ? 0u : ((121u - s) << 23) | ((m & 0x7u) << 20);
    uint32_t r = em < 0x08u ? sub : em == 0x7Fu ? 0x7FC00000u : normal;
    return sign | r;
}

/* f32 -> E4M3 (fn), round to nearest even, saturating: |x| > 448 (Inf too) gives +-448 (0x7E);
 * NaN gives 0x7F | sign. */
SQ_FP uint32_t sq_fp_e4m3_narrow(uint32_t x) {
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7FFFFFFFu;
    uint32_t n = a - ((127u - 7u) << 23);
    n = (n + 0x7FFFFu + ((n >> 20) & 1u)) >> 20;
    /* Subnormal result (|x| < 2^-6): round(|x| * 2^9) = round(m >> (141 - e)). */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t sh = 141u - (e < 116u ? 116u : e > 120u ? 120u : e); /* clamped to [21, 25] */
    uint32_t q = (m + (1u << (sh - 1u)) - 1u + ((m >> sh) & 1u)) >> sh;
    uint32_t r = a < 0x3C800000u ? q : n;
    r = a > 0x43E00000u ? 0x7Eu : r;
    r = a > 0x7F800000u ? 0x7Fu : r;
    return sign | r;
}

#endif
