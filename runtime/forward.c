/* forward.c: the forward pass: one code path for prefill, decode and a batched verify step, built
 * from the backend's kernels. Tokens go through in chunks of at most max_batch; each layer appends
 * the chunk's keys and values to the KV cache, then attends over everything cached so far. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct sq_state {
    sq_model *m;
    int max_ctx, max_batch;
    int pos;                     /* positions held in the cache */
    int n_out;                   /* tokens of the last sq_forward call (rows of out) */
    float *kcache, *vcache;      /* (n_layers, max_ctx, kv_dim) */
    float *cos, *sin;            /* (max_ctx, head_dim / 2) */
    float *x;                    /* (max_batch, hidden) residual stream */
    float *xn;                   /* (max_batch, hidden) normed input of a sub-block */
    float *tmp;                  /* (max_batch, hidden) output of a sub-block */
    float *q, *att;              /* (max_batch, q_dim) queries, attention output */
    float *g, *u;                /* (max_batch, ffn_max) gate and up activations */
    /* MoE (NULL for dense models) */
    float *route;                /* (max_batch, n_experts) router logits, then probabilities */
    int *pick;                   /* (max_batch, top_k) the experts each token goes to... */
    float *pick_w;               /* (max_batch, top_k) ...and their weights */
    int *rows;                   /* (max_batch) the tokens routed to one expert */
    float *xe, *ye;              /* (max_batch, hidden) their inputs and the expert's outputs */
    const uint8_t *route_all;    /* calibration: experts that see every token (n_experts), or NULL */
    float *out;                  /* (max_ctx, hidden) final hidden states of the last call */
    sq_tap_fn tap;               /* calibration: sees the input of each linear site (NULL: none) */
    void *tap_user;
    bool stopped;                /* the tap asked to stop the layer */
    bool tap_outputs;            /* the tap sees the modules' outputs too (sq_state_tap_outputs) */
    double flops;                /* floating-point operations of the linears and attention so far (sq_state_flops) */
};

/* be->matmul, counting its 2 n rows cols operations. */
static sq_status mm(sq_state *s, const sq_backend_i *be, sq_kctx *kc, const sq_wmat *w, const float *bias, const float *x, float *y, int n,
                    sq_err *err) {
    s->flops += 2.0 * n * (double)w->rows * (double)w->cols;
    return be->matmul(kc, w, bias, x, y, n, err);
}

double sq_state_flops(const sq_state *s) { return s->flops; }

/* Calls the tap; when it asks to stop, the sub-block returns at once (sq_layer_forward sees why). */
#define TAP(s, site, unit, x, n, dim)                                                              \
    do {                                                                                           \
        if ((s)->tap && (s)->tap((s)->tap_user, (site), (unit), (x), (n), (dim))) {                \
            (s)->stopped = true;                                                                   \
            return SQ_OK;                                                                          \
        }                                                                                          \
    } while (0)

static float *alloc_f(int64_t a, int64_t b, sq_err *err) {
    int64_t n;
    if (!sq_mul_i64(a, b, &n) || !sq_mul_i64(n, (int64_t)sizeof(float), &n)) {
        sq_fail(err, SQ_ERR_NOMEM, "state buffer of %lld x %lld floats is too large", (long long)a, (long long)b);
        return NULL;
    }
    size_t bytes = ((size_t)n + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) sq_fail(err, SQ_ERR_NOMEM, "out of memory for a %lld-byte state buffer", (long long)n);
    return p;
}

