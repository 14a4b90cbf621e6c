/* quant.h: weight quantisation of one linear layer: RTN and GPTQ, into a format-neutral integer form
 * that the packers in formats/ turn into GPTQ, AWQ or compressed-tensors tensors.
 *
 * Layout: W is [N, K] row-major (PyTorch's [out_features, in_features]). */
#ifndef SQ_QUANT_H
#define SQ_QUANT_H

#include "../formats/qpack.h"

/* How a group's scale (and zero) is chosen: from its min and max (the GPTQ reference's default), or
 * searched over shrunk ranges for the least error weighted by the calibration's per-input importance. */
typedef enum { SQ_GRID_MINMAX, SQ_GRID_MSE } sq_grid;

typedef struct {
    int bits;            /* 4 or 8 */
    int group_size;      /* -1: one group of K */
    bool sym;
    bool act_order;      /* GPTQ: columns in descending diag(H) */
    bool static_groups;  /* GPTQ: group grids fixed from the original W before any update */
    double damp;         /* GPTQ: fraction of mean(diag H) added to the diagonal */
    int block_size;      /* GPTQ lazy-batch width (128) */
    sq_grid grid;        /* SQ_GRID_MINMAX (0) or SQ_GRID_MSE */
    double grid_norm;    /* mse: the exponent of the error it minimises (0: 2, the output error's) */
} sq_qparams;

/* True when a K-column matrix can be packed at these settings (K multiple of the group size and of
 * 32/bits); otherwise the matrix stays in full precision. */
bool sq_quant_fits(int64_t n, int64_t k, const sq_qparams *p);

/* Round-to-nearest of W [N, K]. */
sq_status sq_quant_rtn(const float *w, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out /* OUT */, sq_err *err);
/* The same with each input column's importance imp [K] (the Hessian's diagonal, 2 E[x_c^2]; NULL: all
 * equal) weighting the error the mse grid minimises; the minmax grid ignores it. */
sq_status sq_quant_rtn_weighted(const float *w, int64_t n, int64_t k, const sq_qparams *p, const float *imp, sq_qmatrix *out /* OUT */,
                                sq_err *err);

/* GPTQ of W [N, K] with the Hessian H [K, K] (2/T sum x x^T over T calibration tokens, row-major,
 * symmetric; not modified), as IST-DASLab's reference does it. A Hessian that will not factor gets its
 * damping raised tenfold, up to three times, then RTN (out->fallback = 1), with a warning through sq_log. */
sq_status sq_quant_gptq(const float *w, const float *h, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out /* OUT */,
                        sq_err *err);

/* Hessian accumulator: H = 2/T * sum over tokens of x x^T, kept as a running mean like the reference. */
typedef struct {
    int64_t k;
    int64_t tokens;
    float *h;            /* [K, K] */
    void *dev;           /* the GPU accumulator (sq_hessian_init_cuda in gptq_cuda.h); NULL on the CPU */
    sq_err dev_err;      /* its first failure (add and finish return nothing): see sq_hessian_check */
} sq_hessian;
sq_status sq_hessian_init(sq_hessian *hs, int64_t k, sq_err *err);
/* Adds T tokens x [T, K] (row-major). Only the upper triangle is kept up to date... */
void sq_hessian_add(sq_hessian *hs, const float *x, int64_t t);
/* ...until this fills the lower one, making h the full symmetric matrix. */
void sq_hessian_finish(sq_hessian *hs);
void sq_hessian_free(sq_hessian *hs);
/* SQ_OK, or the first failure of a GPU accumulator's add or finish (always SQ_OK on the CPU). */
sq_status sq_hessian_check(const sq_hessian *hs, sq_err *err);

/* ||W X^T - Q X^T||_F / ||W X^T||_F over the calibration inputs, computed from H (no X needed):
 * tr(D H D^T) / tr(W H W^T) with D = W - Q, square-rooted. */
double sq_quant_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k);

#endif
