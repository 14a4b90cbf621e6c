/* driver.c: the calibration driver (see driver.h): windows, taps, collection passes, MoE groups and
 * rarely routed experts, statistics from a pass or a file, and `spotq calib`. */
#include "driver.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../base/par.h"
#include "../formats/checkpoint.h"
#include "../formats/outdir.h"
#include "../formats/text.h"
#include "../formats/tokenizer.h"
#include "calib.h"

const sq_calib_stage sq_calib_stages[4] = {
    {SQ_SITE_QKV, 3, {SQ_LIN_K, SQ_LIN_V, SQ_LIN_Q}},
    {SQ_SITE_O, 1, {SQ_LIN_O}},
    {SQ_SITE_GATEUP, 2, {SQ_LIN_GATE, SQ_LIN_UP}},
    {SQ_SITE_DOWN, 1, {SQ_LIN_DOWN}},
};
#define stages sq_calib_stages

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool sq_calib_rank_needs(const sq_calib *r, int q, int u) {
    return !r->need || !r->need[u] || q >= 64 || (r->need[u] >> q & 1);
}

static bool tap(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    sq_calib *r = user;
    if (site != r->want || unit >= r->units) return false;
    double t = now();
    if (unit >= r->u0 && unit < r->u1 && !r->hess_err.code) {
        sq_hessian_add(&r->part[unit], x, n, &r->hess_err); /* this chunk's partial (run_collect) */
        r->f_hessian += (double)dim * (dim + 1) * n;
    }
    if (r->counting) r->unit_tokens[unit] += n;
    if (r->counting && r->o.absmax) { /* max |x|: FP8 scales, and kept by spotq calib */
        int64_t bad;
        float m = sq_backend_cpu()->absmax(x, (int64_t)n * dim, &bad);
        r->act_absmax[unit] = m < 0 ? INFINITY : fmaxf(r->act_absmax[unit], m);
    }
    r->t_hessian += now() - t;
    return unit == (r->counting ? r->units : r->u1) - 1; /* nothing after the last unit wanted is needed */
}

/* The calibration windows in SQ_CALIB_CHUNKS chunks (fewer when there are fewer windows), a number
 * fixed by nsamples alone, never by the ranks: chunk c holds windows [c*W/C, (c+1)*W/C). */
static int nchunks(const sq_calib *r) { return r->o.nsamples < SQ_CALIB_CHUNKS ? r->o.nsamples : SQ_CALIB_CHUNKS; }
static int chunk_start(const sq_calib *r, int c) { return (int)((int64_t)c * r->o.nsamples / nchunks(r)); }

/* A node of the fixed reduction tree over the C chunks: level L, index i covers chunks
 * [i 2^L, min((i+1) 2^L, C)); node (L, i) is (L-1, 2i) added to (L-1, 2i+1), or (L-1, 2i) itself where
 * that has no right sibling. The tree depends on C alone, so every node is the same bits whichever
 * rank adds it. h: the running-mean Hessian of its t tokens, its upper triangle packed (sq_pack_upper:
 * the lower is the same floats, so the tree adds, and the ranks send, half the matrix), in storage of
 * k^2 floats where the node is a chunk's own (the root is unpacked in place). */
typedef struct {
    int level, index;
    int64_t t;
    float *h;
    bool borrowed; /* h lies in the exchange's receive buffer (freed with it), not on its own */
} hnode;
#define HSTACK 8 /* the deepest stack: log2(C) + 2 */

/* H = nl/(nl+nr) L + nr/(nl+nr) R, element by element over the kk floats of the packed triangles (the
 * same float arithmetic everywhere: -std=c11 contracts no multiply-add; kernels/cuda/coll.cu's combine
 * is its device twin). Into left. */
static void combine(hnode *left, hnode *right, int64_t kk) {
    int64_t n = left->t, t = right->t;
    if (t > 0 && n == 0) {
        hnode keep = *left;
        left->h = right->h, left->borrowed = right->borrowed;
        right->h = keep.h, right->borrowed = keep.borrowed;
    }
    else if (t > 0) {
        float keep = (float)((double)n / (double)(n + t)), add = (float)((double)t / (double)(n + t));
        for (int64_t i = 0; i < kk; i++) left->h[i] = keep * left->h[i] + add * right->h[i];
    }
    left->t = n + t;
    if (!right->borrowed) free(right->h);
    right->h = NULL;
}

/* Pushes node nd (in chunk order) onto the stack st (depth *d): siblings are added, a node without a
 * right sibling goes up a level as it is. */
