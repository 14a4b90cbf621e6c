/* qrun.c: the services of a quantize run that every method uses (see qrun.h). */
#include "qrun.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/dtype.h"


double sq_pl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Why a linear stays in full precision ("" when it is quantised). */
sq_scheme sq_pl_lin_scheme(const sq_qrun *r, int l, sq_lin which) {
    const sq_plan_entry *e = sq_plan_at(&r->plan, l, which);
    return e && !e->keep ? e->s : sq_pl_scheme(r->o);
}

sq_qparams sq_pl_lin_qparams(const sq_qrun *r, int l, sq_lin which) {
    sq_scheme sc = sq_pl_lin_scheme(r, l, which);
    sq_qparams q = r->o->q;
    q.threads = r->o->threads;
    if (sc.kind == SQ_SCHEME_INT) q.bits = sc.bits, q.group_size = sc.group_size, q.sym = sc.sym;
    return q;
}

void sq_pl_keep_reason(const sq_qrun *r, int l, sq_lin which, const char *name, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    for (int i = 0; i < r->o->n_ignore; i++)
        if (fnmatch(r->o->ignore[i], name, 0) == 0) {
            snprintf(why, cap, "ignored (--ignore %s)", r->o->ignore[i]);
            return;
        }
    const sq_plan_entry *e = sq_plan_at(&r->plan, l, which);
    if (e && e->keep) {
        if (r->o->plan) snprintf(why, cap, "kept in full precision by the quantisation plan");
        else snprintf(why, cap, "neither the group size %d nor a smaller one vLLM serves (128, 64, 32) divides in_features %lld", r->o->q.group_size, (long long)k);
        return;
    }
    sq_scheme sc = sq_pl_lin_scheme(r, l, which);
    const sq_fmt *f = sq_pl_format(r->o);
    if (f->can_hold(&sc, 0, 0, why, cap)) f->can_hold(&sc, n, k, why, cap);
    else why[0] = 0; /* the scheme itself: refused before anything runs */
}

sq_status sq_pl_capture_tensor(sq_qrun *r, const char *name, sq_dtype dt, int nd, const int64_t *shape, const void *data, sq_err *err) {
    sq_pl_cap_head h = {.dtype = dt, .nd = nd, .shape = {shape[0], nd > 1 ? shape[1] : 0}, .nbytes = (int64_t)sq_dtype_size(dt)};
    snprintf(h.name, sizeof h.name, "%s", name);
    for (int i = 0; i < nd; i++) h.nbytes *= shape[i];
    int64_t need = r->cap_len + (int64_t)sizeof h + h.nbytes;
    if (need > r->cap_size) {
        char *p = realloc(r->cap, (size_t)(2 * need));
        if (!p) return sq_fail(err, SQ_ERR_NOMEM, "out of memory keeping %s", name);
        r->cap = p, r->cap_size = 2 * need;
    }
    memcpy(r->cap + r->cap_len, &h, sizeof h);
    memcpy(r->cap + r->cap_len + sizeof h, data, (size_t)h.nbytes);
    r->cap_len = need;
    return SQ_OK;
}

sq_status sq_pl_add_tensor(sq_qrun *r, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                           const void *data, sq_err *err) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    int64_t shape[2] = {d0, d1};
    if (r->capturing) return sq_pl_capture_tensor(r, name, dt, nd, shape, data, err); /* MPI: sent to rank 0 in order */
    double t = sq_pl_now();
    sq_status s = sq_shards_add(r->w, name, dt, nd, shape, data, err);
    r->t_write += sq_pl_now() - t;
    return s;
}
#define add_tensor sq_pl_add_tensor

double sq_pl_output_error(sq_qrun *r, const float *w, const float *q, const float *h, int64_t n, int64_t k, double *den) {
    if (!h) return NAN;
    const sq_backend_i *be = sq_backend_cpu();
    double num = NAN, dh = 2.0 * (double)n * (double)k * (double)k; /* one D H (or W H) */
    if (isnan(*den)) {
        if (be->quad_error(w, NULL, h, n, k, r->o->threads, den, NULL)) return NAN;
        r->f_quant += dh;
    }
    if (be->quad_error(w, q, h, n, k, r->o->threads, &num, NULL)) return NAN;
    r->f_quant += dh;
    if (*den <= 0) return num <= 0 ? 0.0 : INFINITY;
    return sqrt(fmax(num, 0.0) / *den);
}

sq_report_row *sq_pl_new_row(sq_qrun *r, int l, int unit, sq_lin which, const sq_wmat *wm) {
    sq_report_row *rep = &r->rows[r->nrows++];
    memset(rep, 0, sizeof *rep);
    sq_lin_name_unit(r->c, l, unit, which, rep->name, sizeof rep->name);
    rep->n = wm->rows;
    rep->k = wm->cols;
    rep->scheme = sq_pl_lin_scheme(r, l, which);
    return rep;
}

/* NaN or Inf in a source tensor is an error naming it: never silent garbage in the output. */
sq_status sq_pl_check_finite(const sq_qrun *r, const char *name, sq_dtype dt, const void *data, int64_t numel, sq_err *err) {
    if (dt != SQ_DT_F32 && dt != SQ_DT_F16 && dt != SQ_DT_BF16) return SQ_OK;
    float buf[4096];
    for (int64_t i = 0; i < numel; i += 4096) {
        int64_t m = numel - i < 4096 ? numel - i : 4096;
        sq_dtype_to_f32(dt, (const char *)data + i * sq_dtype_size(dt), buf, (size_t)m);
        for (int64_t j = 0; j < m; j++)
            if (!isfinite(buf[j]))
                return sq_fail(err, SQ_ERR_NUMERIC, "%s: tensor '%s' has a NaN or Inf at element %lld", r->o->model, name, (long long)(i + j));
    }
    return SQ_OK;
}

