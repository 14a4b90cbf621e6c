/* grid.c: the integer grid of a group (scale and zero: from its min and max, or searched for the least
 * importance-weighted error), and round-to-nearest. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "quant_internal.h"

/* The file holds fp16 scales: quantise with exactly what will be stored. */
static float f16_scale(float s) {
    float h = sq_f16_to_f32(sq_f32_to_f16(s));
    if (!(h > 0)) h = 5.9604645e-08f; /* smallest fp16 subnormal */
    if (isinf(h)) h = 65504.0f;
    return h;
}

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
    *scale = f16_scale(s);
    *zero = z;
}

double sq_grid_error(const float *x, const float *d, int64_t m, float scale, int32_t zero, int maxq, double norm) {
    double acc = 0;
    bool sq = !(norm > 0) || norm == 2;
    for (int64_t i = 0; i < m; i++) {
        float e = scale * (float)((int32_t)sq_grid_quant(x[i], scale, zero, maxq) - zero) - x[i];
        double t = sq ? (double)e * e : pow(fabs((double)e), norm);
        acc += d ? d[i] * t : t;
    }
    return acc;
}

/* The search's grid, as the GPTQ reference's quant.py (grid 100, maxshrink 0.8). */
#define GRID_STEPS 100
#define GRID_SHRINK_STEPS 80

void sq_grid_search(const float *x, const float *d, int64_t m, int bits, bool sym, double norm, float *scale, int32_t *zero) {
    int maxq = (1 << bits) - 1;
    float lo = x[0], hi = x[0], ext = x[0]; /* ext: the value of the largest magnitude, with its sign */
    for (int64_t i = 1; i < m; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
        if (fabsf(x[i]) > fabsf(ext)) ext = x[i];
    }
    sq_grid_params(lo, hi, bits, sym, scale, zero);
    if (ext == 0) return;
    double best = sq_grid_error(x, d, m, *scale, *zero, maxq, norm);
    /* Symmetric: every format spotq writes reads all 2^b codes of a symmetric grid, the value being
     * s (q - 2^(b-1)) for q in [0, 2^b - 1], i.e. [-2^(b-1), 2^(b-1) - 1] steps: GPTQ v1 stores the zero 2^(b-1)
     * as 2^(b-1) - 1 and AutoGPTQ and vLLM's exllama kernel add the 1 back, vLLM's Marlin runs sym as
     * uint4b8 / uint8b128 (the same implicit zero), and compressed-tensors' sym int4 range is [-8, 7]
     * (offset binary in the file, uint4b8 in vLLM). So the largest magnitude, when negative, may sit on
     * -2^(b-1) exactly; the minmax grid (the reference's (2 amax) / maxq) puts neither end on a value. */
    int32_t half = (maxq + 1) / 2;
    float s0 = ext < 0 ? -ext / (float)half : ext / (float)(half - 1);
    for (int i = 0; i < GRID_SHRINK_STEPS; i++) {
        float p = 1.0f - (float)i / (float)GRID_STEPS, s;
        int32_t z;
        if (sym) {
            s = f16_scale(p * s0);
            z = half;
        } else sq_grid_params(p * lo, p * hi, bits, false, &s, &z);
        double e = sq_grid_error(x, d, m, s, z, maxq, norm);
        if (e < best) {
            best = e;
            *scale = s;
            *zero = z;
        }
    }
}

bool sq_quant_fits(int64_t n, int64_t k, const sq_qparams *p) {
    int pack = 32 / p->bits;
    if (k % pack || n % pack) return false;
    return p->group_size <= 0 || k % p->group_size == 0;
}

sq_status sq_quant_rtn(const float *w, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    return sq_quant_rtn_weighted(w, n, k, p, NULL, out, err);
}

sq_status sq_quant_rtn_weighted(const float *w, int64_t n, int64_t k, const sq_qparams *p, const float *imp, sq_qmatrix *out,
                                sq_err *err) {
    sq_status s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err);
    if (s) return s;
    int64_t gs = p->group_size > 0 ? p->group_size : k;
    int maxq = (1 << p->bits) - 1;
    for (int64_t c = 0; c < k; c++) out->g_idx[c] = (int32_t)(c / gs);
    for (int64_t r = 0; r < n; r++) {
        const float *row = w + r * k;
        for (int64_t g = 0; g < out->n_groups; g++) {
            int64_t c0 = g * gs, c1 = c0 + gs < k ? c0 + gs : k;
            float sc;
            int32_t z;
            if (p->grid == SQ_GRID_MSE) sq_grid_search(row + c0, imp ? imp + c0 : NULL, c1 - c0, p->bits, p->sym, p->grid_norm, &sc, &z);
            else {
                float lo = row[c0], hi = row[c0];
                for (int64_t c = c0; c < c1; c++) { lo = fminf(lo, row[c]); hi = fmaxf(hi, row[c]); }
                sq_grid_params(lo, hi, p->bits, p->sym, &sc, &z);
            }
            out->scale[g * n + r] = sc;
            out->zero[g * n + r] = z;
            for (int64_t c = c0; c < c1; c++) out->q[c * n + r] = sq_grid_quant(row[c], sc, z, maxq);
        }
    }
    return SQ_OK;
}
