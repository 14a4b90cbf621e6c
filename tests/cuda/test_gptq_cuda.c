/* test_gptq_cuda.c: the CUDA GPTQ path against the CPU reference (make test-cuda; needs a GPU). On the
 * fixture of test_gptq.c and on a larger random matrix (several lazy blocks, groups wider and narrower
 * than a block): GPTQ codes identical for >= 99.9% of entries, g_idx identical, output error within 1%
 * of the CPU's; RTN bit-identical (codes, scales, zeros); the device Hessian within 1e-5 of the CPU's
 * (relative to its largest entry); degenerate Hessians give finite weights and the RTN fallback.
 * FP32 throughout on the GPU (no TF32): the only differences are cuBLAS/cuSOLVER summation orders. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/safetensors.h"
#include "../../quant/gptq_cuda.h"
#include "../unit/check.h"

#include "../unit/fixture.h"

static const sq_st *fx;

static const void *get(const char *name, sq_dtype dt, int64_t numel) { return fixture_get(fx, name, dt, numel); }

static bool finite_all(const sq_qmatrix *m) {
    float *dq = malloc((size_t)(m->n * m->k) * sizeof *dq);
    sq_qmatrix_dequant(m, dq);
    bool ok = true;
    for (int64_t i = 0; i < m->n * m->k && ok; i++) ok = isfinite(dq[i]);
    free(dq);
    return ok;
}

/* GPTQ and RTN of w with h at these settings, CUDA against CPU. */
static void compare(const char *name, const float *w, const float *h, int64_t n, int64_t k, int bits, int gs, bool sym, bool act, bool stat) {
    sq_qparams p = {.bits = bits, .group_size = gs, .sym = sym, .act_order = act, .static_groups = stat, .damp = 0.01, .block_size = 128};
    sq_err err = {0};
    sq_qmatrix c, g;
    CHECK_OK(sq_quant_gptq(w, h, n, k, &p, &c, &err), &err);
    CHECK_OK(sq_quant_gptq_cuda(w, h, n, k, &p, &g, &err), &err);
    if (!c.q || !g.q) { sq_qmatrix_free(&c); sq_qmatrix_free(&g); return; }
    int64_t same = 0;
    for (int64_t i = 0; i < n * k; i++) same += c.q[i] == g.q[i];
    double agree = (double)same / (double)(n * k);
    CHECK(agree >= 0.999, "%s: GPTQ codes agree on %.4f%% (want >= 99.9%%)", name, 100 * agree);
    CHECK(memcmp(c.g_idx, g.g_idx, (size_t)k * 4) == 0, "%s: g_idx differs", name);
    CHECK(c.fallback == g.fallback && c.damp_used == g.damp_used, "%s: fallback %d/%d damping %g/%g", name, c.fallback, g.fallback,
          c.damp_used, g.damp_used);
    float *dq = malloc((size_t)(n * k) * sizeof *dq);
    sq_qmatrix_dequant(&c, dq);
    double ec = sq_quant_output_error(w, dq, h, n, k);
    sq_qmatrix_dequant(&g, dq);
    double eg = sq_quant_output_error(w, dq, h, n, k);
    CHECK(fabs(eg - ec) <= 0.01 * ec, "%s: GPTQ output error CUDA %.6f vs CPU %.6f", name, eg, ec);
    CHECK(finite_all(&g), "%s: non-finite weight", name);
    printf("%s: codes agree %.4f%%, output error CUDA %.6f CPU %.6f\n", name, 100 * agree, eg, ec);
    sq_qmatrix_free(&c);
    sq_qmatrix_free(&g);
    /* RTN: bit-identical */
    CHECK_OK(sq_quant_rtn(w, n, k, &p, &c, &err), &err);
    CHECK_OK(sq_quant_rtn_cuda(w, n, k, &p, &g, &err), &err);
    if (c.q && g.q) {
        CHECK(memcmp(c.q, g.q, (size_t)(n * k)) == 0, "%s: RTN codes differ", name);
        CHECK(memcmp(c.scale, g.scale, (size_t)(c.n_groups * n) * 4) == 0, "%s: RTN scales differ", name);
        CHECK(memcmp(c.zero, g.zero, (size_t)(c.n_groups * n) * 4) == 0, "%s: RTN zeros differ", name);
        CHECK(memcmp(c.g_idx, g.g_idx, (size_t)k * 4) == 0, "%s: RTN g_idx differs", name);
    }
    sq_qmatrix_free(&c);
    sq_qmatrix_free(&g);
    free(dq);
}

static double hessian_diff(const float *a, const float *b, int64_t k) {
    double maxrel = 0, scale = 0;
    for (int64_t i = 0; i < k * k; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < k * k; i++) maxrel = fmax(maxrel, fabs(a[i] - b[i]) / scale);
    return maxrel;
}

