/* test_speculative.c: speculative decoding. (1) The rejection rule on fixed distributions: over
 * 400,000 draws the output follows the target's p whatever the draft's q, and a drafted token is
 * kept with probability sum_i min(p_i, q_i), as the theorem of Leviathan et al. says. (2) Greedy
 * speculative output equals plain greedy decoding token for token on stories260K, with the model
 * itself as draft (every token kept) and with the upcycled MoE fixture as a poor draft (many
 * replaced), for several k. (3) Sampled at temperature 1 with the poor draft, the first new token
 * follows the target's own distribution over 3,000 seeds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/runtime.h"
#include "check.h"

#define MODEL "models/stories260K"
#define POOR_DRAFT "tests/fixtures/moe/mixtral"

static void test_rule(void) {
    enum { V = 5, N = 400000 };
    const float p0[V] = {0.5f, 0.2f, 0.2f, 0.1f, 0.0f}, q[V] = {0.1f, 0.1f, 0.3f, 0.3f, 0.2f};
    sq_err err = {0};
    sq_sampler *s, *ds;
    CHECK_OK(sq_sampler_new(&s, V, 1.0f, 1, 3, &err), &err);
    CHECK_OK(sq_sampler_new(&ds, V, 1.0f, 1, 4, &err), &err);
    int hist[V] = {0}, kept = 0;
    for (int i = 0; i < N; i++) {
        float p[V];
        memcpy(p, p0, sizeof p);
        bool acc;
        int d = sq_sample_probs(ds, q);
        int t = sq_spec_accept(s, p, q, d, &acc);
        hist[t]++;
        kept += acc;
        if (acc && t != d) { CHECK(0, "kept a token that was not drafted"); break; }
    }
    for (int i = 0; i < V; i++)
        CHECK(fabs(hist[i] / (double)N - p0[i]) < 0.004, "token %d: frequency %.4f, target probability %.2f", i, hist[i] / (double)N, p0[i]);
    CHECK(hist[4] == 0, "a token the target gives 0 never comes out");
    CHECK(fabs(kept / (double)N - 0.5) < 0.004, "kept %.4f of the drafts, sum min(p, q) = 0.5", kept / (double)N);
    /* greedy: one-hot distributions; the draft's token stands exactly when it is the target's argmax */
    float z[V] = {0.1f, 3.0f, 0.2f, -1.0f, 0.0f}, zp[V], zq[V], dq[V] = {0, 0, 0, 0, 1};
    sq_sampler *g;
    CHECK_OK(sq_sampler_new(&g, V, 0, 1, 1, &err), &err);
    sq_sampler_probs(g, z, zp);
    CHECK(zp[1] == 1 && zp[0] == 0, "greedy probabilities are one-hot at the argmax");
    bool acc;
    memcpy(zq, zp, sizeof zq);
    CHECK(sq_spec_accept(g, zq, zp, 1, &acc) == 1 && acc, "greedy: the argmax drafted is kept");
    memcpy(zq, zp, sizeof zq);
    CHECK(sq_spec_accept(g, zq, dq, 4, &acc) == 1 && !acc, "greedy: another token drafted is replaced by the argmax");
    /* nucleus probabilities: renormalised over the kept tokens */
    sq_sampler *np;
    CHECK_OK(sq_sampler_new(&np, V, 1.0f, 0.9f, 1, &err), &err);
    float w[V] = {2.0f, 1.0f, 0.5f, -2.0f, -3.0f}, pr[V];
    sq_sampler_probs(np, w, pr);
    double sum = 0;
    for (int i = 0; i < V; i++) sum += pr[i];
    CHECK(fabs(sum - 1) < 1e-6 && pr[3] == 0 && pr[4] == 0 && pr[2] > 0, "top-p 0.9: sum %.7f, tail %g %g", sum, pr[3], pr[4]);
    sq_sampler_free(s);
    sq_sampler_free(ds);
    sq_sampler_free(g);
    sq_sampler_free(np);
}

/* Plain greedy decoding: the reference. */
static void plain_greedy(sq_model *m, const int *prompt, int n_prompt, int n_new, int *out) {
    sq_err err = {0};
    sq_state *s;
    int V = sq_model_config(m)->vocab;
    float *l = malloc((size_t)V * sizeof *l);
    CHECK_OK(sq_state_new(&s, m, n_prompt + n_new, 0, &err), &err);
    CHECK_OK(sq_forward(s, prompt, n_prompt, &err), &err);
    CHECK_OK(sq_logits(s, n_prompt - 1, 1, l, &err), &err);
    for (int i = 0; i < n_new; i++) {
        out[i] = sq_argmax(l, V);
        if (i + 1 < n_new) {
            CHECK_OK(sq_forward(s, &out[i], 1, &err), &err);
            CHECK_OK(sq_logits(s, 0, 1, l, &err), &err);
        }
    }
    sq_state_free(s);
    free(l);
}

