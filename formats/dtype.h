/* dtype.h: tensor element types and the exact conversions between them and float. */
#ifndef SQ_DTYPE_H
#define SQ_DTYPE_H

#include <stdint.h>
#include <stddef.h>

typedef enum {
    SQ_DT_F64, SQ_DT_F32, SQ_DT_F16, SQ_DT_BF16, SQ_DT_F8_E4M3, SQ_DT_F8_E5M2,
    SQ_DT_I64, SQ_DT_I32, SQ_DT_I16, SQ_DT_I8, SQ_DT_U8, SQ_DT_BOOL,
    SQ_DT_COUNT
} sq_dtype;

/* The safetensors name of a dtype ("F32", ...), and back. Returns -1 for an unknown name. */
const char *sq_dtype_name(sq_dtype t);
int sq_dtype_from_name(const char *name);
/* Bytes per element. */
int sq_dtype_size(sq_dtype t);
/* True for the float types spotq computes with (F32, F16, BF16, F8_E4M3). */
int sq_dtype_is_float(sq_dtype t);

/* Conversions. float->narrow rounds to nearest, ties to even.
 * F16: overflow gives +-Inf, NaN stays NaN (quiet).
 * BF16: NaN stays NaN (quiet), overflow gives +-Inf.
 * E4M3 (fn: no Inf, max 448, NaN = S.1111.111): saturates to +-448; Inf saturates too; NaN -> 0x7F|sign. */
float sq_f16_to_f32(uint16_t h);
uint16_t sq_f32_to_f16(float f);
float sq_bf16_to_f32(uint16_t h);
uint16_t sq_f32_to_bf16(float f);
float sq_e4m3_to_f32(uint8_t b);
uint8_t sq_f32_to_e4m3(float f);

/* Converts n elements of src (type t) to float. t must satisfy sq_dtype_is_float or be F64. */
void sq_dtype_to_f32(sq_dtype t, const void *src, float *dst, size_t n);
/* Converts n floats to dst of type t (F32, F16, BF16, F8_E4M3). */
void sq_dtype_from_f32(sq_dtype t, const float *src, void *dst, size_t n);

#endif
