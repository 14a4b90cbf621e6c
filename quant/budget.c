/* budget.c: the multiple-choice knapsack of budget.h: a dynamic programme over bytes on a grid (exact
 * there), and the Lagrangian relaxation that bounds it. */
#include "budget.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static sq_status check_units(const sq_budget_unit *u, int n_units, sq_err *err) {
    if (!u || n_units <= 0) return sq_fail(err, SQ_ERR_ARG, "a budget needs at least one unit");
    for (int i = 0; i < n_units; i++) {
        if (u[i].n_cand < 1 || u[i].n_cand > 255 || !u[i].cand)
            return sq_fail(err, SQ_ERR_ARG, "unit %d has %d candidates (1 to 255)", i, u[i].n_cand);
        for (int c = 0; c < u[i].n_cand; c++)
            if (!(u[i].cand[c].bytes > 0) || !(u[i].cand[c].cost >= 0) || !isfinite(u[i].cand[c].bytes) || !isfinite(u[i].cand[c].cost))
                return sq_fail(err, SQ_ERR_ARG, "unit %d candidate %d: bytes %g, cost %g (bytes > 0 and cost >= 0, finite)", i, c,
                               u[i].cand[c].bytes, u[i].cand[c].cost);
    }
    return SQ_OK;
}

static void total_of(const sq_budget_unit *u, int n_units, const int *choice, sq_budget_total *tot) {
    tot->bytes = tot->cost = 0;
    for (int i = 0; i < n_units; i++) {
        tot->bytes += u[i].cand[choice[i]].bytes;
        tot->cost += u[i].cand[choice[i]].cost;
    }
}

/* f[b] after unit i: the least cost of units 0..i with rounded bytes exactly b (DBL_MAX: none); pick[i][b]
 * the candidate unit i took there. Fills the table for grid `step` up to B steps and returns it (NULL on
 * no memory). Bytes are rounded up, so a choice found on the grid fits the real budget. */
typedef struct {
    double *f;        /* [B + 1] after the last unit */
    uint8_t *pick;    /* [n_units][B + 1] */
    int64_t B;
} dp_table;

/* A candidate's weight on the grid: its bytes over its unit's smallest candidate, rounded up (so what fits
 * the grid fits the budget, and the unit's smallest candidate always weighs 0: a budget that is exactly
 * the smallest candidates' bytes is met); past `cap` steps it is cap + 1 (out of the table). */
static int64_t steps_of(double extra, double step, int64_t cap) {
    double x = ceil(extra / step - 1e-9);
    return x <= 0 ? 0 : x > (double)cap ? cap + 1 : (int64_t)x;
}

/* A unit's least (or, largest, most) bytes, or its least cost (cost). */
static double unit_extreme(const sq_budget_unit *u, bool cost, bool largest) {
    double m = cost ? u->cand[0].cost : u->cand[0].bytes;
    for (int c = 1; c < u->n_cand; c++) {
        double v = cost ? u->cand[c].cost : u->cand[c].bytes;
        m = largest ? fmax(m, v) : fmin(m, v);
    }
    return m;
}

static double unit_min(const sq_budget_unit *u) { return unit_extreme(u, false, false); }

/* The sum over the units of unit_extreme. */
static double sum_extreme(const sq_budget_unit *u, int n_units, bool cost, bool largest) {
    double s = 0;
    for (int i = 0; i < n_units; i++) s += unit_extreme(&u[i], cost, largest);
    return s;
}

static sq_status dp_run(const sq_budget_unit *u, int n_units, double step, int64_t B, dp_table *t, sq_err *err) {
    t->B = B;
    t->f = malloc((size_t)(B + 1) * sizeof *t->f);
    double *g = malloc((size_t)(B + 1) * sizeof *g);
    t->pick = malloc((size_t)n_units * (size_t)(B + 1));
    if (!t->f || !g || !t->pick) {
        free(t->f);
        free(g);
        free(t->pick);
        return sq_fail(err, SQ_ERR_NOMEM, "out of memory for a budget table of %d units x %lld steps", n_units, (long long)B + 1);
    }
    for (int64_t b = 0; b <= B; b++) t->f[b] = DBL_MAX;
    t->f[0] = 0;
    for (int i = 0; i < n_units; i++) {
        for (int64_t b = 0; b <= B; b++) g[b] = DBL_MAX;
        uint8_t *pk = t->pick + (size_t)i * (size_t)(B + 1);
        for (int c = 0; c < u[i].n_cand; c++) {
            int64_t w = steps_of(u[i].cand[c].bytes - unit_min(&u[i]), step, B);
            double cost = u[i].cand[c].cost;
            for (int64_t b = w; b <= B; b++) {
                double prev = t->f[b - w];
                if (prev == DBL_MAX) continue;
                /* ties: the candidate listed first (the callers list the larger schemes first) */
                if (prev + cost < g[b]) {
                    g[b] = prev + cost;
                    pk[b] = (uint8_t)c;
                }
            }
        }
        memcpy(t->f, g, (size_t)(B + 1) * sizeof *g);
    }
    free(g);
    return SQ_OK;
}

