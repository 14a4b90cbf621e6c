/* test_awq.c: AWQ's scale search and clipping search against tests/fixtures/gen_awq.py, a numpy
 * reference written from AutoAWQ's algorithm: the same chosen alpha, scales within 1e-5 relative, the
 * same losses to 1e-4, and the clip ranges on >= 99% of (row, group) pairs; plus the AWQ grid. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/safetensors.h"
#include "../../quant/awq.h"
#include "check.h"

enum { T = 640, K = 128, N1 = 64, N2 = 96, GS = 32 };
static const sq_st *fx;
static const float *X, *W1, *W2;
static float *fp1, *fp2, *out;

static const void *get(const char *name) {
    const sq_tensor *t = sq_st_find(fx, name);
    if (!t) { fprintf(stderr, "fixture: no %s\n", name); exit(1); }
    return t->data;
}

/* The module's output: each linear applied to X, side by side; loss = MSE against full precision. */
typedef struct {
    int nl;
    int calls, full_calls;
    double sub[64], full[64];  /* each call's loss, by kind, in call order */
} set;
static double loss(void *user, float *const *weights, bool full) {
    set *st = user;
    int rows = full ? T : T / 4; /* the subsample: the first quarter of the tokens */
    const float *fps[2] = {fp1, fp2};
    const int ns[2] = {N1, N2};
    double acc = 0;
    int64_t count = 0;
    for (int i = 0; i < st->nl; i++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, ns[i], K, 1.0f, X, K, weights[i], K, 0.0f, out, ns[i]);
        for (int64_t j = 0; j < (int64_t)rows * ns[i]; j++) {
            double d = (double)fps[i][j] - out[j];
            acc += d * d;
        }
        count += (int64_t)rows * ns[i];
    }
    double l = acc / (double)count;
    if (st->calls < 64) {
        if (full) st->full[st->full_calls++] = l;
        else st->sub[st->calls - st->full_calls] = l;
        st->calls++;
    }
    return l;
}

static void check_search(const char *tag, int nl, bool duo) {
    char key[64];
    const float *ws[2] = {W1, W2};
    const int64_t ns[2] = {N1, N2};
    float x_mean[K], s[K];
    for (int c = 0; c < K; c++) {
        float a = 0;
        for (int t = 0; t < T; t++) a += fabsf(X[t * K + c]);
        x_mean[c] = a / (float)T;
    }
    sq_awq_params p = {.gs = GS, .bits = 4, .duo = duo};
    set st = {.nl = nl};
    double alpha, best;
    sq_err err = {0};
    CHECK_OK(sq_awq_search(ws, ns, nl, K, x_mean, &p, loss, &st, s, &alpha, &best, &err), &err);
    CHECK(st.calls == SQ_AWQ_GRID && st.full_calls == SQ_AWQ_GRID, "%s: %d losses, %d on every token", tag, st.calls, st.full_calls);
    /* the two-fidelity search: every alpha on the subsample, its 3 best on every token */
    sq_awq_params p3 = p;
    p3.rescore = 3;
    set s3 = {.nl = nl};
    float sc3[K];
    double alpha3, best3;
    CHECK_OK(sq_awq_search(ws, ns, nl, K, x_mean, &p3, loss, &s3, sc3, &alpha3, &best3, &err), &err);
    CHECK(s3.calls == SQ_AWQ_GRID + 3 && s3.full_calls == 3, "%s rescore 3: %d losses, %d on every token", tag, s3.calls, s3.full_calls);
    int top[3], nt = 0;
    for (int gi = 0; gi < SQ_AWQ_GRID; gi++) { /* the 3 least subsample losses, in grid order */
        int below = 0;
        for (int j = 0; j < SQ_AWQ_GRID; j++) below += s3.sub[j] < s3.sub[gi] || (s3.sub[j] == s3.sub[gi] && j < gi);
        if (below < 3) top[nt++] = gi;
    }
    int want = -1;
    for (int i = 0; i < 3 && nt == 3; i++)
        if (want < 0 || st.full[top[i]] < st.full[want]) want = top[i];
    CHECK(nt == 3 && alpha3 == want / 20.0 && best3 == st.full[want], "%s rescore 3: alpha %.2f (loss %.6g), want %.2f", tag, alpha3, best3,
          want / 20.0);
    snprintf(key, sizeof key, "%s.alpha", tag);
    double ra = *(const double *)get(key);
    CHECK(alpha == ra, "%s: alpha %.2f, reference %.2f", tag, alpha, ra);
    snprintf(key, sizeof key, "%s.scales", tag);
    const float *rs = get(key);
    double worst = 0;
    for (int c = 0; c < K; c++) worst = fmax(worst, fabs((double)s[c] - rs[c]) / fabs((double)rs[c]));
    CHECK(worst <= 1e-5, "%s: scales differ by %.3g relative", tag, worst);
    snprintf(key, sizeof key, "%s.losses", tag);
    const double *rl = get(key);
    CHECK(fabs(best - rl[(int)lround(ra * 20)]) <= 1e-4 * rl[(int)lround(ra * 20)], "%s: loss %.6g vs %.6g", tag, best,
          rl[(int)lround(ra * 20)]);
}

