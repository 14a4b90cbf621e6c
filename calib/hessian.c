/* hessian.c: the Hessian accumulator over a backend's hess ops (calib/hessian.h). */
#include <stdlib.h>
#include <string.h>

#include "hessian.h"

sq_status sq_hessian_init_on(sq_hessian *hs, const sq_backend_i *be, int64_t k, sq_err *err) {
    memset(hs, 0, sizeof *hs);
    hs->k = k;
    if (!(hs->h = sq_calloc((size_t)(k * k), sizeof *hs->h, err))) return SQ_ERR_NOMEM;
    if (!be->supports || !be->supports(SQ_OP_HESSIAN, SQ_QGRID_INT_MINMAX)) {
        sq_hessian_free(hs);
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "the %s backend has no Hessian accumulation", be->name);
    }
    sq_status s = be->hess_new(&hs->acc, k, hs->h, err);
    if (s) { sq_hessian_free(hs); return s; }
    hs->be = be;
    return SQ_OK;
}

sq_status sq_hessian_init(sq_hessian *hs, int64_t k, sq_err *err) { return sq_hessian_init_on(hs, sq_backend_cpu(), k, err); }

void sq_hessian_free(sq_hessian *hs) {
    if (!hs) return;
    if (hs->be && hs->acc) hs->be->hess_free(hs->acc);
    free(hs->h);
    memset(hs, 0, sizeof *hs);
}

sq_status sq_hessian_add(sq_hessian *hs, const float *x, int64_t t, sq_err *err) {
    if (t <= 0) return SQ_OK;
    sq_status s = hs->be->hess_add(hs->acc, x, t, err);
    if (!s) hs->tokens += t;
    return s;
}

sq_status sq_hessian_finish(sq_hessian *hs, sq_err *err) { return hs->be ? hs->be->hess_finish(hs->acc, err) : SQ_OK; }
