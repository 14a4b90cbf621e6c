/* quant_internal.h: helpers shared inside quant/ (not part of its public interface). */
#ifndef SQ_QUANT_INTERNAL_H
#define SQ_QUANT_INTERNAL_H

#include <math.h>

#include "quant.h"

/* Scale and zero of a group whose values span [xmin, xmax] (the GPTQ reference's quantizer). */
void sq_grid_params(float xmin, float xmax, int bits, bool sym, float *scale /* OUT */, int32_t *zero /* OUT */);

/* Code of x on the grid: clamp(round_half_even(x / s) + z, 0, maxq). */
static inline uint8_t sq_grid_quant(float x, float s, int32_t z, int maxq) {
    float q = nearbyintf(x / s) + (float)z;
    q = q < 0 ? 0 : q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}

/* The GPU accumulator behind sq_hessian (quant/gptq_cuda.c): what add, finish and free call when hs->dev is set. */
void sq_hessian_cuda_add(sq_hessian *hs, const float *x, int64_t t);
void sq_hessian_cuda_finish(sq_hessian *hs);
void sq_hessian_cuda_free(sq_hessian *hs);

#endif
