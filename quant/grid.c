/* grid.c: the integer grid of a group (scale and zero), round-to-nearest, and the qmatrix container. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "quant_internal.h"

void sq_grid_params(float xmin, float xmax, int bits, bool sym, float *scale, int32_t *zero) {
    int maxq = (1 << bits) - 1;
    xmin = fminf(xmin, 0.0f);
    xmax = fmaxf(xmax, 0.0f);
    if (sym) {
        xmax = fmaxf(-xmin, xmax);
        if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) { xmin = -1; xmax = 1; }
    float s = (xmax - xmin) / (float)maxq;
    int32_t z = sym ? (maxq + 1) / 2 : (int32_t)nearbyintf(-xmin / s);
    if (!sym && z == 0) {
        /* GPTQ v1 stores zero - 1, and loaders disagree on how a stored -1 reads back: keep zero >= 1 by
         * giving the group one step below 0 (the range [xmin, xmax] still fits: |xmin| < s/2). */
        z = 1;
        s = xmax / (float)(maxq - 1);
    }
    /* The file holds fp16 scales: quantise with exactly what will be stored. */
    float h = sq_f16_to_f32(sq_f32_to_f16(s));
    if (!(h > 0)) h = 5.9604645e-08f; /* smallest fp16 subnormal */
    if (isinf(h)) h = 65504.0f;
    *scale = h;
    *zero = z;
}

bool sq_quant_fits(int64_t n, int64_t k, const sq_qparams *p) {
    int pack = 32 / p->bits;
    if (k % pack || n % pack) return false;
    return p->group_size <= 0 || k % p->group_size == 0;
}

sq_status sq_quant_rtn(const float *w, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    sq_status s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err);
    if (s) return s;
    int64_t gs = p->group_size > 0 ? p->group_size : k;
    int maxq = (1 << p->bits) - 1;
    for (int64_t c = 0; c < k; c++) out->g_idx[c] = (int32_t)(c / gs);
    for (int64_t r = 0; r < n; r++) {
        const float *row = w + r * k;
        for (int64_t g = 0; g < out->n_groups; g++) {
            int64_t c0 = g * gs, c1 = c0 + gs < k ? c0 + gs : k;
            float lo = row[c0], hi = row[c0];
            for (int64_t c = c0; c < c1; c++) { lo = fminf(lo, row[c]); hi = fmaxf(hi, row[c]); }
            float sc;
            int32_t z;
            sq_grid_params(lo, hi, p->bits, p->sym, &sc, &z);
            out->scale[g * n + r] = sc;
            out->zero[g * n + r] = z;
            for (int64_t c = c0; c < c1; c++) out->q[c * n + r] = sq_grid_quant(row[c], sc, z, maxq);
        }
    }
    return SQ_OK;
}
