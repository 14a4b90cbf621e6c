/* test_fp8.c: FP8 E4M3 weights and activations against the peers.
 * (1) For each fixture matrix and scheme (tests/fixtures/peers/spotq_fp8.safetensors holds the source
 *     weights; `test_fp8 --write FILE` rewrites it), spotq's scales and codes equal what
 *     compressed-tensors computes from the same weights (calculate_qparams, FloatQuantizationCompressor
 *     .compress), and the weights the CPU kernels execute (fast and reference) equal its decompress of
 *     spotq's tensors, bit for bit: tests/fixtures/peers/peer_fp8.safetensors, written by
 *     scripts/check_peers.py.
 * (2) Activations put through E4M3 (static scale, per token, per tensor) equal torch's float8 cast
 *     under vLLM's formula, bit for bit (same golden file); the AVX2 version equals the scalar one.
 * (3) The fast FP8 matmul (GEMV and tiled sgemm) agrees with the scalar reference for every scheme.
 * (4) NaN weights are an error naming the tensor; zeros and a shared scale behave.
 * (5) Block-wise (128 x 128, edge blocks short): spotq's block scales and codes of the sources in
 *     tests/fixtures/peers/spotq_fp8_block.safetensors (`test_fp8 --write-block FILE` rewrites it) equal
 *     compressed-tensors' calculate_qparams over each zero-padded block and its FloatQuantizationCompressor
 *     .compress with strategy "block"; the kernels execute its decompress bit for bit; activations per
 *     token and group of 128 equal torch under vLLM's per_token_group_quant_fp8 formula
 *     (tests/fixtures/peers/peer_fp8_block.safetensors, written by scripts/check_peers.py). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../formats/safetensors.h"
#include "../../kernels/cpu/cpu.h"
#include "../../quant/fp8.h"
#include "check.h"

#define SPOTQ_FIXTURE "tests/fixtures/peers/spotq_fp8.safetensors"
#define PEER_FIXTURE "tests/fixtures/peers/peer_fp8.safetensors"
#define SPOTQ_BLOCK_FIXTURE "tests/fixtures/peers/spotq_fp8_block.safetensors"
#define PEER_BLOCK_FIXTURE "tests/fixtures/peers/peer_fp8_block.safetensors"
static const struct { const char *name; int64_t n, k; } bmats[] = {{"c", 200, 300}, {"d", 136, 128}};
#define GACT_K 256

static const struct { const char *name; int64_t n, k; } mats[] = {{"a", 96, 256}, {"b", 172, 64}};
static const char *schemes[] = {"tensor", "channel"};
#define ACT_T 6
#define ACT_K 172
static const float STATIC_SCALE = 0.0123f;

/* ---------------------------------------------------------------- fixture sources (--write only) */

static uint64_t rng = 0x5eed5eedULL;
static double urand(void) { /* splitmix64 -> (0, 1) */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return ((double)((z ^ (z >> 31)) >> 11) + 0.5) * 0x1p-53;
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

/* Rows of different magnitudes (so per channel differs from per tensor); row 0 has max 448 and exact
 * ties (E4M3 midpoints at scale 1); row 1 is zero; row 2 is tiny (subnormal E4M3 at the tensor scale). */
static void make_source(int64_t n, int64_t k, float *w) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) w[r * k + j] = nrand() * ldexpf(1.0f, (int)(r % 9) - 4) * (1.0f + (float)r / (float)n);
    static const float ties[] = {448.0f, 1.0625f, -1.1875f, 17.0f, -19.0f, 0.5625f, 0x1.8p-9f, 0x1.8p-8f, 0x1p-10f, 232.0f, -0.0f};
    for (size_t i = 0; i < sizeof ties / sizeof *ties; i++) w[i] = ties[i];
    for (int64_t j = 0; j < k; j++) {
        w[k + j] = 0;
        w[2 * k + j] *= 1e-4f;
    }
}

/* Activations: ordinary rows, a zero row (the dynamic floor), outliers past the static range (saturate),
 * tiny values (subnormals), -0. */
