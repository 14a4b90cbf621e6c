/* gptq.c: GPTQ (Frantar et al.) of one matrix, RTN, the Hessian accumulator and the output error as
 * calls of a backend's calibration ops (kernels/backend.h; the CPU's is IST-DASLab's reference step for
 * step): the settings turned into a grid, and the plain-rounding fallback when H will not factor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"


double sq_quant_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k, int threads) {
    double e = NAN;
    return sq_backend_cpu()->output_error(w, q, h, n, k, threads, &e, NULL) ? NAN : e;
}

/* ---------------------------------------------------------------- RTN and GPTQ */

sq_qgrid sq_quant_int_grid(const sq_qparams *p, const float *imp) {
    return (sq_qgrid){.kind = p->grid == SQ_GRID_MSE ? SQ_QGRID_INT_MSE : SQ_QGRID_INT_MINMAX, .bits = p->bits, .group_size = p->group_size,
                      .sym = p->sym, .static_groups = p->static_groups, .norm = p->grid_norm, .imp = imp, .threads = p->threads};
}

static sq_status need(const sq_backend_i *be, sq_op op, sq_qgrid_kind kind, sq_err *err) {
    if (be->supports && be->supports(op, kind)) return SQ_OK;
    return sq_fail(err, SQ_ERR_UNSUPPORTED, "the %s backend has no %s op for the %s grid", be->name, sq_op_name(op), sq_qgrid_name(kind));
}

static sq_status rtn_on(const sq_backend_i *be, const float *w, int64_t n, int64_t k, const sq_qparams *p, const float *imp, sq_qmatrix *out,
                        sq_err *err) {
    sq_qgrid g = sq_quant_int_grid(p, imp);
    sq_status s = need(be, SQ_OP_RTN, g.kind, err);
    if (s || (s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err))) return s;
    sq_qout o = {.q = out};
    if ((s = be->rtn(w, n, k, &g, &o, err))) sq_qmatrix_free(out);
    return s;
}

sq_status sq_quant_rtn(const float *w, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    return rtn_on(sq_backend_cpu(), w, n, k, p, NULL, out, err);
}

sq_status sq_quant_rtn_weighted(const float *w, int64_t n, int64_t k, const sq_qparams *p, const float *imp, sq_qmatrix *out,
                                sq_err *err) {
    return rtn_on(sq_backend_cpu(), w, n, k, p, imp, out, err);
}

sq_status sq_quant_gptq_on(const sq_backend_i *be, const float *w, const sq_hessian *hs, int64_t n, int64_t k, const sq_qparams *p,
                           sq_qmatrix *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    sq_qgrid g = sq_quant_int_grid(p, NULL);
    sq_gptq_args a = {.act_order = p->act_order, .damp = p->damp, .block_size = p->block_size};
    sq_status s = need(be, SQ_OP_GPTQ, g.kind, err);
    if (s || (s = sq_qmatrix_alloc(out, n, k, p->bits, p->group_size, err))) return s;
    sq_qout o = {.q = out};
    s = be->gptq(w, hs->h, hs->be == be ? hs->acc : NULL, n, k, &g, &a, &o, &out->damp_used, err);
    out->factor_kept = !s && o.factor_kept;
    if (!s && out->damp_used < 0) {
        sq_log(SQ_LOG_WARN, "GPTQ: Hessian [%lld x %lld] will not factor even with damping %.3g; using RTN for this matrix",
               (long long)k, (long long)k, p->damp * 1000);
        sq_qmatrix_free(out);
        /* the mse grid weighs each column by diag(H), the per-channel second moment of its input */
        float *imp = p->grid == SQ_GRID_MSE ? malloc((size_t)k * sizeof *imp) : NULL;
        if (p->grid == SQ_GRID_MSE && !imp) return sq_fail(err, SQ_ERR_NOMEM, "GPTQ: out of memory");
        for (int64_t c = 0; imp && c < k; c++) imp[c] = hs->h[c * k + c];
        s = rtn_on(need(be, SQ_OP_RTN, g.kind, NULL) ? sq_backend_cpu() : be, w, n, k, p, imp, out, err);
        free(imp);
        if (!s) out->fallback = 1;
        return s;
    }
    if (s) sq_qmatrix_free(out);
    return s;
}

sq_status sq_quant_gptq(const float *w, const float *h, int64_t n, int64_t k, const sq_qparams *p, sq_qmatrix *out, sq_err *err) {
    sq_hessian hs = {.k = k, .h = (float *)h};
    return sq_quant_gptq_on(sq_backend_cpu(), w, &hs, n, k, p, out, err);
}