static void push(hnode *st, int *d, hnode nd, int C, int64_t kk) {
    st[(*d)++] = nd;
    for (;;) {
        hnode *top = &st[*d - 1];
        int64_t span = (int64_t)1 << top->level;
        if (span >= C) break; /* the root */
        if (!(top->index & 1) && (int64_t)(top->index + 1) * span >= C) { top->level++, top->index /= 2; continue; }
        if ((top->index & 1) && *d >= 2 && st[*d - 2].level == top->level && st[*d - 2].index == top->index - 1) {
            combine(&st[*d - 2], top, kk);
            (*d)--;
            st[*d - 1].level++, st[*d - 1].index /= 2;
            continue;
        }
        break;
    }
}

/* A collecting pass (the tap is this file's) over the chunks, rank q running chunks [q C/N, (q+1) C/N)
 * (contiguous: base/par.h's rule that no result depends on N is kept by the fixed tree above). Each
 * rank runs its chunks' windows in order, each chunk into a partial Hessian per unit (part, on the
 * backend), and adds them up the tree as far as its chunks reach; the nodes left (one for 2 ranks and
 * 8 chunks, at most log2(C)+1; each its upper triangle) go to the ranks that solve from each unit
 * (sq_calib_rank_needs) in one exchange, which finish the tree in chunk order. One process takes the
 * same tree, so the Hessians are the same bits for every N. Token counts and max |x| are summed and
 * maxed over ranks (exact whatever the order). */
