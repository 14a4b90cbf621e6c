/* test_gptq.c: RTN and GPTQ against the reference in tests/fixtures/gen_gptq.py (IST-DASLab's
 * algorithm in numpy): same codes for >= 99.9% of entries (RTN: all), output error within 1%, on the
 * integer grids and on FP8 E4M3; the Hessian accumulator against X; degenerate inputs without NaN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/safetensors.h"
#include "../../quant/fp8.h"
#include "../../quant/quant.h"
#include "check.h"

#include "fixture.h"

static const sq_st *fx;

static const void *get(const char *name, sq_dtype dt, int64_t numel) { return fixture_get(fx, name, dt, numel); }

static int64_t N = 96, K = 256, T = 384;

static void check_config(const char *name, int bits, int gs, bool sym, bool act, bool stat, const float *w, const float *h) {
    char key[64];
    sq_qparams p = {.bits = bits, .group_size = gs, .sym = sym, .act_order = act, .static_groups = stat, .damp = 0.01, .block_size = 128};
    int64_t ng = gs > 0 ? K / gs : 1;
    sq_err err = {0};
    sq_qmatrix m;
    /* GPTQ */
    CHECK_OK(sq_quant_gptq(w, h, N, K, &p, &m, &err), &err);
    snprintf(key, sizeof key, "%s.q", name);
    const uint8_t *rq = get(key, SQ_DT_U8, N * K);
    int64_t same = 0;
    for (int64_t i = 0; i < N * K; i++) same += m.q[i] == rq[i];
    double agree = (double)same / (double)(N * K);
    CHECK(agree >= 0.999, "%s: GPTQ codes agree on %.4f%%", name, 100 * agree);
    snprintf(key, sizeof key, "%s.g_idx", name);
    CHECK(memcmp(m.g_idx, get(key, SQ_DT_I32, K), (size_t)K * 4) == 0, "%s: g_idx", name);
    float *dq = malloc((size_t)(N * K) * sizeof *dq);
    sq_qmatrix_dequant(&m, dq);
    double e = sq_quant_output_error(w, dq, h, N, K, 1);
    snprintf(key, sizeof key, "%s.err", name);
    double re = *(const double *)get(key, SQ_DT_F64, 1);
    CHECK(fabs(e - re) <= 0.01 * re, "%s: GPTQ output error %.6f vs reference %.6f", name, e, re);
    for (int64_t i = 0; i < N * K; i++)
        if (!isfinite(dq[i])) { CHECK(0, "%s: non-finite weight", name); break; }
    for (int64_t i = 0; i < ng * N; i++)
        if (!sym && m.zero[i] < 1) { CHECK(0, "%s: asymmetric zero %d < 1", name, m.zero[i]); break; }
    double gptq_err = e;
    sq_qmatrix_free(&m);
    /* RTN: exact */
    CHECK_OK(sq_quant_rtn(w, N, K, &p, &m, &err), &err);
    snprintf(key, sizeof key, "%s.rtn_q", name);
    CHECK(memcmp(m.q, get(key, SQ_DT_U8, N * K), (size_t)(N * K)) == 0, "%s: RTN codes", name);
    snprintf(key, sizeof key, "%s.rtn_scale", name);
    CHECK(memcmp(m.scale, get(key, SQ_DT_F32, ng * N), (size_t)(ng * N) * 4) == 0, "%s: RTN scales", name);
    snprintf(key, sizeof key, "%s.rtn_zero", name);
    CHECK(memcmp(m.zero, get(key, SQ_DT_I32, ng * N), (size_t)(ng * N) * 4) == 0, "%s: RTN zeros", name);
    sq_qmatrix_dequant(&m, dq);
    e = sq_quant_output_error(w, dq, h, N, K, 1);
    snprintf(key, sizeof key, "%s.rtn_err", name);
    re = *(const double *)get(key, SQ_DT_F64, 1);
    CHECK(fabs(e - re) <= 1e-3 * re, "%s: RTN output error %.6f vs reference %.6f", name, e, re);
    CHECK(gptq_err < e, "%s: GPTQ error %.5f not below RTN %.5f", name, gptq_err, e);
    sq_qmatrix_free(&m);
    free(dq);
}

