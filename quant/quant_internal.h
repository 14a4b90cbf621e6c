/* quant_internal.h: helpers shared inside quant/ (not part of its public interface). */
#ifndef SQ_QUANT_INTERNAL_H
#define SQ_QUANT_INTERNAL_H

#include <math.h>

#include "../kernels/qmath.h"
#include "quant.h"

/* Scale and zero of a group whose values span [xmin, xmax] (the GPTQ reference's quantizer). */
void sq_grid_params(float xmin, float xmax, int bits, bool sym, float *scale /* OUT */, int32_t *zero /* OUT */);

/* The mse grid of one group of m values x (contiguous) with importances d (NULL: all 1): the scale and
 * zero, from the candidates below, of the least sum d_i |x_i - dq(x_i)|^norm (norm <= 0: 2). Candidates:
 * the minmax grid of sq_grid_params (so the search never does worse than it), then, as the GPTQ
 * reference's mse option, the range shrunk by p = 1 - i/100 for i < 80: asymmetric, sq_grid_params of
 * [p min, p max]; symmetric, p times the scale that puts the largest magnitude exactly on the grid's end
 * on its side (-2^(b-1) s when it is negative, as Q4_0, or (2^(b-1) - 1) s), zero 2^(b-1). Ties keep the
 * earlier candidate. The scale is the fp16 value the file will hold. */
void sq_grid_search(const float *x, const float *d, int64_t m, int bits, bool sym, double norm, float *scale /* OUT */,
                    int32_t *zero /* OUT */);
/* The weighted error of that sum for one candidate (what sq_grid_search compares). */
double sq_grid_error(const float *x, const float *d, int64_t m, float scale, int32_t zero, int maxq, double norm);

/* Code of x on the grid: clamp(round_half_even(x / s) + z, 0, maxq). */
static inline uint8_t sq_grid_quant(float x, float s, int32_t z, int maxq) { return sq_qm_grid_quant(x, s, z, maxq); }

/* The backend's integer grid for these settings (imp: the mse grid's column importances, or NULL). */
sq_qgrid sq_quant_int_grid(const sq_qparams *p, const float *imp);

#endif