static sq_status run_collect(sq_calib *r, int l, const sq_backend_i *be, sq_err *err) {
    int64_t T = r->o.seqlen, H = r->c->hidden;
    int N = sq_par_size(), me = sq_par_rank(), C = nchunks(r), nu = r->u1 - r->u0;
    int c0 = (int)((int64_t)me * C / N), c1 = (int)((int64_t)(me + 1) * C / N);
    double t = now(), th = 0, w0 = sq_par_wait_seconds(), f0 = sq_state_flops(r->st), tap0 = r->t_hessian; /* the tap's Hessian adds */
    hnode *st = sq_calloc((size_t)nu * HSTACK, sizeof *st, err);
    int *depth = sq_calloc((size_t)nu, sizeof *depth, err);
    int64_t *off = malloc((size_t)(N + 1) * sizeof *off), *cnt = malloc((size_t)N * sizeof *cnt);
    sq_status s = (!st || !depth || !off || !cnt) ? sq_fail(err, SQ_ERR_NOMEM, "out of memory") : SQ_OK;
    for (int c = c0; c < c1 && !s; c++) {
        for (int u = r->u0; u < r->u1 && !s; u++) s = sq_hessian_init_on(&r->part[u], be, r->hs[u].k, err);
        for (int w = chunk_start(r, c); !s && w < chunk_start(r, c + 1); w++) {
            memcpy(r->tmp, r->x + w * T * H, (size_t)(T * H) * sizeof *r->tmp);
            s = sq_layer_forward(r->st, l, r->tmp, (int)T, tap, r, err);
            if (!s && r->hess_err.code) s = (*err = r->hess_err).code;
        }
        for (int u = r->u0; u < r->u1 && !s; u++) s = sq_hessian_finish(&r->part[u], err);
        double t1 = now();
        for (int u = r->u0; u < r->u1 && !s; u++) { /* the chunk's leaf up the tree (its h taken from part, packed) */
            int64_t k = r->hs[u].k, kk = k * (k + 1) / 2;
            hnode leaf = {0, c, r->part[u].tokens, r->part[u].h, false};
            r->part[u].h = NULL;
            sq_pack_upper(leaf.h, k);
            push(st + (u - r->u0) * HSTACK, &depth[u - r->u0], leaf, C, kk);
        }
        for (int u = r->u0; u < r->u1; u++) sq_hessian_free(&r->part[u]);
        th += now() - t1;
    }
    if (s && N > 1) sq_par_abort(err); /* the others would wait in the exchange below */
    double t1 = now();
    if (!s && N == 1) { /* the root */
        for (int u = r->u0; u < r->u1; u++) {
            hnode *root = &st[(u - r->u0) * HSTACK];
            if (depth[u - r->u0] == 0) continue; /* no chunks */
            sq_unpack_upper(root->h, r->hs[u].k); /* a chunk's own storage: k^2 floats */
            free(r->hs[u].h);
            r->hs[u].h = root->h, r->hs[u].tokens = root->t;
            root->h = NULL;
        }
    } else if (!s) {
        /* to each rank q, in unit order, this rank's nodes of the units it solves from: (unit, level, index, tokens), then k^2 floats */
        int64_t bytes = 0;
        for (int q = 0; q < N; q++) {
            cnt[q] = 0;
            for (int u = r->u0; u < r->u1; u++)
                if (sq_calib_rank_needs(r, q, u)) cnt[q] += depth[u - r->u0] * (4 * (int64_t)sizeof(int64_t) + r->hs[u].k * (r->hs[u].k + 1) / 2 * (int64_t)sizeof(float));
            bytes += cnt[q];
        }
        char *send = malloc(bytes > 0 ? (size_t)bytes : 1), *to = send;
        if (!send) { s = sq_fail(err, SQ_ERR_NOMEM, "out of memory sending %lld bytes", (long long)bytes); sq_par_abort(err); }
        for (int q = 0; q < N && send; q++)
            for (int u = r->u0; u < r->u1; u++) {
                if (!sq_calib_rank_needs(r, q, u)) continue;
                int64_t kk = r->hs[u].k * (r->hs[u].k + 1) / 2;
                for (int j = 0; j < depth[u - r->u0]; j++) {
                    hnode *nd = &st[(u - r->u0) * HSTACK + j];
                    int64_t head[4] = {u, nd->level, nd->index, nd->t};
                    memcpy(to, head, sizeof head), to += sizeof head;
                    memcpy(to, nd->h, (size_t)kk * sizeof(float)), to += kk * (int64_t)sizeof(float);
                }
            }
        for (int j = 0; j < nu * HSTACK && st; j++) free(st[j].h), st[j].h = NULL;
        memset(depth, 0, (size_t)nu * sizeof *depth);
        char *all = send ? sq_par_alltoallv(send, cnt, off) : NULL;
        free(send);
        for (int q = 0; q < N && all && !s; q++) /* rank q's chunks, in chunk order */
            for (int64_t at = off[q]; at < off[q + 1];) {
                int64_t head[4];
                memcpy(head, all + at, sizeof head);
                int u = (int)head[0];
                int64_t kk = r->hs[u].k * (r->hs[u].k + 1) / 2;
                /* the node's floats stay where they came (all is 8-byte aligned by malloc and every record a
                 * multiple of 4 bytes long, so they are float-aligned): no copy of rank 1's partials */
                hnode nd = {(int)head[1], (int)head[2], head[3], (float *)(void *)(all + at + sizeof head), true};
                push(st + (u - r->u0) * HSTACK, &depth[u - r->u0], nd, C, kk);
                at += (int64_t)sizeof head + kk * (int64_t)sizeof(float);
            }
        for (int u = r->u0; u < r->u1 && !s; u++) {
            if (!sq_calib_rank_needs(r, me, u) || depth[u - r->u0] == 0) continue;
            hnode *root = &st[(u - r->u0) * HSTACK];
            int64_t k = r->hs[u].k;
            if (root->borrowed) { /* a root that is still another rank's node whole (no chunk of this rank's) */
                float *h = malloc((size_t)(k * k) * sizeof *h);
                if (!h) { s = sq_fail(err, SQ_ERR_NOMEM, "out of memory"); sq_par_abort(err); break; }
                memcpy(h, root->h, (size_t)(k * (k + 1) / 2) * sizeof *h);
                root->h = h, root->borrowed = false;
            }
            sq_unpack_upper(root->h, k);
            free(r->hs[u].h);
            r->hs[u].h = root->h, r->hs[u].tokens = root->t;
            root->h = NULL;
        }
        for (int j = 0; j < nu * HSTACK && st; j++)
            if (st[j].borrowed) st[j].h = NULL; /* the nodes left in the buffer go with it */
        free(all);
    }
    th += now() - t1;
    for (int u = r->u0; u < r->u1; u++) sq_hessian_free(&r->part[u]);
    for (int j = 0; j < nu * HSTACK && st; j++) free(st[j].h);
    free(st);
    free(depth);
    free(off);
    free(cnt);
    if (s) return s;
    if (r->counting && N > 1) {
        sq_par_sum_i64(r->unit_tokens, r->units);
        sq_par_max_f32(r->act_absmax, r->units);
    }
    /* the forward alone: not the Hessians (the tap's adds, timed by the tap, and the tree), nor the waits */
    r->t_forward += now() - t - th - (r->t_hessian - tap0) - (sq_par_wait_seconds() - w0);
    r->t_hessian += th;
    r->f_forward += sq_state_flops(r->st) - f0;
    return SQ_OK;
}

