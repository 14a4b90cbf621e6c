/* qpack.h: a quantised matrix in format-neutral integer form, and its packing into (and unpacking
 * from) the tensors of the formats serving engines read: GPTQ v1 and compressed-tensors
 * pack-quantized. Layouts in FORMATS.md; K = in_features, N = out_features, b = bits. */
#ifndef SQ_QPACK_H
#define SQ_QPACK_H

#include "../base/base.h"

/* A quantised matrix. W[n,k] ~= scale[g_idx[k]*N + n] * (q[k*N + n] - zero[g_idx[k]*N + n]). */
typedef struct {
    int64_t n, k;        /* out_features, in_features */
    int bits, group_size, n_groups;
    uint8_t *q;          /* [K, N] codes in 0 .. 2^bits - 1 */
    float *scale;        /* [n_groups, N], each exactly representable in fp16 */
    int32_t *zero;       /* [n_groups, N], 1 .. 2^bits - 1 (never 0: GPTQ v1 loaders disagree on it) */
    int32_t *g_idx;      /* [K] group of each input column */
    int fallback;        /* GPTQ: 0, or 1 when the Hessian would not factor and RTN was used */
    double damp_used;    /* GPTQ: the damping fraction that factored */
    bool factor_kept;    /* GPTQ: the factor of H^-1 was the previous solve's over the same H (sq_qout.factor_kept) */
} sq_qmatrix;

/* Allocates every array (group_size -1 = one group of K). sq_qmatrix_free(NULL-filled) is fine. */
sq_status sq_qmatrix_alloc(sq_qmatrix *m /* OUT */, int64_t n, int64_t k, int bits, int group_size, sq_err *err);
void sq_qmatrix_free(sq_qmatrix *m);
/* Dequantised W into out [N, K]. */
void sq_qmatrix_dequant(const sq_qmatrix *m, float *out);

/* GPTQ v1 (quant_method "gptq", checkpoint_format "gptq"):
 *   qweight int32 [K*b/32, N]  packed along K, LSB first
 *   qzeros  int32 [G, N*b/32]  packed along N, stores zero - 1
 *   scales  fp16  [G, N]
 *   g_idx   int32 [K]
 * Needs K and N multiples of 32/b (b = 4 or 8). Buffers are the caller's, sized as above. */
void sq_pack_gptq(const sq_qmatrix *m, int32_t *qweight, int32_t *qzeros, uint16_t *scales, int32_t *g_idx);
/* The inverse, as GPTQ v1 loaders read it (zero = stored + 1, masked to b bits then +1, no wrap). */
sq_status sq_unpack_gptq(sq_qmatrix *m /* OUT, allocated here */, int64_t n, int64_t k, int bits, int group_size,
                         const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales, const int32_t *g_idx, sq_err *err);

/* compressed-tensors pack-quantized: the signed value q - 2^(b-1) is stored offset by 2^(b-1), i.e. the code
 * itself, densely packed LSB first:
 *   weight_packed      int32 [N, K*b/32]
 *   weight_scale       fp16  [N, G]
 *   weight_zero_point  int32 [N*b/32, G]  (asymmetric only; signed zero z - 2^(b-1), stored the same way,
 *                                          packed along N)
 *   weight_g_idx       int32 [K]          (act-order only) */
void sq_pack_ct(const sq_qmatrix *m, int32_t *weight_packed, uint16_t *weight_scale, int32_t *weight_zero_point /* NULL if sym */);
sq_status sq_unpack_ct(sq_qmatrix *m /* OUT, allocated here */, int64_t n, int64_t k, int bits, int group_size,
                       const int32_t *weight_packed, const uint16_t *weight_scale, const int32_t *weight_zero_point /* NULL: sym */,
                       const int32_t *g_idx /* NULL: k / group_size */, sq_err *err);

/* AWQ "GEMM" (quant_method "awq", version "gemm"), 4-bit only:
 *   qweight int32 [K, N/8]  packed along N: nibble i (shift 4i) of word c holds column 8c + order[i],
 *                           order = [0, 2, 4, 6, 1, 3, 5, 7]
 *   qzeros  int32 [G, N/8]  the same packing, zeros as they are
 *   scales  fp16  [G, N]
 * Groups are in column order (g_idx = k / group_size). */
void sq_pack_awq(const sq_qmatrix *m, int32_t *qweight, int32_t *qzeros, uint16_t *scales);
sq_status sq_unpack_awq(sq_qmatrix *m /* OUT, allocated here */, int64_t n, int64_t k, int group_size, const int32_t *qweight,
                        const int32_t *qzeros, const uint16_t *scales, sq_err *err);

#endif