static void test_greedy(sq_exec *ex) {
    enum { NP = 5, NN = 96 };
    const int prompt[NP] = {1, 403, 407, 261, 378}; /* "Once upon a time" */
    sq_err err = {0};
    sq_model *m, *poor;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_model_open(&poor, POOR_DRAFT, ex, &err), &err);
    if (!m || !poor) return;
    int want[NN];
    plain_greedy(m, prompt, NP, NN, want);
    const struct { sq_model *draft; const char *name; int k; } cases[] = {{m, "itself", 4}, {poor, "mixtral", 1}, {poor, "mixtral", 3},
                                                                          {poor, "mixtral", 7}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        sq_state *ts, *ds;
        sq_sampler *g, *dg;
        int ids[NP + NN], n = 0, k = cases[c].k;
        memcpy(ids, prompt, sizeof prompt);
        CHECK_OK(sq_state_new(&ts, m, NP + NN + k, 0, &err), &err);
        CHECK_OK(sq_state_new(&ds, cases[c].draft, NP + NN + k, 0, &err), &err);
        CHECK_OK(sq_sampler_new(&g, 512, 0, 1, 1, &err), &err);
        CHECK_OK(sq_sampler_new(&dg, 512, 0, 1, 2, &err), &err);
        sq_spec_stats st;
        CHECK_OK(sq_speculate(ts, ds, g, dg, k, ids, NP, NN, NULL, NULL, &n, &st, &err), &err);
        CHECK(n == NP + NN && memcmp(ids + NP, want, sizeof want) == 0, "greedy with draft %s, k %d: not the target's greedy output",
              cases[c].name, k);
        CHECK(st.accepted <= st.drafted && st.steps * (k + 1) >= NN && st.accepted + st.steps >= NN, "draft %s k %d: %lld steps, %lld/%lld",
              cases[c].name, k, (long long)st.steps, (long long)st.accepted, (long long)st.drafted);
        if (cases[c].draft == m) CHECK(st.accepted == st.drafted, "the model as its own draft: every token kept");
        else CHECK(st.accepted < st.drafted && st.accepted > 0, "a poor draft: some kept, some replaced (%lld of %lld)",
                   (long long)st.accepted, (long long)st.drafted);
        sq_state_free(ts);
        sq_state_free(ds);
        sq_sampler_free(g);
        sq_sampler_free(dg);
    }
    sq_model_close(m);
    sq_model_close(poor);
}

static void test_sampled(sq_exec *ex) {
    enum { NP = 5, RUNS = 3000, V = 512 };
    const int prompt[NP] = {1, 403, 407, 261, 378};
    sq_err err = {0};
    sq_model *m, *poor;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_model_open(&poor, POOR_DRAFT, ex, &err), &err);
    if (!m || !poor) return;
    /* the target's own distribution of the first new token */
    sq_state *ts, *ds;
    float p[V];
    CHECK_OK(sq_state_new(&ts, m, NP + 8, 0, &err), &err);
    CHECK_OK(sq_state_new(&ds, poor, NP + 8, 0, &err), &err);
    CHECK_OK(sq_forward(ts, prompt, NP, &err), &err);
    CHECK_OK(sq_logits(ts, NP - 1, 1, p, &err), &err);
    sq_sampler *ref;
    CHECK_OK(sq_sampler_new(&ref, V, 1.0f, 1, 0, &err), &err);
    sq_sampler_probs(ref, p, p);
    static int hist[V];
    int64_t kept = 0, drafted = 0;
    for (int r = 0; r < RUNS; r++) {
        sq_sampler *g, *dg;
        CHECK_OK(sq_sampler_new(&g, V, 1.0f, 1, (uint64_t)r, &err), &err);
        CHECK_OK(sq_sampler_new(&dg, V, 1.0f, 1, (uint64_t)r + 1000000, &err), &err);
        CHECK_OK(sq_state_rewind(ts, 0, &err), &err);
        CHECK_OK(sq_state_rewind(ds, 0, &err), &err);
        int ids[NP + 2], n;
        memcpy(ids, prompt, sizeof prompt);
        sq_spec_stats st;
        CHECK_OK(sq_speculate(ts, ds, g, dg, 2, ids, NP, 2, NULL, NULL, &n, &st, &err), &err);
        hist[ids[NP]]++;
        kept += st.accepted;
        drafted += st.drafted;
        sq_sampler_free(g);
        sq_sampler_free(dg);
    }
    double tv = 0;
    for (int i = 0; i < V; i++) tv += fabs(hist[i] / (double)RUNS - p[i]);
    tv /= 2;
    CHECK(tv < 0.05, "first sampled token: total variation %.4f from the target's distribution", tv);
    CHECK(kept > 0 && kept < drafted, "the rule both kept and replaced drafts (%lld of %lld)", (long long)kept, (long long)drafted);
    printf("sampled: total variation %.4f over %d runs, %lld of %lld drafts kept\n", tv, RUNS, (long long)kept, (long long)drafted);
    sq_sampler_free(ref);
    sq_state_free(ts);
    sq_state_free(ds);
    sq_model_close(m);
    sq_model_close(poor);
}

int main(void) {
    sq_err err = {0};
    sq_exec *ex;
    test_rule();
    CHECK_OK(sq_exec_new(&ex, "cpu", 2, &err), &err);
    test_greedy(ex);
    test_sampled(ex);
    sq_exec_free(ex);
    return check_report("test_speculative");
}