/* MPI, N ranks, keeping a block's outputs: window w is rank w mod N's; each rank runs its windows and
 * every rank then gets them all. */
static sq_status run_layer_par(sq_calib *r, int l, sq_err *err) {
    int64_t T = r->o.seqlen, H = r->c->hidden;
    int N = sq_par_size(), me = sq_par_rank();
    double t = now(), w0 = sq_par_wait_seconds(), f0 = sq_state_flops(r->st);
    for (int w = me; w < r->o.nsamples; w += N) {
        sq_status s = sq_layer_forward(r->st, l, r->x + w * T * H, (int)T, NULL, NULL, err);
        if (s) return s;
    }
    sq_par_gather_chunks(r->x, r->o.nsamples, T * H * (int64_t)sizeof *r->x);
    r->t_forward += now() - t - (sq_par_wait_seconds() - w0);
    r->f_forward += sq_state_flops(r->st) - f0;
    return SQ_OK;
}

/* Runs layer l on every calibration window (in place when keeping its outputs, else into tmp per window). */
static sq_status run_layer(sq_calib *r, int l, bool keep_outputs, sq_tap_fn fn, void *user, sq_err *err) {
    if (sq_par_size() > 1 && keep_outputs && !fn) return run_layer_par(r, l, err);
    int64_t T = r->o.seqlen, H = r->c->hidden;
    double t = now(), f0 = sq_state_flops(r->st);
    for (int smp = 0; smp < r->o.nsamples; smp++) {
        float *xs = r->x + smp * T * H;
        float *buf = keep_outputs ? xs : r->tmp;
        if (!keep_outputs) memcpy(buf, xs, (size_t)(T * H) * sizeof *buf);
        sq_status s = sq_layer_forward(r->st, l, buf, (int)T, fn, user, err);
        if (s) return s;
    }
    r->t_forward += now() - t;
    r->f_forward += sq_state_flops(r->st) - f0;
    return SQ_OK;
}

sq_status sq_calib_forward(sq_calib *cal, int l, sq_tap_fn fn, void *user, sq_err *err) {
    return cal->x ? run_layer(cal, l, true, fn, user, err) : SQ_OK;
}

/* The per-channel max |x| of sq_calib_channel_absmax: the two sites' vectors, the layer's FFN units. */
typedef struct {
    float *v[2];
    int units;
    bool moe, bad;
} chan_tap;

static bool tap_channels(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    chan_tap *t = user;
    int i = site == SQ_SITE_QKV ? 0 : site == SQ_SITE_GATEUP ? 1 : -1;
    if (i < 0 || (i == 0 && unit != 0) || (i == 1 && t->moe && unit != t->units)) return false; /* an expert's rows: rows of the whole input */
    float *v = t->v[i];
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < dim; j++) {
            float a = fabsf(x[r * dim + j]);
            if (!isfinite(a)) t->bad = true;
            else if (a > v[j]) v[j] = a;
        }
    return i == 1; /* nothing after the FFN's input is needed */
}

sq_status sq_calib_channel_absmax(sq_calib *r, int l, float *qkv, float *gateup, sq_err *err) {
    int64_t T = r->o.seqlen, H = r->c->hidden;
    memset(qkv, 0, (size_t)H * sizeof *qkv);
    memset(gateup, 0, (size_t)H * sizeof *gateup);
    if (!r->x) return SQ_OK;
    chan_tap t = {{qkv, gateup}, sq_model_ffn_units(r->m, l), sq_config_moe_layer(r->c, l), false};
    double t0 = now(), w0 = sq_par_wait_seconds(), f0 = sq_state_flops(r->st);
    sq_status s = SQ_OK;
    for (int w = sq_par_rank(); w < r->o.nsamples && !s; w += sq_par_size()) {
        memcpy(r->tmp, r->x + w * T * H, (size_t)(T * H) * sizeof *r->tmp);
        s = sq_layer_forward(r->st, l, r->tmp, (int)T, tap_channels, &t, err);
    }
    if (sq_par_size() > 1) { /* every rank reaches the reduction: a failure travels as an Inf */
        if (s || t.bad) qkv[0] = INFINITY;
        sq_par_max_f32(qkv, H);
        sq_par_max_f32(gateup, H);
        if (!s && isinf(qkv[0])) t.bad = true;
    }
    r->t_forward += now() - t0 - (sq_par_wait_seconds() - w0);
    r->f_forward += sq_state_flops(r->st) - f0;
    if (s) return s;
    if (t.bad) return sq_fail(err, SQ_ERR_NUMERIC, "%s: layer %d: a NaN or Inf in the calibration activations", r->o.model, l);
    return SQ_OK;
}

