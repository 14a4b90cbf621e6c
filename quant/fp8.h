/* fp8.h: FP8 E4M3 weight quantisation (max 448), per tensor or per output channel, as
 * compressed-tensors and vLLM define it: scale = max|w| / 448, code = e4m3(clamp(w / scale, +-448)),
 * rounded to nearest even; W = code * scale. W is [N, K] row-major. */
#ifndef SQ_FP8_H
#define SQ_FP8_H

#include "../base/base.h"

#define SQ_FP8_MAX 448.0f

/* The scale of values whose largest magnitude is absmax: absmax / 448, or FLT_EPSILON for 0 (the
 * floor compressed-tensors puts on a zero scale). */
float sq_fp8_scale(float absmax);

/* max |w| over n values; NaN or Inf gives -1 with *bad their index. */
float sq_fp8_absmax(const float *w, int64_t n, int64_t *bad /* OUT */);

/* E4M3 codes (N, K) and scales of W: per_channel, one scale a row (N); else one (1), from
 * tensor_absmax when it is > 0 (the max over a group of matrices that must share a scale, e.g. q, k, v
 * fused by vLLM), else from W's own max. NaN or Inf in W is an error that begins with `what` (e.g. "MODEL: tensor 'NAME'"). */
sq_status sq_fp8_quantize(const float *w, int64_t n, int64_t k, bool per_channel, float tensor_absmax, uint8_t *codes /* OUT */,
                          float *scales /* OUT */, const char *what, sq_err *err);

/* GPTQ on the E4M3 grid (as llm-compressor's GPTQModifier runs an FP8 scheme): with the scales fixed
 * (those of sq_fp8_quantize), each column is rounded in turn and its error spread over the columns not
 * yet rounded through the inverse Hessian H [K, K] of the calibration inputs. codes (N, K) holds the
 * round-to-nearest codes on entry; *damp_used is -1 when H would not factor, and codes are then left as
 * they were (with a warning through sq_log). act_order and damp as in sq_quant_gptq; the sweep on `threads`
 * threads in fixed chunks of rows (the same codes for every count). *factor_kept (may be NULL): the
 * factor of H^-1 was the previous solve's over the same H (sq_qout.factor_kept), not computed. */
sq_status sq_fp8_gptq(const float *w, const float *h, int64_t n, int64_t k, bool per_channel, const float *scales, bool act_order,
                      double damp, int threads, uint8_t *codes /* IN/OUT */, double *damp_used /* OUT */, bool *factor_kept /* OUT */,
                      sq_err *err);

/* Block-wise (compressed-tensors' strategy "block", block_structure [128, 128]): scales (ceil(N/128),
 * ceil(K/128)), each the max |w| of its block (the edge blocks zero-padded, which leaves their max as it
 * is) / 448, then the codes by round to nearest; the errors as sq_fp8_quantize's. */
sq_status sq_fp8_quantize_block(const float *w, int64_t n, int64_t k, uint8_t *codes /* OUT */, float *scales /* OUT */, const char *what,
                                sq_err *err);
/* GPTQ on the block grid: the scales fixed from the original W (sq_fp8_quantize_block's) before the
 * sweep, each column rounded with the scale of its row's block (llm-compressor's GPTQ has no block
 * strategy: its quantize_weight raises for it; this is the fixed-scale sweep it runs per tensor and per
 * channel). Arguments as sq_fp8_gptq's. */
sq_status sq_fp8_gptq_block(const float *w, const float *h, int64_t n, int64_t k, const float *scales, bool act_order, double damp,
                            int threads, uint8_t *codes /* IN/OUT */, double *damp_used /* OUT */, bool *factor_kept /* OUT */, sq_err *err);
void sq_fp8_dequant_block(const uint8_t *codes, const float *scales, int64_t n, int64_t k, float *out);

/* out (N, K) = the values those codes and scales stand for. */
void sq_fp8_dequant(const uint8_t *codes, const float *scales, int64_t n, int64_t k, bool per_channel, float *out);

#endif