int main(void) {
    sq_err err = {0};
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, "tests/fixtures/awq/awq.safetensors", &err), &err);
    if (!st) return check_report("test_awq");
    fx = st;
    X = get("x");
    W1 = get("w1");
    W2 = get("w2");
    fp1 = malloc(sizeof(float) * T * N1);
    fp2 = malloc(sizeof(float) * T * N2);
    out = malloc(sizeof(float) * T * N2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N1, K, 1.0f, X, K, W1, K, 0.0f, fp1, N1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N2, K, 1.0f, X, K, W2, K, 0.0f, fp2, N2);
    check_search("one_duo", 1, true);
    check_search("two_duo", 2, true);
    check_search("one_plain", 1, false);
    check_search("two_plain", 2, false);

    /* clipping on the duo-scaled single linear */
    const float *s = get("one_duo.scales"), *rmax = get("clip.max_val");
    float *w = malloc(sizeof(float) * N1 * K), *x = malloc(sizeof(float) * T * K), mv[N1 * (K / GS)];
    for (int r = 0; r < N1; r++)
        for (int c = 0; c < K; c++) w[r * K + c] = W1[r * K + c] * s[c];
    for (int t = 0; t < T; t++)
        for (int c = 0; c < K; c++) x[t * K + c] = X[t * K + c] / s[c];
    CHECK_OK(sq_awq_clip(w, N1, K, GS, 4, x, T, 1, mv, &err), &err);
    int same = 0;
    for (int i = 0; i < N1 * (K / GS); i++) same += fabsf(mv[i] - rmax[i]) <= 1e-6f * fabsf(rmax[i]);
    CHECK(same >= 0.99 * N1 * (K / GS), "clip: %d of %d ranges agree", same, N1 * (K / GS));
    int clipped = 0;
    for (int r = 0; r < N1; r++)
        for (int c = 0; c < K; c++) clipped += fabsf(w[r * K + c]) <= mv[r * (K / GS) + c / GS] * (1 + 1e-6f) ? 0 : 1;
    CHECK(clipped == 0, "%d weights outside their clip range", clipped);

    /* the grid: codes in range, dequantised error at most half a step, zero never 0 with v1_safe */
    sq_qmatrix q;
    CHECK_OK(sq_awq_quantize(w, N1, K, GS, 4, true, &q, &err), &err);
    float *dq = malloc(sizeof(float) * N1 * K);
    sq_qmatrix_dequant(&q, dq);
    double worst = 0;
    int zero0 = 0;
    for (int r = 0; r < N1; r++)
        for (int c = 0; c < K; c++) worst = fmax(worst, fabs(dq[r * K + c] - w[r * K + c]) / q.scale[(c / GS) * N1 + r]);
    for (int i = 0; i < q.n_groups * N1; i++) zero0 += q.zero[i] == 0;
    /* half a step, plus what the fp16 rounding of the scale moves the top of a 15-step range */
    CHECK(worst <= 0.5 + 15 * 0x1p-11 + 1e-4, "grid error %.4f steps", worst);
    CHECK(zero0 == 0, "%d zeros of 0 with v1_safe", zero0);
    sq_qmatrix_free(&q);
    free(dq);
    free(w);
    free(x);
    free(fp1);
    free(fp2);
    free(out);
    sq_st_close(st);
    return check_report("test_awq");
}