void sq_calib_free_hessians(sq_calib *r) {
    for (int u = r->u0; u < r->u1; u++) sq_hessian_free(&r->hs[u]);
}

/* One pass of layer l over the calibration windows that collects, at the stage's site, the Hessians
 * of FFN units u0 .. u1-1 of its `units` (one at attention sites) and, when counting (the stage's
 * first pass), every unit's token count and largest |x|. */
static sq_status collect(sq_calib *r, int l, int si, int units, int u0, int u1, bool counting, sq_err *err) {
    const sq_backend_i *be = r->o.backend ? r->o.backend : sq_backend_cpu();
    sq_status s = SQ_OK;
    r->units = units;
    r->u0 = r->u1 = u0;
    r->counting = counting;
    for (int u = u0; u < u1 && !s; u++, r->u1++) {
        int64_t k = sq_model_linear_unit(r->m, l, u, stages[si].lin[0])->cols; /* the shared expert may be wider */
        r->hs[u] = (sq_hessian){.k = k};
        /* the total, on the host, on the ranks that solve from it (MPI: others keep only k) */
        if (sq_calib_rank_needs(r, sq_par_rank(), u) && !(r->hs[u].h = sq_calloc((size_t)(k * k), sizeof(float), err))) s = SQ_ERR_NOMEM;
    }
    for (int u = 0; u < units && counting; u++) r->unit_tokens[u] = 0, r->act_absmax[u] = 0;
    r->want = stages[si].site;
    r->hess_err = (sq_err){0};
    if (!s && r->x) s = run_collect(r, l, be, err);
    return s;
}

bool sq_calib_route_rare_experts(sq_calib *r, int l) {
    int64_t k = r->c->hidden;
    int E = r->c->n_experts, nrare = 0;
    for (int e = 0; e < E; e++) {
        r->moe_tokens[(int64_t)l * E + e] = r->unit_tokens[e];
        if (r->unit_tokens[e] < k) r->route_all[e] = r->moe_all[(int64_t)l * E + e] = 1, nrare++;
    }
    if (nrare)
        sq_log(SQ_LOG_INFO, "layer %d: %d of %d experts were routed fewer than %lld calibration tokens: calibrating them on every token", l,
               nrare, E, (long long)k);
    return nrare > 0;
}

int sq_calib_unit_group(const sq_calib *r, int l, int si, int units) {
    int64_t k = 0;
    for (int u = 0; u < units; u++) {
        int64_t ku = sq_model_linear_unit(r->m, l, u, stages[si].lin[0])->cols;
        if (ku > k) k = ku;
    }
    int64_t budget = r->o.max_hessian_bytes > 0 ? r->o.max_hessian_bytes : SQ_CALIB_DEFAULT_HESSIAN_BYTES;
    int64_t g = budget / (k * k * (int64_t)sizeof(float));
    return g < 1 ? 1 : g > units ? units : (int)g;
}

/* The Hessians (and, on the first pass, the counts) of units u0 .. u1-1 of a stage; at an MoE layer's
 * first FFN site the first pass also decides which experts are calibrated on every token, and is
 * taken again if any is. */
static sq_status collect_group(sq_calib *r, int l, int si, int units, int u0, int u1, sq_err *err) {
    sq_status s = collect(r, l, si, units, u0, u1, u0 == 0, err);
    if (!s && u0 == 0 && stages[si].site == SQ_SITE_GATEUP && sq_config_moe_layer(r->c, l) && sq_calib_route_rare_experts(r, l)) {
        sq_calib_free_hessians(r);
        s = collect(r, l, si, units, u0, u1, true, err);
    }
    return s;
}

/* --stats: the Hessians of a stage's units from the statistics file instead of a calibration pass. */
static sq_status load_stats(sq_calib *r, int l, int si, int units, int u0, int u1, sq_err *err) {
    sq_status s = SQ_OK;
    r->units = units;
    r->u0 = r->u1 = u0;
    for (int u = 0; u < units && !s; u++) {
        int64_t k = sq_model_linear_unit(r->m, l, u, stages[si].lin[0])->cols;
        const sq_stat_entry *e = sq_stats_find(&r->stats, l, stages[si].site, u);
        if (!e || e->k != k)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: no statistics of width %lld for layer %d, site %d, unit %d", r->o.stats_in, (long long)k, l,
                           (int)stages[si].site, u);
        r->unit_tokens[u] = e->tokens; /* every unit's counts, as a counting pass gives them */
        r->act_absmax[u] = e->absmax;
        if (u < u0 || u >= u1) continue;
        if ((s = sq_hessian_init(&r->hs[u], k, err))) break;
        r->u1++;
        sq_stats_hessian(&r->stats, e, r->hs[u].h);
    }
    return s;
}

