/* test_grid.c: the mse grid search (sq_grid_search) against brute force written here independently: the
 * least weighted error over its candidate set (recomputed in double from the rule in quant_internal.h),
 * and, symmetric, within a few percent of the least over every fp16 scale; never worse
 * than minmax; the importances steer it; RTN uses it per group, and GPTQ with diag(H) as the importances. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../quant/quant_internal.h"
#include "check.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* The error of (s, z) in double, round half to even, codes clamped to [0, maxq]. */
static double ref_err(const float *x, const float *d, int m, double s, int z, int maxq, double norm) {
    double acc = 0;
    for (int i = 0; i < m; i++) {
        double q = nearbyint((double)(x[i] / (float)s)) + z;
        q = q < 0 ? 0 : q > maxq ? maxq : q;
        double e = fabs(s * (q - z) - x[i]);
        acc += (d ? d[i] : 1.0) * (norm == 2 ? e * e : pow(e, norm));
    }
    return acc;
}

static float f16(double s) {
    float h = sq_f16_to_f32(sq_f32_to_f16((float)s));
    return h > 0 ? h : 5.9604645e-08f;
}

/* The search's candidate set, rewritten: the best error over it. */
static double ref_candidates(const float *x, const float *d, int m, int bits, bool sym, double norm) {
    int maxq = (1 << bits) - 1, half = (maxq + 1) / 2;
    float lo = 0, hi = 0, ext = 0;
    for (int i = 0; i < m; i++) {
        lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        if (fabsf(x[i]) > fabsf(ext)) ext = x[i];
    }
    float s0;
    int32_t z0;
    sq_grid_params(lo, hi, bits, sym, &s0, &z0); /* minmax: the reference quantizer, tested against numpy in test_gptq */
    double best = ref_err(x, d, m, s0, z0, maxq, norm);
    for (int i = 0; i < 80; i++) {
        double p = 1.0 - i / 100.0;
        float s;
        int32_t z;
        if (sym) {
            double e = ext < 0 ? -ext / (double)half : ext / (double)(half - 1);
            s = f16((float)p * (float)e);
            z = half;
        } else sq_grid_params((float)p * lo, (float)p * hi, bits, false, &s, &z);
        best = fmin(best, ref_err(x, d, m, s, z, maxq, norm));
    }
    return best;
}

/* The least error over every positive fp16 scale from amax / 64 to amax / (2^(b-1) - 1) (and every zero 1..maxq
 * when asymmetric). */
static double ref_global(const float *x, const float *d, int m, int bits, bool sym, double norm) {
    int maxq = (1 << bits) - 1;
    float amax = 0;
    for (int i = 0; i < m; i++) amax = fmaxf(amax, fabsf(x[i]));
    double best = INFINITY;
    for (uint16_t hb = sq_f32_to_f16(amax / 64); ; hb++) {
        float s = sq_f16_to_f32(hb);
        if (s > amax / (float)((maxq - 1) / 2) * 1.01f) break;
        for (int z = sym ? (maxq + 1) / 2 : 1; z <= (sym ? (maxq + 1) / 2 : maxq); z++) best = fmin(best, ref_err(x, d, m, s, z, maxq, norm));
    }
    return best;
}

