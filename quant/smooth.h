/* smooth.h: SmoothQuant (Xiao et al., 2022), the migration of activation outliers into the weights
 * before W8A8 quantisation: per input channel j of linears that share one input (q/k/v after
 * input_layernorm; gate/up after post_attention_layernorm, for a mixture every expert's and the shared
 * expert's, with the router and shared-expert gate compensated), s_j = max|x_j|^alpha / max|W_:j|^(1-alpha),
 * the norm divided by s and the linears' columns multiplied by s: the full-precision function is
 * unchanged and the activations are flatter for their per-token INT8 grid. The arithmetic here (scales,
 * fold) is plain; the block hook that runs it on a quantize run is sq_smooth_block (smooth.c), used by
 * the int8 rows (method_int8.c). */
#ifndef SQ_SMOOTH_H
#define SQ_SMOOTH_H

#include "qrun.h"

#define SQ_SMOOTH_DEFAULT_ALPHA 0.5  /* the paper's and llm-compressor's smoothing_strength default */
#define SQ_SMOOTH_MIN_SCALE 1e-5f    /* llm-compressor's MINIMUM_SMOOTHING_SCALE */

/* s (k) of channels whose activations reach xmax (k, max |x| over the calibration tokens) into the nl
 * linears w[i] (rows[i], k): s_j = xmax_j^alpha / wmax_j^(1-alpha), wmax_j = max over every linear and
 * row of |w[i][r, j]|; s_j = xmax_j where wmax_j is 0; at least SQ_SMOOTH_MIN_SCALE. */
void sq_smooth_scales(const float *xmax, int64_t k, const float *const *w, const int64_t *rows, int nl, double alpha, float *s /* OUT (k) */);
/* norm (k) /= s, each w[i] (rows[i], k): column j *= s_j. */
void sq_smooth_fold(float *norm, float *const *w, const int64_t *rows, int nl, int64_t k, const float *s);

/* One site's smoothing over a run, for spotq.json: how many blocks were smoothed there, the range of s,
 * the largest max |x|, and the largest over blocks of max_j a_j / mean_j a_j of the channels' max |x|
 * before (a_j = xmax_j) and after (a_j = xmax_j / s_j) smoothing. */
typedef struct {
    int blocks;
    double s_min, s_max, xmax;
    double spread_before, spread_after;
} sq_smooth_site;

/* A run's smoothing (method_int8.c holds one when --smoothquant is given). */
typedef struct sq_smooth {
    double alpha;
    float **wf;                  /* (max_units, SQ_LIN_COUNT) the block's smoothed weights (F32), in use by the model until quantised */
    float *router[2];            /* the compensated router and shared-expert gate, in use by the model */
    sq_smooth_site site[2];      /* q/k/v, gate/up */
    double fold_max;             /* the largest relative change smoothing made to a block's output (window 0, full precision) */
    double router_fold_max;      /* ...and to a router's logits */
} sq_smooth;

sq_status sq_smooth_new(sq_smooth **out, const sq_qrun *r, sq_err *err);
void sq_smooth_free(sq_smooth *sm, const sq_qrun *r);
/* Block l's smoothing, before its stages: the per-channel max |x| at its q/k/v and gate/up sites over
 * every calibration window (the block in full precision, its inputs those the run has made so far),
 * then each site's scales folded (a set with a kept linear is left as it is), checked to leave the
 * block's output and a mixture's router logits unchanged. */
sq_status sq_smooth_block(sq_qrun *r, sq_smooth *sm, int l, sq_err *err);
/* After block l's stages: its norms and (a mixture's) routers into the output, in the source's dtypes. */
sq_status sq_smooth_write_block(sq_qrun *r, sq_smooth *sm, int l, sq_err *err);
/* The source tensors smoothing changes, which sq_smooth_write_block writes instead of the copy. */
bool sq_smooth_writes_tensor(const char *name);

#endif