sq_status sq_state_new(sq_state **out, sq_model *m, int max_ctx, int max_batch, sq_err *err) {
    *out = NULL;
    const sq_config *c = &m->cfg;
    if (max_ctx < 1) return sq_fail(err, SQ_ERR_ARG, "context length %d must be at least 1", max_ctx);
    if (max_batch <= 0) max_batch = 512;
    if (max_batch > max_ctx) max_batch = max_ctx;
    sq_state *s = sq_calloc(1, sizeof *s, err);
    if (!s) return SQ_ERR_NOMEM;
    s->m = m;
    s->max_ctx = max_ctx;
    s->max_batch = max_batch;
    int half = c->head_dim / 2;
    int64_t cache = (int64_t)c->n_layers * max_ctx;
    if (!(s->kcache = alloc_f(cache, m->kv_dim, err)) || !(s->vcache = alloc_f(cache, m->kv_dim, err)) ||
        !(s->cos = alloc_f(max_ctx, half, err)) || !(s->sin = alloc_f(max_ctx, half, err)) ||
        !(s->x = alloc_f(max_batch, c->hidden, err)) || !(s->xn = alloc_f(max_batch, c->hidden, err)) ||
        !(s->tmp = alloc_f(max_batch, c->hidden, err)) || !(s->q = alloc_f(max_batch, m->q_dim, err)) ||
        !(s->att = alloc_f(max_batch, m->q_dim, err)) || !(s->g = alloc_f(max_batch, m->ffn_max, err)) ||
        !(s->u = alloc_f(max_batch, m->ffn_max, err)) || !(s->out = alloc_f(max_ctx, c->hidden, err))) {
        sq_state_free(s);
        return err ? err->code : SQ_ERR_NOMEM;
    }
    if (c->n_experts > 0) {
        int k = c->n_experts_per_tok;
        if (!(s->route = alloc_f(max_batch, c->n_experts, err)) || !(s->pick = sq_malloc((size_t)max_batch * (size_t)k * sizeof *s->pick, err)) ||
            !(s->pick_w = alloc_f(max_batch, k, err)) || !(s->rows = sq_malloc((size_t)max_batch * sizeof *s->rows, err)) ||
            !(s->xe = alloc_f(max_batch, c->hidden, err)) || !(s->ye = alloc_f(max_batch, c->hidden, err))) {
            sq_state_free(s);
            return err ? err->code : SQ_ERR_NOMEM;
        }
    }
    /* Angles in double: the float tables are then exact to rounding at any position. */
    for (int p = 0; p < max_ctx; p++)
        for (int i = 0; i < half; i++) {
            double a = p * m->inv_freq[i];
            s->cos[(int64_t)p * half + i] = (float)cos(a);
            s->sin[(int64_t)p * half + i] = (float)sin(a);
        }
    *out = s;
    return SQ_OK;
}

void sq_state_free(sq_state *s) {
    if (!s) return;
    free(s->kcache);
    free(s->vcache);
    free(s->cos);
    free(s->sin);
    free(s->x);
    free(s->xn);
    free(s->tmp);
    free(s->q);
    free(s->att);
    free(s->g);
    free(s->u);
    free(s->out);
    free(s->route);
    free(s->pick);
    free(s->pick_w);
    free(s->rows);
    free(s->xe);
    free(s->ye);
    free(s);
}

int sq_state_pos(const sq_state *s) { return s->pos; }
void sq_state_route_all(sq_state *s, const uint8_t *flags) { s->route_all = flags; }
int sq_state_max_ctx(const sq_state *s) { return s->max_ctx; }
sq_model *sq_state_model(const sq_state *s) { return s->m; }

sq_status sq_state_rewind(sq_state *s, int pos, sq_err *err) {
    if (pos < 0 || pos > s->pos) return sq_fail(err, SQ_ERR_ARG, "cannot rewind to position %d (the state holds %d)", pos, s->pos);
    s->pos = pos;
    s->n_out = 0;
    return SQ_OK;
}

/* FFN unit `unit` (an MLP) on n tokens: x (n, hidden) -> out (n, hidden), the tap seeing its sites. */
static sq_status mlp(sq_state *s, const sq_mlp *p, int unit, const float *x, int n, float *out, sq_err *err) {
    const sq_backend_i *be = s->m->ex->be;
    sq_kctx *kc = s->m->ex->kc;
    sq_status st;
    TAP(s, SQ_SITE_GATEUP, unit, x, n, (int)p->gate.cols);
    if ((st = mm(s, be, kc, &p->gate, p->b_gate, x, s->g, n, err))) return st;
    if ((st = mm(s, be, kc, &p->up, p->b_up, x, s->u, n, err))) return st;
    be->swiglu(kc, s->g, s->u, s->g, (int64_t)n * p->gate.rows);
    TAP(s, SQ_SITE_DOWN, unit, s->g, n, (int)p->down.cols);
    return mm(s, be, kc, &p->down, p->b_down, s->g, out, n, err);
}

/* Each token's top_k experts (pick, in descending probability, the lower index first among equals)
 * and weights (pick_w: softmax probabilities, renormalised over the chosen when norm_topk) from the
 * router logits in route (n, n_experts), which become the probabilities. */
