/* method.h: the quantisation methods as a table: for each, the statistics it needs, its hooks on the
 * common block loop of the driver (pipeline.c) and how it quantises one linear. A new method is a
 * file of hooks and a row in method.c; the driver asks the row, never the method's name. */
#ifndef SQ_METHOD_H
#define SQ_METHOD_H

#include "qrun.h"

/* What a method needs of the calibration. */
enum {
    SQ_NEED_HESSIAN = 1,         /* each linear's input Hessian (from a pass or --stats; none data-free) */
    SQ_NEED_ABSMAX = 2,          /* max |x| at each site and unit (FP8's static input scales) */
    SQ_NEED_FEATURES = 4,        /* the block's inputs themselves (AWQ): no --stats; its Hessians from them */
};

typedef struct sq_method_row {
    sq_method id;
    const char *name;
    unsigned needs;              /* SQ_NEED_* */
    bool own_grid;               /* a grid of its own: --grid mse does not apply */
    sq_scheme_kind scheme;       /* what its linears are written as (formats/qscheme.h): integer codes, E4M3 or E2M1 */
    sq_fp4_variant fp4;          /* FP4: NVFP4 or MXFP4 */
    bool calib_optional;         /* runs data-free (fp8: unless its activations take static scales) */
    bool index_order;            /* a stage's linears written in index order (q, k, v), not the true-sequential (k, v, q) */
    bool keep_at_end;            /* the linears it keeps written after the block's quantised ones, not with their stage */
    bool gpu;                    /* runs on the GPU (--device cuda): its Hessians and solve there */
    bool zero_point;             /* its grid has a zero point: asymmetric whatever --sym says */
    bool smoothquant;            /* takes --smoothquant: its block hooks smooth q/k/v and gate/up first (smooth.h) */
    bool plan_groups;            /* the default plan lowers its group size per linear to one dividing in_features (plan.h) */
    sq_format format_default;    /* the format under SQ_FORMAT_AUTO (AUTO: chosen with the model, rtn and gptq) */
    sq_report_traits report;
    /* The method's state over the run (may be NULL). */
    sq_status (*init)(sq_qrun *r, sq_err *err);
    void (*fini)(sq_qrun *r);
    /* Before block l's stages: AWQ's features, scale search, folding and clipping. */
    sq_status (*block_begin)(sq_qrun *r, int l, sq_err *err);
    /* The Hessians of units u0 .. u1-1 of stage si from the method's own statistics (AWQ's features)
     * into r->cal->hs; NULL: the calibration's (a pass, --stats, or none). */
    sq_status (*stage_hessians)(sq_qrun *r, int l, int si, int u0, int u1, sq_err *err);
    /* Before the linears of one unit of a stage are quantised: FP8's shared scales. why: the reasons
     * each linear of the unit is kept ("" when quantised), by sq_lin. */
    sq_status (*unit_begin)(sq_qrun *r, int l, int si, int unit, const char (*why)[128], sq_err *err);
    /* Quantises linear `which` of unit `unit` of layer l with that unit's Hessian (hs->h NULL data-free),
     * writes it and its report row. */
    sq_status (*quantize)(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
    /* After the block's stages; NULL: the quantised block's outputs are the next block's inputs. */
    sq_status (*block_end)(sq_qrun *r, int l, sq_err *err);
    /* A source tensor the method writes itself with its block (AWQ, SmoothQuant: what they fold into); NULL: none. */
    bool (*writes_tensor)(const sq_qrun *r, const char *name);
    /* The method's own figures into the report (SmoothQuant's); NULL: none. */
    void (*report_figures)(const sq_qrun *r, sq_qreport *rep);
} sq_method_row;

const sq_method_row *sq_method_row_of(sq_method m);

/* The rows' hooks (method_rtn.c, method_fp8.c, method_awq.c). */
sq_status sq_rtn_quantize(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_fp8_init(sq_qrun *r, sq_err *err);
void sq_fp8_fini(sq_qrun *r);
sq_status sq_fp8_unit_begin(sq_qrun *r, int l, int si, int unit, const char (*why)[128], sq_err *err);
sq_status sq_fp8_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_fp8_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_int8_init(sq_qrun *r, sq_err *err);
void sq_int8_fini(sq_qrun *r);
sq_status sq_int8_block_begin(sq_qrun *r, int l, sq_err *err);
sq_status sq_int8_block_end(sq_qrun *r, int l, sq_err *err);
bool sq_int8_writes_tensor(const sq_qrun *r, const char *name);
void sq_int8_report_figures(const sq_qrun *r, sq_qreport *rep);
sq_status sq_int8_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_int8_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
/* INT8 W8A8 codes (N, K) and per-row scales of W (method_int8.c's grid); NaN or Inf is an error beginning with what. */
sq_status sq_int8_quantize(const float *w, int64_t n, int64_t k, int8_t *codes /* OUT */, float *scale /* OUT */, const char *what, sq_err *err);
sq_status sq_awq_init(sq_qrun *r, sq_err *err);
void sq_awq_fini(sq_qrun *r);
sq_status sq_awq_block_begin(sq_qrun *r, int l, sq_err *err);
sq_status sq_awq_stage_hessians(sq_qrun *r, int l, int si, int u0, int u1, sq_err *err);
sq_status sq_awq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_awq_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
bool sq_awq_writes_tensor(const sq_qrun *r, const char *name);
sq_status sq_fp4_init(sq_qrun *r, sq_err *err);
void sq_fp4_fini(sq_qrun *r);
sq_status sq_fp4_unit_begin(sq_qrun *r, int l, int si, int unit, const char (*why)[128], sq_err *err);
sq_status sq_fp4_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
sq_status sq_fp4_gptq_linear(sq_qrun *r, int l, int unit, sq_lin which, const sq_hessian *hs, sq_err *err);
/* FP4's arithmetic (method_fp4.c), for the tests: NVFP4's global scale 448 * 6 / amax; MXFP4's E8M0
 * exponent of a group's amax; the group scales of W [N, K] (raw: E4M3 or E8M0 bytes [N, K / g]; eff: the
 * effective scales, W ~ e2m1 * eff); codes [N, K] packed two a byte (column 2j in the low nibble). */
float sq_fp4_global_scale(float amax);
uint8_t sq_fp4_mx_exponent(float amax);
void sq_fp4_scales(const float *w, int64_t n, int64_t k, sq_fp4_variant v, float gs, uint8_t *raw, float *eff);
void sq_fp4_pack(const uint8_t *codes, int64_t n, int64_t k, uint8_t *packed);
sq_status sq_awq_block_end(sq_qrun *r, int l, sq_err *err);
/* AWQ's figures for spotq.json: the largest relative change folding made to a block's output and to
 * a router's logits. */
void sq_awq_fold_figures(const sq_qrun *r, double *block, double *router);

#endif
