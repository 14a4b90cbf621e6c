/* eval.c: perplexity by SPEC.md's protocol, and the divergence of a reference model's next-token
 * distribution to the model's. Log-sum-exp, NLL and KL are computed and summed in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/par.h"
#include "../formats/checkpoint.h"
#include "internal.h"

/* Positions whose logits are computed at once (bounds the (positions, vocab) buffers). */
#define LOGITS_CHUNK 32

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* log(sum(exp(z))) over n logits. */
static double logsumexp(const float *z, int n) {
    float mx = z[0];
    for (int i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)z[i] - mx);
    return mx + log(s);
}

/* KL(P_ref || P_model) in nats for one position. */
static double kl_div(const float *zr, double lse_r, const float *zm, double lse_m, int n) {
    double kl = 0;
    for (int i = 0; i < n; i++) {
        double lr = zr[i] - lse_r, lm = zm[i] - lse_m;
        kl += exp(lr) * (lr - lm);
    }
    return kl;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

sq_status sq_eval_ppl(sq_model *m, sq_model *ref, const int *ids, int64_t n, const sq_eval_opts *o, sq_eval_result *r,
                      sq_err *err) {
    memset(r, 0, sizeof *r);
    const sq_config *c = &m->cfg;
    int ctx = o->ctx, vocab = c->vocab;
    if (ctx < 2) return sq_fail(err, SQ_ERR_ARG, "--ctx %d: a window needs at least 2 tokens", ctx);
    if (n < ctx)
        return sq_fail(err, SQ_ERR_FORMAT, "the data has %lld tokens, too few for one window of --ctx %d", (long long)n, ctx);
    if (ref && ref->cfg.vocab != vocab)
        return sq_fail(err, SQ_ERR_FORMAT, "--ref has a vocabulary of %d, the model %d: their distributions cannot be compared",
                       ref->cfg.vocab, vocab);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return sq_fail(err, SQ_ERR_FORMAT, "token id %d (at %lld) is outside the model's vocabulary of %d", ids[i], (long long)i, vocab);
    if (o->protocol == SQ_PPL_LLAMACPP && o->bos_id >= vocab)
        return sq_fail(err, SQ_ERR_FORMAT, "BOS id %d is outside the model's vocabulary of %d", o->bos_id, vocab);

    int64_t windows = n / ctx;
    int first = o->protocol == SQ_PPL_LLAMACPP ? ctx / 2 : 0; /* first scoring position: its logits predict token first+1 */
    int per_window = ctx - 1 - first;
    int64_t total = windows * per_window;
    sq_state *sm = NULL, *sr = NULL;
    float *zm = NULL, *zr = NULL;
    int *win = NULL;
    double *kld = NULL, *pos_nll = NULL, *pos_ref = NULL;
    int64_t *win_agree = NULL;
    sq_status s;
    int64_t chunk_floats = (int64_t)LOGITS_CHUNK * vocab;
    if ((s = sq_state_new(&sm, m, ctx, 0, err)) || (ref && (s = sq_state_new(&sr, ref, ctx, 0, err)))) goto done;
    zm = sq_malloc((size_t)chunk_floats * sizeof *zm, err);
    zr = ref ? sq_malloc((size_t)chunk_floats * sizeof *zr, err) : NULL;
    win = sq_malloc((size_t)ctx * sizeof *win, err);
    kld = ref ? sq_malloc((size_t)(total > 0 ? total : 1) * sizeof *kld, err) : NULL;
    /* each position's terms, kept so that the sums run in position order whichever rank scored them */
    pos_nll = sq_malloc((size_t)(total > 0 ? total : 1) * sizeof *pos_nll, err);
    pos_ref = ref ? sq_malloc((size_t)(total > 0 ? total : 1) * sizeof *pos_ref, err) : NULL;
    win_agree = sq_calloc((size_t)windows, sizeof *win_agree, err);
    if (!zm || !win || !pos_nll || !win_agree || (ref && (!zr || !kld || !pos_ref))) {
        s = SQ_ERR_NOMEM;
        goto done;
    }
    { /* under MPI: every rank the same binary, arguments, models and text before any work */
        uint64_t h = sq_ckpt_hash(sq_model_ckpt(m), sq_par_hash(SQ_PAR_HASH0, ids, (size_t)n * sizeof *ids));
        if ((s = sq_par_start(SQ_OK, ref ? sq_ckpt_hash(sq_model_ckpt(ref), h) : h, err))) goto done;
    }

    double nll = 0, nll_ref = 0, t0 = now_s();
    int64_t scored = 0, agree = 0;
    for (int64_t w = 0; w < windows; w++) {
        if (!sq_par_mine(w)) continue; /* window w is rank w mod N's (base/par.h) */
        scored = w * per_window;
        memcpy(win, ids + w * ctx, (size_t)ctx * sizeof *win);
        if (o->protocol == SQ_PPL_LLAMACPP && o->bos_id >= 0) win[0] = o->bos_id;
        if ((s = sq_state_rewind(sm, 0, err)) || (s = sq_forward(sm, win, ctx, err))) goto done;
        if (ref && ((s = sq_state_rewind(sr, 0, err)) || (s = sq_forward(sr, win, ctx, err)))) goto done;
        for (int p0 = first; p0 < ctx - 1; p0 += LOGITS_CHUNK) {
            int cnt = ctx - 1 - p0 < LOGITS_CHUNK ? ctx - 1 - p0 : LOGITS_CHUNK;
            if ((s = sq_logits(sm, p0, cnt, zm, err))) goto done;
            if (ref && (s = sq_logits(sr, p0, cnt, zr, err))) goto done;
            for (int i = 0; i < cnt; i++) {
                const float *lm = zm + (int64_t)i * vocab;
                int next = win[p0 + i + 1];
                double lse_m = logsumexp(lm, vocab);
                pos_nll[scored] = lse_m - lm[next];
                if (ref) {
                    const float *lr = zr + (int64_t)i * vocab;
                    double lse_r = logsumexp(lr, vocab);
                    pos_ref[scored] = lse_r - lr[next];
                    kld[scored] = kl_div(lr, lse_r, lm, lse_m, vocab);
                    win_agree[w] += sq_argmax(lm, vocab) == sq_argmax(lr, vocab);
                }
                scored++;
            }
        }
        if (o->progress && sq_par_root()) o->progress(o->progress_user, (int)w + 1, (int)windows, (w + 1) * ctx, now_s() - t0);
    }
    /* every window's terms on every rank, then the sums in position order: the numbers of one process */
    sq_par_gather_chunks(pos_nll, windows, per_window * (int64_t)sizeof *pos_nll);
    if (ref) {
        sq_par_gather_chunks(pos_ref, windows, per_window * (int64_t)sizeof *pos_ref);
        sq_par_gather_chunks(kld, windows, per_window * (int64_t)sizeof *kld);
    }
    sq_par_gather_chunks(win_agree, windows, (int64_t)sizeof *win_agree);
    scored = total;
    for (int64_t i = 0; i < total; i++) nll += pos_nll[i];
    for (int64_t i = 0; ref && i < total; i++) nll_ref += pos_ref[i];
    for (int64_t w = 0; w < windows; w++) agree += win_agree[w];
    r->windows = windows;
    r->scored = scored;
    r->tokens = windows * ctx;
    r->seconds = now_s() - t0;
    r->mean_nll = scored ? nll / (double)scored : 0;
    r->ppl = exp(r->mean_nll);
    if (ref && scored) {
        r->has_ref = true;
        r->ref_mean_nll = nll_ref / (double)scored;
        r->ref_ppl = exp(r->ref_mean_nll);
        r->ppl_ratio = r->ppl / r->ref_ppl;
        double sum = 0;
        for (int64_t i = 0; i < scored; i++) sum += kld[i];
        r->kld_mean = sum / (double)scored;
        qsort(kld, (size_t)scored, sizeof *kld, cmp_double);
        r->kld_median = scored % 2 ? kld[scored / 2] : 0.5 * (kld[scored / 2 - 1] + kld[scored / 2]);
        int64_t k99 = (int64_t)ceil(0.99 * (double)scored) - 1;
        r->kld_p99 = kld[k99 < 0 ? 0 : k99];
        r->kld_max = kld[scored - 1];
        r->top1 = (double)agree / (double)scored;
    }
    s = SQ_OK;
done:
    sq_state_free(sm);
    sq_state_free(sr);
    free(zm);
    free(zr);
    free(win);
    free(kld);
    free(pos_nll);
    free(pos_ref);
    free(win_agree);
    return s;
}
