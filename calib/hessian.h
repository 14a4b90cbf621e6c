/* hessian.h: the Hessian of a linear's input, the calibration statistic GPTQ solves from, accumulated by
 * a backend's hess ops (kernels/backend.h) and kept on that backend (a device) until the solve uses it. */
#ifndef SQ_HESSIAN_H
#define SQ_HESSIAN_H

#include "../kernels/backend.h"

/* Hessian accumulator: H = 2/T * sum over tokens of x x^T, kept as a running mean like the reference,
 * by a backend's hess ops (on a device until finished); h is the host copy, complete once finished. */
typedef struct {
    int64_t k;
    int64_t tokens;
    float *h;                 /* [K, K] */
    const sq_backend_i *be;   /* the backend accumulating it (NULL: h was filled by the caller) */
    sq_hess *acc;             /* its accumulator */
} sq_hessian;
/* On the CPU; sq_hessian_init_on: on backend be. */
sq_status sq_hessian_init(sq_hessian *hs, int64_t k, sq_err *err);
sq_status sq_hessian_init_on(sq_hessian *hs, const sq_backend_i *be, int64_t k, sq_err *err);
/* Adds T tokens x [T, K] (row-major, host memory)... */
sq_status sq_hessian_add(sq_hessian *hs, const float *x, int64_t t, sq_err *err);
/* ...until this makes h the full symmetric matrix. */
sq_status sq_hessian_finish(sq_hessian *hs, sq_err *err);
void sq_hessian_free(sq_hessian *hs);

#endif