sq_status sq_calib_stage_stats(sq_calib *r, int l, int si, int units, int u0, int u1, sq_err *err) {
    if (r->o.stats_in) return load_stats(r, l, si, units, u0, u1, err);
    if (r->x) return collect_group(r, l, si, units, u0, u1, err);
    for (int u = u0; u < u1; u++) r->hs[u] = (sq_hessian){0}; /* data-free: no Hessians */
    r->u0 = u0, r->u1 = u1;
    return SQ_OK;
}

void sq_calib_block_begin(sq_calib *cal) {
    if (cal->c->n_experts) memset(cal->route_all, 0, (size_t)cal->c->n_experts);
}

sq_status sq_calib_begin(sq_calib *r, sq_model *m, const sq_calib_opts *o, sq_err *err) {
    memset(r, 0, sizeof *r);
    r->o = *o;
    r->m = m;
    r->c = sq_model_config(m);
    r->bos_id = -1;
    const sq_ckpt *ck = sq_model_ckpt(m);
    sq_status s = SQ_OK;
    if (o->stats_in) {
        if ((s = sq_stats_read(&r->stats, o->stats_in, err))) return s;
        if (strcmp(r->stats.arch, sq_arch_name(r->c->arch)) || r->stats.hidden != r->c->hidden || r->stats.n_layers != r->c->n_layers ||
            r->stats.vocab != r->c->vocab || r->stats.n_experts != r->c->n_experts)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: statistics of another model (%s, %d layers, hidden %d), not of %s", o->stats_in,
                           r->stats.arch, r->stats.n_layers, r->stats.hidden, o->model);
    }
    if (r->o.seqlen <= 0) r->o.seqlen = r->c->max_pos < 2048 ? r->c->max_pos : 2048; /* --seqlen 0: 2048, or the model's maximum if smaller */
    if (!o->calib) r->o.nsamples = r->o.seqlen = 0;
    if (o->calib && !ck->tokenizer_path[0])
        return sq_fail(err, SQ_ERR_IO, "%s: no tokenizer.json beside the model (needed for --calib)", o->model);
    if (o->calib) {
        sq_tok *tok = NULL;
        if (!(s = sq_tok_load(&tok, ck->tokenizer_path, err))) s = sq_text_tokens(tok, o->calib, false, &r->ids, &r->nids, err);
        if (tok) {
            r->bos_id = sq_tok_bos(tok);
            snprintf(r->bos_rule, sizeof r->bos_rule, "%s", sq_tok_bos_rule(tok));
        }
        sq_tok_free(tok);
        if (s) return s;
    }
    for (int64_t i = 0; i < r->nids; i++)
        if (r->ids[i] < 0 || r->ids[i] >= r->c->vocab)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: token %d of the calibration text is outside the model's vocabulary of %d (%s)", o->calib,
                           r->ids[i], r->c->vocab, ck->tokenizer_path);
    int64_t T = r->o.seqlen, H = r->c->hidden, ntok = (int64_t)r->o.nsamples * T;
    if (o->calib && (s = sq_calib_windows(r->ids, r->nids, o->calib, r->o.nsamples, r->o.seqlen, o->seed, &r->win, err))) return s;
    if (r->win) r->hash = sq_calib_hash(r->win, ntok);
    if (o->calib) { /* x stays NULL without calibration */
        r->x = sq_malloc((size_t)(ntok * H) * sizeof *r->x, err);
        r->tmp = sq_malloc((size_t)(T * H) * sizeof *r->tmp, err);
        if (!r->x || !r->tmp) return SQ_ERR_NOMEM;
    }
    for (int l = 0; l < r->c->n_layers; l++) {
        int u = sq_model_ffn_units(m, l);
        if (u > r->max_units) r->max_units = u;
    }
    int64_t E = r->c->n_experts > 0 ? r->c->n_experts : 1;
    r->hs = sq_calloc((size_t)r->max_units, sizeof *r->hs, err);
    r->part = sq_calloc((size_t)r->max_units, sizeof *r->part, err);
    r->unit_tokens = sq_calloc((size_t)r->max_units, sizeof *r->unit_tokens, err);
    r->act_absmax = sq_calloc((size_t)r->max_units, sizeof *r->act_absmax, err);
    r->route_all = sq_calloc((size_t)E, 1, err);
    r->moe_tokens = sq_calloc((size_t)(E * r->c->n_layers), sizeof *r->moe_tokens, err);
    r->moe_all = sq_calloc((size_t)(E * r->c->n_layers), 1, err);
    if (!r->hs || !r->part || !r->unit_tokens || !r->act_absmax || !r->route_all || !r->moe_tokens || !r->moe_all) return SQ_ERR_NOMEM;
    if (sq_par_size() > 1 && !(r->need = sq_calloc((size_t)r->max_units, sizeof *r->need, err))) return SQ_ERR_NOMEM;
    if (o->calib) {
        if ((s = sq_state_new(&r->st, m, (int)T, (int)T, err))) return s;
        sq_state_route_all(r->st, r->route_all);
        for (int smp = 0; smp < r->o.nsamples; smp++) sq_model_embed(m, r->win + smp * T, (int)T, r->x + smp * T * H);
    }
    return SQ_OK;
}

