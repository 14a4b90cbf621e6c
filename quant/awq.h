/* awq.h: activation-aware weight quantisation (Lin et al. 2024) as AutoAWQ does it: per-input-channel
 * scales searched on a grid of 20 exponents, folded into the preceding norm or linear, then a clipping
 * search per output row and group, then the zero-point grid. W is [N, K] row-major. */
#ifndef SQ_AWQ_H
#define SQ_AWQ_H

#include "quant.h"

/* The AWQ grid: per group of gs columns, scale = max(max - min, 1e-5) / (2^bits - 1),
 * zero = clamp(-round(min / scale), 0, 2^bits - 1); w <- (clamp(round(w / scale) + zero) - zero) * scale. */
void sq_awq_fake_quant(float *w, int64_t n, int64_t k, int gs, int bits);

/* RTN on the AWQ grid into the neutral integer form; scales rounded to fp16 first. With v1_safe, a
 * zero of 0 becomes 1 (GPTQ v1 stores zero - 1; see FORMATS.md). */
sq_status sq_awq_quantize(const float *w, int64_t n, int64_t k, int gs, int bits, bool v1_safe, sq_qmatrix *out /* OUT */, sq_err *err);

/* The mean over rows of |w| / (the max |w| of its group + 1e-6), for the linears of one scale set
 * stacked ([sum n, k]); w_mean (k). */
void sq_awq_w_mean(const float *const *ws, const int64_t *ns, int nl, int64_t k, int gs, float *w_mean);

/* Scales of one grid point: duo ? x_mean^a / (w_mean^(1-a) + 1e-4) : x_mean^a, clamped to >= 1e-4, then
 * divided by sqrt(max * min); non-finite entries become 1. */
void sq_awq_scales(const float *x_mean, const float *w_mean, int64_t k, double alpha, bool duo, float *s);

/* The search: for alpha = 0, 1/20, ..., 19/20, each linear becomes Q(W diag(s)) diag(s)^-1 and
 * `loss` runs the scale set's module on them (weights[i] is linear i, [ns[i], k]) and returns the MSE
 * against the full-precision output: on every calibration token (full) or on a subsample. Picks the
 * least loss (the first on ties). With rescore = R > 0, every alpha is scored on the subsample and the
 * R best of those again on every token, the least of which is picked; 0: every alpha on every token
 * (AutoAWQ's search). */
#define SQ_AWQ_GRID 20
#define SQ_AWQ_RESCORE 2 /* --awq-search-tokens: the subsample's best rescored on every token */
typedef double (*sq_awq_loss_fn)(void *user, float *const *weights, bool full);
typedef struct {
    int gs, bits;
    bool duo;
    int rescore;
    int threads;                 /* of the candidates' fake quantisation (the same values for every count) */
} sq_awq_params;
sq_status sq_awq_search(const float *const *ws, const int64_t *ns, int nl, int64_t k, const float *x_mean, const sq_awq_params *p,
                        sq_awq_loss_fn loss, void *user, float *best_scales /* OUT (k) */, double *best_alpha /* OUT */,
                        double *best_loss /* OUT */, sq_err *err);

/* Clipping search for w [n, k] (already scaled) with inputs x [t, k] (at most 512 tokens are used,
 * every t/512-th): per row and group, max |w| shrunk by (1 - i/20), i = 0..9, keeping the least error
 * of the group's output; w is clamped to the chosen range in place. max_val (n, k / gs) may be NULL.
 * The CPU backend's awq_clip on `threads` threads (the same bits for every count). */
sq_status sq_awq_clip(float *w, int64_t n, int64_t k, int gs, int bits, const float *x, int64_t t, int threads, float *max_val /* OUT */,
                      sq_err *err);

#endif
