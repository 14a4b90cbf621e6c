/* quant.h: weight quantisation of one linear layer: RTN and GPTQ, into a format-neutral integer form
 * that the packers in formats/ turn into GPTQ, AWQ or compressed-tensors tensors. The arithmetic is a
 * backend's calibration ops (kernels/backend.h); the functions without a backend argument use the CPU's.
 *
 * Layout: W is [N, K] row-major (PyTorch's [out_features, in_features]). */
#ifndef SQ_QUANT_H
#define SQ_QUANT_H

#include "../formats/qpack.h"
#include "../calib/hessian.h" /* sq_hessian: the statistic GPTQ solves from */
#include "../kernels/backend.h"

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
    int threads;         /* CPU threads the solve may use (<= 1: one); the same bytes for every count */
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
/* The same on backend be, with the finished Hessian hs (when hs was accumulated on be, its copy there is used). */
sq_status sq_quant_gptq_on(const sq_backend_i *be, const float *w, const sq_hessian *hs, int64_t n, int64_t k, const sq_qparams *p,
                           sq_qmatrix *out /* OUT */, sq_err *err);

/* ||W X^T - Q X^T||_F / ||W X^T||_F over the calibration inputs, computed from H (no X needed):
 * tr(D H D^T) / tr(W H W^T) with D = W - Q, square-rooted. NaN when out of memory. */
double sq_quant_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads);

#endif