/* GPTQ on E4M3 with the scales of plain rounding, per tensor or per row. */
static void check_fp8(const char *name, bool per_channel, bool act, const float *w, const float *h) {
    char key[64];
    int64_t ns = per_channel ? N : 1;
    sq_err err = {0};
    uint8_t *codes = malloc((size_t)(N * K));
    float *scales = malloc((size_t)N * sizeof *scales), *dq = malloc((size_t)(N * K) * sizeof *dq);
    CHECK_OK(sq_fp8_quantize(w, N, K, per_channel, 0, codes, scales, name, &err), &err);
    snprintf(key, sizeof key, "%s.rtn_q", name);
    CHECK(memcmp(codes, get(key, SQ_DT_U8, N * K), (size_t)(N * K)) == 0, "%s: round-to-nearest codes", name);
    snprintf(key, sizeof key, "%s.scale", name);
    CHECK(memcmp(scales, get(key, SQ_DT_F32, ns), (size_t)ns * 4) == 0, "%s: scales", name);
    sq_fp8_dequant(codes, scales, N, K, per_channel, dq);
    double rtn_err = sq_quant_output_error(w, dq, h, N, K, 1);
    double damp;
    CHECK_OK(sq_fp8_gptq(w, h, N, K, per_channel, scales, act, 0.01, 1, codes, &damp, NULL, &err), &err);
    CHECK(damp == 0.01, "%s: damping %g", name, damp);
    snprintf(key, sizeof key, "%s.q", name);
    const uint8_t *rq = get(key, SQ_DT_U8, N * K);
    int64_t same = 0;
    for (int64_t i = 0; i < N * K; i++) same += codes[i] == rq[i];
    double agree = (double)same / (double)(N * K);
    CHECK(agree >= 0.999, "%s: GPTQ codes agree on %.4f%%", name, 100 * agree);
    sq_fp8_dequant(codes, scales, N, K, per_channel, dq);
    double e = sq_quant_output_error(w, dq, h, N, K, 1);
    snprintf(key, sizeof key, "%s.err", name);
    double re = *(const double *)get(key, SQ_DT_F64, 1);
    CHECK(fabs(e - re) <= 0.01 * re, "%s: GPTQ output error %.6f vs reference %.6f", name, e, re);
    snprintf(key, sizeof key, "%s.rtn_err", name);
    double rre = *(const double *)get(key, SQ_DT_F64, 1);
    CHECK(fabs(rtn_err - rre) <= 1e-3 * rre, "%s: RTN output error %.6f vs reference %.6f", name, rtn_err, rre);
    CHECK(e < 0.8 * rtn_err, "%s: GPTQ error %.5f not well below RTN %.5f", name, e, rtn_err);
    free(codes);
    free(scales);
    free(dq);
}

static void test_hessian(const float *x, const float *h_ref) {
    sq_hessian hs;
    sq_err err = {0};
    CHECK_OK(sq_hessian_init(&hs, K, &err), &err);
    for (int64_t b = 0; b < T; b += 100) CHECK_OK(sq_hessian_add(&hs, x + b * K, b + 100 <= T ? 100 : T - b, &err), &err);
    CHECK_OK(sq_hessian_finish(&hs, &err), &err);
    double maxrel = 0, scale = 0;
    for (int64_t i = 0; i < K * K; i++) scale = fmax(scale, fabs(h_ref[i]));
    for (int64_t i = 0; i < K * K; i++) maxrel = fmax(maxrel, fabs(hs.h[i] - h_ref[i]) / scale);
    CHECK(maxrel < 1e-5, "Hessian differs from the reference by %.3g (relative to max)", maxrel);
    CHECK(hs.tokens == T, "token count");
    sq_hessian_free(&hs);
}

