/* dtype.c: tensor element types (names, sizes) and the exact conversions between them and float. */
#include "dtype.h"

#include <assert.h>
#include <string.h>

/* Tensors on disk are little-endian and the bulk loops read them in place. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "spotq's dtype conversions assume a little-endian host"
#endif

/* ---- names and sizes ---- */

static const struct {
    const char *name;
    int size;
    int is_float;
} dtype_info[SQ_DT_COUNT] = {
    [SQ_DT_F64] = {"F64", 8, 0},          [SQ_DT_F32] = {"F32", 4, 1},
    [SQ_DT_F16] = {"F16", 2, 1},          [SQ_DT_BF16] = {"BF16", 2, 1},
    [SQ_DT_F8_E4M3] = {"F8_E4M3", 1, 1},  [SQ_DT_F8_E5M2] = {"F8_E5M2", 1, 0},
    [SQ_DT_I64] = {"I64", 8, 0},          [SQ_DT_I32] = {"I32", 4, 0},
    [SQ_DT_I16] = {"I16", 2, 0},          [SQ_DT_I8] = {"I8", 1, 0},
    [SQ_DT_U8] = {"U8", 1, 0},            [SQ_DT_BOOL] = {"BOOL", 1, 0},
};

static int dtype_valid(sq_dtype t) {
    return (unsigned)t < (unsigned)SQ_DT_COUNT;
}

/* "?" rather than NULL for a value outside the enum, so that it is always safe to print. */
const char *sq_dtype_name(sq_dtype t) {
    return dtype_valid(t) ? dtype_info[t].name : "?";
}

int sq_dtype_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < SQ_DT_COUNT; t++)
        if (strcmp(name, dtype_info[t].name) == 0) return t;
    return -1;
}

int sq_dtype_size(sq_dtype t) {
    return dtype_valid(t) ? dtype_info[t].size : 0;
}

int sq_dtype_is_float(sq_dtype t) {
    return dtype_valid(t) ? dtype_info[t].is_float : 0;
}

/* ---- scalar conversions, on bit patterns ----
 * Integer code only, so the answers depend neither on the FPU's rounding mode nor on flush-to-zero
 * (and, with no float operation that might trap, the compiler may evaluate every path and select).
 * Every NaN these functions return is quiet and keeps the input's sign. The helpers use selects
 * rather than branches, and no bool arithmetic, so that the bulk loops below vectorise. The narrowing
 * ones return their code in a uint32_t for the same reason: with a uint8_t result GCC 12 demotes
 * the sign shift to an 8-bit vector shift, which x86 lacks, and gives up. */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* F16 -> f32. NaN: sign | 0x7FC00000 | payload << 13 (quieted, payload kept, as x86 F16C does). */
