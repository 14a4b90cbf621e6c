/* grid.c: the integer grid of a group (scale and zero: from its min and max, or searched for the least
 * importance-weighted error; the arithmetic is kernels/qmath.h's), and the fit check. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

void sq_grid_params(float xmin, float xmax, int bits, bool sym, float *scale, int32_t *zero) {
    sq_qm_grid_params(xmin, xmax, bits, sym, scale, zero);
}

double sq_grid_error(const float *x, const float *d, int64_t m, float scale, int32_t zero, int maxq, double norm) {
    return sq_qm_grid_error(x, 1, d, m, scale, zero, maxq, norm);
}

void sq_grid_search(const float *x, const float *d, int64_t m, int bits, bool sym, double norm, float *scale, int32_t *zero) {
    sq_qm_grid_search(x, 1, d, m, bits, sym, norm, scale, zero);
}

bool sq_quant_fits(int64_t n, int64_t k, const sq_qparams *p) {
    int pack = 32 / p->bits;
    if (k % pack || n % pack) return false;
    return p->group_size <= 0 || k % p->group_size == 0;
}