static void make_acts(float *x) {
    for (int t = 0; t < ACT_T; t++)
        for (int j = 0; j < ACT_K; j++) x[t * ACT_K + j] = nrand() * (t == 3 ? 1e-3f : t == 4 ? 8.0f : 1.0f);
    for (int j = 0; j < ACT_K; j++) x[2 * ACT_K + j] = 0;
    x[4 * ACT_K + 5] = 1e4f;
    x[4 * ACT_K + 6] = -7.5f;
    x[5 * ACT_K] = -0.0f;
    x[5 * ACT_K + 1] = 1e-30f;
}

/* ---------------------------------------------------------------- helpers */

static const sq_tensor *find(const sq_st *st, const char *a, const char *b, const char *c) {
    char key[160];
    snprintf(key, sizeof key, "%s%s%s", a, b, c);
    const sq_tensor *t = sq_st_find(st, key);
    CHECK(t != NULL, "missing fixture tensor %s (make check-peers)", key);
    return t;
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* The weights the kernel executes, (n, k) floats: the matmul applied to the identity. */
static sq_status executed_weights(sq_kctx *c, const sq_wmat *w, bool ref, float *out, sq_err *err) {
    int64_t n = w->rows, k = w->cols;
    float *eye = calloc((size_t)(k * k), sizeof *eye), *y = malloc((size_t)(k * n) * sizeof *y);
    for (int64_t j = 0; j < k; j++) eye[j * k + j] = 1;
    sq_status s = ref ? sq_cpu_f8matmul_ref(c, w, NULL, eye, y, (int)k, err) : sq_cpu_f8matmul(c, w, NULL, eye, y, (int)k, err);
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < k; j++) out[r * k + j] = y[j * n + r];
    free(eye);
    free(y);
    return s;
}

/* ---------------------------------------------------------------- (1) weights */

static void test_weights(const sq_st *src, const sq_st *peer, sq_kctx *fast, sq_kctx *ref) {
    sq_err err = {0};
    for (size_t mi = 0; mi < sizeof mats / sizeof *mats; mi++)
        for (int sc = 0; sc < 2; sc++) {
            int64_t n = mats[mi].n, k = mats[mi].k, ns = sc ? n : 1;
            char pre[32];
            snprintf(pre, sizeof pre, "%s.%s.", mats[mi].name, schemes[sc]);
            const sq_tensor *w = find(src, mats[mi].name, ".source", ""), *cw = find(peer, pre, "ct_weight", ""),
                            *cs = find(peer, pre, "ct_weight_scale", ""), *cf = find(peer, pre, "ct_f32", "");
            if (!w || !cw || !cs || !cf) continue;
            CHECK(cw->numel == n * k && cs->numel == ns && cf->numel == n * k, "%s: fixture shapes", pre);
            uint8_t *codes = malloc((size_t)(n * k));
            float *scale = malloc((size_t)ns * sizeof *scale), *got = malloc((size_t)(n * k) * sizeof *got);
            CHECK_OK(sq_fp8_quantize(w->data, n, k, sc == 1, 0, codes, scale, pre, &err), &err);
            CHECK(memcmp(scale, cs->data, (size_t)ns * 4) == 0, "%s: scales differ from compressed-tensors' calculate_qparams", pre);
            size_t bad = 0;
            for (int64_t i = 0; i < n * k; i++) bad += codes[i] != ((const uint8_t *)cw->data)[i];
            CHECK(bad == 0, "%s: %zu of %lld codes differ from compressed-tensors' compress", pre, bad, (long long)(n * k));
            sq_fp8weight f = {.scale = scale, .per_channel = sc == 1, .act = SQ_FP8_ACT_NONE};
            sq_wmat wm = {.dtype = SQ_DT_F8_E4M3, .rows = n, .cols = k, .data = codes, .f8 = &f};
            for (int r = 0; r < 2; r++) { /* by value: the matmul's sums turn -0 into +0 */
                CHECK_OK(executed_weights(r ? ref : fast, &wm, r, got, &err), &err);
                bad = 0;
                for (int64_t i = 0; i < n * k; i++) bad += got[i] != ((const float *)cf->data)[i];
                CHECK(bad == 0, "%s: %zu of the %s kernel's weights differ from compressed-tensors' decompress", pre, bad,
                      r ? "reference" : "fast");
            }
            sq_fp8_dequant(codes, scale, n, k, sc == 1, got);
            CHECK(memcmp(got, cf->data, (size_t)(n * k) * 4) == 0, "%s: sq_fp8_dequant differs from compressed-tensors' decompress", pre);
            free(codes);
            free(scale);
            free(got);
        }
}

