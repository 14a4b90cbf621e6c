/* awq.c: AWQ's grid, scale search and clipping search on plain float matrices. */
#include "awq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/dtype.h"
#include "../kernels/backend.h"
#include "../kernels/qmath.h"

void sq_awq_fake_quant(float *w, int64_t n, int64_t k, int gs, int bits) {
    int maxq = (1 << bits) - 1;
    if (gs <= 0) gs = (int)k;
    for (int64_t r = 0; r < n; r++)
        for (int64_t c0 = 0; c0 < k; c0 += gs) {
            float *g = w + r * k + c0;
            float lo = g[0], hi = g[0];
            for (int i = 1; i < gs; i++) { lo = fminf(lo, g[i]); hi = fmaxf(hi, g[i]); }
            float s, z;
            sq_qm_awq_grid(lo, hi, maxq, &s, &z);
            for (int i = 0; i < gs; i++) g[i] = sq_qm_awq_fq(g[i], s, z, maxq);
        }
}

sq_status sq_awq_quantize(const float *w, int64_t n, int64_t k, int gs, int bits, bool v1_safe, sq_qmatrix *out, sq_err *err) {
    sq_status st = sq_qmatrix_alloc(out, n, k, bits, gs, err);
    if (st) return st;
    int maxq = (1 << bits) - 1;
    int64_t g = gs > 0 ? gs : k;
    for (int64_t c = 0; c < k; c++) out->g_idx[c] = (int32_t)(c / g);
    for (int64_t r = 0; r < n; r++)
        for (int64_t gi = 0; gi < out->n_groups; gi++) {
            const float *x = w + r * k + gi * g;
            float lo = x[0], hi = x[0];
            for (int64_t i = 1; i < g; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
            float s, z;
            sq_qm_awq_grid(lo, hi, maxq, &s, &z);
            if (v1_safe && z == 0) { /* the group is >= 0 up to s/2: one step below 0 keeps it covered */
                z = 1;
                s = fmaxf(hi, 1e-5f) / (float)(maxq - 1);
            }
            /* the file's fp16 scale is what the codes (and the zero) are made with */
            s = sq_f16_to_f32(sq_f32_to_f16(s));
            if (!(s > 0)) s = 5.9604645e-08f;
            if (!(v1_safe && z == 1)) {
                z = -nearbyintf(lo / s);
                z = z < 0 ? 0 : z > (float)maxq ? (float)maxq : z;
                if (v1_safe && z == 0) z = 1;
            }
            out->scale[gi * n + r] = s;
            out->zero[gi * n + r] = (int32_t)z;
            for (int64_t i = 0; i < g; i++) {
                float q = nearbyintf(x[i] / s) + z;
                out->q[(gi * g + i) * n + r] = (uint8_t)(q < 0 ? 0 : q > (float)maxq ? (float)maxq : q);
            }
        }
    return SQ_OK;
}

void sq_awq_w_mean(const float *const *ws, const int64_t *ns, int nl, int64_t k, int gs, float *w_mean) {
    if (gs <= 0) gs = (int)k;
    double *acc = calloc((size_t)k, sizeof *acc);
    int64_t rows = 0;
    if (!acc) return;
    for (int li = 0; li < nl; li++) {
        for (int64_t r = 0; r < ns[li]; r++)
            for (int64_t c0 = 0; c0 < k; c0 += gs) {
                const float *g = ws[li] + r * k + c0;
                float mx = 0;
                for (int i = 0; i < gs; i++) mx = fmaxf(mx, fabsf(g[i]));
                for (int i = 0; i < gs; i++) acc[c0 + i] += fabsf(g[i]) / (mx + 1e-6f);
            }
        rows += ns[li];
    }
    for (int64_t c = 0; c < k; c++) w_mean[c] = (float)(acc[c] / (double)rows);
    free(acc);
}

void sq_awq_scales(const float *x_mean, const float *w_mean, int64_t k, double alpha, bool duo, float *s) {
    float mx = -INFINITY, mn = INFINITY;
    for (int64_t c = 0; c < k; c++) {
        float v = powf(x_mean[c], (float)alpha);
        if (duo) v = v / (powf(w_mean[c], (float)(1.0 - alpha)) + 1e-4f);
        v = fmaxf(v, 1e-4f);
        s[c] = v;
        mx = fmaxf(mx, v);
        mn = fminf(mn, v);
    }
    float norm = sqrtf(mx * mn);
    for (int64_t c = 0; c < k; c++) {
        s[c] /= norm;
        if (!isfinite(s[c])) s[c] = 1;
    }
}

/* The set's weights for grid point alpha into tmp: Q(W diag(s)) diag(s)^-1, s the scales of alpha. */
static sq_status awq_candidate(const float *const *ws, const int64_t *ns, int nl, int64_t k, const float *x_mean, const float *w_mean,
                               const sq_awq_params *p, double alpha, float *s, float **tmp, sq_err *err) {
    sq_awq_scales(x_mean, w_mean, k, alpha, p->duo, s);
    sq_status st = SQ_OK;
    for (int i = 0; i < nl && !st; i++) st = sq_backend_cpu()->awq_candidate(ws[i], s, ns[i], k, p->gs, p->bits, p->threads, tmp[i], err);
    return st;
}

sq_status sq_awq_search(const float *const *ws, const int64_t *ns, int nl, int64_t k, const float *x_mean, const sq_awq_params *p,
                        sq_awq_loss_fn loss, void *user, float *best_scales, double *best_alpha, double *best_loss, sq_err *err) {
    float *w_mean = malloc((size_t)k * sizeof *w_mean), *s = malloc((size_t)k * sizeof *s);
    float **tmp = calloc((size_t)nl, sizeof *tmp); /* a mixture's gate/up set holds every expert's two */
    sq_status st = SQ_OK;
    bool ok = w_mean && s && tmp;
    for (int i = 0; i < nl && ok; i++) ok = (tmp[i] = malloc((size_t)(ns[i] * k) * sizeof(float))) != NULL;
    if (!ok) { st = sq_fail(err, SQ_ERR_NOMEM, "AWQ: out of memory"); goto done; }
    sq_awq_w_mean(ws, ns, nl, k, p->gs, w_mean);
    *best_loss = INFINITY;
    *best_alpha = -1;
    /* Every grid point on the subsample (rescore > 0) or on everything; then the rescore best of the
     * subsample on everything, in grid order (the first wins a tie). */
    double sub[SQ_AWQ_GRID];
    bool full[SQ_AWQ_GRID];
    int rescore = p->rescore > 0 ? (p->rescore < SQ_AWQ_GRID ? p->rescore : SQ_AWQ_GRID) : 0;
    for (int gi = 0; gi < SQ_AWQ_GRID; gi++) {
        double alpha = gi / (double)SQ_AWQ_GRID;
        if ((st = awq_candidate(ws, ns, nl, k, x_mean, w_mean, p, alpha, s, tmp, err))) goto done;
        double l = loss(user, tmp, rescore == 0);
        if (!isfinite(l)) { st = sq_fail(err, SQ_ERR_NUMERIC, "AWQ: the scale search loss is not finite (alpha %.2f)", alpha); goto done; }
        sub[gi] = l;
        full[gi] = false;
        if (rescore == 0 && l < *best_loss) {
            *best_loss = l;
            *best_alpha = alpha;
            memcpy(best_scales, s, (size_t)k * sizeof *s);
        }
    }
    for (int n = 0; n < rescore; n++) { /* the n-th least subsample loss (the lower alpha on ties) */
        int pick = -1;
        for (int gi = 0; gi < SQ_AWQ_GRID; gi++)
            if (!full[gi] && (pick < 0 || sub[gi] < sub[pick])) pick = gi;
        full[pick] = true;
    }
    for (int gi = 0; gi < SQ_AWQ_GRID && rescore; gi++) {
        if (!full[gi]) continue;
        double alpha = gi / (double)SQ_AWQ_GRID;
        if ((st = awq_candidate(ws, ns, nl, k, x_mean, w_mean, p, alpha, s, tmp, err))) goto done;
        double l = loss(user, tmp, true);
        if (!isfinite(l)) { st = sq_fail(err, SQ_ERR_NUMERIC, "AWQ: the scale search loss is not finite (alpha %.2f)", alpha); goto done; }
        if (l < *best_loss) {
            *best_loss = l;
            *best_alpha = alpha;
            memcpy(best_scales, s, (size_t)k * sizeof *s);
        }
    }
done:
    for (int i = 0; i < nl && tmp; i++) free(tmp[i]);
    free(tmp);
    free(w_mean);
    free(s);
    return st;
}

sq_status sq_awq_clip(float *w, int64_t n, int64_t k, int gs, int bits, const float *x, int64_t t, int threads, float *max_val, sq_err *err) {
    return sq_backend_cpu()->awq_clip(w, n, k, gs, bits, x, t, threads, max_val, err);
}
