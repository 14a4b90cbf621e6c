/* pipeline.h: `spotq quantize` as a library call: calibrate block by block, quantise every linear
 * layer that fits, and write the output directory (GPTQ v1 or compressed-tensors) atomically. */
#ifndef SQ_PIPELINE_H
#define SQ_PIPELINE_H

#include "quant.h"

typedef enum { SQ_METHOD_RTN, SQ_METHOD_GPTQ } sq_method;
typedef enum { SQ_FORMAT_GPTQ, SQ_FORMAT_CT } sq_format;

typedef struct {
    const char *model;           /* source checkpoint */
    const char *out;             /* output directory */
    const char *calib;           /* .txt or .jsonl calibration text (required for gptq; rtn uses it for the error report) */
    sq_method method;
    sq_format format;
    sq_qparams q;
    int nsamples, seqlen;
    uint64_t seed;
    int threads;
    bool force;
    const char *const *ignore;   /* fnmatch patterns on module names ("model.layers.*.mlp.down_proj") */
    int n_ignore;
    const char *cmdline;         /* recorded in spotq.json */
    bool progress;               /* a progress line on stderr */
} sq_quantize_opts;

sq_status sq_quantize_model(const sq_quantize_opts *o, sq_err *err);

const char *sq_method_name(sq_method m);
const char *sq_format_name(sq_format f);

#endif
