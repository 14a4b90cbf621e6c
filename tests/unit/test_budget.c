/* test_budget.c: the budget solver (quant/budget.h) against brute force over every combination of
 * small random instances: the exact solver never beats the optimum and is within its grid of it (exact
 * when bytes are whole grid steps); the Lagrangian choice fits, its bound is below the optimum; the
 * fewest-bytes question answers its own constraint; impossible budgets and bad candidates are errors. */
#include <math.h>
#include <string.h>

#include "../../quant/budget.h"
#include "check.h"

enum { MAXU = 6, MAXC = 4 };

static unsigned rng = 12345;
static double urand(void) {
    rng = rng * 1103515245u + 12345u;
    return ((rng >> 8) & 0xffffff) / 16777216.0;
}

/* The optimum by enumeration: least cost within budget (mode 0) or fewest bytes within max cost (mode 1). */
static double brute(const sq_budget_unit *u, int n, double limit, int mode) {
    int idx[MAXU] = {0};
    double best = INFINITY;
    for (;;) {
        double b = 0, c = 0;
        for (int i = 0; i < n; i++) b += u[i].cand[idx[i]].bytes, c += u[i].cand[idx[i]].cost;
        if (mode == 0 && b <= limit && c < best) best = c;
        if (mode == 1 && c <= limit && b < best) best = b;
        int i = 0;
        while (i < n && ++idx[i] == u[i].n_cand) idx[i++] = 0;
        if (i == n) break;
    }
    return best;
}

int main(void) {
    sq_err err = {0};
    sq_budget_cand cand[MAXU][MAXC];
    sq_budget_unit u[MAXU];
    int choice[MAXU];
    sq_budget_total tot;
    for (int trial = 0; trial < 400; trial++) {
        int n = 1 + trial % MAXU;
        bool whole = trial % 3 == 0; /* bytes in whole units and a grid of one byte: the DP is exact */
        double smallest = 0, largest = 0;
        for (int i = 0; i < n; i++) {
            u[i].n_cand = 1 + (int)(urand() * MAXC);
            u[i].cand = cand[i];
            double lo = INFINITY, hi = 0;
            for (int c = 0; c < u[i].n_cand; c++) {
                double b = whole ? 1 + (int)(urand() * 40) : 1 + urand() * 40;
                /* costs that fall with bytes, with noise, as real schemes do */
                cand[i][c] = (sq_budget_cand){b, fmax(0, 50 / b + urand() * 3 - 1)};
                lo = fmin(lo, b), hi = fmax(hi, b);
            }
            smallest += lo, largest += hi;
        }
        double budget = whole ? floor(smallest + urand() * (largest - smallest)) : smallest + urand() * (largest - smallest);
        if (whole && budget < smallest) budget = smallest;
        int res = whole ? (budget > smallest ? (int)(budget - smallest) : 1) : 512; /* whole: a step of one byte */
        double opt = brute(u, n, budget, 0);
        CHECK_OK(sq_budget_min_cost(u, n, budget, res, choice, &tot, &err), &err);
        CHECK(tot.bytes <= budget + 1e-9, "trial %d: %g bytes over the budget %g", trial, tot.bytes, budget);
        CHECK(tot.cost >= opt - 1e-9, "trial %d: cost %g below the optimum %g", trial, tot.cost, opt);
        if (whole) CHECK(fabs(tot.cost - opt) < 1e-9, "trial %d: whole bytes: cost %g, optimum %g", trial, tot.cost, opt);
        else {
            double tighter = brute(u, n, budget - n * (budget - smallest) / res, 0); /* what rounding up can cost at most */
            if (isfinite(tighter)) CHECK(tot.cost <= tighter + 1e-9, "trial %d: cost %g above the grid's optimum %g", trial, tot.cost, tighter);
        }
        double bound;
        int lch[MAXU];
        sq_budget_total ltot;
        CHECK_OK(sq_budget_lagrange(u, n, budget, lch, &ltot, &bound, &err), &err);
        CHECK(ltot.bytes <= budget + 1e-9 && ltot.cost >= opt - 1e-9, "trial %d: lagrange %g bytes %g cost (optimum %g)", trial, ltot.bytes,
              ltot.cost, opt);
        CHECK(bound <= opt + 1e-6, "trial %d: lagrange bound %g above the optimum %g", trial, bound, opt);
        double max_cost = tot.cost + urand() * 5, fewest = brute(u, n, max_cost, 1);
        CHECK_OK(sq_budget_min_bytes(u, n, max_cost, whole ? (largest > smallest ? (int)(largest - smallest) : 1) : 512, choice, &tot, &err), &err);
        CHECK(tot.cost <= max_cost + 1e-9, "trial %d: cost %g over the limit %g", trial, tot.cost, max_cost);
        CHECK(tot.bytes >= fewest - 1e-9, "trial %d: %g bytes below the fewest %g", trial, tot.bytes, fewest);
        CHECK(tot.bytes <= fewest + (whole ? 1e-9 : n * (largest - smallest) / 512 + 1e-9), "trial %d: %g bytes, the fewest %g", trial, tot.bytes, fewest);
    }
    /* errors */
    sq_budget_cand c2[2] = {{10, 1}, {20, 0.5}};
    sq_budget_unit one = {2, c2};
    CHECK(sq_budget_min_cost(&one, 1, 9, 0, choice, &tot, &err) == SQ_ERR_ARG && strstr(err.msg, "below the 10 bytes"), "%s", err.msg);
    CHECK(sq_budget_min_bytes(&one, 1, 0.4, 0, choice, &tot, &err) == SQ_ERR_ARG && strstr(err.msg, "below 0.5"), "%s", err.msg);
    CHECK_OK(sq_budget_min_cost(&one, 1, 20, 0, choice, &tot, &err), &err);
    CHECK(choice[0] == 1, "a budget that holds the better scheme takes it");
    CHECK_OK(sq_budget_min_cost(&one, 1, 19.99, 0, choice, &tot, &err), &err);
    CHECK(choice[0] == 0, "a budget just short of it does not");
    sq_budget_cand bad[1] = {{0, 1}};
    sq_budget_unit b1 = {1, bad};
    CHECK(sq_budget_min_cost(&b1, 1, 9, 0, choice, &tot, &err) == SQ_ERR_ARG, "zero bytes is refused");
    bad[0] = (sq_budget_cand){1, NAN};
    CHECK(sq_budget_min_cost(&b1, 1, 9, 0, choice, &tot, &err) == SQ_ERR_ARG, "a NaN cost is refused");
    return check_report("test_budget");
}
