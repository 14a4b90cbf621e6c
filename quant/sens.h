/* sens.h: what each unit of a model costs under each candidate scheme, for quantising to a budget
 * (issue 18; the choice itself is quant/budget.h). A unit is what serving makes share one scheme:
 * q/k/v of a layer (vLLM fuses them), o, gate/up, down; the experts of an MoE layer (with the shared
 * expert) together, gate/up apart from down.
 *
 * For every unit and scheme: its bytes (as compressed-tensors pack-quantized stores it: codes packed
 * along in_features, F16 scales, packed zero points when asymmetric, the I64 [2] weight_shape; when kept the source's dtype, or BF16 for an F32 source with keep_bf16) and
 * the proxy GPTQ minimises, err = sum over its linears of tr(D H D^T) with D = W - Q, Q the linear after
 * GPTQ onto that scheme with the full-precision model's Hessian H (from `spotq calib`'s statistics).
 * The proxy is in each unit's own units; one measurement per unit makes it a KLD: the unit alone
 * quantised to its reference scheme (its smallest), the rest of the model full precision, the mean
 * KL(full || quantised) of the next-token distributions over held-out windows of the calibration text
 * (none of the calibration windows' tokens), as ExLlama's measurement pass does; every other scheme
 * of the unit is predicted as kld_ref * err / err_ref. With validate, a second scheme per unit is
 * measured too, and the log-log correlation and median ratio of predicted to measured say how well the
 * proxy predicts. Costs are taken to add over units. */
#ifndef SQ_SENS_H
#define SQ_SENS_H

#include "../calib/stats.h"
#include "../runtime/runtime.h"

typedef struct {
    char name[24];       /* "int4-g128-sym", "int8-ch-sym", "keep" */
    bool keep;           /* full precision: the source's dtype, or BF16 (sq_sens_opts.keep_bf16) */
    int bits;            /* 4 or 8 */
    int group_size;      /* -1: per channel */
    bool sym;
} sq_sens_scheme;

/* "int4-g128-sym", "int4-g64-asym", "int8-ch-sym" (ch: per channel), "keep". */
sq_status sq_sens_scheme_parse(const char *name, sq_sens_scheme *out /* OUT */, sq_err *err);
/* A comma-separated list into out (capacity cap); *n: how many. */
sq_status sq_sens_schemes_parse(const char *list, sq_sens_scheme *out, int cap, int *n /* OUT */, sq_err *err);
/* The default candidates: int4 g128/g64/g32 sym and asym, int8 per channel sym, keep. Returns how many. */
int sq_sens_default_schemes(sq_sens_scheme *out, int cap);

typedef struct {
    int layer, unit;     /* the FFN unit (expert) for gate/up/down; 0 otherwise */
    sq_lin which;
} sq_sens_lin;

typedef struct {
    char name[96];       /* "model.layers.3.self_attn q/k/v" */
    int layer;
    int n_lin;
    sq_sens_lin *lin;    /* [n_lin], owned */
    int64_t params;
} sq_sens_unit;

typedef struct {
    int n_units, n_schemes;
    sq_sens_unit *units;          /* [n_units] */
    sq_sens_scheme *schemes;      /* [n_schemes] (a copy) */
    /* [n_units * n_schemes], unit-major: */
    double *bytes;                /* 0: the scheme cannot hold the unit (a shape it does not pack) */
    double *err;                  /* the proxy (0 when kept) */
    double *cost;                 /* the predicted KLD (measured where measured) */
    double *kld;                  /* measured KLD; NaN where not measured */
    int *ref;                     /* [n_units] the scheme its factor was measured with; -1: none quantisable */
    double fixed_bytes;           /* every tensor outside the units (embeddings, norms, lm_head) */
    int64_t params;               /* the architecture's parameters, every tensor counted */
    int measure_windows, measure_ctx, heldout_windows; /* windows measured on, how many share no calibration token */
    int *windows;                 /* [measure_windows, measure_ctx] their tokens (owned) */
    int n_validate;               /* second measurements */
    double validate_r;            /* Pearson correlation of log predicted and log measured KLD over them */
    double validate_ratio;        /* median of predicted / measured */
    double seconds_proxy, seconds_measure;
} sq_sens;

typedef struct {
    const sq_stats *stats;        /* the full-precision model's statistics (spotq calib) */
    const int *ids;               /* the calibration text's tokens... */
    int64_t n_ids;
    int calib_nsamples, calib_seqlen; /* ...and its windows, which the measurement keeps out of */
    uint64_t calib_seed;
    int measure_windows, measure_ctx; /* 0: 8 windows of 128 tokens */
    double damp;                  /* GPTQ's damping (0: 0.01) */
    bool validate;                /* measure a second scheme of each unit */
    bool act_order;               /* GPTQ in descending diag(H) with static groups (--act-order), as the pipeline writes it */
    bool keep_bf16;               /* --keep-dtype bf16: F32 matrices written unquantised (keep, and every matrix outside
                                   * the units: embeddings, lm_head) count 2 bytes a weight */
    void (*progress)(void *user, int done, int total);
    void *progress_user;
} sq_sens_opts;

/* Runs the measurement on m (a full-precision model; its linears are swapped during the run and put
 * back before it returns). */
sq_status sq_sens_run(sq_model *m, const sq_sens_scheme *schemes, int n_schemes, const sq_sens_opts *o, sq_sens *out /* OUT */,
                      sq_err *err);
void sq_sens_free(sq_sens *s); /* zero-filled is fine */

/* One scheme per unit (choice [n_units], an index into s->schemes) under a budget, by quant/budget.h's
 * exact solver: target_bits > 0: the least predicted KLD whose checkpoint (every tensor counted) has at
 * most target_bits bits per parameter; else max_kld > 0: the fewest bytes whose predicted KLD is at most
 * max_kld. *bytes, *kld: the checkpoint's bytes and the predicted KLD of the choice. A target below the
 * smallest scheme of every unit (or a KLD below what keeping every unit predicts) is SQ_ERR_ARG, naming
 * the least the candidates reach. */
sq_status sq_sens_choose(const sq_sens *s, double target_bits, double max_kld, int *choice /* OUT */, double *bytes /* OUT */,
                         double *kld /* OUT */, sq_err *err);

/* The measured KLD of a whole choice (choice [n_units], as sq_sens_choose gives): every unit quantised to
 * its scheme at once (GPTQ with the statistics' Hessians, as the pipeline writes them), on the same held-out
 * windows as the run, against the full-precision model; the linears are put back before it returns. */
sq_status sq_sens_measure_choice(sq_model *m, const sq_sens *s, const int *choice, const sq_sens_opts *o, double *kld /* OUT */,
                                 sq_err *err);

/* The bytes compressed-tensors pack-quantized stores for an n x k linear under scheme s (kept: at the
 * source dtype's size dt_size); 0 when s cannot hold it. */
double sq_sens_linear_bytes(const sq_sens_scheme *s, int64_t n, int64_t k, int dt_size);

#endif
