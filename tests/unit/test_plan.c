/* test_plan.c: the per-linear plan (quant/plan.h): a 576-wide model at g128 lowers every linear to g64
 * (576 = 4.5 x 128 = 9 x 64), fused sets share one group, a width no servable group divides is kept,
 * strict mode names the sizes that fit, a model 128 divides is left alone, and an explicit mixed plan
 * (INT4 g32 for some layers, INT8 per channel for others) has two distinct schemes. */
#include <string.h>

#include "../../quant/plan.h"
#include "check.h"

static void shapes(int64_t *k, int layers, int64_t hidden, int64_t inter) {
    for (int l = 0; l < layers; l++)
        for (int j = 0; j < SQ_LIN_COUNT; j++) k[l * SQ_LIN_COUNT + j] = j == SQ_LIN_O ? hidden : j == SQ_LIN_DOWN ? inter : hidden;
}

int main(void) {
    sq_err err = {0};
    sq_scheme g128 = {.kind = SQ_SCHEME_INT, .bits = 4, .group_size = 128, .sym = true};
    int64_t k[4 * SQ_LIN_COUNT];
    sq_plan p;

    shapes(k, 4, 576, 1536); /* SmolLM2-135M's widths: down's 1536 = 12 x 128 fits */
    CHECK_OK(sq_plan_default(&p, 4, k, &g128, false, &err), &err);
    CHECK(p.n_regrouped == 4 * 6, "%d regrouped", p.n_regrouped);
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < SQ_LIN_COUNT; j++) {
            const sq_plan_entry *e = sq_plan_at(&p, l, (sq_lin)j);
            CHECK(!e->keep && e->s.group_size == (j == SQ_LIN_DOWN ? 128 : 64), "layer %d lin %d: g%d", l, j, e->s.group_size);
            CHECK(k[l * SQ_LIN_COUNT + j] % e->s.group_size == 0, "group divides");
        }
    sq_scheme d[4];
    CHECK(sq_plan_distinct(&p, d, 4) == 2 && d[0].group_size == 64 && d[1].group_size == 128, "two schemes");
    CHECK_OK(sq_plan_check(&p, &err), &err);
    char note[160];
    sq_plan_note(&p, 128, note, sizeof note);
    CHECK(!strcmp(note, "group size 128 does not divide in_features of 24 linears: 24 at g64"), "%s", note);
    sq_plan_free(&p);

    /* strict: an error naming the sizes that fit every linear (576 and 1536: -1, 32, 64) */
    CHECK(sq_plan_default(&p, 4, k, &g128, true, &err) == SQ_ERR_ARG && strstr(err.msg, "fit every linear: -1, 32, 64"), "%s", err.msg);

    /* a fused set whose members differ: q/k/v share the group that divides all three */
    shapes(k, 1, 1024, 4096);
    k[SQ_LIN_K] = 1024 + 32; /* not a real shape, but q, k, v then need g32 together */
    CHECK_OK(sq_plan_default(&p, 1, k, &g128, false, &err), &err);
    CHECK(sq_plan_at(&p, 0, SQ_LIN_Q)->s.group_size == 32 && sq_plan_at(&p, 0, SQ_LIN_V)->s.group_size == 32, "fused q/k/v share g32");
    CHECK(sq_plan_at(&p, 0, SQ_LIN_O)->s.group_size == 128, "o keeps g128");
    sq_plan_free(&p);

    /* a width no servable group divides (in_features 48): kept */
    shapes(k, 1, 48, 128);
    CHECK_OK(sq_plan_default(&p, 1, k, &g128, false, &err), &err);
    CHECK(sq_plan_at(&p, 0, SQ_LIN_Q)->keep && !sq_plan_at(&p, 0, SQ_LIN_DOWN)->keep, "48 kept, 128 quantised");
    sq_plan_free(&p);

    /* 128 divides everything: the plan is the scheme itself */
    shapes(k, 2, 256, 512);
    CHECK_OK(sq_plan_default(&p, 2, k, &g128, true, &err), &err);
    CHECK(p.n_regrouped == 0 && sq_plan_distinct(&p, d, 4) == 1 && sq_scheme_same(&d[0], &g128), "uniform");

    /* an explicit mixed plan: layer 1 INT8 per channel, layer 0 INT4 g32; splitting a fused set is refused */
    sq_scheme g32 = g128, i8 = {.kind = SQ_SCHEME_INT, .bits = 8, .group_size = -1, .sym = true};
    g32.group_size = 32;
    for (int j = 0; j < SQ_LIN_COUNT; j++) sq_plan_set(&p, 0, (sq_lin)j, &g32), sq_plan_set(&p, 1, (sq_lin)j, &i8);
    CHECK(sq_plan_distinct(&p, d, 4) == 2 && d[0].bits == 4 && d[1].bits == 8, "mixed");
    CHECK_OK(sq_plan_check(&p, &err), &err);
    p.e[1 * SQ_LIN_COUNT + SQ_LIN_UP].s = g32;
    CHECK(sq_plan_check(&p, &err) == SQ_ERR_ARG && strstr(err.msg, "layer 1"), "split refused: %s", err.msg);
    sq_plan_free(&p);
    CHECK(sq_plan_at(&p, 0, SQ_LIN_Q) == NULL, "freed plan has no entries");
    return check_report("test_plan");
}