/* One calibration token, a dead channel, an all-zero Hessian: no NaN, no crash. */
static void test_degenerate(const float *w) {
    sq_qparams p = {.bits = 4, .group_size = 32, .sym = false, .act_order = true, .damp = 0.01, .block_size = 128};
    sq_hessian hs;
    sq_err err = {0};
    float *x = calloc((size_t)K, sizeof *x);
    for (int64_t c = 0; c < K; c++) x[c] = c % 7 == 0 ? 0.0f : (float)sin((double)c);
    sq_hessian_init(&hs, K, &err);
    CHECK_OK(sq_hessian_add(&hs, x, 1, &err), &err);
    CHECK_OK(sq_hessian_finish(&hs, &err), &err);
    sq_qmatrix m;
    CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &p, &m, &err), &err);
    float *dq = malloc((size_t)(N * K) * sizeof *dq);
    if (m.q) {
        sq_qmatrix_dequant(&m, dq);
        int bad = 0;
        for (int64_t i = 0; i < N * K; i++) bad += !isfinite(dq[i]);
        CHECK(bad == 0, "1-token calibration: %d non-finite weights", bad);
        sq_qmatrix_free(&m);
    }
    memset(hs.h, 0, (size_t)(K * K) * sizeof *hs.h); /* no signal at all: every column dead */
    CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &p, &m, &err), &err);
    if (m.q) {
        sq_qmatrix_dequant(&m, dq);
        int bad = 0;
        for (int64_t i = 0; i < N * K; i++) bad += !isfinite(dq[i]);
        CHECK(bad == 0, "all-zero Hessian: %d non-finite weights", bad);
        sq_qmatrix_free(&m);
    }
    /* A Hessian that cannot factor (NaN inside) falls back to RTN, flagged. */
    for (int64_t i = 0; i < K * K; i++) hs.h[i] = (i % (K + 1)) ? 0.0f : 1.0f;
    hs.h[5 * K + 5] = NAN;
    CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &p, &m, &err), &err);
    CHECK(m.fallback == 1, "NaN Hessian: RTN fallback flagged");
    sq_qmatrix_free(&m);
    /* ...and on E4M3 leaves the round-to-nearest codes as they were, saying so with damp -1. */
    uint8_t *codes = malloc((size_t)(N * K)), *rtn = malloc((size_t)(N * K));
    float scale;
    double damp;
    CHECK_OK(sq_fp8_quantize(w, N, K, false, 0, codes, &scale, "W", &err), &err);
    memcpy(rtn, codes, (size_t)(N * K));
    CHECK_OK(sq_fp8_gptq(w, hs.h, N, K, false, &scale, true, 0.01, 1, codes, &damp, NULL, &err), &err);
    CHECK(damp == -1 && memcmp(codes, rtn, (size_t)(N * K)) == 0, "NaN Hessian, FP8: damp %g, codes changed", damp);
    free(codes);
    free(rtn);
    free(dq);
    free(x);
    sq_hessian_free(&hs);
}

int main(void) {
    sq_err err = {0};
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, "tests/fixtures/gptq/gptq.safetensors", &err), &err);
    if (!st) return check_report("test_gptq");
    fx = st;
    const float *w = get("W", SQ_DT_F32, N * K), *h = get("H", SQ_DT_F32, K * K), *x = get("X", SQ_DT_F32, T * K);
    check_config("g32_act", 4, 32, false, true, false, w, h);
    check_config("g32_sym", 4, 32, true, false, false, w, h);
    check_config("g128_act_static", 4, 128, true, true, true, w, h);
    check_config("pc_asym", 4, -1, false, false, false, w, h);
    check_config("b8_g64_act", 8, 64, false, true, false, w, h);
    check_fp8("fp8_tensor", false, false, w, h);
    check_fp8("fp8_channel_act", true, true, w, h);
    test_hessian(x, h);
    test_degenerate(w);
    sq_st_close(st);
    return check_report("test_gptq");
}