static void route_tokens(sq_state *s, const sq_ffn *f, int n) {
    int E = f->n_experts, K = f->top_k;
    for (int t = 0; t < n; t++) {
        float *p = s->route + (int64_t)t * E, mx = -INFINITY, sum = 0;
        for (int e = 0; e < E; e++) mx = fmaxf(mx, p[e]);
        for (int e = 0; e < E; e++) sum += p[e] = expf(p[e] - mx);
        for (int e = 0; e < E; e++) p[e] /= sum;
        int *pk = s->pick + (int64_t)t * K;
        float *pw = s->pick_w + (int64_t)t * K, chosen = 0;
        for (int j = 0; j < K; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int i = 0; i < j && !taken; i++) taken = pk[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            pk[j] = best;
            pw[j] = p[best];
            chosen += p[best];
        }
        if (f->norm_topk)
            for (int j = 0; j < K; j++) pw[j] /= chosen;
    }
}

/* The mixture of experts of n tokens: xn -> tmp. Each expert runs once on the tokens routed to it
 * (gathered into xe; every token when calibration asks, see sq_state_route_all), its outputs added
 * back weighted; then the shared expert, gated. An early return after the tap stopped is fine. */
static sq_status moe(sq_state *s, const sq_ffn *f, int n, sq_err *err) {
    const sq_config *c = &s->m->cfg;
    const sq_backend_i *be = s->m->ex->be;
    sq_kctx *kc = s->m->ex->kc;
    int H = c->hidden, K = f->top_k;
    sq_status st;
    TAP(s, SQ_SITE_GATEUP, f->n_experts + f->has_shared, s->xn, n, H); /* the whole input, for AWQ */
    if ((st = mm(s, be, kc, &f->router, NULL, s->xn, s->route, n, err))) return st;
    route_tokens(s, f, n);
    memset(s->tmp, 0, (size_t)n * (size_t)H * sizeof *s->tmp);
    for (int e = 0; e < f->n_experts; e++) {
        int m = 0;
        bool all = s->route_all && s->route_all[e];
        for (int t = 0; t < n; t++) {
            int j = 0;
            while (j < K && s->pick[(int64_t)t * K + j] != e) j++;
            if (j == K && !all) continue;
            s->rows[m] = j < K ? t * K + j : -1; /* -1: seen by calibration only */
            memcpy(s->xe + (int64_t)m++ * H, s->xn + (int64_t)t * H, (size_t)H * sizeof *s->xe);
        }
        if (!m) continue;
        if ((st = mlp(s, &f->experts[e], e, s->xe, m, s->ye, err)) || s->stopped) return st;
        for (int i = 0; i < m; i++) {
            if (s->rows[i] < 0) continue;
            float w = s->pick_w[s->rows[i]], *o = s->tmp + (int64_t)(s->rows[i] / K) * H;
            const float *y = s->ye + (int64_t)i * H;
            for (int d = 0; d < H; d++) o[d] += w * y[d];
        }
    }
    if (!f->has_shared) return SQ_OK;
    if ((st = mlp(s, &f->shared, f->n_experts, s->xn, n, s->ye, err)) || s->stopped) return st;
    if ((st = mm(s, be, kc, &f->shared_gate, NULL, s->xn, s->route, n, err))) return st; /* (n, 1) */
    for (int t = 0; t < n; t++) {
        float gate = 1.0f / (1.0f + expf(-s->route[t]));
        for (int d = 0; d < H; d++) s->tmp[(int64_t)t * H + d] += gate * s->ye[(int64_t)t * H + d];
    }
    return SQ_OK;
}

/* The feed-forward half of a block: xn (n, hidden) -> tmp (n, hidden). */
static sq_status ffn(sq_state *s, const sq_ffn *f, int n, sq_err *err) {
    switch (f->kind) {
    case SQ_FFN_DENSE: return mlp(s, &f->mlp, 0, s->xn, n, s->tmp, err);
    case SQ_FFN_MOE: return moe(s, f, n, err);
    }
    return sq_fail(err, SQ_ERR_INTERNAL, "unknown FFN kind %d", (int)f->kind);
}

/* Attention of layer l on the normed input s->xn (n tokens at positions pos ..) into s->tmp (o_proj's
 * output), appending to the KV cache. */