sq_status sq_pl_write_floats(sq_qrun *r, const char *name, const float *v, sq_err *err) {
    const sq_tensor *t = sq_st_find(sq_model_ckpt(r->m)->st, name);
    if (!t) return SQ_OK;
    void *buf = malloc((size_t)t->nbytes);
    if (!buf) return sq_fail(err, SQ_ERR_NOMEM, "out of memory writing %s", name);
    sq_dtype_from_f32(t->dtype, v, buf, (size_t)t->numel);
    double t0 = sq_pl_now();
    sq_status s = sq_shards_add(r->w, name, t->dtype, t->ndim, t->shape, buf, err);
    r->t_write += sq_pl_now() - t0;
    free(buf);
    return s;
}

sq_status sq_pl_keep_linear(sq_qrun *r, int l, int unit, sq_lin which, const char *why, sq_err *err) {
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    sq_report_row *rep = sq_pl_new_row(r, l, unit, which, wm);
    snprintf(rep->note, sizeof rep->note, "%.127s", why);
    r->n_weights_kept += wm->rows * wm->cols;
    char wname[200];
    snprintf(wname, sizeof wname, "%s.weight", rep->name);
    sq_status s = sq_pl_check_finite(r, wname, wm->dtype, wm->data, wm->rows * wm->cols, err);
    if (s) return s;
    const sq_tensor *t = sq_st_find(sq_model_ckpt(r->m)->st, wname);
    if (wm->dtype == SQ_DT_F32 && t && t->dtype != SQ_DT_F32) /* the model runs it as floats (AWQ folded it): the source's dtype */
        return sq_pl_write_floats(r, wname, wm->data, err);
    if (sq_pl_keep_as_bf16(r, wm->dtype, 2)) {
        size_t n = (size_t)(wm->rows * wm->cols);
        uint16_t *b = sq_malloc(n * sizeof *b, err);
        if (!b) return SQ_ERR_NOMEM;
        sq_dtype_from_f32(SQ_DT_BF16, wm->data, b, n);
        s = add_tensor(r, rep->name, "weight", SQ_DT_BF16, 2, wm->rows, wm->cols, b, err);
        free(b);
        return s;
    }
    return add_tensor(r, rep->name, "weight", wm->dtype, 2, wm->rows, wm->cols, wm->data, err);
}

bool sq_pl_keep_as_bf16(const sq_qrun *r, sq_dtype dt, int ndim) { return r->o->keep_dtype == SQ_KEEP_BF16 && dt == SQ_DT_F32 && ndim >= 2; }

sq_status sq_pl_use_dequantized(sq_qrun *r, int l, int unit, sq_lin which, float *dq, sq_err *err) {
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    sq_wmat dw = {.dtype = SQ_DT_F32, .rows = wm->rows, .cols = wm->cols, .data = dq};
    sq_status s = sq_model_set_linear_unit(r->m, l, unit, which, &dw, err);
    if (s) { free(dq); return s; }
    free(r->deq[unit * SQ_LIN_COUNT + which]);
    r->deq[unit * SQ_LIN_COUNT + which] = dq;
    return SQ_OK;
}

void **sq_pl_slots_new(const sq_qrun *r, sq_err *err) { return sq_calloc((size_t)r->max_units * SQ_LIN_COUNT, sizeof(void *), err); }

void sq_pl_slots_put(void **slots, int unit, sq_lin which, void *p) {
    free(slots[unit * SQ_LIN_COUNT + which]);
    slots[unit * SQ_LIN_COUNT + which] = p;
}

sq_status sq_pl_finish_coded(sq_qrun *r, sq_report_row *rep, int l, int unit, sq_lin which, const sq_qlinear *ql, const sq_wmat *w,
                             void **slots, void *block, sq_err *err) {
    rep->quantized = true;
    r->n_weights_q += ql->n * ql->k;
    sq_status s = sq_pl_write_linear(r, rep->name, ql, err);
    if (!s) s = sq_model_set_linear_unit(r->m, l, unit, which, w, err);
    if (s) { free(block); return s; }
    sq_pl_slots_put(slots, unit, which, block);
    return SQ_OK;
}

void sq_pl_slots_free(const sq_qrun *r, void **slots) {
    for (int j = 0; slots && j < r->max_units * SQ_LIN_COUNT; j++) free(slots[j]);
    free(slots);
}

float sq_pl_wmat_absmax(const sq_wmat *wm) {
    float buf[4096], m = 0;
    int64_t numel = wm->rows * wm->cols;
    for (int64_t i = 0; i < numel; i += 4096) {
        int64_t c = numel - i < 4096 ? numel - i : 4096;
        sq_dtype_to_f32(wm->dtype, (const char *)wm->data + i * sq_dtype_size(wm->dtype), buf, (size_t)c);
        for (int64_t j = 0; j < c; j++)
            if (isfinite(buf[j])) m = fmaxf(m, fabsf(buf[j]));
    }
    return m;
}
