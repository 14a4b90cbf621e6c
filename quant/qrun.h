/* qrun.h: one quantize run as the method rows see it (method.h): the options, the model, the
 * calibration, the output being written and its report rows, with the services every method uses
 * (qrun.c): why a linear is kept, writing a packed or kept linear, the report row of a linear.
 * The driver (pipeline.c) owns the run; the methods (method_*.c) and qrun.c never call the driver. */
#ifndef SQ_QRUN_H
#define SQ_QRUN_H

#include "../calib/driver.h"
#include "../formats/format.h"
#include "../formats/safetensors.h"
#include "../runtime/runtime.h"
#include "plan.h"
#include "report.h"

struct sq_method_row;

typedef struct sq_qrun {
    const sq_quantize_opts *o;
    const struct sq_method_row *meth;
    const sq_config *c;
    sq_model *m;
    sq_calib *cal;               /* the calibration (its x NULL when data-free) */
    sq_shards *w;                /* the output's weights */
    sq_report_row *rows;         /* the report */
    int nrows;
    int64_t n_weights_q, n_weights_kept;
    double packed_bytes;         /* bytes of every quantised tensor written (codes, scales, zeros, g_idx) */
    double t_quant, t_write;
    double f_quant;      /* operations of the solves and output errors (their GEMM-shaped work), for the GFLOP/s reported */
    int max_units;
    float **deq;                 /* (max_units, SQ_LIN_COUNT) this block's dequantised weights, in use by the model */
    void *ms;                    /* the method's own state (method_awq.c, method_fp8.c) */
    /* MPI (base/par.h), the solves round the ranks (pipeline.c): the tensors a solve writes, kept while
     * capturing for rank 0 to write in one process's order; another rank's results this rank runs on */
    char *cap;
    int64_t cap_len, cap_size;
    bool capturing;
    void **held;                 /* (max_units, SQ_LIN_COUNT) */
    sq_plan plan;                /* the per-linear plan in effect (plan.h); n_layers 0: o's scheme everywhere */
} sq_qrun;

double sq_pl_now(void);
/* Why linear `which` of layer l (module name, n x k) stays in full precision ("" when it is quantised). */
void sq_pl_keep_reason(const sq_qrun *r, int l, sq_lin which, const char *name, int64_t n, int64_t k, char *why, size_t cap);
/* The scheme the plan gives linear `which` of layer l (o's scheme where the plan is empty). */
sq_scheme sq_pl_lin_scheme(const sq_qrun *r, int l, sq_lin which);
/* o->q with the bits, group size and symmetry of that scheme: what the integer quantisers run with. */
sq_qparams sq_pl_lin_qparams(const sq_qrun *r, int l, sq_lin which);
/* NaN or Inf in a source tensor is an error naming it. */
sq_status sq_pl_check_finite(const sq_qrun *r, const char *name, sq_dtype dt, const void *data, int64_t numel, sq_err *err);
/* MPI: a tensor kept (r->capturing): name, dtype, dims, shape, bytes, then the data. */
typedef struct { char name[256]; int64_t dtype, nd, shape[2], nbytes; } sq_pl_cap_head;
sq_status sq_pl_capture_tensor(sq_qrun *r, const char *name, sq_dtype dt, int nd, const int64_t *shape, const void *data, sq_err *err);
/* Adds module.suffix to the output. */
sq_status sq_pl_add_tensor(sq_qrun *r, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                           const void *data, sq_err *err);
/* The write seam (pipeline_write.c): the scheme o asks for, the format-table row that writes o's
 * output (while SQ_FORMAT_AUTO is unresolved, the row whose rules it starts from), and one quantised
 * linear (or integer matrix) handed to that row. */
sq_scheme sq_pl_scheme(const sq_quantize_opts *o);
const sq_fmt *sq_pl_format(const sq_quantize_opts *o);
sq_status sq_pl_write_linear(sq_qrun *r, const char *module, const sq_qlinear *l, sq_err *err);
sq_status sq_pl_write_packed(sq_qrun *r, const char *module, const sq_qmatrix *q, sq_err *err);
/* The same for linear `which` of layer `layer`, written with the plan's scheme for it (its symmetry included). */
sq_status sq_pl_write_planned(sq_qrun *r, int layer, sq_lin which, const char *module, const sq_qmatrix *q, sq_err *err);
/* Writes floats v under the source tensor `name`'s dtype and shape (nothing when the source has no such tensor). */
sq_status sq_pl_write_floats(sq_qrun *r, const char *name, const float *v, sq_err *err);
/* The next report row, for linear `which` of FFN unit `unit` of layer l. */
sq_report_row *sq_pl_new_row(sq_qrun *r, int l, int unit, sq_lin which, const sq_wmat *wm);
/* Keeps a linear in full precision: its row with the reason, its weight as the model holds it, in the
 * source tensor's dtype. */
/* --keep-dtype bf16 (qopts.h): whether a tensor of dtype dt and ndim dimensions written unquantised goes as BF16
 * (F32 matrices: embeddings, lm_head, kept linears; vectors stay as they are). */
bool sq_pl_keep_as_bf16(const sq_qrun *r, sq_dtype dt, int ndim);
sq_status sq_pl_keep_linear(sq_qrun *r, int l, int unit, sq_lin which, const char *why, sq_err *err);
/* The relative output error over the calibration inputs; NaN (null in spotq.json) without them. */
/* ||W X^T - Q X^T|| / ||W X^T|| from H (NaN where H is NULL: data-free), on r's threads, with
 * tr(W H W^T) kept in *den (NaN: not yet computed) across the errors of one W; its D H (and W H) counted
 * in r->f_quant. */
double sq_pl_output_error(sq_qrun *r, const float *w, const float *q, const float *h, int64_t n, int64_t k, double *den);
/* Makes the forward pass run dq (n, k), the dequantised linear, owned by the run from then on. */
sq_status sq_pl_use_dequantized(sq_qrun *r, int l, int unit, sq_lin which, float *dq, sq_err *err);

/* The kernel weights a method's quantised linears run as, kept alive while the model uses them: one slot
 * per (unit, linear) of r->max_units x SQ_LIN_COUNT (FP8, FP4, INT8 W8A8 rows). new: NULL on no memory;
 * put: the slot takes p, freeing what it held; free: every slot, then the array (NULL is fine). */
void **sq_pl_slots_new(const sq_qrun *r, sq_err *err);
/* The end of a coded linear (FP8, FP4, INT8 W8A8 rows): rep counted as quantised, the tensors ql written,
 * the weights w the next forward runs on set in the model, and block (what w's codes or scales point
 * into) kept in slot (unit, which) of slots; on a failure block is freed. */
sq_status sq_pl_finish_coded(sq_qrun *r, sq_report_row *rep, int l, int unit, sq_lin which, const sq_qlinear *ql, const sq_wmat *w,
                             void **slots, void *block, sq_err *err);
void sq_pl_slots_put(void **slots, int unit, sq_lin which, void *p);
void sq_pl_slots_free(const sq_qrun *r, void **slots);
/* max |w| of a weight in its source dtype, NaN and Inf skipped (the quantisers report them). */
float sq_pl_wmat_absmax(const sq_wmat *wm);

#endif
