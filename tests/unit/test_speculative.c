/* test_speculative.c: speculative decoding. (1) The rejection rule on fixed distributions: over
 * 400,000 draws the output follows the target's p whatever the draft's q, and a drafted token is
 * kept with probability sum_i min(p_i, q_i), as the theorem of Leviathan et al. says. (2) Greedy
 * speculative output equals plain greedy decoding token for token on stories260K, with the model
 * itself as draft (every token kept) and with the upcycled MoE fixture as a poor draft (many
 * replaced), for several k. (3) Sampled at temperature 1.5 with the poor draft and k = 2, at a
 * high-entropy position (3.1 nats), the joint distribution of the first three new tokens (two drafted,
 * kept or replaced, and the bonus token) follows plain sampling's exact distribution over 3,000 seeds,
 * by a chi-square bar set from the sampling noise; a greedy replacement or a greedy bonus token fails. */
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

/* The exact distribution of the first three sampled tokens under plain sampling at temperature TEMP:
 * p(t1) p(t2 | t1) p(t3 | t1, t2), from the target's own logits, and speculative decoding's draws of
 * the same three tokens against it. Outcomes are binned so that every bin expects at least MIN_EXP
 * draws: a triple of its own where it is that likely, else what is left of its pair, else of its first
 * token, else one bin for the rest; the draws are held to the bins by Pearson's chi-square, whose
 * sampling noise sets the bar (mean dof, sd sqrt(2 dof): the bar is dof + 6 sd). */
enum { SV = 512, NEW = 3, MIN_EXP = 8 };
static const float TEMP = 1.5f;

typedef struct { int t1, t2, t3; double p; } bin;
typedef struct {
    bin *b;
    int nb, cap;
    int *pair_bin;     /* [SV * SV]: the bin of (t1, t2)'s remainder, or -1 */
    int t1_bin[SV];    /* the bin of t1's remainder, or -1 */
    int other;         /* the bin of everything else */
} bins;

static int add_bin(bins *bs, int t1, int t2, int t3, double p) {
    if (bs->nb == bs->cap) bs->b = realloc(bs->b, (size_t)(bs->cap = bs->cap ? 2 * bs->cap : 256) * sizeof *bs->b);
    bs->b[bs->nb] = (bin){t1, t2, t3, p};
    return bs->nb++;
}

/* The target's distribution (at TEMP) after ids[0..n). */
static void target_probs(sq_state *s, sq_sampler *ref, const int *ids, int n, int keep, float *p) {
    sq_err err = {0};
    CHECK_OK(sq_state_rewind(s, keep, &err), &err);
    CHECK_OK(sq_forward(s, ids + keep, n - keep, &err), &err);
    CHECK_OK(sq_logits(s, n - keep - 1, 1, p, &err), &err);
    sq_sampler_probs(ref, p, p);
}

static void build_bins(sq_state *s, sq_sampler *ref, const int *prompt, int np, int runs, bins *bs, double *entropy) {
    double min_p = (double)MIN_EXP / runs, total = 0;
    int ids[16];
    memcpy(ids, prompt, (size_t)np * sizeof *ids);
    static float p1[SV], p2[SV], p3[SV];
    target_probs(s, ref, ids, np, 0, p1);
    *entropy = 0;
    for (int i = 0; i < SV; i++)
        if (p1[i] > 0) *entropy -= p1[i] * log(p1[i]);
    for (int a = 0; a < SV; a++) {
        bs->t1_bin[a] = -1;
        if (p1[a] < min_p) continue;
        double rem1 = p1[a];
        ids[np] = a;
        target_probs(s, ref, ids, np + 1, np, p2);
        for (int b = 0; b < SV; b++) {
            double p12 = (double)p1[a] * p2[b];
            if (p12 < min_p) continue;
            ids[np + 1] = b;
            target_probs(s, ref, ids, np + 2, np + 1, p3);
            double rem2 = p12;
            for (int c = 0; c < SV; c++) {
                double p123 = p12 * p3[c];
                if (p123 < min_p) continue;
                add_bin(bs, a, b, c, p123);
                rem2 -= p123;
            }
            if (rem2 >= min_p) {
                bs->pair_bin[a * SV + b] = add_bin(bs, a, b, -1, rem2);
                rem1 -= p12;
            } else rem1 -= p12 - rem2;
        }
        if (rem1 >= min_p) bs->t1_bin[a] = add_bin(bs, a, -1, -1, rem1);
    }
    for (int i = 0; i < bs->nb; i++) total += bs->b[i].p;
    bs->other = add_bin(bs, -1, -1, -1, 1 - total);
}

static int bin_of(const bins *bs, int t1, int t2, int t3) {
    for (int i = 0; i < bs->nb; i++)
        if (bs->b[i].t1 == t1 && bs->b[i].t2 == t2 && bs->b[i].t3 == t3) return i;
    if (bs->pair_bin[t1 * SV + t2] >= 0) return bs->pair_bin[t1 * SV + t2];
    if (bs->t1_bin[t1] >= 0) return bs->t1_bin[t1];
    return bs->other;
}

