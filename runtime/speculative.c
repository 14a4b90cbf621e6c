/* speculative.c: speculative decoding (Leviathan et al. 2023; Chen et al. 2023). Each step the
 * draft proposes k tokens one at a time; the target runs the pending token and all k in one batched
 * forward pass, and the drafted tokens are kept in order while sq_spec_accept keeps them; the first
 * one it replaces ends the step (or, all kept, one more token comes from the target's last logits).
 * Both KV caches are then rewound to the tokens that stand.
 *
 * Bookkeeping: ids[0..n) is the text so far; the target's cache holds ids[0..n-1) between steps (the
 * newest token is fed with the next batch) and the draft's ids[0..dfed). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

sq_status sq_speculate(sq_state *target, sq_state *draft, sq_sampler *smp, sq_sampler *dsmp, int k, int *ids, int n_prompt, int n_new,
                       sq_token_fn on_token, void *user, int *n_out, sq_spec_stats *st, sq_err *err) {
    const sq_config *tc = sq_model_config(sq_state_model(target)), *dc = sq_model_config(sq_state_model(draft));
    int V = tc->vocab;
    *st = (sq_spec_stats){0};
    *n_out = n_prompt;
    if (dc->vocab != V) return sq_fail(err, SQ_ERR_ARG, "the draft model's vocabulary (%d) is not the target's (%d)", dc->vocab, V);
    if (k < 1) return sq_fail(err, SQ_ERR_ARG, "speculative decoding needs at least 1 draft token a step (k = %d)", k);
    if (n_prompt < 1) return sq_fail(err, SQ_ERR_ARG, "speculative decoding needs a prompt");
    if (sq_state_pos(target) || sq_state_pos(draft)) return sq_fail(err, SQ_ERR_ARG, "speculative decoding starts from empty states");
    int need = n_prompt + n_new + k;
    if (sq_state_max_ctx(target) < need || sq_state_max_ctx(draft) < need)
        return sq_fail(err, SQ_ERR_ARG, "speculative decoding of %d + %d tokens, %d drafted a step, needs states of %d positions",
                       n_prompt, n_new, k, need);
    float *q = sq_malloc((size_t)k * (size_t)V * sizeof *q, err);            /* the draft's distributions */
    float *p = sq_malloc((size_t)(k + 1) * (size_t)V * sizeof *p, err);      /* the target's logits, then distributions */
    int *batch = sq_malloc((size_t)need * sizeof *batch, err);
    if (!q || !p || !batch) {
        free(q); free(p); free(batch);
        return SQ_ERR_NOMEM;
    }
    sq_status s = SQ_OK;
    int n = n_prompt, dfed = 0;
    bool stop = false;
    while (!stop && n < n_prompt + n_new) {
        int kk = n_prompt + n_new - n - 1; /* drafts beyond the last new token are wasted */
        if (kk > k) kk = k;
        int tfed = sq_state_pos(target), *d = batch + (n - tfed); /* the batch: ids[tfed..n), then the drafts */
        memcpy(batch, ids + tfed, (size_t)(n - tfed) * sizeof *batch);
        /* draft: catch up on ids[dfed..n), then propose kk tokens one at a time */
        for (int i = 0; i < kk && !s; i++) {
            s = i == 0 ? sq_forward(draft, ids + dfed, n - dfed, err) : sq_forward(draft, &d[i - 1], 1, err);
            if (!s) s = sq_logits(draft, i == 0 ? n - dfed - 1 : 0, 1, q + (int64_t)i * V, err);
            if (!s) {
                sq_sampler_probs(dsmp, q + (int64_t)i * V, q + (int64_t)i * V);
                d[i] = sq_sample_probs(dsmp, q + (int64_t)i * V);
            }
        }
        /* target: the pending tokens and the drafts in one pass; logits from the newest token on */
        if (!s) s = sq_forward(target, batch, n - tfed + kk, err);
        if (!s) s = sq_logits(target, n - tfed - 1, kk + 1, p, err);
        if (s) break;
        st->steps++;
        st->drafted += kk;
        int a = 0;
        for (; a <= kk && !stop; a++) {
            float *pa = p + (int64_t)a * V;
            sq_sampler_probs(smp, pa, pa);
            bool kept = false;
            int t = a < kk ? sq_spec_accept(smp, pa, q + (int64_t)a * V, d[a], &kept) : sq_sample_probs(smp, pa);
            ids[n++] = t;
            stop = (on_token && on_token(user, t)) || n == n_prompt + n_new;
            if (!kept) break;
            st->accepted++;
        }
        if (stop) break;
        /* ids[n-1] is the target's own token: both caches keep what stands before it */
        if ((s = sq_state_rewind(target, n - 1, err))) break;
        if (sq_state_pos(draft) > n - 1 && (s = sq_state_rewind(draft, n - 1, err))) break;
        dfed = sq_state_pos(draft);
    }
    free(q);
    free(p);
    free(batch);
    *n_out = n;
    return s;
}