/* ---------------------------------------------------------------- (2) activations */

static void test_acts(const sq_st *src, const sq_st *peer) {
    const sq_tensor *x = find(src, "act.x", "", "");
    static const struct { const char *name; sq_fp8_act act; } cases[] = {
        {"act.torch_static", SQ_FP8_ACT_STATIC}, {"act.torch_token", SQ_FP8_ACT_DYNAMIC_TOKEN}, {"act.torch_tensor", SQ_FP8_ACT_DYNAMIC_TENSOR}};
    if (!x) return;
    float *a = malloc(sizeof(float) * ACT_T * ACT_K), *b = malloc(sizeof(float) * ACT_T * ACT_K);
    for (size_t i = 0; i < 3; i++) {
        const sq_tensor *want = find(peer, cases[i].name, "", "");
        sq_fp8weight f = {.act = cases[i].act, .input_scale = STATIC_SCALE};
        sq_cpu_fp8_act_ref(&f, x->data, a, ACT_T, ACT_K);
        sq_cpu_fp8_act(&f, x->data, b, ACT_T, ACT_K);
        CHECK(memcmp(a, b, sizeof(float) * ACT_T * ACT_K) == 0, "%s: the AVX2 activations differ from the scalar ones", cases[i].name);
        if (!want) continue;
        size_t bad = 0;
        for (int j = 0; j < ACT_T * ACT_K; j++)
            if (bits(a[j]) != bits(((const float *)want->data)[j]) && bad++ < 3)
                fprintf(stderr, "  %s[%d]: x %.9g -> %.9g, torch %.9g\n", cases[i].name, j, (double)((const float *)x->data)[j], (double)a[j],
                        (double)((const float *)want->data)[j]);
        CHECK(bad == 0, "%s: %zu activations differ from torch's float8 cast under vLLM's formula", cases[i].name, bad);
    }
    /* The AVX2 rounding over many more values: every f32 pattern on a stride, through a scale of 1. */
    sq_fp8weight f = {.act = SQ_FP8_ACT_STATIC, .input_scale = 1.0f};
    enum { CH = 4096 };
    float *in = malloc(sizeof(float) * CH), *r1 = malloc(sizeof(float) * CH), *r2 = malloc(sizeof(float) * CH);
    size_t bad = 0;
    for (uint64_t u = 0; u <= 0xFFFFFFFFu;) {
        int m = 0;
        for (; m < CH && u <= 0xFFFFFFFFu; m++, u += 1021) {
            uint32_t v = (uint32_t)u;
            memcpy(&in[m], &v, 4);
            if (isnan(in[m])) in[m] = 0; /* NaN: both give 448, but not as a bit pattern worth comparing */
        }
        sq_cpu_fp8_act_ref(&f, in, r1, 1, m);
        sq_cpu_fp8_act(&f, in, r2, 1, m);
        for (int j = 0; j < m; j++) bad += bits(r1[j]) != bits(r2[j]);
    }
    CHECK(bad == 0, "AVX2 E4M3 rounding differs from the scalar one on %zu of 4.2 million floats", bad);
    free(in);
    free(r1);
    free(r2);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- (3) kernels */

/* fast (2 threads) against the reference, and bit for bit against one thread. */
static void test_kernels(sq_kctx *fast, sq_kctx *one, sq_kctx *ref) {
    sq_err err = {0};
    const int64_t shapes[][2] = {{96, 256}, {172, 64}, {64, 172}, {33, 7}, {300, 1000}};
    const sq_fp8_act acts[] = {SQ_FP8_ACT_NONE, SQ_FP8_ACT_STATIC, SQ_FP8_ACT_DYNAMIC_TOKEN, SQ_FP8_ACT_DYNAMIC_TENSOR};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int64_t n = shapes[si][0], k = shapes[si][1];
        float *w = malloc((size_t)(n * k) * sizeof *w), *scale = malloc((size_t)n * sizeof *scale), *bias = malloc((size_t)n * sizeof *bias);
        uint8_t *codes = malloc((size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) w[i] = nrand();
        for (int64_t i = 0; i < n; i++) bias[i] = 0.1f * nrand();
        for (int pc = 0; pc < 2; pc++) {
            CHECK_OK(sq_fp8_quantize(w, n, k, pc, 0, codes, scale, "kernels", &err), &err);
            for (size_t ai = 0; ai < 4; ai++) {
                sq_fp8weight f = {.scale = scale, .per_channel = pc, .act = acts[ai], .input_scale = 0.02f};
                sq_wmat wm = {.dtype = SQ_DT_F8_E4M3, .rows = n, .cols = k, .data = codes, .f8 = &f};
                const int ns[] = {1, 3, 9, 200};
                for (int ni = 0; ni < 4; ni++) {
                    int t = ns[ni];
                    float *x = malloc((size_t)(t * k) * sizeof *x), *y1 = malloc((size_t)(t * n) * sizeof *y1),
                          *y2 = malloc((size_t)(t * n) * sizeof *y2);
                    for (int64_t i = 0; i < t * k; i++) x[i] = nrand() * (i % 17 == 0 ? 10.0f : 1.0f);
                    CHECK_OK(sq_cpu_matmul(fast, &wm, bias, x, y1, t, &err), &err);
                    CHECK_OK(sq_cpu_matmul(one, &wm, bias, x, y2, t, &err), &err);
                    CHECK(memcmp(y1, y2, (size_t)(t * n) * sizeof *y1) == 0, "matmul %lldx%lld %s act %d n=%d: 2 threads differ from 1",
                          (long long)n, (long long)k, pc ? "channel" : "tensor", (int)acts[ai], t);
                    CHECK_OK(sq_cpu_matmul_ref(ref, &wm, bias, x, y2, t, &err), &err);
                    double worst = 0, mag = 0;
                    for (int64_t i = 0; i < t * n; i++) {
                        worst = fmax(worst, fabs((double)y1[i] - y2[i]));
                        mag = fmax(mag, fabs((double)y2[i]));
                    }
                    CHECK(worst <= 1e-5 * (mag + 1), "matmul %lldx%lld %s act %d n=%d: fast differs from the reference by %.3g (scale %.3g)",
                          (long long)n, (long long)k, pc ? "channel" : "tensor", (int)acts[ai], t, worst, mag);
                    free(x);
                    free(y1);
                    free(y2);
                }
            }
        }
        free(w);
        free(scale);
        free(bias);
        free(codes);
    }
}

/* ---------------------------------------------------------------- (4) edge cases */

static void test_edges(void) {
    sq_err err = {0};
    float w[6] = {1, 2, 3, 0, 0, 0}, s[2];
    uint8_t q[6];
    w[4] = NAN;
    CHECK(sq_fp8_quantize(w, 2, 3, false, 0, q, s, "m: tensor 'x.weight'", &err) == SQ_ERR_NUMERIC &&
              strstr(err.msg, "m: tensor 'x.weight' has a NaN or Inf at element 4 (row 1, column 1)"),
          "NaN: %s", err.msg);
    w[4] = INFINITY;
    CHECK(sq_fp8_quantize(w, 2, 3, true, 0, q, s, "inf", &err) == SQ_ERR_NUMERIC, "Inf is an error");
    float z[4] = {0, -0.0f, 0, 0};
    CHECK_OK(sq_fp8_quantize(z, 2, 2, true, 0, q, s, "zeros", &err), &err);
    CHECK(s[0] == FLT_EPSILON && s[1] == FLT_EPSILON && q[0] == 0 && q[1] == 0x80, "zeros: scale eps, codes +-0");
    float v[2] = {1.0f, -2.0f};
    CHECK_OK(sq_fp8_quantize(v, 1, 2, false, 448.0f, q, s, "shared", &err), &err);
    CHECK(s[0] == 1.0f && q[0] == sq_f32_to_e4m3(1.0f) && q[1] == sq_f32_to_e4m3(-2.0f), "a shared absmax sets the scale");
    CHECK(sq_fp8_scale(448.0f) == 1.0f && sq_fp8_scale(0) == FLT_EPSILON, "sq_fp8_scale");
    /* dynamic: an all-zero token takes vLLM's floor, and stays zero */
    float x[4] = {0}, out[4];
    sq_fp8weight f = {.act = SQ_FP8_ACT_DYNAMIC_TOKEN};
    sq_cpu_fp8_act(&f, x, out, 1, 4);
    CHECK(out[0] == 0 && out[3] == 0, "zero token");
}

/* ---------------------------------------------------------------- (5) block-wise */

static void test_block(const sq_st *src, const sq_st *peer, sq_kctx *fast, sq_kctx *ref) {
    sq_err err = {0};
    for (size_t mi = 0; mi < sizeof bmats / sizeof *bmats; mi++) {
        int64_t n = bmats[mi].n, k = bmats[mi].k, ns = ((n + 127) / 128) * ((k + 127) / 128);
        char pre[32];
        snprintf(pre, sizeof pre, "%s.block.", bmats[mi].name);
        const sq_tensor *w = find(src, bmats[mi].name, ".source", ""), *cw = find(peer, pre, "ct_weight", ""),
                        *cs = find(peer, pre, "ct_weight_scale", ""), *cf = find(peer, pre, "ct_f32", "");
        if (!w || !cw || !cs || !cf) continue;
        CHECK(cw->numel == n * k && cs->numel == ns && cs->ndim == 2 && cs->shape[0] == (n + 127) / 128 && cf->numel == n * k, "%s: fixture shapes", pre);
        uint8_t *codes = malloc((size_t)(n * k));
        float *scale = malloc((size_t)ns * sizeof *scale), *got = malloc((size_t)(n * k) * sizeof *got);
        CHECK_OK(sq_fp8_quantize_block(w->data, n, k, codes, scale, pre, &err), &err);
        CHECK(memcmp(scale, cs->data, (size_t)ns * 4) == 0, "%s: block scales differ from compressed-tensors' calculate_qparams", pre);
        size_t bad = 0;
        for (int64_t i = 0; i < n * k; i++) bad += codes[i] != ((const uint8_t *)cw->data)[i];
        CHECK(bad == 0, "%s: %zu of %lld codes differ from compressed-tensors' compress (strategy block)", pre, bad, (long long)(n * k));
        sq_fp8weight f = {.scale = scale, .act = SQ_FP8_ACT_NONE, .block_n = 128, .block_k = 128};
        sq_wmat wm = {.dtype = SQ_DT_F8_E4M3, .rows = n, .cols = k, .data = codes, .f8 = &f};
        for (int r = 0; r < 2; r++) { /* the kernels applied to the identity (weight-only: x as given) */
            float *eye = calloc((size_t)(k * k), sizeof *eye), *y = malloc((size_t)(k * n) * sizeof *y);
            for (int64_t j = 0; j < k; j++) eye[j * k + j] = 1;
            CHECK_OK(r ? sq_cpu_fp8b_matmul_ref(ref, &wm, NULL, eye, y, (int)k, &err) : sq_cpu_fp8b_matmul(fast, &wm, NULL, eye, y, (int)k, &err), &err);
            bad = 0;
            for (int64_t row = 0; row < n; row++)
                for (int64_t j = 0; j < k; j++) bad += y[j * n + row] != ((const float *)cf->data)[row * k + j];
            CHECK(bad == 0, "%s: %zu of the %s block kernel's weights differ from compressed-tensors' decompress", pre, bad, r ? "reference" : "fast");
            free(eye);
            free(y);
        }
        sq_fp8_dequant_block(codes, scale, n, k, got);
        bad = 0;
        for (int64_t i = 0; i < n * k; i++) bad += got[i] != ((const float *)cf->data)[i];
        CHECK(bad == 0, "%s: sq_fp8_dequant_block differs from compressed-tensors' decompress on %zu values", pre, bad);
        free(codes);
        free(scale);
        free(got);
    }
    const sq_tensor *x = find(src, "act.", "x_group", ""), *want = find(peer, "act.", "torch_group", "");
    if (x && want && x->numel == ACT_T * GACT_K && want->numel == x->numel) {
        float out[ACT_T * GACT_K];
        sq_fp8weight f = {.act = SQ_FP8_ACT_DYNAMIC_GROUP, .block_n = 128, .block_k = 128};
        sq_cpu_fp8b_act_ref(&f, x->data, out, ACT_T, GACT_K);
        size_t bad = 0;
        for (int i = 0; i < ACT_T * GACT_K; i++) bad += bits(out[i]) != bits(((const float *)want->data)[i]);
        CHECK(bad == 0, "activations per token group: %zu values differ from vLLM's per_token_group_quant_fp8 in torch", bad);
    }
}

/* The end of both --write fixtures: the file completed, or (s an error) removed, the message printed. */
static int finish_fixture(sq_stw *w, sq_status s, sq_err *err) {
    if (s) {
        sq_stw_abort(w);
        fprintf(stderr, "%s\n", err->msg);
        return 1;
    }
    if (sq_stw_finish(w, err)) { fprintf(stderr, "%s\n", err->msg); return 1; }
    return 0;
}

static int write_block_fixture(const char *path) {
    sq_err err = {0};
    sq_stw *w = NULL;
    if (sq_stw_open(&w, path, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    sq_status s = SQ_OK;
    for (size_t mi = 0; mi < sizeof bmats / sizeof *bmats && !s; mi++) {
        int64_t n = bmats[mi].n, k = bmats[mi].k, shape[2] = {n, k}, sshape[2] = {(n + 127) / 128, (k + 127) / 128};
        float *src = malloc((size_t)(n * k) * sizeof *src), *scale = malloc((size_t)(sshape[0] * sshape[1]) * sizeof *scale);
        uint8_t *codes = malloc((size_t)(n * k));
        make_source(n, k, src);
        char key[64];
        snprintf(key, sizeof key, "%s.source", bmats[mi].name);
        s = sq_stw_add(w, key, SQ_DT_F32, 2, shape, src, &err);
        if (!s && !(s = sq_fp8_quantize_block(src, n, k, codes, scale, key, &err))) {
            snprintf(key, sizeof key, "%s.block.weight", bmats[mi].name);
            s = sq_stw_add(w, key, SQ_DT_F8_E4M3, 2, shape, codes, &err);
            snprintf(key, sizeof key, "%s.block.weight_scale", bmats[mi].name);
            if (!s) s = sq_stw_add(w, key, SQ_DT_F32, 2, sshape, scale, &err);
        }
        free(src);
        free(scale);
        free(codes);
    }
    float x[ACT_T * GACT_K], y[ACT_T * GACT_K];
    int64_t xs[2] = {ACT_T, GACT_K};
    for (int t = 0; t < ACT_T; t++) /* ordinary groups, a zero group (the 1e-10 floor), outliers, tiny values, -0 */
        for (int j = 0; j < GACT_K; j++) x[t * GACT_K + j] = nrand() * (t == 3 ? 1e-3f : t == 4 ? 8.0f : 1.0f);
    for (int j = 0; j < 128; j++) x[2 * GACT_K + j] = 0;
    x[4 * GACT_K + 5] = 1e4f;
    x[5 * GACT_K] = -0.0f;
    x[5 * GACT_K + 1] = 1e-30f;
    sq_fp8weight f = {.act = SQ_FP8_ACT_DYNAMIC_GROUP, .block_n = 128, .block_k = 128};
    sq_cpu_fp8b_act_ref(&f, x, y, ACT_T, GACT_K);
    if (!s) s = sq_stw_add(w, "act.x_group", SQ_DT_F32, 2, xs, x, &err);
    if (!s) s = sq_stw_add(w, "act.spotq_group", SQ_DT_F32, 2, xs, y, &err);
    return finish_fixture(w, s, &err);
}

/* ---------------------------------------------------------------- --write */

static int write_fixture(const char *path) {
    sq_err err = {0};
    sq_stw *w = NULL;
    if (sq_stw_open(&w, path, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    sq_status s = SQ_OK;
    for (size_t mi = 0; mi < sizeof mats / sizeof *mats && !s; mi++) {
        int64_t n = mats[mi].n, k = mats[mi].k, shape[2] = {n, k};
        float *src = malloc((size_t)(n * k) * sizeof *src), *scale = malloc((size_t)n * sizeof *scale);
        uint8_t *codes = malloc((size_t)(n * k));
        make_source(n, k, src);
        char key[64];
        snprintf(key, sizeof key, "%s.source", mats[mi].name);
        s = sq_stw_add(w, key, SQ_DT_F32, 2, shape, src, &err);
        for (int sc = 0; sc < 2 && !s; sc++) {
            int64_t sshape[2] = {sc ? n : 1, 1};
            if (!(s = sq_fp8_quantize(src, n, k, sc == 1, 0, codes, scale, key, &err))) {
                snprintf(key, sizeof key, "%s.%s.weight", mats[mi].name, schemes[sc]);
                s = sq_stw_add(w, key, SQ_DT_F8_E4M3, 2, shape, codes, &err);
            }
            snprintf(key, sizeof key, "%s.%s.weight_scale", mats[mi].name, schemes[sc]);
            if (!s) s = sq_stw_add(w, key, SQ_DT_F32, sc ? 2 : 1, sshape, scale, &err);
        }
        free(src);
        free(scale);
        free(codes);
    }
    float x[ACT_T * ACT_K], y[ACT_T * ACT_K];
    int64_t xs[2] = {ACT_T, ACT_K}, one = 1;
    make_acts(x);
    if (!s) s = sq_stw_add(w, "act.x", SQ_DT_F32, 2, xs, x, &err);
    if (!s) s = sq_stw_add(w, "act.static_scale", SQ_DT_F32, 1, &one, &STATIC_SCALE, &err);
    static const struct { const char *name; sq_fp8_act act; } cases[] = {
        {"act.spotq_static", SQ_FP8_ACT_STATIC}, {"act.spotq_token", SQ_FP8_ACT_DYNAMIC_TOKEN}, {"act.spotq_tensor", SQ_FP8_ACT_DYNAMIC_TENSOR}};
    for (size_t i = 0; i < 3 && !s; i++) {
        sq_fp8weight f = {.act = cases[i].act, .input_scale = STATIC_SCALE};
        sq_cpu_fp8_act_ref(&f, x, y, ACT_T, ACT_K);
        s = sq_stw_add(w, cases[i].name, SQ_DT_F32, 2, xs, y, &err);
    }
    return finish_fixture(w, s, &err);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write")) return write_fixture(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--write-block")) return write_block_fixture(argv[2]);
    sq_err err = {0};
    sq_st *src = NULL, *peer = NULL;
    sq_kctx *fast = NULL, *one = NULL, *ref = NULL;
    CHECK_OK(sq_st_open(&src, SPOTQ_FIXTURE, &err), &err);
    CHECK_OK(sq_st_open(&peer, PEER_FIXTURE, &err), &err);
    CHECK_OK(sq_cpu_ctx_new(&fast, 2, &err), &err);
    CHECK_OK(sq_cpu_ctx_new(&one, 1, &err), &err);
    CHECK_OK(sq_cpu_ctx_new_ref(&ref, 1, &err), &err);
    if (src && peer && fast && ref) {
        test_weights(src, peer, fast, ref);
        test_acts(src, peer);
    }
    sq_st *bsrc = NULL, *bpeer = NULL;
    CHECK_OK(sq_st_open(&bsrc, SPOTQ_BLOCK_FIXTURE, &err), &err);
    CHECK_OK(sq_st_open(&bpeer, PEER_BLOCK_FIXTURE, &err), &err);
    if (bsrc && bpeer && fast && ref) test_block(bsrc, bpeer, fast, ref);
    sq_st_close(bsrc);
    sq_st_close(bpeer);
    if (fast && one && ref) test_kernels(fast, one, ref);
    test_edges();
    sq_cpu_ctx_free(fast);
    sq_cpu_ctx_free(one);
    sq_cpu_ctx_free(ref);
    sq_st_close(src);
    sq_st_close(peer);
    return check_report("test_fp8");
}
