/* budget.h: choosing one quantisation scheme per unit of a model under a size budget (issue 18): a
 * multiple-choice knapsack. A unit is what serving forces to share one scheme (q/k/v of a layer, which
 * vLLM fuses; gate/up; every expert of an MoE layer; o; down); each of its candidates is a scheme with
 * the bytes the unit takes under it and a predicted cost (the KLD proxy: the Hessian-weighted output
 * error GPTQ minimises, or a measured KLD). Two questions, one table:
 *   - the least total cost whose bytes stay within a budget (--target-bits), and
 *   - the fewest bytes whose total cost stays within a limit (--max-kld).
 * Costs add over units (the proxy's assumption: the units' errors are independent and small).
 *
 * The solver is exact over bytes rounded up to a grid of `resolution` steps of what the budget leaves
 * over the smallest candidates (so what it returns always fits the budget, a budget of exactly the
 * smallest candidates included, and is within one grid step per unit of the optimum); a Lagrangian
 * relaxation (sq_budget_lagrange) gives the convex-hull answer and a lower bound on the cost, which the
 * tests hold the exact answer between. */
#ifndef SQ_BUDGET_H
#define SQ_BUDGET_H

#include "../base/base.h"

typedef struct {
    double bytes;      /* the unit's bytes under this scheme (> 0) */
    double cost;       /* its predicted cost (>= 0) */
} sq_budget_cand;

typedef struct {
    int n_cand;                 /* >= 1 */
    const sq_budget_cand *cand; /* [n_cand] */
} sq_budget_unit;

typedef struct {
    double bytes, cost;         /* of the choice (the units' own figures, not the rounded ones) */
} sq_budget_total;

/* The least total cost with total bytes <= budget; choice [n_units] gets each unit's candidate index.
 * resolution: grid steps of the budget (0: 4096). SQ_ERR_ARG when even the smallest candidates exceed
 * the budget (the message says how many bytes they need), or on bad arguments. */
sq_status sq_budget_min_cost(const sq_budget_unit *u, int n_units, double budget, int resolution, int *choice /* OUT */,
                             sq_budget_total *tot /* OUT */, sq_err *err);

/* The fewest total bytes with total cost <= max_cost (exact over the same grid, whose top is the bytes of
 * the largest candidates). SQ_ERR_ARG when even the least-cost candidates exceed max_cost. */
sq_status sq_budget_min_bytes(const sq_budget_unit *u, int n_units, double max_cost, int resolution, int *choice /* OUT */,
                              sq_budget_total *tot /* OUT */, sq_err *err);

/* The Lagrangian relaxation of min_cost: for multiplier lambda every unit takes the candidate of least
 * cost + lambda * bytes; lambda is bisected to the smallest that fits the budget. *bound gets the
 * relaxation's lower bound on the optimum cost (max over lambda of sum min(cost + lambda bytes) -
 * lambda budget). The choice fits the budget; SQ_ERR_ARG as sq_budget_min_cost. */
sq_status sq_budget_lagrange(const sq_budget_unit *u, int n_units, double budget, int *choice /* OUT */, sq_budget_total *tot /* OUT */,
                             double *bound /* OUT */, sq_err *err);

#endif