static sq_status attention_core(sq_state *s, int l, int n, sq_err *err) {
    const sq_model *m = s->m;
    const sq_config *c = &m->cfg;
    const sq_layer *L = &m->layers[l];
    const sq_backend_i *be = m->ex->be;
    sq_kctx *kc = m->ex->kc;
    int half = c->head_dim / 2, pos = s->pos;
    float *kl = s->kcache + (int64_t)l * s->max_ctx * m->kv_dim, *vl = s->vcache + (int64_t)l * s->max_ctx * m->kv_dim;
    float *knew = kl + (int64_t)pos * m->kv_dim, *vnew = vl + (int64_t)pos * m->kv_dim;
    sq_status st;
    if ((st = mm(s, be, kc, &L->wq, L->bq, s->xn, s->q, n, err))) return st;
    if ((st = mm(s, be, kc, &L->wk, L->bk, s->xn, knew, n, err))) return st;
    if ((st = mm(s, be, kc, &L->wv, L->bv, s->xn, vnew, n, err))) return st;
    if (L->q_norm) { /* Qwen3: each head of q and k normed on its own, before RoPE */
        be->rmsnorm(kc, s->q, L->q_norm, c->norm_eps, s->q, n * c->n_heads, c->head_dim);
        be->rmsnorm(kc, knew, L->k_norm, c->norm_eps, knew, n * c->n_kv_heads, c->head_dim);
    }
    const float *cs = s->cos + (int64_t)pos * half, *sn = s->sin + (int64_t)pos * half;
    be->rope(kc, s->q, n, m->q_dim, c->n_heads, c->head_dim, cs, sn);
    be->rope(kc, knew, n, m->kv_dim, c->n_kv_heads, c->head_dim, cs, sn);
    sq_attn a = {.q = s->q, .k = kl, .v = vl, .out = s->att, .n = n, .pos0 = pos, .n_heads = c->n_heads,
                 .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim, .kv_stride = m->kv_dim,
                 .scale = (float)(1.0 / sqrt((double)c->head_dim)), .window = sq_config_window(c, l)};
    for (int i = 0; i < n; i++) { /* QK and AV: 4 head_dim operations per head and key attended */
        int keys = pos + i + 1;
        if (a.window > 0 && keys > a.window) keys = a.window;
        s->flops += 4.0 * c->head_dim * c->n_heads * keys;
    }
    if ((st = be->attention(kc, &a, err))) return st;
    TAP(s, SQ_SITE_O, 0, s->att, n, m->q_dim);
    return mm(s, be, kc, &L->wo, L->bo, s->att, s->tmp, n, err);
}

/* Attention half of layer l for n tokens at positions pos .. pos+n-1: x += o_proj(attn(norm(x))). */
static sq_status attention_block(sq_state *s, int l, int n, sq_err *err) {
    const sq_model *m = s->m;
    const sq_config *c = &m->cfg;
    const sq_backend_i *be = m->ex->be;
    sq_kctx *kc = m->ex->kc;
    be->rmsnorm(kc, s->x, m->layers[l].attn_norm, c->norm_eps, s->xn, n, c->hidden);
    TAP(s, SQ_SITE_QKV, 0, s->xn, n, c->hidden);
    sq_status st = attention_core(s, l, n, err);
    if (st || s->stopped) return st;
    if (s->tap_outputs) TAP(s, SQ_SITE_ATTN_OUT, 0, s->tmp, n, c->hidden);
    be->add(kc, s->x, s->tmp, (int64_t)n * c->hidden);
    return SQ_OK;
}

/* One chunk of n <= max_batch tokens through every layer; its final hidden states go to out. */
static sq_status forward_chunk(sq_state *s, const int *ids, int n, float *out, sq_err *err) {
    const sq_model *m = s->m;
    const sq_config *c = &m->cfg;
    const sq_backend_i *be = m->ex->be;
    sq_kctx *kc = m->ex->kc;
    sq_status st;
    be->embed(kc, &m->embed, ids, n, s->x);
    for (int l = 0; l < c->n_layers; l++) {
        if ((st = attention_block(s, l, n, err))) return st;
        be->rmsnorm(kc, s->x, m->layers[l].ffn_norm, c->norm_eps, s->xn, n, c->hidden);
        if ((st = ffn(s, &m->layers[l].ffn, n, err))) return st;
        be->add(kc, s->x, s->tmp, (int64_t)n * c->hidden);
    }
    be->rmsnorm(kc, s->x, m->final_norm, c->norm_eps, out, n, c->hidden);
    s->pos += n;
    return SQ_OK;
}