void sq_calib_end(sq_calib *r) {
    free(r->hs);
    free(r->part);
    free(r->unit_tokens);
    free(r->act_absmax);
    free(r->route_all);
    free(r->moe_tokens);
    free(r->moe_all);
    free(r->x);
    free(r->tmp);
    free(r->win);
    free(r->ids);
    free(r->need);
    sq_state_free(r->st);
    sq_stats_free(&r->stats);
    memset(r, 0, sizeof *r);
}

/* `spotq calib`: block l of the full-precision model: every site of every unit collected and kept
 * (rarely routed experts calibrated on every token, as quantize does), then the block's outputs. */
static sq_status calib_block(sq_calib *r, sq_stats *out, int l, sq_err *err) {
    sq_calib_block_begin(r);
    sq_status s = SQ_OK;
    for (int si = 0; si < SQ_CALIB_NSTAGES && !s; si++) {
        bool ffn = stages[si].site == SQ_SITE_GATEUP || stages[si].site == SQ_SITE_DOWN;
        int units = ffn ? sq_model_ffn_units(r->m, l) : 1, group = sq_calib_unit_group(r, l, si, units), N = sq_par_size();
        for (int u = 0; u < units && r->need; u++) r->need[u] = u % N < 64 ? 1ULL << (u % N) : 0; /* MPI: unit u on rank u mod N */
        for (int u0 = 0; u0 < units && !s; u0 += group) {
            int u1 = u0 + group < units ? u0 + group : units;
            s = collect_group(r, l, si, units, u0, u1, err);
            for (int u = u0; u < u1 && !s && r->need; u++) { /* MPI: each Hessian from its rank to rank 0, which writes them */
                if (!r->hs[u].h && sq_par_root() && (s = sq_hessian_init(&r->hs[u], r->hs[u].k, err))) break;
                if (sq_par_root() || sq_par_mine(u)) sq_par_send(r->hs[u].h, r->hs[u].k * r->hs[u].k * (int64_t)sizeof(float), u % N, 0);
            }
            for (int u = u0; u < u1 && !s && sq_par_root(); u++)
                s = sq_stats_add(out, l, stages[si].site, u, r->hs[u].k, r->unit_tokens[u], r->act_absmax[u], r->hs[u].h, err);
            sq_calib_free_hessians(r);
        }
    }
    return s ? s : run_layer(r, l, true, NULL, NULL, err);
}

/* MPI: what each rank sent and where its time went, said by rank 0. */
static void par_summary(const sq_calib *r) {
    typedef struct { int64_t sent; double fwd, hess, wait; } par_row;
    int N = sq_par_size();
    par_row mine = {sq_par_bytes_sent(), r->t_forward, r->t_hessian, sq_par_wait_seconds()};
    int64_t *off = malloc((size_t)(N + 1) * sizeof *off);
    par_row *all = off ? sq_par_allgatherv(&mine, sizeof mine, off) : NULL;
    free(off);
    for (int q = 0; q < N && all && sq_par_root(); q++)
        sq_log(SQ_LOG_INFO, "MPI rank %d of %d: sent %.1f MiB, %.2f MiB per block (%d blocks); forward %.1f s, hessian %.1f s, in MPI calls %.1f s",
               q, N, (double)all[q].sent / 1048576.0, (double)all[q].sent / 1048576.0 / r->c->n_layers, r->c->n_layers, all[q].fwd,
               all[q].hess, all[q].wait);
    free(all);
}

