/* pipeline_internal.h: what the quantize pipeline's files share (pipeline.c: the driver, RTN, GPTQ and
 * FP8 blocks; pipeline_awq.c: the AWQ block; pipeline_out.c: config.json and spotq.json;
 * pipeline_write.c: the write seam to the format table). */
#ifndef SQ_PIPELINE_INTERNAL_H
#define SQ_PIPELINE_INTERNAL_H

#include "../formats/format.h"
#include "../formats/serving.h"
#include "../calib/stats.h"
#include "../formats/outdir.h"
#include "../formats/safetensors.h"
#include "../runtime/runtime.h"
#include "fp8.h"
#include "pipeline.h"

/* What happened to one linear layer, for spotq.json. */
typedef struct {
    char name[160];
    int64_t n, k;
    bool quantized;
    char note[128];              /* why it was kept, or the GPTQ fallback */
    double err_rtn, err;         /* relative output error ||WX - QX|| / ||WX|| */
    double err_grid[2];          /* RTN's error on the minmax and the mse grid (integer methods, calibrated; else NaN) */
    double damp;
    double alpha;                /* AWQ: the chosen exponent of its scale set (-1: not scaled) */
    float act_scale;             /* FP8: the static input scale (0: none) */
} lin_report;

typedef struct {
    const sq_quantize_opts *o;
    const sq_config *c;
    sq_model *m;
    sq_state *st;
    sq_shards *w;                /* the output's weights */
    sq_stats stats;              /* --stats: read; spotq calib: collected */
    int *win;                    /* (nsamples, seqlen) calibration token windows */
    float *x;                    /* (nsamples, seqlen, hidden) the current block's inputs */
    float *tmp;                  /* (seqlen, hidden) */
    sq_site want;                /* the site the tap collects... */
    int units;                   /* ...of FFN units 0 .. units-1 (1 at attention sites and dense FFNs): their tokens
                                  * and max |x| when counting; the Hessians of units u0 .. u1-1 */
    int u0, u1;
    bool counting;
    int max_units;               /* the most FFN units of any layer (experts and shared expert) */
    sq_hessian *hs;              /* (max_units) the Hessian of each unit's input at want */
    sq_err hess_err;             /* the first failure of a Hessian accumulation in the tap (which returns no status) */
    int64_t *unit_tokens;        /* (max_units) tokens each unit saw there */
    uint8_t *route_all;          /* (n_experts) MoE: experts of this block calibrated on every token */
    int64_t *moe_tokens;         /* (n_layers, n_experts) MoE: tokens routed to each expert, for spotq.json */
    uint8_t *moe_all;            /* (n_layers, n_experts) MoE: the experts calibrated on every token */
    lin_report *rep;
    int nrep;
    float **deq;                 /* (max_units, SQ_LIN_COUNT) this block's dequantised weights, in use by the model */
    double t_forward, t_hessian, t_quant, t_write;
    int64_t n_weights_q, n_weights_kept;
    sq_serve_summary serve;      /* vLLM's kernel rules applied to the output (formats/serving.h) */
    bool serve_checked;
    char format_note[700];       /* why SQ_FORMAT_AUTO chose compressed-tensors, said after the output is written */
    int bos_id;                  /* the BOS calibration documents start with (-1: none), by the tokenizer's rule... */
    const char *bos_rule;        /* ...which this names */
    int64_t out_bytes, src_bytes, src_params; /* the whole checkpoint: tensor data written, the source's, its parameters */
    double packed_bytes;         /* bytes of every quantised tensor written (codes, scales, zeros, g_idx) */
    /* AWQ: the block's site inputs (full precision, over every calibration token) and its weights as floats */
    float *feat[4];              /* (nsamples * seqlen, dim of the site) */
    int feat_dim[4];
    int cur_sample;
    float *wf[SQ_LIN_COUNT];     /* (rows, cols) */
    /* FP8: max |x| at the site the tap collects, per unit; this block's quantised linears, in use by
     * the model, (max_units, SQ_LIN_COUNT), each with its scales and codes in the same allocation */
    float *act_absmax;
    sq_fp8weight **f8buf;
    double fold_diff_max;        /* AWQ: the largest relative change folding made to a block's output */
} run;

double sq_pl_now(void);
bool sq_pl_is_awq(sq_method m);
bool sq_pl_is_fp8(sq_method m);
/* Why a linear stays in full precision ("" when it is quantised). */
void sq_pl_keep_reason(const run *r, const char *name, int64_t n, int64_t k, char *why, size_t cap);
/* NaN or Inf in a source tensor is an error naming it. */
sq_status sq_pl_check_finite(const run *r, const char *name, sq_dtype dt, const void *data, int64_t numel, sq_err *err);
/* The write seam (pipeline_write.c): the scheme o asks for, the format-table row that writes o's
 * output (while SQ_FORMAT_AUTO is unresolved, the row whose rules it starts from), and one quantised
 * linear (or integer matrix) handed to that row. */
sq_scheme sq_pl_scheme(const sq_quantize_opts *o);
const sq_fmt *sq_pl_format(const sq_quantize_opts *o);
sq_status sq_pl_write_linear(run *r, const char *module, const sq_qlinear *l, sq_err *err);
sq_status sq_pl_write_packed(run *r, const char *module, const sq_qmatrix *q, sq_err *err);
/* AWQ: scales, folding, clipping and quantisation of block l (pipeline_awq.c). */
sq_status sq_pl_awq_block(run *r, int l, sq_err *err);
/* config.json with its quantization_config, and spotq.json (pipeline_out.c). */
sq_status sq_pl_write_config(run *r, sq_outdir *od, const char *src_config, sq_err *err);
sq_status sq_pl_write_report(run *r, sq_outdir *od, uint64_t calib_hash, int64_t calib_tokens, double total, sq_err *err);

#endif
