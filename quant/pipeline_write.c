/* pipeline_write.c: the quantize pipeline's write seam: the scheme the options ask for, the row of the
 * format table (formats/format.h) that writes the output, and each quantised linear handed to it. The
 * methods never see a format's tensors; the rows never see the method. */
#include "method.h"

sq_scheme sq_pl_scheme(const sq_quantize_opts *o) {
    const sq_qparams *p = &o->q;
    const sq_method_row *m = sq_method_row_of(o->method); /* the row states its scheme's kind */
    sq_scheme_kind kind = m ? m->scheme : SQ_SCHEME_INT;
    bool fp8 = kind == SQ_SCHEME_FP8, fp4 = kind == SQ_SCHEME_FP4;
    int fp4_group = m && m->fp4 == SQ_FP4_MX ? SQ_MXFP4_GROUP : SQ_NVFP4_GROUP;
    return (sq_scheme){.kind = kind, .bits = fp8 ? 8 : fp4 ? 4 : p->bits, .group_size = fp4 ? fp4_group : p->group_size,
                       .fp4 = m ? m->fp4 : SQ_FP4_NV, .sym = fp8 || fp4 || p->sym, .act_order = p->act_order, .static_groups = p->static_groups, .damp = p->damp,
                       .fp8_per_channel = o->fp8_per_channel, .fp8_block = o->fp8_block, .act = o->act};
}

const sq_fmt *sq_pl_format(const sq_quantize_opts *o) {
    sq_scheme sc = sq_pl_scheme(o);
    const sq_fmt *f = sq_fmt_for_scheme(o->format, &sc);
    return f ? f : sq_fmt_for_scheme(sc.kind != SQ_SCHEME_INT ? SQ_FORMAT_CT : SQ_FORMAT_GPTQ, &sc); /* auto (unresolved) or none: the widest row */
}

static sq_status sink_add(void *user, const char *name, sq_dtype dt, int nd, const int64_t *shape, const void *data, sq_err *err) {
    sq_qrun *r = user;
    if (r->capturing) return sq_pl_capture_tensor(r, name, dt, nd, shape, data, err); /* MPI: sent to rank 0 in order */
    double t = sq_pl_now();
    sq_status s = sq_shards_add(r->w, name, dt, nd, shape, data, err);
    r->t_write += sq_pl_now() - t;
    return s;
}

sq_status sq_pl_write_linear(sq_qrun *r, const char *module, const sq_qlinear *l, sq_err *err) {
    sq_scheme sc = sq_pl_scheme(r->o);
    if (sc.kind == SQ_SCHEME_INT && l->kind == SQ_SCHEME_INT) /* the plan's scheme of this linear, as its codes were made */
        sc.bits = l->q.bits, sc.group_size = l->q.group_size;
    const sq_fmt *f = sq_fmt_for_scheme(r->o->format, &sc);
    if (!f) return sq_fail(err, SQ_ERR_INTERNAL, "%s: no format row writes --format %s", module, sq_format_name(r->o->format));
    sq_tensor_sink out = {sink_add, r};
    double bytes = 0;
    sq_status s = f->write(&sc, module, l, &out, &bytes, err);
    r->packed_bytes += bytes; /* bits per weight: codes, scales, zeros, g_idx, as the format stores them */
    return s;
}

sq_status sq_pl_write_packed(sq_qrun *r, const char *module, const sq_qmatrix *q, sq_err *err) {
    sq_qlinear l = {.kind = SQ_SCHEME_INT, .n = q->n, .k = q->k, .q = *q};
    return sq_pl_write_linear(r, module, &l, err);
}