static void test_sampled(sq_exec *ex, const int *prompt, int np, int k, int runs) {
    sq_err err = {0};
    sq_model *m, *poor;
    CHECK_OK(sq_model_open(&m, MODEL, ex, &err), &err);
    CHECK_OK(sq_model_open(&poor, POOR_DRAFT, ex, &err), &err);
    if (!m || !poor) return;
    sq_state *ts, *ds;
    CHECK_OK(sq_state_new(&ts, m, np + NEW + k + 1, 0, &err), &err);
    CHECK_OK(sq_state_new(&ds, poor, np + NEW + k + 1, 0, &err), &err);
    sq_sampler *ref;
    CHECK_OK(sq_sampler_new(&ref, SV, TEMP, 1, 0, &err), &err);
    bins bs = {0};
    bs.pair_bin = malloc((size_t)SV * SV * sizeof *bs.pair_bin);
    for (int i = 0; i < SV * SV; i++) bs.pair_bin[i] = -1;
    double h1;
    build_bins(ts, ref, prompt, np, runs, &bs, &h1);
    CHECK_OK(sq_state_rewind(ts, 0, &err), &err);
    int *obs = calloc((size_t)bs.nb, sizeof *obs), first_kept = 0;
    int64_t kept = 0, drafted = 0;
    for (int r = 0; r < runs; r++) {
        sq_sampler *g, *dg;
        CHECK_OK(sq_sampler_new(&g, SV, TEMP, 1, (uint64_t)r + 7, &err), &err);
        CHECK_OK(sq_sampler_new(&dg, SV, TEMP, 1, (uint64_t)r + 5000007, &err), &err);
        CHECK_OK(sq_state_rewind(ts, 0, &err), &err);
        CHECK_OK(sq_state_rewind(ds, 0, &err), &err);
        int ids[16], n;
        memcpy(ids, prompt, (size_t)np * sizeof *ids);
        sq_spec_stats st;
        CHECK_OK(sq_speculate(ts, ds, g, dg, k, ids, np, NEW, NULL, NULL, &n, &st, &err), &err);
        obs[bin_of(&bs, ids[np], ids[np + 1], ids[np + 2])]++;
        kept += st.accepted;
        drafted += st.drafted;
        first_kept += st.accepted > 0;
        sq_sampler_free(g);
        sq_sampler_free(dg);
    }
    double chi2 = 0, tv = 0, noise = 0;
    for (int i = 0; i < bs.nb; i++) {
        double e = bs.b[i].p * runs;
        if (e > 0) chi2 += (obs[i] - e) * (obs[i] - e) / e;
        else chi2 += obs[i] ? 1e9 : 0;
        tv += fabs(obs[i] / (double)runs - bs.b[i].p);
        noise += sqrt(2 * bs.b[i].p * (1 - bs.b[i].p) / (M_PI * runs)); /* E|freq - p| for each bin */
    }
    tv /= 2;
    noise /= 2;
    int dof = bs.nb - 1;
    double bar = dof + 6 * sqrt(2.0 * dof);
    CHECK(h1 > 1.5, "the first new token is uncertain: entropy %.3f nats at temperature %.1f", h1, TEMP);
    CHECK(bs.nb > 20, "%d bins", bs.nb);
    CHECK(chi2 < bar, "k %d: the first %d sampled tokens: chi-square %.1f over %d bins (dof %d, bar %.1f); total variation %.4f, noise %.4f",
          k, NEW, chi2, bs.nb, dof, bar, tv, noise);
    CHECK(tv < 2.5 * noise, "k %d: total variation %.4f over the bins, sampling noise %.4f", k, tv, noise);
    /* the rejection path runs often: many drafts replaced, many kept, the first one too */
    CHECK(kept > drafted / 10 && kept < drafted * 9 / 10 && first_kept > runs / 10 && first_kept < runs * 9 / 10,
          "k %d: the rule kept %lld of %lld drafts, the first of %d runs %d times", k, (long long)kept, (long long)drafted, runs, first_kept);
    printf("sampled, temperature %.1f, k %d: entropy of the first token %.3f nats; %d bins over the first %d tokens: chi-square %.1f "
           "(dof %d, bar %.1f), total variation %.4f (noise %.4f) over %d runs; %lld of %lld drafts kept\n",
           TEMP, k, h1, bs.nb, NEW, chi2, dof, bar, tv, noise, runs, (long long)kept, (long long)drafted);
    free(obs);
    free(bs.b);
    free(bs.pair_bin);
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
    const int was_a[] = {1, 403, 407, 261, 378, 432, 383, 286, 261}; /* "Once upon a time, there was a" */
    test_sampled(ex, was_a, 9, 2, 3000);
    sq_exec_free(ex);
    return check_report("test_speculative");
}
