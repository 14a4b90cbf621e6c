/* test_sens.c: the budget's measurement (quant/sens.h) on the bundled stories260K: its units and which
 * schemes hold them (the FFN width 172 packs in no 4-bit layout, 64 inputs take no group of 128), the
 * bytes as compressed-tensors stores them, the proxy's order (int8 below int4, smaller groups below
 * larger in sum), the held-out windows, and one measured KLD recomputed by an independent path: the
 * unit's linears quantised again by GPTQ, set into a second copy of the model, and runtime/eval.c's
 * sq_eval_ppl over the same windows against the full-precision model. */
#include <math.h>
#include <string.h>

#include "../../calib/driver.h"
#include "../../formats/text.h"
#include "../../formats/tokenizer.h"
#include "../../quant/quant.h"
#include "../../quant/sens.h"
#include "check.h"

static const char *MODEL = "models/stories260K", *CALIB = "data/tinystories/calib.txt";

int main(void) {
    sq_err err = {0};
    sq_exec *ex = NULL;
    sq_model *m = NULL, *m2 = NULL, *ref = NULL;
    CHECK_OK(sq_exec_new(&ex, "cpu", 2, &err), &err);
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    if (!m) return check_report("test_sens");
    sq_calib_opts co = {.model = MODEL, .calib = CALIB, .nsamples = 8, .seqlen = 128, .seed = 0};
    sq_stats st;
    CHECK_OK(sq_calib_collect(m, &co, &st, NULL, NULL, &err), &err);
    sq_tok *tok = NULL;
    int *ids = NULL;
    int64_t n_ids = 0;
    CHECK_OK(sq_tok_load(&tok, sq_model_ckpt(m)->tokenizer_path, &err), &err);
    CHECK_OK(sq_text_tokens(tok, CALIB, false, &ids, &n_ids, &err), &err);
    sq_sens_scheme sc[8];
    int ns = sq_sens_default_schemes(sc, 8);
    CHECK(ns == 8 && !strcmp(sc[0].name, "int4-g128-sym") && sc[7].keep, "the default schemes");
    sq_sens_opts o = {.stats = &st, .ids = ids, .n_ids = n_ids, .calib_nsamples = 8, .calib_seqlen = 128, .calib_seed = 0,
                      .measure_windows = 4, .measure_ctx = 128, .validate = true};
    sq_sens s;
    const void *orig_q = sq_model_linear_unit(m, 0, 0, SQ_LIN_Q)->data, *orig_v = sq_model_linear_unit(m, 4, 0, SQ_LIN_V)->data;
    CHECK_OK(sq_sens_run(m, sc, ns, &o, &s, &err), &err);
    CHECK(s.n_units == 20, "5 layers x (q/k/v, o, gate/up, down): %d", s.n_units);
    CHECK(s.heldout_windows == 4, "4 windows clear of the calibration windows: %d", s.heldout_windows);
    double e32 = 0, e64 = 0;
    for (int u = 0; u < s.n_units; u++) {
        const double *b = s.bytes + u * ns, *e = s.err + u * ns, *c = s.cost + u * ns;
        bool attn = strstr(s.units[u].name, "q/k/v") || !strcmp(strrchr(s.units[u].name, ' ') + 1, "o");
        CHECK(b[7] == (double)s.units[u].params * 4, "%s: kept at F32: %g bytes", s.units[u].name, b[7]);
        CHECK(b[0] == 0 && b[1] == 0, "%s: 64 or 172 inputs take no group of 128", s.units[u].name);
        if (!attn) { /* 172 = 4 x 43: 8-bit codes pack four to a word, 4-bit ones eight */
            for (int i = 0; i < 6; i++) CHECK(b[i] == 0, "%s: 172 is no 4-bit packing's multiple: %s holds it", s.units[u].name, sc[i].name);
            /* rows x (codes + F16 scale), and each linear's I64 [2] weight_shape */
            double want = strstr(s.units[u].name, "gate/up") ? 2 * 172 * (64 + 2) + 2 * 16 : 64 * (172 + 2) + 16;
            CHECK(b[6] == want, "%s: int8-ch-sym bytes %g", s.units[u].name, b[6]);
            CHECK(s.ref[u] == 6 && s.kld[u * ns + 6] > 0, "%s: measured at int8, the only scheme that holds it", s.units[u].name);
            continue;
        }
        /* q/k/v: (64 + 32 + 32) x 64; o: 64 x 64; int4 g32 sym: codes k/2 per row, a F16 scale per 32 */
        int64_t rows = strstr(s.units[u].name, "q/k/v") ? 128 : 64;
        int nl = s.units[u].n_lin;
        CHECK(b[4] == rows * (64 / 2 + 2 * 2) + 16 * nl, "%s: int4-g32-sym bytes %g", s.units[u].name, b[4]);
        CHECK(b[5] == rows * (64 / 2 + 2 * 2 + 2 / 2.0) + 16 * nl, "%s: int4-g32-asym bytes %g", s.units[u].name, b[5]);
        CHECK(b[6] == rows * (64 + 2) + 16 * nl, "%s: int8-ch-sym bytes %g", s.units[u].name, b[6]);
        CHECK(s.ref[u] == 2, "%s: the reference is the smallest, int4-g64-sym: %d", s.units[u].name, s.ref[u]);
        CHECK(e[6] < e[2] && e[6] < e[4], "%s: int8 below int4 (%g, %g, %g)", s.units[u].name, e[6], e[2], e[4]);
        CHECK(s.kld[u * ns + 2] > 0 && c[2] == s.kld[u * ns + 2], "%s: measured %g", s.units[u].name, s.kld[u * ns + 2]);
        CHECK(fabs(c[4] - c[2] * e[4] / e[2]) <= 1e-12 * c[2], "%s: predicted from the error", s.units[u].name);
        CHECK(c[7] == 0 && e[7] == 0, "%s: kept costs nothing", s.units[u].name);
        e32 += e[4], e64 += e[2];
    }
    CHECK(e32 < e64, "groups of 32 below groups of 64 in sum: %g, %g", e32, e64);
    CHECK(s.n_validate == 10 && isfinite(s.validate_r) && s.validate_ratio > 0, "validation: %d, r %g", s.n_validate, s.validate_r);
    printf("proxy vs measured over %d units: r = %.3f, median predicted/measured %.3f (%.2f s proxy, %.2f s measuring)\n", s.n_validate,
           s.validate_r, s.validate_ratio, s.seconds_proxy, s.seconds_measure);
    /* choosing under a budget: the least and the most the candidates take, targets between */
    double lo = s.fixed_bytes, hi = s.fixed_bytes;
    for (int u = 0; u < s.n_units; u++) {
        double mn = INFINITY;
        for (int i = 0; i < ns; i++)
            if (s.bytes[u * ns + i] > 0) mn = fmin(mn, s.bytes[u * ns + i]);
        lo += mn, hi += s.bytes[u * ns + 7];
    }
    int choice[20];
    double bytes, kld, kld_prev = INFINITY, P = (double)s.params;
    for (int step = 1; step <= 4; step++) {
        double bits = 8 * (lo + (hi - lo) * step / 5.0) / P;
        CHECK_OK(sq_sens_choose(&s, bits, 0, choice, &bytes, &kld, &err), &err);
        CHECK(8 * bytes / P <= bits + 1e-9, "--target-bits %g: %g bits", bits, 8 * bytes / P);
        CHECK(kld <= kld_prev, "--target-bits %g: more bits, no less KLD (%g after %g)", bits, kld, kld_prev);
        double sum = 0, b2 = s.fixed_bytes;
        for (int u = 0; u < s.n_units; u++) sum += s.cost[u * ns + choice[u]], b2 += s.bytes[u * ns + choice[u]];
        CHECK(fabs(sum - kld) < 1e-12 && fabs(b2 - bytes) < 1e-6, "the totals are the choice's");
        kld_prev = kld;
        double k2, by2;
        int ch2[20];
        CHECK_OK(sq_sens_choose(&s, 0, kld, ch2, &by2, &k2, &err), &err);
        CHECK(k2 <= kld + 1e-15 && by2 <= bytes * 1.01, "--max-kld %g: %g bytes (the budget's %g), KLD %g", kld, by2, bytes, k2);
    }
    CHECK(sq_sens_choose(&s, 8 * lo / P - 0.01, 0, choice, &bytes, &kld, &err) == SQ_ERR_ARG && strstr(err.msg, "below the"), "%s", err.msg);
    CHECK_OK(sq_sens_choose(&s, 8 * lo / P + 1e-9, 0, choice, &bytes, &kld, &err), &err);
    /* layer 0's q/k/v at int4-g64-sym again, through eval.c */
    CHECK_OK(sq_model_open(&m2, MODEL, ex, &err), &err);
    CHECK_OK(sq_model_open(&ref, MODEL, ex, &err), &err);
    const sq_sens_unit *u0 = &s.units[0];
    float *keep[3] = {0};
    for (int i = 0; i < u0->n_lin; i++) {
        const sq_sens_lin *li = &u0->lin[i];
        const sq_wmat *w = sq_model_linear_unit(m2, li->layer, li->unit, li->which);
        const sq_stat_entry *e = sq_stats_find(&st, 0, SQ_SITE_QKV, 0);
        float *h = malloc((size_t)(e->k * e->k) * sizeof *h), *q = malloc((size_t)(w->rows * w->cols) * sizeof *q);
        sq_stats_hessian(&st, e, h);
        sq_qparams p = {.bits = 4, .group_size = 64, .sym = true, .damp = 0.01, .block_size = 128, .grid = SQ_GRID_MSE};
        sq_qmatrix qm;
        CHECK_OK(sq_quant_gptq(w->data, h, w->rows, w->cols, &p, &qm, &err), &err);
        sq_qmatrix_dequant(&qm, q);
        sq_qmatrix_free(&qm);
        sq_wmat nw = {.dtype = SQ_DT_F32, .rows = w->rows, .cols = w->cols, .data = q};
        CHECK_OK(sq_model_set_linear_unit(m2, li->layer, li->unit, li->which, &nw, &err), &err);
        keep[i] = q;
        free(h);
    }
    sq_eval_opts eo = {.ctx = s.measure_ctx, .protocol = SQ_PPL_GPTQ, .bos_id = -1};
    sq_eval_result r;
    CHECK_OK(sq_eval_ppl(m2, ref, s.windows, (int64_t)s.measure_windows * s.measure_ctx, &eo, &r, &err), &err);
    /* float32 log-probabilities on both sides, summed in other orders */
    CHECK(fabs(r.kld_mean - s.kld[2]) <= 1e-4 * s.kld[2], "eval's KLD %.9g, the measurement's %.9g", r.kld_mean, s.kld[2]);
    /* the layer-wise path: layer 4's q/k/v (the last layer's, so layers 0-3 are taken from the kept inputs) at
     * int4-g64-sym, through eval.c's whole forward */
    sq_model *m3 = NULL;
    CHECK_OK(sq_model_open(&m3, MODEL, ex, &err), &err);
    float *keep4[3] = {0};
    const sq_sens_unit *u4 = &s.units[16];
    CHECK(u4->layer == 4 && strstr(u4->name, "q/k/v"), "unit 16: %s", u4->name);
    for (int i = 0; i < u4->n_lin; i++) {
        const sq_sens_lin *li = &u4->lin[i];
        const sq_wmat *w = sq_model_linear_unit(m3, li->layer, li->unit, li->which);
        const sq_stat_entry *e = sq_stats_find(&st, 4, SQ_SITE_QKV, 0);
        float *h = malloc((size_t)(e->k * e->k) * sizeof *h), *q = malloc((size_t)(w->rows * w->cols) * sizeof *q);
        sq_stats_hessian(&st, e, h);
        sq_qparams p = {.bits = 4, .group_size = 64, .sym = true, .damp = 0.01, .block_size = 128, .grid = SQ_GRID_MSE};
        sq_qmatrix qm;
        CHECK_OK(sq_quant_gptq(w->data, h, w->rows, w->cols, &p, &qm, &err), &err);
        sq_qmatrix_dequant(&qm, q);
        sq_qmatrix_free(&qm);
        sq_wmat nw = {.dtype = SQ_DT_F32, .rows = w->rows, .cols = w->cols, .data = q};
        CHECK_OK(sq_model_set_linear_unit(m3, li->layer, li->unit, li->which, &nw, &err), &err);
        keep4[i] = q;
        free(h);
    }
    sq_eval_result r4;
    CHECK_OK(sq_eval_ppl(m3, ref, s.windows, (int64_t)s.measure_windows * s.measure_ctx, &eo, &r4, &err), &err);
    CHECK(fabs(r4.kld_mean - s.kld[16 * ns + 2]) <= 1e-4 * r4.kld_mean, "layer 4 q/k/v: eval's KLD %.9g, the measurement's %.9g",
          r4.kld_mean, s.kld[16 * ns + 2]);
    /* the units measured on 2 of the 4 windows (0 and 2), 3 units validated: the proxy and every window for the
     * whole choice as before, layer 0's q/k/v the KLD eval.c gives on those two windows */
    sq_sens_opts o2 = o;
    o2.unit_windows = 2;
    o2.validate_units = 3;
    sq_sens s2;
    CHECK_OK(sq_sens_run(m, sc, ns, &o2, &s2, &err), &err);
    CHECK(s2.unit_windows == 2 && s2.measure_windows == 4 && s.unit_windows == 4, "unit windows %d of %d (all: %d)", s2.unit_windows,
          s2.measure_windows, s.unit_windows);
    CHECK(!memcmp(s2.windows, s.windows, (size_t)s.measure_windows * s.measure_ctx * sizeof(int)), "the same windows");
    CHECK(!memcmp(s2.err, s.err, (size_t)s.n_units * ns * sizeof(double)), "the same proxy");
    CHECK(s2.n_validate >= 1 && s2.n_validate <= 3, "validated %d units, at most 3", s2.n_validate);
    int *w02 = malloc((size_t)2 * s.measure_ctx * sizeof *w02);
    memcpy(w02, s.windows, (size_t)s.measure_ctx * sizeof *w02);
    memcpy(w02 + s.measure_ctx, s.windows + 2 * s.measure_ctx, (size_t)s.measure_ctx * sizeof *w02);
    sq_eval_result r02;
    CHECK_OK(sq_eval_ppl(m2, ref, w02, (int64_t)2 * s.measure_ctx, &eo, &r02, &err), &err);
    CHECK(fabs(r02.kld_mean - s2.kld[2]) <= 1e-4 * r02.kld_mean && fabs(r02.kld_mean - r.kld_mean) > 1e-3 * r.kld_mean,
          "windows 0 and 2: eval's KLD %.9g, the measurement's %.9g (all four: %.9g)", r02.kld_mean, s2.kld[2], r.kld_mean);
    free(w02);
    sq_sens_free(&s2);
    for (int i = 0; i < 3; i++) free(keep4[i]);
    sq_model_close(m3);
    /* a whole choice measured at once: every unit kept is no change; layer 0's q/k/v alone at int4-g64-sym is
     * the model eval.c just scored */
    int *ch = malloc((size_t)s.n_units * sizeof *ch);
    for (int u = 0; u < s.n_units; u++) ch[u] = ns - 1;
    double kc = -1;
    CHECK_OK(sq_sens_measure_choice(m, &s, ch, &o, &kc, &err), &err);
    CHECK(kc >= 0 && kc < 1e-9, "every unit kept: KLD %g", kc);
    ch[0] = 2;
    CHECK_OK(sq_sens_measure_choice(m, &s, ch, &o, &kc, &err), &err);
    CHECK(fabs(kc - r.kld_mean) <= 1e-4 * r.kld_mean, "the choice's KLD %.9g, eval's %.9g", kc, r.kld_mean);
    for (int u = 0; u < s.n_units; u++) ch[u] = s.ref[u];
    double kall = -1;
    CHECK_OK(sq_sens_measure_choice(m, &s, ch, &o, &kall, &err), &err);
    CHECK(kall > s.kld[2], "every unit at its smallest scheme: KLD %g above one unit's %g", kall, s.kld[2]);
    free(ch);
    /* the measured model is put back as it was */
    CHECK(sq_model_linear_unit(m, 0, 0, SQ_LIN_Q)->data == orig_q && sq_model_linear_unit(m, 4, 0, SQ_LIN_V)->data == orig_v,
          "the measured model's linears are put back");
    for (int i = 0; i < 3; i++) free(keep[i]);
    sq_sens_free(&s);
    /* errors */
    sq_sens_scheme one;
    CHECK(sq_sens_scheme_parse("int4-g96-sym", &one, &err) == SQ_ERR_ARG && strstr(err.msg, "g32, g64, g128"), "%s", err.msg);
    CHECK(sq_sens_scheme_parse("int3-g64-sym", &one, &err) == SQ_ERR_ARG, "int3");
    int n;
    CHECK(sq_sens_schemes_parse("keep,keep", sc, 8, &n, &err) == SQ_ERR_ARG && strstr(err.msg, "twice"), "%s", err.msg);
    CHECK_OK(sq_sens_schemes_parse("int8-ch-sym,int4-g32-asym,keep", sc, 8, &n, &err), &err);
    CHECK(n == 3 && sc[1].bits == 4 && sc[1].group_size == 32 && !sc[1].sym && sc[0].group_size == -1, "parsed");
    sq_sens_opts bad = o;
    bad.n_ids = 300;
    CHECK(sq_sens_run(m, sc, n, &bad, &s, &err) == SQ_ERR_ARG && strstr(err.msg, "too short"), "%s", err.msg);
    free(ids);
    sq_tok_free(tok);
    sq_stats_free(&st);
    sq_model_close(m);
    sq_model_close(m2);
    sq_model_close(ref);
    sq_exec_free(ex);
    return check_report("test_sens");
}