static inline uint32_t f16_widen(uint16_t h) {
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
static inline uint32_t f16_narrow(uint32_t x) {
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
static inline uint32_t bf16_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    return u | ((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x00400000u : 0u);
}

/* f32 -> BF16, round to nearest even; overflow carries into Inf by itself.
 * NaN: the top half with the quiet bit set (sign and top payload bits kept). */
static inline uint32_t bf16_narrow(uint32_t x) {
    uint32_t r = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    r = (x & 0x7FFFFFFFu) > 0x7F800000u ? (x >> 16) | 0x0040u : r;
    return r;
}

/* E4M3 (fn) -> f32. S.1111.111 is NaN (sign | 0x7FC00000); there is no Inf. */
static inline uint32_t e4m3_widen(uint8_t b) {
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
static inline uint32_t e4m3_narrow(uint32_t x) {
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

float sq_f16_to_f32(uint16_t h) { return bits_f32(f16_widen(h)); }
uint16_t sq_f32_to_f16(float f) { return (uint16_t)f16_narrow(f32_bits(f)); }
float sq_bf16_to_f32(uint16_t h) { return bits_f32(bf16_widen(h)); }
uint16_t sq_f32_to_bf16(float f) { return (uint16_t)bf16_narrow(f32_bits(f)); }
float sq_e4m3_to_f32(uint8_t b) { return bits_f32(e4m3_widen(b)); }
uint8_t sq_f32_to_e4m3(float f) { return (uint8_t)e4m3_narrow(f32_bits(f)); }

/* ---- bulk conversions ----
 * The narrow side may sit at any byte offset (safetensors data need not be aligned) and the float
 * side is moved as uint32_t bits, so that no float operation (and no NaN quieting by the FPU) can
 * intervene. Both go through memcpy into small local blocks: that is free of alignment and aliasing
 * traps, and a fixed-length inner loop over locals is one the compiler vectorises even at -O2
 * (GCC's cheap cost model refuses loops that need a runtime alias check or an epilogue). */

enum { BLOCK = 64 };

#define WIDEN_LOOP(IN_T, WIDEN)                                                                   \
    do {                                                                                          \
        IN_T in_[BLOCK];                                                                          \
        uint32_t out_[BLOCK];                                                                     \
        size_t i_ = 0;                                                                            \
        for (; i_ + BLOCK <= n; i_ += BLOCK) {                                                    \
            memcpy(in_, p + i_ * sizeof(IN_T), sizeof in_);                                       \
            for (int j_ = 0; j_ < BLOCK; j_++) out_[j_] = WIDEN(in_[j_]);                         \
            memcpy(dst + i_, out_, sizeof out_);                                                  \
        }                                                                                         \
        for (; i_ < n; i_++) {                                                                    \
            memcpy(in_, p + i_ * sizeof(IN_T), sizeof(IN_T));                                     \
            out_[0] = WIDEN(in_[0]);                                                              \
            memcpy(dst + i_, out_, 4);                                                            \
        }                                                                                         \
    } while (0)

#define NARROW_LOOP(OUT_T, NARROW)                                                                \
    do {                                                                                          \
        uint32_t in_[BLOCK];                                                                      \
        OUT_T out_[BLOCK];                                                                        \
        size_t i_ = 0;                                                                            \
        for (; i_ + BLOCK <= n; i_ += BLOCK) {                                                    \
            memcpy(in_, src + i_, sizeof in_);                                                    \
            for (int j_ = 0; j_ < BLOCK; j_++) out_[j_] = (OUT_T)NARROW(in_[j_]);                 \
            memcpy(p + i_ * sizeof(OUT_T), out_, sizeof out_);                                    \
        }                                                                                         \
        for (; i_ < n; i_++) {                                                                    \
            memcpy(in_, src + i_, 4);                                                             \
            out_[0] = (OUT_T)NARROW(in_[0]);                                                      \
            memcpy(p + i_ * sizeof(OUT_T), out_, sizeof(OUT_T));                                  \
        }                                                                                         \
    } while (0)

static inline uint32_t e5m2_widen(uint8_t b) { return f16_widen((uint16_t)(b << 8)); }

/* By value: double -> float and wide ints -> float round to nearest (even), the rest are exact. */
#define CAST_LOOP(IN_T)                                                                           \
    do {                                                                                          \
        for (size_t i_ = 0; i_ < n; i_++) {                                                       \
            IN_T v_;                                                                              \
            memcpy(&v_, p + i_ * sizeof(IN_T), sizeof(IN_T));                                     \
            dst[i_] = (float)v_;                                                                  \
        }                                                                                         \
    } while (0)

void sq_dtype_to_f32(sq_dtype t, const void *src, float *dst, size_t n) {
    const unsigned char *p = src;
    if (n == 0) return; /* src and dst may then be NULL, which memcpy does not allow */
    switch (t) {
    case SQ_DT_F32: memmove(dst, src, n * 4); break;
    case SQ_DT_F16: WIDEN_LOOP(uint16_t, f16_widen); break;
    case SQ_DT_BF16: WIDEN_LOOP(uint16_t, bf16_widen); break;
    case SQ_DT_F8_E4M3: WIDEN_LOOP(uint8_t, e4m3_widen); break;
    case SQ_DT_F8_E5M2: WIDEN_LOOP(uint8_t, e5m2_widen); break; /* the top byte of an F16 */
    case SQ_DT_F64: CAST_LOOP(double); break;
    /* Not float types, so outside the header's contract; converted by value rather than left as
     * garbage, since a dtype read from a file may end up here. */
    case SQ_DT_I64: CAST_LOOP(int64_t); break;
    case SQ_DT_I32: CAST_LOOP(int32_t); break;
    case SQ_DT_I16: CAST_LOOP(int16_t); break;
    case SQ_DT_I8: CAST_LOOP(int8_t); break;
    case SQ_DT_U8: CAST_LOOP(uint8_t); break;
    case SQ_DT_BOOL:
        for (size_t i = 0; i < n; i++) dst[i] = p[i] ? 1.0f : 0.0f;
        break;
    default: assert(!"sq_dtype_to_f32: not a dtype");
    }
}

void sq_dtype_from_f32(sq_dtype t, const float *src, void *dst, size_t n) {
    unsigned char *p = dst;
    if (n == 0) return;
    switch (t) {
    case SQ_DT_F32: memmove(dst, src, n * 4); break;
    case SQ_DT_F16: NARROW_LOOP(uint16_t, f16_narrow); break;
    case SQ_DT_BF16: NARROW_LOOP(uint16_t, bf16_narrow); break;
    case SQ_DT_F8_E4M3: NARROW_LOOP(uint8_t, e4m3_narrow); break;
    case SQ_DT_F64: /* exact */
        for (size_t i = 0; i < n; i++) {
            double v = src[i];
            memcpy(p + 8 * i, &v, 8);
        }
        break;
    default:
        /* The caller picks the output type, so anything else is a bug in the caller. */
        assert(!"sq_dtype_from_f32: output dtype must be F32, F16, BF16, F8_E4M3 or F64");
    }
}