static void dp_trace(const sq_budget_unit *u, int n_units, double step, const dp_table *t, int64_t b, int *choice) {
    for (int i = n_units - 1; i >= 0; i--) {
        int c = t->pick[(size_t)i * (size_t)(t->B + 1) + (size_t)b];
        choice[i] = c;
        b -= steps_of(u[i].cand[c].bytes - unit_min(&u[i]), step, t->B);
    }
}

static void dp_free(dp_table *t) {
    free(t->f);
    free(t->pick);
}

sq_status sq_budget_min_cost(const sq_budget_unit *u, int n_units, double budget, int resolution, int *choice, sq_budget_total *tot,
                             sq_err *err) {
    sq_status s = check_units(u, n_units, err);
    if (s) return s;
    if (resolution <= 0) resolution = 4096;
    double need = sum_extreme(u, n_units, false, false);
    if (!(budget >= need))
        return sq_fail(err, SQ_ERR_ARG, "a budget of %.0f bytes is below the %.0f bytes of the smallest scheme of every unit", budget, need);
    double step = fmax(budget - need, 1e-300) / resolution; /* the grid spans the bytes over the smallest candidates */
    dp_table t;
    if ((s = dp_run(u, n_units, step, resolution, &t, err))) return s;
    int64_t best = -1; /* f[0] is always reached: every unit's smallest candidate */
    for (int64_t b = 0; b <= t.B; b++)
        if (t.f[b] != DBL_MAX && (best < 0 || t.f[b] < t.f[best])) best = b;
    dp_trace(u, n_units, step, &t, best, choice);
    dp_free(&t);
    total_of(u, n_units, choice, tot);
    return SQ_OK;
}

sq_status sq_budget_min_bytes(const sq_budget_unit *u, int n_units, double max_cost, int resolution, int *choice, sq_budget_total *tot,
                              sq_err *err) {
    sq_status s = check_units(u, n_units, err);
    if (s) return s;
    if (resolution <= 0) resolution = 4096;
    double least = sum_extreme(u, n_units, true, false);
    if (!(max_cost >= least))
        return sq_fail(err, SQ_ERR_ARG, "a cost limit of %g is below %g, the least any choice of schemes predicts", max_cost, least);
    double top = sum_extreme(u, n_units, false, true) - sum_extreme(u, n_units, false, false), step = fmax(top, 1e-300) / resolution;
    dp_table t;
    if ((s = dp_run(u, n_units, step, resolution + n_units, &t, err))) return s; /* + n_units: the round-up of each unit */
    int64_t best = -1;
    for (int64_t b = 0; b <= t.B && best < 0; b++)
        if (t.f[b] <= max_cost) best = b;
    if (best < 0) { /* cannot happen: the least-cost choice is on the table */
        dp_free(&t);
        return sq_fail(err, SQ_ERR_INTERNAL, "the budget table lost the least-cost choice");
    }
    dp_trace(u, n_units, step, &t, best, choice);
    dp_free(&t);
    total_of(u, n_units, choice, tot);
    return SQ_OK;
}

/* Every unit's candidate of least cost + lambda bytes (ties: fewer bytes); returns the sum of those. */
static double relaxed(const sq_budget_unit *u, int n_units, double lambda, int *choice, double *bytes) {
    double v = 0;
    *bytes = 0;
    for (int i = 0; i < n_units; i++) {
        int best = 0;
        for (int c = 1; c < u[i].n_cand; c++) {
            double a = u[i].cand[c].cost + lambda * u[i].cand[c].bytes, b = u[i].cand[best].cost + lambda * u[i].cand[best].bytes;
            if (a < b || (a == b && u[i].cand[c].bytes < u[i].cand[best].bytes)) best = c;
        }
        choice[i] = best;
        v += u[i].cand[best].cost + lambda * u[i].cand[best].bytes;
        *bytes += u[i].cand[best].bytes;
    }
    return v;
}

sq_status sq_budget_lagrange(const sq_budget_unit *u, int n_units, double budget, int *choice, sq_budget_total *tot, double *bound, sq_err *err) {
    sq_status s = check_units(u, n_units, err);
    if (s) return s;
    double need = sum_extreme(u, n_units, false, false);
    if (!(budget >= need))
        return sq_fail(err, SQ_ERR_ARG, "a budget of %.0f bytes is below the %.0f bytes of the smallest scheme of every unit", budget, need);
    double bytes, lo = 0, hi = 1;
    *bound = relaxed(u, n_units, 0, choice, &bytes);
    if (bytes <= budget) { /* the least-cost choice fits: the bound is its cost */
        total_of(u, n_units, choice, tot);
        return SQ_OK;
    }
    while (relaxed(u, n_units, hi, choice, &bytes), bytes > budget) hi *= 2;
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        double v = relaxed(u, n_units, mid, choice, &bytes) - mid * budget;
        if (v > *bound) *bound = v;
        if (bytes > budget) lo = mid;
        else hi = mid;
    }
    double v = relaxed(u, n_units, hi, choice, &bytes) - hi * budget;
    if (v > *bound) *bound = v;
    total_of(u, n_units, choice, tot);
    return SQ_OK;
}
