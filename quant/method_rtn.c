/* method_rtn.c: the rtn and gptq rows: round-to-nearest on the integer grid (minmax or mse, weighted
 * by diag(H) when calibrated), and GPTQ's error compensation on it, for one linear; the dequantised
 * weights then run in the model, so that later sites calibrate on what deployment computes. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "method.h"

/* GPTQ of one linear on a thread of its own while the caller computes the RTN baseline and its output
 * errors: GPTQ's factorisation is LAPACK on one thread (for thread-independent bytes), which otherwise
 * leaves the other cores idle. Every part is chunked by its shapes alone, so the bytes are those of
 * running one after the other. The CPU backend only (a device keeps its one stream). */
typedef struct {
    const sq_backend_i *be;
    const float *w;
    const sq_hessian *hs;
    int64_t n, k;
    sq_qparams qp;
    sq_qmatrix q;
    sq_status s;
    sq_err err;
} gptq_job;

static void *gptq_job_run(void *arg) {
    gptq_job *g = arg;
    g->s = sq_quant_gptq_on(g->be, g->w, g->hs, g->n, g->k, &g->qp, &g->q, &g->err);
    return NULL;
}

/* Quantises linear `which` of unit `unit` of layer l with that unit's Hessian; swaps the dequantised
 * weights into the model so the rest of the block runs on them. */
static sq_status quantize_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, bool gptq, sq_err *err) {
    const float *h = hs->h;
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    int64_t n = wm->rows, k = wm->cols;
    sq_report_row *rep = sq_pl_new_row(r, l, unit, which, wm);
    float *w = malloc((size_t)(n * k) * sizeof *w), *dq = malloc((size_t)(n * k) * sizeof *dq);
    if (!w || !dq) { free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    sq_dtype_to_f32(wm->dtype, wm->data, w, (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++)
        if (!isfinite(w[i])) {
            free(w); free(dq);
            return sq_fail(err, SQ_ERR_NUMERIC, "%s: tensor '%s.weight' has a NaN or Inf at element %lld", r->o->model, rep->name,
                           (long long)i);
        }
    double t = sq_pl_now();
    /* The mse grid's importances: diag(H), the per-channel second moment of the input (none data-free) */
    float *imp = h ? malloc((size_t)k * sizeof *imp) : NULL;
    if (h && !imp) { free(w); free(dq); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %s", rep->name); }
    for (int64_t c = 0; h && c < k; c++) imp[c] = h[c * k + c];
    sq_qmatrix q;
    sq_qparams qp = sq_pl_lin_qparams(r, l, which); /* the plan's bits, group and symmetry for this linear */
    const sq_backend_i *be = r->o->backend ? r->o->backend : sq_backend_cpu();
    gptq_job job = {.be = be, .w = w, .hs = hs, .n = n, .k = k, .qp = qp};
    pthread_t tid;
    bool bg = gptq && be == sq_backend_cpu() && pthread_create(&tid, NULL, gptq_job_run, &job) == 0;
#define JOIN()                                                                                          \
    do {                                                                                                \
        if (bg) {                                                                                       \
            pthread_join(tid, NULL);                                                                    \
            bg = false;                                                                                 \
            if (!job.s) sq_qmatrix_free(&job.q);                                                        \
        }                                                                                               \
    } while (0)
    sq_status s = sq_quant_rtn_weighted(w, n, k, &qp, imp, &q, err);
    if (s) { JOIN(); free(w); free(dq); free(imp); return s; }
    sq_qmatrix_dequant(&q, dq);
    double den = NAN; /* tr(W H W^T), shared by the output errors */
    rep->err_rtn = rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
    rep->err_grid[0] = rep->err_grid[1] = NAN;
    rep->err_grid[r->o->q.grid] = rep->err_rtn;
    if (h) { /* RTN on the other grid too, for spotq.json */
        sq_qparams other = qp;
        other.grid = other.grid == SQ_GRID_MSE ? SQ_GRID_MINMAX : SQ_GRID_MSE;
        sq_qmatrix q2;
        if ((s = sq_quant_rtn_weighted(w, n, k, &other, imp, &q2, err))) { JOIN(); sq_qmatrix_free(&q); free(w); free(dq); free(imp); return s; }
        sq_qmatrix_dequant(&q2, dq);
        sq_qmatrix_free(&q2);
        rep->err_grid[other.grid] = sq_pl_output_error(r, w, dq, h, n, k, &den);
        sq_qmatrix_dequant(&q, dq);
    }
    free(imp);
    if (gptq) {
        sq_qmatrix_free(&q);
        if (bg) {
            pthread_join(tid, NULL);
            bg = false;
            s = job.s;
            if (s) *err = job.err;
            else q = job.q;
        } else
            s = sq_quant_gptq_on(be, w, hs, n, k, &qp, &q, err);
        if (s) { free(w); free(dq); return s; }
        sq_qmatrix_dequant(&q, dq);
        rep->err = sq_pl_output_error(r, w, dq, h, n, k, &den);
        /* the sweep's updates (n k^2) and the factor of H^-1 (potrf, potri, potrf: 4/3 k^3), unless kept from the
         * previous solve over the same H */
        r->f_quant += (double)n * (double)k * (double)k + (q.factor_kept ? 0 : 4.0 / 3.0 * (double)k * (double)k * (double)k);
        rep->damp = q.damp_used;
        if (q.fallback) snprintf(rep->note, sizeof rep->note, "Hessian would not factor: RTN used");
    }
#undef JOIN
    r->t_quant += sq_pl_now() - t;
    rep->quantized = true;
    r->n_weights_q += n * k;
    s = sq_pl_write_planned(r, l, which, rep->name, &q, err);
    sq_qmatrix_free(&q);
    free(w);
    if (s) { free(dq); return s; }
    return sq_pl_use_dequantized(r, l, unit, which, dq, err);
}

sq_status sq_rtn_quantize(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return quantize_linear(r, l, unit, which, hs, false, err);
}

sq_status sq_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err) {
    return quantize_linear(r, l, unit, which, hs, true, err);
}
