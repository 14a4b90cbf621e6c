/* plan.h: the per-linear quantisation plan: for every linear of the model, by layer and sq_lin (the
 * experts of an MoE layer together, as vLLM fuses them), the full scheme it is written with
 * (formats/qscheme.h: kind, bits, group size, sym, ...) or "keep" (full precision). One place decides
 * it (sq_plan_default, or a caller's plan through sq_quantize_opts.plan); the pipeline, the writers and
 * the report consult it (sq_plan_at).
 *
 * Fused sets: the linears vLLM fuses into one kernel (q, k, v; gate, up) and every expert of a layer
 * always share one scheme: sq_plan_set writes the whole set, and sq_plan_check refuses a plan that
 * splits one. */
#ifndef SQ_PLAN_H
#define SQ_PLAN_H

#include "../formats/qscheme.h"
#include "../runtime/runtime.h"

typedef struct {
    bool keep;               /* full precision; s then unused */
    sq_scheme s;
} sq_plan_entry;

typedef struct sq_plan {
    int n_layers;
    sq_plan_entry *e;        /* [n_layers * SQ_LIN_COUNT]: layer l, linear `which` at l * SQ_LIN_COUNT + which */
    int n_regrouped;         /* sq_plan_default: linears whose group size was lowered to fit in_features */
    int regroup_to[4];       /* ...how many went to each of SQ_PLAN_GROUPS (for the summary line) */
} sq_plan;

/* The group sizes vLLM's kernels serve for 4- and 8-bit integer weights, largest first (Marlin and
 * Machete, vllm model_executor/layers/quantization/utils/marlin_utils.py, as issue 14 reads it). */
#define SQ_PLAN_NGROUPS 3
extern const int SQ_PLAN_GROUPS[SQ_PLAN_NGROUPS]; /* 128, 64, 32 */

/* The fused set of `which`: its first member (SQ_LIN_Q for q, k, v; SQ_LIN_GATE for gate, up; else itself). */
sq_lin sq_plan_fused_head(sq_lin which);

/* Allocates a plan of n_layers with every linear on scheme *all (keep false). */
sq_status sq_plan_init(sq_plan *p /* OUT */, int n_layers, const sq_scheme *all, sq_err *err);
void sq_plan_free(sq_plan *p); /* zero-filled is fine */
/* The entry of layer l, linear which (NULL out of range). */
const sq_plan_entry *sq_plan_at(const sq_plan *p, int l, sq_lin which);
/* Sets the scheme (s NULL: keep) of linear which of layer l and of its whole fused set. */
void sq_plan_set(sq_plan *p, int l, sq_lin which, const sq_scheme *s);
/* Whether two schemes write the same config group (same kind, bits, group, sym, act-order, FP8 form). */
bool sq_scheme_same(const sq_scheme *a, const sq_scheme *b);
/* The distinct schemes of the entries not kept, in first-use order (layer, then sq_lin), into out
 * (at most cap); returns how many there are (may exceed cap). */
int sq_plan_distinct(const sq_plan *p, sq_scheme *out, int cap);
/* One-line error (SQ_ERR_ARG) when the plan splits a fused set, else SQ_OK. */
sq_status sq_plan_check(const sq_plan *p, sq_err *err);

/* The default plan for scheme *base over linears of in_features k[l * SQ_LIN_COUNT + which] (0: no
 * such linear). An integer scheme whose group size does not divide a fused set's in_features gets the
 * largest of SQ_PLAN_GROUPS below it that divides every member's (p->n_regrouped counts them); none:
 * the set is kept. strict (the user gave --group-size and --strict-group-size): no lowering; a set the
 * group does not divide is a usage error naming the group sizes that would fit every linear. */
sq_status sq_plan_default(sq_plan *p /* OUT */, int n_layers, const int64_t *k, const sq_scheme *base, bool strict, sq_err *err);

/* The summary of the lowering ("group size 128 does not divide in_features of 180 linears: 150 at
 * g64, 30 at g32"), "" when none was. */
void sq_plan_note(const sq_plan *p, int asked, char *buf, size_t cap);

#endif
