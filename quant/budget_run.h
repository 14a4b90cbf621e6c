/* budget_run.h: the pre-pass of `spotq quantize --target-bits B | --max-kld K` (issue 18): the
 * full-precision model's statistics (collected from --calib, or --stats), sens.h's measurement of every
 * unit under every candidate scheme, budget.h's choice through sq_sens_choose, and the choice measured as
 * a whole on the calibration text's held-out windows. Under --max-kld the limit the solver is given is
 * tightened until the measured KLD meets K (at most a few rounds); the pipeline then writes the choice
 * (its plan) from the same statistics, with the same GPTQ, so the checkpoint is what was measured. */
#ifndef SQ_BUDGET_RUN_H
#define SQ_BUDGET_RUN_H

#include "qopts.h"
#include "sens.h"

typedef struct sq_budget_result_s {
    sq_sens sens;
    int *choice;                 /* [sens.n_units] index into sens.schemes */
    double bytes;                /* the checkpoint's bytes the choice predicts (every tensor counted) */
    double bits;                 /* ...as bits per weight */
    double pred_kld;             /* the sum of the units' predicted KLDs */
    double heldout_kld;          /* the whole choice measured on the held-out windows */
    double solver_kld;           /* --max-kld: the limit the last round gave the solver */
    int rounds;                  /* solver rounds (1 under --target-bits) */
    char stats_path[512];        /* the statistics the pipeline reads (--stats, or a temporary file) */
    bool stats_tmp;              /* stats_path is ours: removed by sq_budget_free */
    double seconds;
} sq_budget_result;

/* o resolved (sq_quantize_resolve) with a budget. */
sq_status sq_budget_prepare(const sq_quantize_opts *o, sq_budget_result *r /* OUT */, sq_err *err);
void sq_budget_free(sq_budget_result *r); /* zero-filled is fine */
/* The choice as the pipeline's per-linear plan (kept units full precision; sq_plan_free it). */
struct sq_plan;
sq_status sq_budget_plan(const sq_budget_result *r, sq_quantize_opts *o, struct sq_plan *plan /* OUT */, sq_err *err);

#endif
