/* test_smooth.c: SmoothQuant's arithmetic (quant/smooth.h). The scales equal the paper's formula
 * computed here apart in double (s_j = max|x_j|^a / max_i |W_ij|^(1-a) over every linear of the set,
 * with llm-compressor's guards: s = max|x| where a column's weights are all zero, floor 1e-5), and
 * folding them into a block of the bundled model (input_layernorm / q, k, v and
 * post_attention_layernorm / gate, up, with scales from that block's own activations) leaves the
 * block's full-precision output unchanged to float tolerance, while the norms and weights did change. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../quant/smooth.h"
#include "../../runtime/runtime.h"
#include "check.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(void) { /* [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0));
}

/* The formula, apart from the library's loops. */
static double ref_scale(const float *xmax, const float *const *w, const int64_t *rows, int nl, int64_t k, int64_t j, double a) {
    double wm = 0;
    for (int i = 0; i < nl; i++)
        for (int64_t r = 0; r < rows[i]; r++) wm = fmax(wm, fabs((double)w[i][r * k + j]));
    double s = wm > 0 ? exp(a * log(fmax(xmax[j], 1e-300)) - (1 - a) * log(wm)) : xmax[j];
    if (xmax[j] == 0 && wm > 0) s = a == 0 ? 1 / pow(wm, 1 - a) : 0;
    return fmax(s, 1e-5);
}

static void scales_formula(void) {
    enum { K = 40, NL = 3 };
    int64_t rows[NL] = {7, 5, 9};
    float *w[NL], xmax[K], s[K];
    for (int i = 0; i < NL; i++) {
        w[i] = malloc((size_t)(rows[i] * K) * sizeof(float));
        for (int64_t e = 0; e < rows[i] * K; e++) w[i][e] = (urand() - 0.5f) * (1 + 20 * (e % 11 == 0));
    }
    for (int j = 0; j < K; j++) xmax[j] = urand() * (j % 7 == 0 ? 60 : 3);
    for (int i = 0; i < NL; i++) /* column 3: every weight zero (s = max|x|); column 5: no activation (the floor) */
        for (int64_t r = 0; r < rows[i]; r++) w[i][r * K + 3] = 0;
    xmax[5] = 0;
    double alphas[] = {0.5, 0.8, 0.0, 1.0};
    for (int t = 0; t < 4; t++) {
        sq_smooth_scales(xmax, K, (const float *const *)w, rows, NL, alphas[t], s);
        double worst = 0;
        for (int j = 0; j < K; j++) {
            double ref = ref_scale(xmax, (const float *const *)w, rows, NL, K, j, alphas[t]);
            worst = fmax(worst, fabs(s[j] - ref) / ref);
        }
        CHECK(worst < 2e-6, "alpha %g: the scales differ from the formula by %g (relative)", alphas[t], worst);
        CHECK(s[3] == xmax[3], "alpha %g: a zero column's scale %g, want max|x| %g", alphas[t], s[3], xmax[3]);
        CHECK(alphas[t] == 0 || s[5] == 1e-5f, "alpha %g: a silent channel's scale %g, want the floor 1e-5", alphas[t], s[5]);
    }
    for (int i = 0; i < NL; i++) free(w[i]);
}

/* max |x| per channel at the q/k/v and gate/up sites of a dense block. */
static bool tap(void *user, sq_site site, int unit, const float *x, int n, int dim) {
    float *v = user;
    if (unit || (site != SQ_SITE_QKV && site != SQ_SITE_GATEUP)) return false;
    float *m = v + (site == SQ_SITE_GATEUP) * dim;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < dim; j++) m[j] = fmaxf(m[j], fabsf(x[r * dim + j]));
    return false;
}

