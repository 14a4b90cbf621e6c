/* dtype.c: tensor element types (names, sizes) and the exact conversions between them and float. */
#include "dtype.h"

#include "../base/fpbits.h"

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

/* ---- scalar conversions: base/fpbits.h's, on bit patterns ---- */

float sq_f16_to_f32(uint16_t h) { return sq_fp_float(sq_fp_f16_widen(h)); }
uint16_t sq_f32_to_f16(float f) { return (uint16_t)sq_fp_f16_narrow(sq_fp_bits(f)); }
float sq_bf16_to_f32(uint16_t h) { return sq_fp_float(sq_fp_bf16_widen(h)); }
uint16_t sq_f32_to_bf16(float f) { return (uint16_t)sq_fp_bf16_narrow(sq_fp_bits(f)); }
float sq_e4m3_to_f32(uint8_t b) { return sq_fp_float(sq_fp_e4m3_widen(b)); }
uint8_t sq_f32_to_e4m3(float f) { return (uint8_t)sq_fp_e4m3_narrow(sq_fp_bits(f)); }

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

static inline uint32_t e5m2_widen(uint8_t b) { return sq_fp_f16_widen((uint16_t)(b << 8)); }

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
    case SQ_DT_F16: WIDEN_LOOP(uint16_t, sq_fp_f16_widen); break;
    case SQ_DT_BF16: WIDEN_LOOP(uint16_t, sq_fp_bf16_widen); break;
    case SQ_DT_F8_E4M3: WIDEN_LOOP(uint8_t, sq_fp_e4m3_widen); break;
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
    case SQ_DT_F16: NARROW_LOOP(uint16_t, sq_fp_f16_narrow); break;
    case SQ_DT_BF16: NARROW_LOOP(uint16_t, sq_fp_bf16_narrow); break;
    case SQ_DT_F8_E4M3: NARROW_LOOP(uint8_t, sq_fp_e4m3_narrow); break;
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
