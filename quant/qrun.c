/* qrun.c: the services of a quantize run that every method uses (see qrun.h). */
#include "qrun.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/dtype.h"
#include "method.h"

double sq_pl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Why a linear stays in full precision ("" when it is quantised). */
void sq_pl_keep_reason(const sq_qrun *r, const char *name, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    for (int i = 0; i < r->o->n_ignore; i++)
        if (fnmatch(r->o->ignore[i], name, 0) == 0) {
            snprintf(why, cap, "ignored (--ignore %s)", r->o->ignore[i]);
            return;
        }
    if (r->meth->any_shape) return; /* E4M3 takes any shape */
    const sq_qparams *p = &r->o->q;
    int pack = 32 / p->bits;
    if (k % pack) snprintf(why, cap, "in_features %lld is not a multiple of %d (the %d-bit packing)", (long long)k, pack, p->bits);
    else if (n % pack) snprintf(why, cap, "out_features %lld is not a multiple of %d (the zero-point packing)", (long long)n, pack);
    else if (p->group_size > 0 && k % p->group_size)
        snprintf(why, cap, "in_features %lld is not a multiple of the group size %d", (long long)k, p->group_size);
}

sq_status sq_pl_add_tensor(sq_qrun *r, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                           const void *data, sq_err *err) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    int64_t shape[2] = {d0, d1};
    double t = sq_pl_now();
    sq_status s = sq_shards_add(r->w, name, dt, nd, shape, data, err);
    r->t_write += sq_pl_now() - t;
    return s;
}
#define add_tensor sq_pl_add_tensor

/* Writes one quantised matrix in the output format. */
sq_status sq_pl_write_packed(sq_qrun *r, const char *module, const sq_qmatrix *q, sq_err *err) {
    int per = 32 / q->bits;
    int64_t n = q->n, k = q->k, G = q->n_groups;
    sq_status s = SQ_ERR_NOMEM;
    /* bits per weight: codes, fp16 scales, packed zeros, g_idx, as each format stores them */
    double codes = (double)(n * k) * q->bits / 8, scales = (double)(G * n) * 2, zeros = (double)(G * n) * q->bits / 8;
    r->packed_bytes += codes + scales +
                       (r->o->format == SQ_FORMAT_GPTQ ? zeros + 4.0 * (double)k : r->o->format == SQ_FORMAT_AWQ ? zeros : r->o->q.sym ? 0 : zeros);
    if (r->o->format == SQ_FORMAT_AWQ) {
        int32_t *qw = malloc((size_t)(k * n / 8) * 4), *qz = malloc((size_t)(G * n / 8) * 4);
        uint16_t *sc = malloc((size_t)(G * n) * 2);
        if (qw && qz && sc) {
            sq_pack_awq(q, qw, qz, sc);
            if (!(s = add_tensor(r, module, "qweight", SQ_DT_I32, 2, k, n / 8, qw, err)) &&
                !(s = add_tensor(r, module, "qzeros", SQ_DT_I32, 2, G, n / 8, qz, err)))
                s = add_tensor(r, module, "scales", SQ_DT_F16, 2, G, n, sc, err);
        } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
        free(qw); free(qz); free(sc);
        return s;
    }
    if (r->o->format == SQ_FORMAT_GPTQ) {
        int32_t *qw = malloc((size_t)(k / per * n) * 4), *qz = malloc((size_t)(G * n / per) * 4), *gi = malloc((size_t)k * 4);
        uint16_t *sc = malloc((size_t)(G * n) * 2);
        if (qw && qz && gi && sc) {
            sq_pack_gptq(q, qw, qz, sc, gi);
            if (!(s = add_tensor(r, module, "qweight", SQ_DT_I32, 2, k / per, n, qw, err)) &&
                !(s = add_tensor(r, module, "qzeros", SQ_DT_I32, 2, G, n / per, qz, err)) &&
                !(s = add_tensor(r, module, "scales", SQ_DT_F16, 2, G, n, sc, err)))
                s = add_tensor(r, module, "g_idx", SQ_DT_I32, 1, k, 0, gi, err);
        } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
        free(qw); free(qz); free(gi); free(sc);
        return s;
    }
    int32_t *wp = malloc((size_t)(n * k / per) * 4), *zp = r->o->q.sym ? NULL : malloc((size_t)(n / per * G) * 4);
    uint16_t *ws = malloc((size_t)(n * G) * 2);
    int64_t shape[2] = {n, k};
    if (wp && ws && (r->o->q.sym || zp)) {
        sq_pack_ct(q, wp, ws, zp);
        if (!(s = add_tensor(r, module, "weight_packed", SQ_DT_I32, 2, n, k / per, wp, err)) &&
            !(s = add_tensor(r, module, "weight_scale", SQ_DT_F16, 2, n, G, ws, err)) &&
            !(s = add_tensor(r, module, "weight_shape", SQ_DT_I64, 1, 2, 0, shape, err)) && zp)
            s = add_tensor(r, module, "weight_zero_point", SQ_DT_I32, 2, n / per, G, zp, err);
    } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
    free(wp); free(zp); free(ws);
    return s;
}

double sq_pl_output_error(const float *w, const float *q, const float *h, int64_t n, int64_t k) {
    return h ? sq_quant_output_error(w, q, h, n, k) : NAN;
}

sq_report_row *sq_pl_new_row(sq_qrun *r, int l, int unit, sq_lin which, const sq_wmat *wm) {
    sq_report_row *rep = &r->rows[r->nrows++];
    memset(rep, 0, sizeof *rep);
    sq_lin_name_unit(r->c, l, unit, which, rep->name, sizeof rep->name);
    rep->n = wm->rows;
    rep->k = wm->cols;
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
    return add_tensor(r, rep->name, "weight", wm->dtype, 2, wm->rows, wm->cols, wm->data, err);
}

sq_status sq_pl_use_dequantized(sq_qrun *r, int l, int unit, sq_lin which, float *dq, sq_err *err) {
    const sq_wmat *wm = sq_model_linear_unit(r->m, l, unit, which);
    sq_wmat dw = {.dtype = SQ_DT_F32, .rows = wm->rows, .cols = wm->cols, .data = dq};
    sq_status s = sq_model_set_linear_unit(r->m, l, unit, which, &dw, err);
    if (s) { free(dq); return s; }
    free(r->deq[unit * SQ_LIN_COUNT + which]);
    r->deq[unit * SQ_LIN_COUNT + which] = dq;
    return SQ_OK;
}
