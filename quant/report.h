/* report.h: what the quantize pipeline reports, as plain rows and figures: config.json's
 * quantization_config and spotq.json are built from an sq_qreport alone (pipeline_out.c). */
#ifndef SQ_REPORT_H
#define SQ_REPORT_H

#include "../calib/stats.h"
#include "../formats/format.h"
#include "../formats/outdir.h"
#include "../formats/serving.h"
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
    sq_scheme scheme;            /* the plan's scheme for it (quantised rows): its config group */
} sq_report_row;

/* The method's traits the report shows. */
typedef struct {
    bool fp8;                    /* E4M3 weights: fp8's quantization_config and arguments */
    bool fp4;                    /* E2M1 weights: the FP4 variant and its activations */
    bool gptq;                   /* GPTQ's error compensation: act_order, damp and each matrix's damp */
    bool awq;                    /* AWQ: its arguments, each matrix's alpha, the folding checks */
    bool grid_errors;            /* RTN's error on both grids per matrix */
} sq_report_traits;

typedef struct {
    const sq_quantize_opts *o;   /* as resolved (the format chosen, seqlen) */
    const sq_config *c;
    sq_report_traits t;
    sq_scheme scheme;            /* what was written... */
    const sq_fmt *fmt;           /* ...in this format (its quantization_config) */
    const sq_report_row *rows;
    int nrows;
    /* calibration */
    uint64_t calib_hash;
    int64_t calib_tokens;
    int bos_id;
    const char *bos_rule;
    const sq_stats *stats;       /* --stats: the statistics used (their calibration is reported); else NULL */
    /* MoE: (n_layers, n_experts) tokens routed to each expert, and those calibrated on every token */
    const int64_t *moe_tokens;
    const uint8_t *moe_all;
    /* AWQ: the largest relative change folding made to a block's output, and to a router's logits */
    double fold_max, router_fold_max;
    const struct sq_smooth *smooth; /* --smoothquant: its alpha and each site's figures (smooth.h); else NULL */
    /* the output */
    const sq_serve_summary *serve; /* vLLM's kernel rules applied to the output; NULL: not checked */
    int64_t n_weights_q;
    double packed_bytes;
    int64_t out_bytes, src_bytes, src_params;
    double t_forward, t_hessian, t_quant, t_write, total;
    double f_forward, f_hessian, f_quant; /* their operations (the forward's linears and attention, the Hessian updates, the solves) */
    const struct sq_budget_result_s *budget; /* --target-bits / --max-kld: the choice and its measurement; else NULL */
} sq_qreport;

/* config.json with its quantization_config, and spotq.json. */
sq_status sq_pl_write_config(const sq_qreport *r, sq_outdir *od, const char *src_config, sq_err *err);
sq_status sq_pl_write_report(const sq_qreport *r, sq_outdir *od, sq_err *err);

#endif