sq_status sq_forward(sq_state *s, const int *ids, int n, sq_err *err) {
    const sq_config *c = &s->m->cfg;
    s->n_out = 0;
    if (n < 1) return sq_fail(err, SQ_ERR_ARG, "forward: no tokens");
    if (n > s->max_ctx - s->pos)
        return sq_fail(err, SQ_ERR_ARG, "forward: %d more tokens do not fit the context of %d (%d used)", n, s->max_ctx, s->pos);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return sq_fail(err, SQ_ERR_FORMAT, "token id %d (at %d) is outside the model's vocabulary of %d", ids[i], i, c->vocab);
    for (int done = 0; done < n;) {
        int b = n - done < s->max_batch ? n - done : s->max_batch;
        sq_status st = forward_chunk(s, ids + done, b, s->out + (int64_t)done * c->hidden, err);
        if (st) {
            s->pos -= done; /* the cache holds nothing usable of this call */
            return st;
        }
        done += b;
    }
    s->n_out = n;
    return SQ_OK;
}

sq_status sq_logits(sq_state *s, int first, int count, float *out, sq_err *err) {
    if (first < 0 || count < 1 || first > s->n_out - count)
        return sq_fail(err, SQ_ERR_ARG, "logits of tokens %d..%d asked, the last forward ran %d", first, first + count - 1, s->n_out);
    const sq_model *m = s->m;
    return m->ex->be->matmul(m->ex->kc, &m->lm_head, NULL, s->out + (int64_t)first * m->cfg.hidden, out, count, err);
}

/* ---------------------------------------------------------------- calibration support */

sq_status sq_layer_forward(sq_state *s, int l, float *x, int n, sq_tap_fn tap, void *user, sq_err *err) {
    const sq_model *m = s->m;
    const sq_config *c = &m->cfg;
    if (l < 0 || l >= c->n_layers) return sq_fail(err, SQ_ERR_ARG, "layer %d of %d", l, c->n_layers);
    if (n < 1 || n > s->max_batch || n > s->max_ctx)
        return sq_fail(err, SQ_ERR_ARG, "layer forward of %d tokens (the state holds %d)", n, s->max_batch);
    const sq_backend_i *be = m->ex->be;
    sq_kctx *kc = m->ex->kc;
    s->pos = 0; /* one sequence from position 0; this layer's cache is rewritten */
    s->n_out = 0;
    s->tap = tap;
    s->tap_user = user;
    s->stopped = false;
    memcpy(s->x, x, (size_t)n * (size_t)c->hidden * sizeof *x);
    sq_status st = attention_block(s, l, n, err);
    if (!st && !s->stopped) {
        be->rmsnorm(kc, s->x, m->layers[l].ffn_norm, c->norm_eps, s->xn, n, c->hidden);
        st = ffn(s, &m->layers[l].ffn, n, err);
    }
    if (!st && !s->stopped && s->tap_outputs && s->tap) {
        if (s->tap(s->tap_user, SQ_SITE_FFN_OUT, 0, s->tmp, n, c->hidden)) s->stopped = true;
    }
    if (!st && !s->stopped) {
        be->add(kc, s->x, s->tmp, (int64_t)n * c->hidden);
        memcpy(x, s->x, (size_t)n * (size_t)c->hidden * sizeof *x);
    }
    s->tap = NULL;
    s->tap_user = NULL;
    s->stopped = false;
    return st;
}

void sq_state_tap_outputs(sq_state *s, bool on) { s->tap_outputs = on; }

sq_status sq_state_matmul(sq_state *s, const sq_wmat *w, const float *x, float *y, int n, sq_err *err) {
    const sq_model *m = s->m;
    return m->ex->be->matmul(m->ex->kc, w, NULL, x, y, n, err);
}

sq_status sq_layer_part(sq_state *s, int l, sq_layer_part_kind part, const float *xn, int n, float *out, sq_err *err) {
    const sq_model *m = s->m;
    const sq_config *c = &m->cfg;
    if (l < 0 || l >= c->n_layers) return sq_fail(err, SQ_ERR_ARG, "layer %d of %d", l, c->n_layers);
    if (n < 1 || n > s->max_batch || n > s->max_ctx)
        return sq_fail(err, SQ_ERR_ARG, "layer part of %d tokens (the state holds %d)", n, s->max_batch);
    s->pos = 0;
    s->n_out = 0;
    s->tap = NULL;
    s->stopped = false;
    memcpy(s->xn, xn, (size_t)n * (size_t)c->hidden * sizeof *xn);
    sq_status st = part == SQ_PART_ATTENTION ? attention_core(s, l, n, err) : ffn(s, &m->layers[l].ffn, n, err);
    if (!st) memcpy(out, s->tmp, (size_t)n * (size_t)c->hidden * sizeof *out);
    return st;
}