sq_status sq_calib_collect(sq_model *m, const sq_calib_opts *o, sq_stats *st, sq_calib_progress_fn progress, void *progress_user,
                           sq_err *err) {
    double t0 = now();
    sq_calib cal = {0};
    sq_status s;
    memset(st, 0, sizeof *st);
    if (!o->calib) return sq_fail(err, SQ_ERR_ARG, "calibration statistics need --calib FILE (calibration text)");
    const sq_ckpt *ck = sq_model_ckpt(m);
    sq_calib_opts co = *o;
    co.absmax = true; /* kept for FP8's static scales */
    co.stats_in = NULL;
    if ((s = sq_calib_begin(&cal, m, &co, err))) goto done;
    const sq_config *c = cal.c;
    snprintf(st->arch, sizeof st->arch, "%s", sq_arch_name(c->arch));
    snprintf(st->calib, sizeof st->calib, "%s", o->calib);
    snprintf(st->hash, sizeof st->hash, "%016llx", (unsigned long long)cal.hash);
    st->hidden = c->hidden, st->n_layers = c->n_layers, st->vocab = c->vocab, st->n_experts = c->n_experts;
    st->text_tokens = cal.nids, st->nsamples = cal.o.nsamples, st->seqlen = cal.o.seqlen, st->seed = o->seed;
    if ((s = sq_par_start(SQ_OK, sq_ckpt_hash(ck, cal.hash), err))) goto done;
    if (sq_par_root()) { /* every statistic's room at once: growing by doubling would copy them over and over */
        int64_t n = 0;
        for (int l = 0; l < c->n_layers; l++)
            for (int si = 0; si < SQ_CALIB_NSTAGES; si++) {
                bool ffn = stages[si].site == SQ_SITE_GATEUP || stages[si].site == SQ_SITE_DOWN;
                for (int u = 0, units = ffn ? sq_model_ffn_units(m, l) : 1; u < units; u++) {
                    int64_t k = sq_model_linear_unit(m, l, u, stages[si].lin[0])->cols;
                    n += k * (k + 1) / 2;
                }
            }
        s = sq_stats_reserve(st, n, err);
    }
    for (int l = 0; l < c->n_layers && !s; l++) {
        s = sq_par_test_fault(l) ? sq_fail(err, SQ_ERR_INTERNAL, "test fault at block %d (SPOTQ_TEST_FAULT)", l) : calib_block(&cal, st, l, err);
        if (!s && progress) progress(progress_user, "calib", l + 1, c->n_layers, now() - t0);
    }
    if (!s && sq_par_size() > 1) par_summary(&cal);
    if (!s)
        sq_log(SQ_LOG_INFO, "kept %lld statistics (%.1f MiB of Hessians before compression) of %d x %d tokens in %.1f s", (long long)st->n,
               (double)st->data_len * 4.0 / 1048576.0, cal.o.nsamples, cal.o.seqlen, now() - t0);
done:
    sq_calib_end(&cal);
    if (s) sq_stats_free(st);
    return s;
}

sq_status sq_calib_model(const char *model, const char *out, bool force, const sq_calib_opts *o, int threads,
                         sq_calib_progress_fn progress, void *progress_user, sq_err *err) {
    sq_exec *ex = NULL;
    sq_model *m = NULL;
    sq_stats st = {0};
    sq_status s;
    if (!o->calib) return sq_fail(err, SQ_ERR_ARG, "calib needs --calib FILE (calibration text)");
    if ((s = sq_exec_new(&ex, "cpu", threads, err))) return s;
    if ((s = sq_model_open(&m, model, ex, err))) goto done;
    const sq_ckpt *ck = sq_model_ckpt(m);
    { /* the output is none of the inputs, holds none and lies in none: checked before anything is written */
        const char *in[] = {ck->dir, ck->weights_path, o->calib, NULL};
        const char *what[] = {"the model's directory", "the model's weights", "the calibration text", "the statistics file"};
        if ((s = sq_path_check_output(out, in, what, 4, err))) goto done;
        struct stat sb;
        if (!force && stat(out, &sb) == 0) {
            s = sq_fail(err, SQ_ERR_ARG, "%s: already exists (use --force to replace it)", out);
            goto done;
        }
    }
    sq_calib_opts co = *o;
    co.model = model;
    if ((s = sq_calib_collect(m, &co, &st, progress, progress_user, err))) goto done;
    if (sq_par_root()) s = sq_stats_write(&st, out, err); /* MPI: every rank holds every statistic; rank 0 writes them */
done:
    sq_stats_free(&st);
    sq_model_close(m);
    sq_exec_free(ex);
    return s;
}