static void block_unchanged(sq_exec *ex) {
    sq_err err = {0};
    sq_model *m = NULL;
    sq_state *st = NULL;
    CHECK_OK(sq_model_open(&m, "models/stories260K", ex, &err), &err);
    if (!m) return;
    CHECK_OK(sq_state_new(&st, m, 64, 0, &err), &err);
    const sq_config *c = sq_model_config(m);
    int L = c->n_layers;
    int64_t H = c->hidden, T = 64;
    int ids[64];
    for (int i = 0; i < T; i++) ids[i] = i ? (int)(urand() * 500) + 3 : 1;
    float *x = malloc((size_t)(T * H) * sizeof *x), *y0 = malloc((size_t)(T * H) * sizeof *y0), *y1 = malloc((size_t)(T * H) * sizeof *y1);
    float *xmax = calloc((size_t)(2 * H), sizeof *xmax), *s = malloc((size_t)H * sizeof *s);
    float *wf[SQ_LIN_COUNT] = {0}, **held = calloc((size_t)c->n_layers * SQ_LIN_COUNT, sizeof *held);
    sq_model_embed(m, ids, (int)T, x);
    for (int l = 0; l < c->n_layers; l++) { /* every block on the previous one's outputs */
        for (int j = 0; j < SQ_LIN_COUNT; j++) { /* the linears as floats the fold may change */
            const sq_wmat *wm = sq_model_linear(m, l, (sq_lin)j);
            wf[j] = malloc((size_t)(wm->rows * wm->cols) * sizeof(float));
            sq_dtype_to_f32(wm->dtype, wm->data, wf[j], (size_t)(wm->rows * wm->cols));
            sq_wmat w = {.dtype = SQ_DT_F32, .rows = wm->rows, .cols = wm->cols, .data = wf[j]};
            CHECK_OK(sq_model_set_linear(m, l, (sq_lin)j, &w, &err), &err);
        }
        memcpy(y0, x, (size_t)(T * H) * sizeof *x);
        memset(xmax, 0, (size_t)(2 * H) * sizeof *xmax);
        CHECK_OK(sq_layer_forward(st, l, y0, (int)T, tap, xmax, &err), &err);
        float g0[2] = {sq_model_norm(m, l, 0)[0], sq_model_norm(m, l, 1)[0]}, w0 = wf[SQ_LIN_GATE][0];
        double smin = INFINITY, smax = 0;
        for (int set = 0; set < 2; set++) {
            float *ws[3] = {wf[SQ_LIN_Q], wf[SQ_LIN_K], wf[SQ_LIN_V]};
            int64_t rows[3] = {sq_model_linear(m, l, SQ_LIN_Q)->rows, sq_model_linear(m, l, SQ_LIN_K)->rows, sq_model_linear(m, l, SQ_LIN_V)->rows};
            if (set) ws[0] = wf[SQ_LIN_GATE], ws[1] = wf[SQ_LIN_UP], rows[0] = sq_model_linear(m, l, SQ_LIN_GATE)->rows, rows[1] = sq_model_linear(m, l, SQ_LIN_UP)->rows;
            sq_smooth_scales(xmax + set * H, H, (const float *const *)ws, rows, set ? 2 : 3, 0.5, s);
            for (int64_t j = 0; j < H; j++) smin = fmin(smin, s[j]), smax = fmax(smax, s[j]);
            sq_smooth_fold(sq_model_norm(m, l, set), ws, rows, set ? 2 : 3, H, s);
        }
        CHECK(smax > 1.05 * smin, "block %d: the scales are all alike (%g .. %g): the fold would test nothing", l, smin, smax);
        CHECK(sq_model_norm(m, l, 0)[0] != g0[0] && sq_model_norm(m, l, 1)[0] != g0[1] && wf[SQ_LIN_GATE][0] != w0,
              "block %d: the fold changed no norm or weight", l);
        memcpy(y1, x, (size_t)(T * H) * sizeof *x);
        CHECK_OK(sq_layer_forward(st, l, y1, (int)T, NULL, NULL, &err), &err);
        double dmax = 0, ymax = 0;
        for (int64_t i = 0; i < T * H; i++) dmax = fmax(dmax, fabs((double)y1[i] - y0[i])), ymax = fmax(ymax, fabs((double)y0[i]));
        CHECK(dmax <= 1e-5 * ymax, "block %d: smoothing changed the output by %g of %g", l, dmax, ymax);
        memcpy(x, y0, (size_t)(T * H) * sizeof *x);
        for (int j = 0; j < SQ_LIN_COUNT; j++) held[l * SQ_LIN_COUNT + j] = wf[j], wf[j] = NULL; /* in use by the model until it closes */
    }
    free(x), free(y0), free(y1), free(xmax), free(s);
    sq_state_free(st);
    sq_model_close(m);
    for (int i = 0; i < L * SQ_LIN_COUNT; i++) free(held[i]);
    free(held);
}

int main(void) {
    sq_log_set(NULL, NULL, SQ_LOG_ERROR);
    sq_exec *ex = NULL;
    sq_err err = {0};
    CHECK_OK(sq_exec_new(&ex, "cpu", 1, &err), &err);
    scales_formula();
    block_unchanged(ex);
    sq_exec_free(ex);
    return check_report("test_smooth");
}
