/* quant_internal.h: helpers shared inside quant/ (not part of its public interface). */
#ifndef SQ_QUANT_INTERNAL_H
#define SQ_QUANT_INTERNAL_H

#include <math.h>

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
static inline uint8_t sq_grid_quant(float x, float s, int32_t z, int maxq) {
    float q = nearbyintf(x / s) + (float)z;
    q = q < 0 ? 0 : q > (float)maxq ? (float)maxq : q;
    return (uint8_t)q;
}

/* The grid GPTQ's sweep rounds onto, column by column: the integer groups of sq_quant_gptq, or E4M3. */
typedef struct sq_gptq_grid {
    /* Optional: called once with W^T [K, N] (dead inputs zeroed), before any permutation or update. */
    sq_status (*begin)(struct sq_gptq_grid *g, const float *wt, sq_err *err);
    /* Rounds wc [N], the current values of source column src (position col of the sweep's order), keeping
     * its codes, and gives the values they stand for in dq [N]. wt is W^T as updated before this lazy block. */
    void (*column)(struct sq_gptq_grid *g, int64_t col, int64_t src, const float *wt, const float *wc, float *dq);
    /* Set by the sweep before the first column: perm[col] is the source column at position col. */
    const int64_t *perm;
} sq_gptq_grid;

/* GPTQ's sweep over W [N, K] with the Hessian H [K, K] (see sq_quant_gptq): dead inputs, act-order,
 * damping raised tenfold up to three times, bs-column lazy blocks. *damp_used is the damping that
 * factored, or -1 when none did (nothing was rounded: the caller falls back to plain rounding). */
sq_status sq_gptq_sweep(const float *w, const float *h, int64_t n, int64_t k, bool act_order, double damp, int64_t bs,
                        sq_gptq_grid *g, double *damp_used /* OUT */, sq_err *err);

/* The GPU accumulator behind sq_hessian (quant/gptq_cuda.c): what add, finish and free call when hs->dev is set. */
void sq_hessian_cuda_add(sq_hessian *hs, const float *x, int64_t t);
void sq_hessian_cuda_finish(sq_hessian *hs);
void sq_hessian_cuda_free(sq_hessian *hs);

#endif