int main(void) {
    float x[128], d[128];
    int n_strict = 0, trials = 0;
    double ratio_sum = 0;
    for (int t = 0; t < 240; t++) {
        int m = t % 3 == 0 ? 32 : t % 3 == 1 ? 64 : 128;
        int bits = t % 8 == 7 ? 8 : 4;
        bool sym = (t / 2) % 2, weighted = (t / 4) % 2;
        double norm = t % 5 == 4 ? 2.4 : 2;
        double shift = t % 6 == 5 ? 0.8 : 0; /* some groups mostly on one side of 0 */
        for (int i = 0; i < m; i++) {
            x[i] = (float)((nrand() + shift) * 0.02 * (i % 17 == 3 ? 4 : 1)); /* a few outliers */
            d[i] = (float)(weighted ? exp(2 * nrand()) : 1);
        }
        const float *dp = weighted ? d : NULL;
        float s;
        int32_t z;
        sq_grid_search(x, dp, m, bits, sym, norm, &s, &z);
        int maxq = (1 << bits) - 1;
        double got = ref_err(x, dp, m, s, z, maxq, norm), want = ref_candidates(x, dp, m, bits, sym, norm);
        CHECK(fabs(got - want) <= 1e-9 * want + 1e-30, "trial %d: search error %.9g, least over its candidates %.9g", t, got, want);
        CHECK(fabs(sq_grid_error(x, dp, m, s, z, maxq, norm) - got) <= 1e-5 * got + 1e-30, "trial %d: sq_grid_error", t);
        CHECK(s > 0 && s == sq_f16_to_f32(sq_f32_to_f16(s)), "trial %d: scale %g is not an fp16 value", t, s);
        CHECK(sym ? z == (maxq + 1) / 2 : z >= 1 && z <= maxq, "trial %d: zero %d", t, z);
        float lo = x[0], hi = x[0], s0;
        int32_t z0;
        for (int i = 1; i < m; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        sq_grid_params(lo, hi, bits, sym, &s0, &z0);
        double mm = ref_err(x, dp, m, s0, z0, maxq, norm);
        CHECK(got <= mm, "trial %d: search %.6g worse than minmax %.6g", t, got, mm);
        n_strict += got < mm * 0.999;
        /* Symmetric, the scale is all there is to choose: near the least over every fp16 scale (5%
         * unweighted; 25% with importances spread over e^(+-4), where the error is jagged in the scale
         * between the search's 1% steps), 2% on average. (Asymmetric, a zero chosen apart from the range
         * can do up to ~2x better on such groups: the reference's candidates shrink both ends together.) */
        if (bits == 4 && sym) {
            double g = ref_global(x, dp, m, bits, sym, norm);
            CHECK(g <= got * (1 + 1e-9) && got <= g * (weighted ? 1.25 : 1.05), "trial %d: search %.6g, global %.6g", t, got, g);
            ratio_sum += got / g;
            trials++;
        }
    }
    CHECK(n_strict > 150, "the search beat minmax in only %d of 240 groups", n_strict);
    CHECK(trials >= 50 && ratio_sum / trials < 1.02, "%d global comparisons, mean ratio %.4f", trials, ratio_sum / trials);
    printf("search / global optimum (sym, 4-bit): %.4f on average over %d groups\n", ratio_sum / trials, trials);

    /* The importances steer it: one column weighted 1e4 is kept nearly exact. */
    for (int i = 0; i < 32; i++) x[i] = (float)(0.01 * nrand()), d[i] = 1;
    x[5] = 0.0123f, x[9] = 0.05f, d[5] = 1e4f;
    float su, sw;
    int32_t zu, zw;
    sq_grid_search(x, NULL, 32, 4, false, 2, &su, &zu);
    sq_grid_search(x, d, 32, 4, false, 2, &sw, &zw);
    double eu = ref_err(x, d, 32, su, zu, 15, 2), ew = ref_err(x, d, 32, sw, zw, 15, 2);
    CHECK(ew < eu * 0.5, "weighted search %.3g vs unweighted %.3g on the weighted error", ew, eu);

    /* RTN with the mse grid: each group's scale and zero are sq_grid_search's, codes in range. */
    enum { N = 16, K = 64 };
    float w[N * K], imp[K];
    for (int i = 0; i < N * K; i++) w[i] = (float)(0.03 * nrand());
    for (int c = 0; c < K; c++) imp[c] = (float)exp(nrand());
    sq_qparams p = {.bits = 4, .group_size = 32, .sym = false, .grid = SQ_GRID_MSE};
    sq_qmatrix q;
    sq_err err = {0};
    CHECK_OK(sq_quant_rtn_weighted(w, N, K, &p, imp, &q, &err), &err);
    int bad = 0;
    for (int r = 0; r < N; r++)
        for (int g = 0; g < 2; g++) {
            float s;
            int32_t z;
            sq_grid_search(w + r * K + g * 32, imp + g * 32, 32, 4, false, 2, &s, &z);
            bad += s != q.scale[g * N + r] || z != q.zero[g * N + r];
            for (int c = g * 32; c < g * 32 + 32; c++) bad += q.q[c * N + r] != sq_grid_quant(w[r * K + c], s, z, 15);
        }
    CHECK(bad == 0, "%d RTN entries differ from the searched grid", bad);
    sq_qmatrix_free(&q);

    /* GPTQ with the mse grid weights by diag(H): with static groups every group's grid, and without
     * them the first group's (no update has reached it yet), is sq_grid_search of those columns of the
     * original W with diag(H) as the importances. */
    enum { T = 256 };
    float *xs = malloc(sizeof(float) * T * K), hd[K];
    sq_hessian hs;
    CHECK_OK(sq_hessian_init(&hs, K, &err), &err);
    for (int i = 0; i < T * K; i++) xs[i] = (float)(nrand() * exp(0.7 * nrand()));
    CHECK_OK(sq_hessian_add(&hs, xs, T, &err), &err);
    CHECK_OK(sq_hessian_finish(&hs, &err), &err);
    for (int c = 0; c < K; c++) hd[c] = hs.h[c * K + c];
    for (int stat = 0; stat < 2; stat++)
        for (int sym = 0; sym < 2; sym++) {
            sq_qparams pg = {.bits = 4, .group_size = 32, .sym = sym, .static_groups = stat, .damp = 0.01, .block_size = 128,
                             .grid = SQ_GRID_MSE};
            CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &pg, &q, &err), &err);
            int wrong = 0;
            for (int r = 0; r < N; r++)
                for (int g = 0; g < (stat ? 2 : 1); g++) {
                    float s;
                    int32_t z;
                    sq_grid_search(w + r * K + g * 32, hd + g * 32, 32, 4, sym, 2, &s, &z);
                    wrong += s != q.scale[g * N + r] || z != q.zero[g * N + r];
                }
            CHECK(wrong == 0, "GPTQ (static groups %d, sym %d): %d group grids are not the diag(H)-weighted search's", stat, sym, wrong);
            sq_qmatrix_free(&q);
        }
    /* act-order: the first group is the 32 columns of largest diag(H), weighted by theirs */
    int order[K];
    for (int c = 0; c < K; c++) order[c] = c;
    for (int i = 0; i < K; i++) /* descending, stable */
        for (int j = i + 1; j < K; j++)
            if (hd[order[j]] > hd[order[i]] || (hd[order[j]] == hd[order[i]] && order[j] < order[i])) {
                int t = order[i]; order[i] = order[j], order[j] = t;
            }
    sq_qparams pa = {.bits = 4, .group_size = 32, .sym = true, .act_order = true, .damp = 0.01, .block_size = 128, .grid = SQ_GRID_MSE};
    CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &pa, &q, &err), &err);
    int wrong = 0;
    for (int r = 0; r < N; r++) {
        float gx[32], gd[32], s;
        int32_t z;
        for (int i = 0; i < 32; i++) gx[i] = w[r * K + order[i]], gd[i] = hd[order[i]];
        sq_grid_search(gx, gd, 32, 4, true, 2, &s, &z);
        wrong += s != q.scale[r] || z != q.zero[r] || q.g_idx[order[0]] != 0;
    }
    CHECK(wrong == 0, "GPTQ act-order: %d first-group grids are not the search's over the columns of largest diag(H)", wrong);
    sq_qmatrix_free(&q);
    sq_hessian_free(&hs);
    free(xs);
    return check_report("test_grid");
}