/* The device accumulator behind sq_hessian, fed in uneven chunks, against the fixture's H and the CPU's. */
static void test_hessian(const float *x, const float *h_ref, int64_t k, int64_t t) {
    sq_hessian hg, hc;
    sq_err err = {0};
    CHECK_OK(sq_hessian_init_cuda(&hg, k, &err), &err);
    CHECK_OK(sq_hessian_init(&hc, k, &err), &err);
    for (int64_t b = 0; b < t; b += 100) {
        sq_hessian_add(&hg, x + b * k, b + 100 <= t ? 100 : t - b);
        sq_hessian_add(&hc, x + b * k, b + 100 <= t ? 100 : t - b);
    }
    sq_hessian_finish(&hg);
    sq_hessian_finish(&hc);
    CHECK_OK(sq_hessian_check(&hg, &err), &err);
    CHECK(hg.tokens == t, "token count %lld", (long long)hg.tokens);
    double d = hessian_diff(hg.h, h_ref, k), d2 = hessian_diff(hg.h, hc.h, k);
    CHECK(d < 1e-5, "device Hessian differs from the reference by %.3g (relative to max)", d);
    CHECK(d2 < 1e-5, "device Hessian differs from the CPU's by %.3g (relative to max)", d2);
    printf("hessian: max diff %.3g (reference), %.3g (CPU)\n", d, d2);
    sq_hessian_free(&hg);
    sq_hessian_free(&hc);
}

/* All-zero and NaN Hessians: finite output, the fallback flagged like the CPU's. */
static void test_degenerate(const float *w, int64_t n, int64_t k) {
    sq_qparams p = {.bits = 4, .group_size = 32, .sym = false, .act_order = true, .damp = 0.01, .block_size = 128};
    sq_err err = {0};
    float *h = calloc((size_t)(k * k), sizeof *h);
    sq_qmatrix m;
    CHECK_OK(sq_quant_gptq_cuda(w, h, n, k, &p, &m, &err), &err);
    if (m.q) CHECK(finite_all(&m), "all-zero Hessian: non-finite weights");
    sq_qmatrix_free(&m);
    for (int64_t i = 0; i < k * k; i++) h[i] = (i % (k + 1)) ? 0.0f : 1.0f;
    h[5 * k + 5] = NAN;
    CHECK_OK(sq_quant_gptq_cuda(w, h, n, k, &p, &m, &err), &err);
    CHECK(m.fallback == 1, "NaN Hessian: RTN fallback not flagged");
    sq_qmatrix_free(&m);
    free(h);
}

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

int main(void) {
    sq_err err = {0};
    const sq_gptq_gpu_i *gpu;
    char desc[256];
    if (sq_gptq_cuda_get(&gpu, &err) || gpu->query(desc, sizeof desc, &err)) {
        fprintf(stderr, "test_gptq_cuda: %s\n", err.msg);
        return 1;
    }
    printf("device: %s\n", desc);
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, "tests/fixtures/gptq/gptq.safetensors", &err), &err);
    if (!st) return check_report("test_gptq_cuda");
    fx = st;
    const int64_t N = 96, K = 256, T = 384;
    const float *w = get("W", SQ_DT_F32, N * K), *h = get("H", SQ_DT_F32, K * K), *x = get("X", SQ_DT_F32, T * K);
    compare("g32_act", w, h, N, K, 4, 32, false, true, false);
    compare("g32_sym", w, h, N, K, 4, 32, true, false, false);
    compare("g128_act_static", w, h, N, K, 4, 128, true, true, true);
    compare("pc_asym", w, h, N, K, 4, -1, false, false, false);
    compare("b8_g64_act", w, h, N, K, 8, 64, false, true, false);
    test_hessian(x, h, K, T);
    test_degenerate(w, N, K);
    sq_st_close(st);

    /* Larger: 6 blocks of 128, correlated inputs with a few dead channels, groups of 256 and 32. */
    const int64_t n2 = 320, k2 = 768, t2 = 2048;
    uint64_t seed = 7;
    float *w2 = malloc((size_t)(n2 * k2) * sizeof *w2), *x2 = malloc((size_t)(t2 * k2) * sizeof *x2);
    for (int64_t i = 0; i < n2 * k2; i++) w2[i] = 0.05f * frand(&seed);
    for (int64_t t = 0; t < t2; t++) {
        float common = frand(&seed);
        for (int64_t c = 0; c < k2; c++)
            x2[t * k2 + c] = c % 97 == 5 ? 0.0f : (0.3f + (float)(c % 13) / 4.0f) * frand(&seed) + 0.5f * common;
    }
    sq_hessian hs;
    CHECK_OK(sq_hessian_init(&hs, k2, &err), &err);
    sq_hessian_add(&hs, x2, t2);
    sq_hessian_finish(&hs);
    compare("big_g256_act", w2, hs.h, n2, k2, 4, 256, false, true, false);
    compare("big_g32_sym", w2, hs.h, n2, k2, 4, 32, true, false, false);
    compare("big_g128_act_static", w2, hs.h, n2, k2, 4, 128, false, true, true);
    compare("big_pc_b8", w2, hs.h, n2, k2, 8, -1, true, true, false);
    test_hessian(x2, hs.h, k2, t2);
    sq_hessian_free(&hs);
    free(w2);
    free(x2);
    return check_report("test_gptq_cuda");
}
