/* budget_run.c: the pre-pass of quantising to a budget (budget_run.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../calib/driver.h"
#include "../formats/text.h"
#include "../formats/tokenizer.h"
#include "budget_run.h"
#include "plan.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

sq_status sq_budget_prepare(const sq_quantize_opts *o, sq_budget_result *r, sq_err *err) {
    memset(r, 0, sizeof *r);
    double t0 = now_s();
    sq_sens_scheme sc[32];
    int ns = 0;
    sq_status s;
    if (o->schemes) {
        if ((s = sq_sens_schemes_parse(o->schemes, sc, 32, &ns, err))) return s;
    } else {
        ns = sq_sens_default_schemes(sc, 32);
    }
    sq_exec *ex = NULL;
    sq_model *m = NULL;
    sq_tok *tok = NULL;
    int *ids = NULL;
    int64_t n_ids = 0;
    sq_stats st = {0};
    if ((s = sq_exec_new(&ex, "cpu", o->threads, err)) || (s = sq_model_open(&m, o->model, ex, err))) goto done;
    if (o->stats_in) {
        if ((s = sq_stats_read(&st, o->stats_in, err))) goto done;
        snprintf(r->stats_path, sizeof r->stats_path, "%s", o->stats_in);
    } else {
        sq_calib_opts co = {.model = o->model, .calib = o->calib, .nsamples = o->nsamples, .seqlen = o->seqlen, .seed = o->seed,
                            .max_hessian_bytes = o->max_hessian_bytes};
        if ((s = sq_calib_collect(m, &co, &st, NULL, NULL, err))) goto done;
        const char *tmp = getenv("TMPDIR");
        snprintf(r->stats_path, sizeof r->stats_path, "%s/spotq-budget-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        int fd = mkstemp(r->stats_path);
        if (fd < 0) {
            s = sq_fail(err, SQ_ERR_IO, "%s: cannot create the statistics' temporary file", r->stats_path);
            goto done;
        }
        close(fd);
        r->stats_tmp = true;
        if ((s = sq_stats_write(&st, r->stats_path, err))) goto done;
    }
    if ((s = sq_tok_load(&tok, sq_model_ckpt(m)->tokenizer_path, err)) || (s = sq_text_tokens(tok, o->calib, false, &ids, &n_ids, err)))
        goto done;
    sq_sens_opts so = {.stats = &st, .ids = ids, .n_ids = n_ids, .calib_nsamples = st.nsamples, .calib_seqlen = st.seqlen,
                       .calib_seed = st.seed, .measure_windows = o->budget_windows, .measure_ctx = o->budget_ctx, .damp = o->q.damp,
                       .validate = true, .act_order = o->q.act_order, .keep_bf16 = o->keep_dtype == SQ_KEEP_BF16};
    if ((s = sq_sens_run(m, sc, ns, &so, &r->sens, err))) goto done;
    if (r->sens.heldout_windows < r->sens.measure_windows)
        sq_log(SQ_LOG_WARN, "only %d of the %d measurement windows of %d tokens share no token with the %d calibration windows of %d: "
               "the KLD is measured partly on calibration text (fewer --nsamples, or a longer --calib, hold more out)",
               r->sens.heldout_windows, r->sens.measure_windows, r->sens.measure_ctx, st.nsamples, st.seqlen);
    r->choice = malloc((size_t)r->sens.n_units * sizeof *r->choice);
    if (!r->choice) {
        s = sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (o->target_bits > 0) {
        if ((s = sq_sens_choose(&r->sens, o->target_bits, 0, r->choice, &r->bytes, &r->pred_kld, err))) goto done;
        r->rounds = 1;
        s = sq_sens_measure_choice(m, &r->sens, r->choice, &so, &r->heldout_kld, err);
    } else {
        /* the units' costs add only approximately: the limit given to the solver is tightened by the ratio of
         * the measured to the limit until the measurement meets K */
        double lim = o->max_kld;
        for (r->rounds = 1; r->rounds <= 6; r->rounds++) {
            if ((s = sq_sens_choose(&r->sens, 0, lim, r->choice, &r->bytes, &r->pred_kld, err))) goto done;
            r->solver_kld = lim;
            if ((s = sq_sens_measure_choice(m, &r->sens, r->choice, &so, &r->heldout_kld, err))) goto done;
            sq_log(SQ_LOG_INFO, "--max-kld %g: round %d: predicted %.5f, measured %.5f on %d held-out windows", o->max_kld, r->rounds,
                   r->pred_kld, r->heldout_kld, r->sens.heldout_windows);
            if (r->heldout_kld <= o->max_kld) break;
            lim *= 0.95 * o->max_kld / r->heldout_kld;
        }
        if (r->rounds > 6) {
            s = sq_fail(err, SQ_ERR_ARG, "--max-kld %g: not met on the held-out windows (%.5f after 6 rounds); raise it or add keep to --schemes",
                        o->max_kld, r->heldout_kld);
            r->rounds = 6;
        }
    }
    r->bits = r->sens.params ? 8 * r->bytes / (double)r->sens.params : 0;
    if (!s) { /* a budget that keeps every linear quantises nothing: the pipeline would write no quantised checkpoint */
        int kept = 0;
        for (int u = 0; u < r->sens.n_units; u++) kept += r->sens.schemes[r->choice[u]].keep;
        if (kept == r->sens.n_units)
            s = sq_fail(err, SQ_ERR_ARG, "%s %g keeps every linear (%.3f bits per weight): nothing to quantise; ask for less, or drop keep from --schemes",
                        o->target_bits > 0 ? "--target-bits" : "--max-kld", o->target_bits > 0 ? o->target_bits : o->max_kld, r->bits);
    }
done:
    r->seconds = now_s() - t0;
    free(ids);
    sq_tok_free(tok);
    sq_stats_free(&st);
    sq_model_close(m);
    sq_exec_free(ex);
    if (s) sq_budget_free(r);
    return s;
}

void sq_budget_free(sq_budget_result *r) {
    if (!r) return;
    if (r->stats_tmp) unlink(r->stats_path);
    sq_sens_free(&r->sens);
    free(r->choice);
    memset(r, 0, sizeof *r);
}

sq_status sq_budget_plan(const sq_budget_result *r, sq_quantize_opts *o, sq_plan *plan, sq_err *err) {
    const sq_sens *s = &r->sens;
    int n_layers = 0;
    for (int u = 0; u < s->n_units; u++)
        if (s->units[u].layer + 1 > n_layers) n_layers = s->units[u].layer + 1;
    sq_scheme base = {.kind = SQ_SCHEME_INT, .bits = 4, .group_size = 128, .sym = true, .damp = o->q.damp};
    sq_status st = sq_plan_init(plan, n_layers, &base, err);
    if (st) return st;
    for (int l = 0; l < n_layers; l++) /* linears no unit covers (none in the architectures spotq reads) stay full precision */
        for (int w = 0; w < SQ_LIN_COUNT; w++) sq_plan_set(plan, l, (sq_lin)w, NULL);
    for (int u = 0; u < s->n_units; u++) {
        const sq_sens_scheme *c = &s->schemes[r->choice[u]];
        sq_scheme sc = {.kind = SQ_SCHEME_INT, .bits = c->bits, .group_size = c->group_size, .sym = c->sym, .damp = o->q.damp};
        for (int i = 0; i < s->units[u].n_lin; i++) sq_plan_set(plan, s->units[u].lin[i].layer, s->units[u].lin[i].which, c->keep ? NULL : &sc);
    }
    if ((st = sq_plan_check(plan, err))) sq_plan_free(plan);
    return st;
}
