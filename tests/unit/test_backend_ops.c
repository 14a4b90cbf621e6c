/* test_backend_ops.c: every op of every backend present against a reference, at several shapes (odd
 * sizes included), each with its stated tolerance; the model is ggml's test-backend-ops. The runtime ops
 * of "cpu" are held to "cpu-ref" (the scalar kernels); the calibration ops of the CPU (the reference
 * every other backend is held to) to independent scalar computations written here (Hessian, output
 * error, absmax in double; the factor by (H + d I) U^T U = I; RTN by its definition; GPTQ by beating RTN
 * on the output error, codes in range); and those of CUDA, where a GPU is present, to the CPU's (codes
 * >= 99.9% equal and output error within 1% for GPTQ, bit-identical RTN, Hessian and factor within 1e-4
 * of the largest entry). Without a GPU the CUDA ops are reported "skipped (no device)" and the CUDA
 * backend must refuse with one line; SPOTQ_NEED_DEVICE=cuda makes a missing GPU a failure (gpu-check).
 * Also: kernels/qmath.h's fp16 and E4M3 conversions equal formats/dtype.c's on every code, and the
 * device GPTQ plan's argument checks and memory estimates. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../kernels/cpu/cpu.h"
#include "../../kernels/gptq_plan.h"
#include "../../kernels/qmath.h"
#include "../../quant/awq.h"
#include "../../quant/quant.h"
#include "check.h"

/* ---------------------------------------------------------------- data */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1p-53;
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand())); }
static float *rand_vec(int64_t n, float amp) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = amp * nrand();
    return v;
}
/* Correlated activations x [T, K] (a shared factor plus noise, per-channel spread), as a layer's input looks. */
static float *rand_acts(int64_t t, int64_t k) {
    float *x = malloc((size_t)(t * k) * sizeof *x), *sp = malloc((size_t)k * sizeof *sp);
    for (int64_t c = 0; c < k; c++) sp[c] = (float)exp(0.7 * nrand());
    for (int64_t i = 0; i < t; i++) {
        float f = nrand();
        for (int64_t c = 0; c < k; c++) x[i * k + c] = sp[c] * (0.6f * f * (c % 3 ? 1.0f : -1.0f) + nrand());
    }
    free(sp);
    return x;
}
static double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}
/* max |a - b| / max(max |b|, floor) */
static double rel_diff(const float *a, const float *b, int64_t n, double floor) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d / fmax(max_abs(b, n), floor);
}

/* ---------------------------------------------------------------- qmath.h against dtype.c */

static void test_qmath(void) {
    int bad16 = 0, bad8 = 0, badn16 = 0, badn8 = 0;
    for (uint32_t h = 0; h < 65536; h++) bad16 += sq_qm_f16_widen((uint16_t)h) != sq_qm_bits(sq_f16_to_f32((uint16_t)h));
    for (uint32_t b = 0; b < 256; b++) {
        float a = sq_qm_e4m3_decode((uint8_t)b), r = sq_e4m3_to_f32((uint8_t)b);
        bad8 += sq_qm_bits(a) != sq_qm_bits(r);
    }
    /* narrowing: every f32 exponent with random mantissas, and the edges */
    for (int i = 0; i < 1 << 20; i++) {
        uint32_t u = (uint32_t)(urand() * 4294967296.0);
        if (i < 512) u = (uint32_t)i << 23 | (uint32_t)(i & 1) << 31 | (i & 2 ? 0x7FFFFFu : 0x1000u);
        float f = sq_qm_float(u);
        badn16 += sq_qm_f16_narrow(u) != sq_f32_to_f16(f);
        badn8 += sq_qm_e4m3_encode(f) != sq_f32_to_e4m3(f);
    }
    CHECK(bad16 == 0 && bad8 == 0, "qmath widening differs from dtype.c: f16 %d, e4m3 %d", bad16, bad8);
    CHECK(badn16 == 0 && badn8 == 0, "qmath narrowing differs from dtype.c: f16 %d, e4m3 %d", badn16, badn8);
    /* the fp8 code clamps before rounding; the fp16 scale stays positive and finite */
    CHECK(sq_qm_fp8_code(1e9f, 1.0f) == 0x7E && sq_qm_fp8_code(-1e9f, 1.0f) == 0xFE, "fp8 code saturates");
    CHECK(sq_qm_f16_scale(1e-30f) == 5.9604645e-08f && sq_qm_f16_scale(1e30f) == 65504.0f, "fp16 scale bounds");
    printf("qmath: fp16 and E4M3 conversions equal dtype.c's (65536 + 256 codes, 2^20 floats): tolerance exact\n");
}

/* ---------------------------------------------------------------- backends */

typedef struct {
    const sq_backend_i *b;
    const char *name;
    bool present;
} backend;
static backend backends[3];
static int nbackends;
static const sq_backend_i *cpu, *ref;

static void note(const char *be, const char *op, const char *shape, const char *what) { printf("  %-8s %-14s %-22s %s\n", be, op, shape, what); }

/* ---- runtime ops: cpu against cpu-ref ---- */

static void test_runtime_ops(const backend *bk) {
    static const sq_op ops[] = {SQ_OP_MATMUL, SQ_OP_EMBED, SQ_OP_RMSNORM, SQ_OP_ROPE, SQ_OP_ATTENTION, SQ_OP_SWIGLU, SQ_OP_ADD};
    const sq_backend_i *b = bk->b;
    if (!bk->present) {
        for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) note(bk->name, sq_op_name(ops[i]), "", "skipped (no device)");
        return;
    }
    if (!b->matmul || !b->ctx_new) {
        for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) note(bk->name, sq_op_name(ops[i]), "", "skipped (not on this backend yet)");
        return;
    }
    sq_err err = {0};
    sq_kctx *c = NULL, *cr = NULL;
    CHECK_OK(b->ctx_new(&c, 2, &err), &err);
    CHECK_OK(ref->ctx_new(&cr, 1, &err), &err);
    if (!c || !cr) return;
    static const int shapes[][3] = {{1, 1, 1}, {3, 17, 5}, {7, 64, 33}, {16, 129, 70}}; /* n tokens, cols, rows */
    static const sq_dtype dts[] = {SQ_DT_F32, SQ_DT_F16, SQ_DT_BF16};
    char sh[64];
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int n = shapes[si][0], cols = shapes[si][1], rows = shapes[si][2];
        snprintf(sh, sizeof sh, "n%d %dx%d", n, rows, cols);
        float *x = rand_vec((int64_t)n * cols, 1), *wf = rand_vec((int64_t)rows * cols, 0.1f), *bias = rand_vec(rows, 0.1f);
        float *y = malloc((size_t)n * rows * sizeof *y), *yr = malloc((size_t)n * rows * sizeof *yr);
        uint16_t *wh = malloc((size_t)rows * cols * sizeof *wh);
        for (size_t di = 0; di < sizeof dts / sizeof *dts; di++) {
            sq_wmat w = {.dtype = dts[di], .rows = rows, .cols = cols, .data = wf};
            if (dts[di] != SQ_DT_F32) {
                for (int64_t i = 0; i < (int64_t)rows * cols; i++) wh[i] = dts[di] == SQ_DT_F16 ? sq_f32_to_f16(wf[i]) : sq_f32_to_bf16(wf[i]);
                w.data = wh;
            }
            CHECK_OK(b->matmul(c, &w, bias, x, y, n, &err), &err);
            CHECK_OK(ref->matmul(cr, &w, bias, x, yr, n, &err), &err);
            double d = rel_diff(y, yr, (int64_t)n * rows, 1e-6);
            CHECK(d < 1e-4, "%s matmul %s %s: %.3g", bk->name, sq_dtype_name(dts[di]), sh, d);
            /* embed: rows of w */
            int ids[3] = {0, rows - 1, rows / 2};
            float *e = malloc((size_t)3 * cols * sizeof *e), *er = malloc((size_t)3 * cols * sizeof *er);
            b->embed(c, &w, ids, 3, e);
            ref->embed(cr, &w, ids, 3, er);
            CHECK(memcmp(e, er, (size_t)3 * cols * sizeof *e) == 0, "%s embed %s %s", bk->name, sq_dtype_name(dts[di]), sh);
            free(e);
            free(er);
        }
        note(bk->name, "matmul", sh, "ok (f32, f16, bf16; rel 1e-4)");
        note(bk->name, "embed", sh, "ok (exact)");
        /* rmsnorm, swiglu, add on the activations */
        float *g = rand_vec(cols, 1), *a = malloc((size_t)n * cols * sizeof *a), *ar = malloc((size_t)n * cols * sizeof *ar);
        b->rmsnorm(c, x, g, 1e-5f, a, n, cols);
        ref->rmsnorm(cr, x, g, 1e-5f, ar, n, cols);
        CHECK(rel_diff(a, ar, (int64_t)n * cols, 1e-6) < 1e-5, "%s rmsnorm %s", bk->name, sh);
        note(bk->name, "rmsnorm", sh, "ok (rel 1e-5)");
        b->swiglu(c, x, g, a, cols);
        ref->swiglu(cr, x, g, ar, cols);
        CHECK(rel_diff(a, ar, cols, 1e-6) < 1e-5, "%s swiglu %s", bk->name, sh);
        note(bk->name, "swiglu", sh, "ok (rel 1e-5)");
        memcpy(a, x, (size_t)n * cols * sizeof *a);
        memcpy(ar, x, (size_t)n * cols * sizeof *a);
        b->add(c, a, x, (int64_t)n * cols);
        ref->add(cr, ar, x, (int64_t)n * cols);
        CHECK(memcmp(a, ar, (size_t)n * cols * sizeof *a) == 0, "%s add %s", bk->name, sh);
        note(bk->name, "add", sh, "ok (exact)");
        free(g);
        free(a);
        free(ar);
        free(x);
        free(wf);
        free(bias);
        free(y);
        free(yr);
        free(wh);
    }
    /* rope and attention: heads of 8 and 16, odd token counts, GQA, a sliding window */
    static const int ash[][5] = {{1, 0, 2, 1, 8}, {5, 3, 4, 2, 16}, {9, 0, 6, 3, 8}}; /* n, pos0, heads, kv heads, head_dim */
    for (size_t si = 0; si < sizeof ash / sizeof *ash; si++) {
        int n = ash[si][0], pos0 = ash[si][1], nh = ash[si][2], nkv = ash[si][3], hd = ash[si][4], total = pos0 + n;
        snprintf(sh, sizeof sh, "n%d pos%d h%d/%d d%d", n, pos0, nh, nkv, hd);
        float *q = rand_vec((int64_t)n * nh * hd, 1), *qr = malloc((size_t)n * nh * hd * sizeof *qr);
        float *cs = malloc((size_t)n * hd / 2 * sizeof *cs), *sn = malloc((size_t)n * hd / 2 * sizeof *sn);
        for (int i = 0; i < n * hd / 2; i++) cs[i] = cosf(0.3f * (float)i), sn[i] = sinf(0.3f * (float)i);
        memcpy(qr, q, (size_t)n * nh * hd * sizeof *qr);
        b->rope(c, q, n, nh * hd, nh, hd, cs, sn);
        ref->rope(cr, qr, n, nh * hd, nh, hd, cs, sn);
        CHECK(rel_diff(q, qr, (int64_t)n * nh * hd, 1e-6) < 1e-6, "%s rope %s", bk->name, sh);
        note(bk->name, "rope", sh, "ok (rel 1e-6)");
        float *k = rand_vec((int64_t)total * nkv * hd, 1), *v = rand_vec((int64_t)total * nkv * hd, 1);
        float *o = malloc((size_t)n * nh * hd * sizeof *o), *orf = malloc((size_t)n * nh * hd * sizeof *orf);
        for (int win = 0; win < 2; win++) {
            sq_attn at = {.q = q, .k = k, .v = v, .out = o, .n = n, .pos0 = pos0, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd,
                          .kv_stride = nkv * hd, .scale = 1.0f / sqrtf((float)hd), .window = win ? 3 : 0};
            CHECK_OK(b->attention(c, &at, &err), &err);
            at.out = orf;
            CHECK_OK(ref->attention(cr, &at, &err), &err);
            CHECK(rel_diff(o, orf, (int64_t)n * nh * hd, 1e-6) < 1e-5, "%s attention %s window %d", bk->name, sh, win);
        }
        note(bk->name, "attention", sh, "ok (causal and window 3; rel 1e-5)");
        free(q);
        free(qr);
        free(cs);
        free(sn);
        free(k);
        free(v);
        free(o);
        free(orf);
    }
    b->ctx_free(c);
    ref->ctx_free(cr);
}

/* ---- calibration ops ---- */

/* H = 2/T X^T X in double. */
static void hessian_ref(const float *x, int64_t t, int64_t k, double *h) {
    for (int64_t i = 0; i < k * k; i++) h[i] = 0;
    for (int64_t s = 0; s < t; s++)
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) h[i * k + j] += 2.0 * x[s * k + i] * x[s * k + j] / (double)t;
}

/* The Hessian of x on backend b, added in chunks of odd sizes; NULL on failure. */
static float *hessian_on(const sq_backend_i *b, const float *x, int64_t t, int64_t k) {
    sq_err err = {0};
    sq_hessian hs;
    if (sq_hessian_init_on(&hs, b, k, &err)) { CHECK(0, "%s hess_new: %s", b->name, err.msg); return NULL; }
    for (int64_t s = 0, step = 1; s < t; s += step, step = step * 3 + 1) {
        int64_t m = s + step <= t ? step : t - s;
        CHECK_OK(sq_hessian_add(&hs, x + s * k, m, &err), &err);
    }
    CHECK_OK(sq_hessian_finish(&hs, &err), &err);
    CHECK(hs.tokens == t, "%s Hessian tokens %lld of %lld", b->name, (long long)hs.tokens, (long long)t);
    float *h = hs.h;
    hs.h = NULL;
    sq_hessian_free(&hs);
    return h;
}

typedef struct { int64_t n, k, t; } shape;
static const shape cshapes[] = {{8, 8, 3}, {24, 40, 17}, {40, 96, 300}, {64, 256, 700}, {136, 200, 500}}; /* the last: 2 x 2 FP8 blocks, both short */

static void test_hessian(const backend *bk) {
    char sh[64];
    for (size_t si = 0; si < sizeof cshapes / sizeof *cshapes; si++) {
        int64_t k = cshapes[si].k, t = cshapes[si].t;
        snprintf(sh, sizeof sh, "K%lld T%lld", (long long)k, (long long)t);
        if (!bk->present) { note(bk->name, "hessian", sh, "skipped (no device)"); continue; }
        float *x = rand_acts(t, k), *h = hessian_on(bk->b, x, t, k);
        double *hd = malloc((size_t)(k * k) * sizeof *hd), md = 0, sc = 0;
        hessian_ref(x, t, k, hd);
        for (int64_t i = 0; h && i < k * k; i++) sc = fmax(sc, fabs(hd[i]));
        for (int64_t i = 0; h && i < k * k; i++) md = fmax(md, fabs(h[i] - hd[i]) / sc);
        bool sym = true;
        for (int64_t i = 0; h && i < k; i++)
            for (int64_t j = 0; j < k; j++) sym &= h[i * k + j] == h[j * k + i];
        CHECK(h && md < 1e-5 && sym, "%s hessian %s: %.3g of the largest entry, symmetric %d", bk->name, sh, md, sym);
        note(bk->name, "hessian", sh, "ok (1e-5 of max vs double; symmetric)");
        free(x);
        free(h);
        free(hd);
    }
}

static void test_factor(const backend *bk) {
    char sh[64];
    for (size_t si = 0; si < sizeof cshapes / sizeof *cshapes; si++) {
        int64_t k = cshapes[si].k, t = cshapes[si].t;
        snprintf(sh, sizeof sh, "K%lld T%lld", (long long)k, (long long)t);
        if (!bk->present) { note(bk->name, "factor", sh, "skipped (no device)"); continue; }
        if (!bk->b->supports(SQ_OP_FACTOR, 0)) { note(bk->name, "factor", sh, "skipped (not on this backend)"); continue; }
        sq_err err = {0};
        float *x = rand_acts(t, k), *h = hessian_on(cpu, x, t, k), *u = calloc((size_t)(k * k), sizeof *u);
        double used = 0, mean = 0;
        CHECK_OK(bk->b->factor(h, u, k, 0.01, &used, &err), &err);
        for (int64_t i = 0; i < k; i++) mean += h[i * k + i];
        mean /= (double)k;
        /* T < K: singular, the first damping factors it (H + 0.01 mean I is positive definite) */
        CHECK(used == 0.01, "%s factor %s: damping %g", bk->name, sh, used);
        /* (H + d I) (U^T U) = I */
        double worst = 0;
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) {
                double acc = 0;
                for (int64_t m = 0; m < k; m++) {
                    double a = h[i * k + m] + (i == m ? used * mean : 0), inv = 0;
                    for (int64_t r = 0; r <= (m < j ? m : j); r++) inv += (double)u[r * k + m] * u[r * k + j];
                    acc += a * inv;
                }
                worst = fmax(worst, fabs(acc - (i == j)));
            }
        bool upper = true;
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < i; j++) upper &= isfinite(u[i * k + j]);
        CHECK(worst < 2e-3 && upper, "%s factor %s: |(H + dI) U^T U - I| = %.3g", bk->name, sh, worst);
        if (bk->b != cpu) { /* against the CPU's factor */
            float *uc = calloc((size_t)(k * k), sizeof *uc);
            double uc_used = 0, d = 0, m = 0;
            CHECK_OK(cpu->factor(h, uc, k, 0.01, &uc_used, &err), &err);
            for (int64_t i = 0; i < k; i++)
                for (int64_t j = i; j < k; j++) d = fmax(d, fabs(u[i * k + j] - uc[i * k + j])), m = fmax(m, fabs(uc[i * k + j]));
            CHECK(d <= 1e-4 * m, "%s factor %s vs cpu: %.3g of the largest entry", bk->name, sh, d / m);
            free(uc);
        }
        note(bk->name, "factor", sh, "ok ((H+dI) U^T U = I within 2e-3)");
        free(x);
        free(h);
        free(u);
    }
    if (!bk->present || !bk->b->supports(SQ_OP_FACTOR, 0)) return;
    /* an all-zero Hessian never factors: every damping tried, -1 */
    sq_err err = {0};
    float h0[16] = {0}, u0[16];
    double used = 0;
    CHECK_OK(bk->b->factor(h0, u0, 4, 0.01, &used, &err), &err);
    CHECK(used == -1, "%s factor of a zero H: %g (want -1)", bk->name, used);
    note(bk->name, "factor", "K4 zero H", "ok (no damping factors it: -1)");
}

/* ||W X^T - Q X^T|| / ||W X^T|| from X itself, in double. */
static double output_error_ref(const float *w, const float *q, const float *x, int64_t n, int64_t k, int64_t t) {
    double num = 0, den = 0;
    for (int64_t s = 0; s < t; s++)
        for (int64_t r = 0; r < n; r++) {
            double a = 0, b = 0;
            for (int64_t c = 0; c < k; c++) a += (double)w[r * k + c] * x[s * k + c], b += (double)q[r * k + c] * x[s * k + c];
            num += (a - b) * (a - b);
            den += a * a;
        }
    return sqrt(num / den);
}

/* AWQ's clipping search as AutoAWQ writes it: each sampled token's group output for each candidate,
 * in double; max_val (n, k / gs). */
static void awq_clip_ref(const float *w, int64_t n, int64_t k, int gs, int bits, const float *x, int64_t t, float *max_val, double *errs) {
    int64_t G = k / gs, step = t / 512 > 1 ? t / 512 : 1, nt = (t + step - 1) / step;
    int maxq = (1 << bits) - 1;
    float *q = malloc((size_t)gs * sizeof *q);
    for (int64_t r = 0; r < n; r++)
        for (int64_t g = 0; g < G; g++) {
            const float *wg = w + r * k + g * gs;
            float amax = 0, best = 0;
            for (int i = 0; i < gs; i++) amax = fmaxf(amax, fabsf(wg[i]));
            double best_err = INFINITY;
            for (int is = 0; is < 10; is++) {
                float mx = amax * (1.0f - (float)is / 20.0f), lo = INFINITY, hi = -INFINITY;
                for (int i = 0; i < gs; i++) {
                    q[i] = fminf(fmaxf(wg[i], -mx), mx);
                    lo = fminf(lo, q[i]), hi = fmaxf(hi, q[i]);
                }
                float s = fmaxf(hi - lo, 1e-5f) / (float)maxq, z = -nearbyintf(lo / s);
                z = z < 0 ? 0 : z > (float)maxq ? (float)maxq : z;
                for (int i = 0; i < gs; i++) {
                    float c = nearbyintf(q[i] / s) + z;
                    q[i] = ((c < 0 ? 0 : c > (float)maxq ? (float)maxq : c) - z) * s;
                }
                double e = 0;
                for (int64_t ti = 0; ti < nt; ti++) {
                    const float *xg = x + ti * step * k + g * gs;
                    double a = 0;
                    for (int i = 0; i < gs; i++) a += (double)xg[i] * (q[i] - wg[i]);
                    e += a * a;
                }
                errs[(r * G + g) * 10 + is] = e / (double)nt;
                if (e / (double)nt < best_err) best_err = e / (double)nt, best = mx;
            }
            max_val[r * G + g] = best;
        }
    free(q);
}

static void test_gram_quad(const backend *bk) {
    static const struct { int64_t t, k, n; } sh[] = {{300, 200, 33}, {64, 384, 130}, {5, 17, 3}};
    char name[64];
    for (size_t si = 0; si < sizeof sh / sizeof *sh; si++) {
        int64_t t = sh[si].t, k = sh[si].k, n = sh[si].n;
        snprintf(name, sizeof name, "T%lld K%lld N%lld", (long long)t, (long long)k, (long long)n);
        if (!bk->present || !bk->b->supports(SQ_OP_GRAM, 0) || !bk->b->supports(SQ_OP_OUTPUT_ERROR, 0)) {
            note(bk->name, "gram, quad_error", name, bk->present ? "skipped (not on this backend yet)" : "skipped (no device)");
            continue;
        }
        sq_err err = {0};
        float *x = rand_acts(t, k), *h1 = malloc((size_t)(k * k) * sizeof *h1), *h3 = malloc((size_t)(k * k) * sizeof *h3);
        CHECK_OK(bk->b->gram(x, t, k, 1, h1, &err), &err);
        CHECK_OK(bk->b->gram(x, t, k, 3, h3, &err), &err);
        CHECK(!memcmp(h1, h3, (size_t)(k * k) * sizeof *h1), "%s gram %s: 1 and 3 threads differ", bk->name, name);
        double worst = 0, scale = 0;
        int64_t asym = 0;
        for (int64_t a = 0; a < k; a++)
            for (int64_t b = 0; b < k; b++) {
                double acc = 0;
                for (int64_t i = 0; i < t; i++) acc += (double)x[i * k + a] * x[i * k + b];
                worst = fmax(worst, fabs(acc - h1[a * k + b]));
                scale = fmax(scale, fabs(acc));
                asym += h1[a * k + b] != h1[b * k + a];
            }
        CHECK(asym == 0, "%s gram %s: %lld entries not symmetric", bk->name, name, (long long)asym);
        CHECK(worst <= 1e-5 * scale, "%s gram %s: %.3g off (scale %.3g)", bk->name, name, worst, scale);
        /* quad_error: tr(D H D^T) = ||D X^T||^2, from X in double */
        float *w = rand_vec(n * k, 0.1f), *q = malloc((size_t)(n * k) * sizeof *q);
        for (int64_t i = 0; i < n * k; i++) q[i] = w[i] + 0.01f * nrand();
        double num = 0, den = 0, e = -1, e0 = -1;
        for (int64_t i = 0; i < t; i++)
            for (int64_t r = 0; r < n; r++) {
                double a = 0, b = 0;
                for (int64_t c = 0; c < k; c++) a += (double)w[r * k + c] * x[i * k + c], b += (double)(w[r * k + c] - q[r * k + c]) * x[i * k + c];
                den += a * a, num += b * b;
            }
        CHECK_OK(bk->b->quad_error(w, q, h1, n, k, 3, &e, &err), &err);
        CHECK_OK(bk->b->quad_error(w, NULL, h1, n, k, 1, &e0, &err), &err);
        CHECK(fabs(e - num) <= 1e-4 * num && fabs(e0 - den) <= 1e-4 * den, "%s quad_error %s: %.7g vs %.7g, %.7g vs %.7g", bk->name, name, e, num, e0, den);
        note(bk->name, "gram, quad_error", name, "ok (rel 1e-5 / 1e-4 vs double from X; 1 = 3 threads)");
        free(x), free(h1), free(h3), free(w), free(q);
    }
}

/* A scale search's candidate against quant/awq.c's scalar fake quantisation of W diag(s), divided by s:
 * the same values (== : the sign of a zero may differ), on every ISA the machine has, 1 = 3 threads. */
static void test_awq_candidate(const backend *bk) {
    static const struct { int64_t n, k; int gs, bits; } sh[] = {{70, 256, 128, 4}, {33, 192, 64, 4}, {17, 96, 32, 3}, {9, 60, 20, 4}, {5, 64, -1, 8}};
    char name[64];
    for (size_t si = 0; si < sizeof sh / sizeof *sh; si++) {
        int64_t n = sh[si].n, k = sh[si].k;
        snprintf(name, sizeof name, "%lldx%lld g%d %dbit", (long long)n, (long long)k, sh[si].gs, sh[si].bits);
        if (!bk->present || !bk->b->supports(SQ_OP_AWQ_CANDIDATE, 0)) {
            note(bk->name, "awq_candidate", name, bk->present ? "skipped (not on this backend yet)" : "skipped (no device)");
            continue;
        }
        sq_err err = {0};
        float *w = rand_vec(n * k, 0.1f), *s = rand_vec(k, 1.0f), *want = malloc((size_t)(n * k) * sizeof *ref);
        float *o1 = malloc((size_t)(n * k) * sizeof *o1), *o3 = malloc((size_t)(n * k) * sizeof *o3);
        for (int64_t c = 0; c < k; c++) s[c] = 0.05f + fabsf(s[c]);
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < k; c++) want[r * k + c] = w[r * k + c] * s[c];
        sq_awq_fake_quant(want, n, k, sh[si].gs, sh[si].bits);
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < k; c++) want[r * k + c] /= s[c];
        sq_isa was = sq_cpu_isa();
        char isas[64] = "";
        for (int isa = SQ_ISA_SCALAR; isa <= (int)sq_cpu_isa_max(); isa++) {
            sq_cpu_set_isa((sq_isa)isa);
            CHECK_OK(bk->b->awq_candidate(w, s, n, k, sh[si].gs, sh[si].bits, 1, o1, &err), &err);
            CHECK_OK(bk->b->awq_candidate(w, s, n, k, sh[si].gs, sh[si].bits, 3, o3, &err), &err);
            int64_t diff = 0, diff3 = 0;
            for (int64_t i = 0; i < n * k; i++) diff += o1[i] != want[i], diff3 += o1[i] != o3[i];
            CHECK(diff == 0 && diff3 == 0, "%s awq_candidate %s (%s): %lld values differ from the scalar reference, %lld between 1 and 3 threads",
                  bk->name, name, sq_cpu_isa_name((sq_isa)isa), (long long)diff, (long long)diff3);
            snprintf(isas + strlen(isas), sizeof isas - strlen(isas), "%s%s", isa ? ", " : "", sq_cpu_isa_name((sq_isa)isa));
        }
        sq_cpu_set_isa(was);
        char what[128];
        snprintf(what, sizeof what, "ok (the reference's values; %s; 1 = 3 threads)", isas);
        note(bk->name, "awq_candidate", name, what);
        free(w), free(s), free(want), free(o1), free(o3);
    }
}

static void test_awq_clip(const backend *bk) {
    static const struct { int64_t n, k, t; int gs, bits; } sh[] = {{70, 256, 300, 128, 4}, {130, 384, 1500, 64, 4}, {33, 96, 40, 32, 3}, {8, 64, 9, 64, 8}};
    char name[64];
    for (size_t si = 0; si < sizeof sh / sizeof *sh; si++) {
        int64_t n = sh[si].n, k = sh[si].k, t = sh[si].t, G = k / sh[si].gs;
        snprintf(name, sizeof name, "%lldx%lld T%lld g%d %dbit", (long long)n, (long long)k, (long long)t, sh[si].gs, sh[si].bits);
        if (!bk->present || !bk->b->supports(SQ_OP_AWQ_CLIP, 0)) {
            note(bk->name, "awq_clip", name, bk->present ? "skipped (not on this backend yet)" : "skipped (no device)");
            continue;
        }
        sq_err err = {0};
        float *x = rand_acts(t, k), *w = rand_vec(n * k, 0.1f), *w1 = malloc((size_t)(n * k) * sizeof *w1), *w3 = malloc((size_t)(n * k) * sizeof *w3);
        float *mv1 = malloc((size_t)(n * G) * sizeof *mv1), *mv3 = malloc((size_t)(n * G) * sizeof *mv3), *mvr = malloc((size_t)(n * G) * sizeof *mvr);
        double *errs = malloc((size_t)(n * G * 10) * sizeof *errs);
        memcpy(w1, w, (size_t)(n * k) * sizeof *w);
        memcpy(w3, w, (size_t)(n * k) * sizeof *w);
        awq_clip_ref(w, n, k, sh[si].gs, sh[si].bits, x, t, mvr, errs);
        CHECK_OK(bk->b->awq_clip(w1, n, k, sh[si].gs, sh[si].bits, x, t, 1, mv1, &err), &err);
        CHECK_OK(bk->b->awq_clip(w3, n, k, sh[si].gs, sh[si].bits, x, t, 3, mv3, &err), &err);
        CHECK(!memcmp(w1, w3, (size_t)(n * k) * sizeof *w1) && !memcmp(mv1, mv3, (size_t)(n * G) * sizeof *mv1),
              "%s awq_clip %s: 1 and 3 threads differ", bk->name, name);
        /* the same range as the reference, or one whose error is within 1e-5 of the reference's best */
        int same = 0, bad = 0;
        for (int64_t i = 0; i < n * G; i++) {
            if (mv1[i] == mvr[i]) { same++; continue; }
            float amax = 0;
            for (int c = 0; c < sh[si].gs; c++) amax = fmaxf(amax, fabsf(w[(i / G) * k + (i % G) * sh[si].gs + c]));
            int is = (int)lround((1.0 - mv1[i] / amax) * 20), ir = (int)lround((1.0 - mvr[i] / amax) * 20);
            if (is < 0 || is > 9 || errs[i * 10 + is] > errs[i * 10 + ir] * (1 + 1e-5)) bad++;
        }
        CHECK(bad == 0, "%s awq_clip %s: %d of %lld ranges worse than the reference's", bk->name, name, bad, (long long)(n * G));
        int outside = 0;
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < k; c++) {
                float m = mv1[r * G + c / sh[si].gs];
                outside += w1[r * k + c] != fminf(fmaxf(w[r * k + c], -m), m);
            }
        CHECK(outside == 0, "%s awq_clip %s: %d weights not clamped to their range", bk->name, name, outside);
        char what[96];
        snprintf(what, sizeof what, "ok (%d of %lld ranges the reference's, the rest as good; 1 = 3 threads)", same, (long long)(n * G));
        note(bk->name, "awq_clip", name, what);
        free(x), free(w), free(w1), free(w3), free(mv1), free(mv3), free(mvr), free(errs);
    }
}

static void test_output_error_absmax(const backend *bk) {
    char sh[64];
    for (size_t si = 0; si < sizeof cshapes / sizeof *cshapes; si++) {
        int64_t n = cshapes[si].n, k = cshapes[si].k, t = cshapes[si].t;
        snprintf(sh, sizeof sh, "%lldx%lld T%lld", (long long)n, (long long)k, (long long)t);
        if (!bk->present) {
            note(bk->name, "output_error", sh, "skipped (no device)");
            note(bk->name, "absmax", sh, "skipped (no device)");
            continue;
        }
        if (bk->b->supports(SQ_OP_OUTPUT_ERROR, 0)) {
            sq_err err = {0};
            float *x = rand_acts(t, k), *h = hessian_on(cpu, x, t, k), *w = rand_vec(n * k, 0.1f), *q = malloc((size_t)(n * k) * sizeof *q);
            for (int64_t i = 0; i < n * k; i++) q[i] = w[i] + 0.01f * nrand();
            double e = -1, er = output_error_ref(w, q, x, n, k, t);
            CHECK_OK(bk->b->output_error(w, q, h, n, k, 1, &e, &err), &err);
            CHECK(fabs(e - er) <= 1e-4 * er, "%s output_error %s: %.7g vs %.7g", bk->name, sh, e, er);
            CHECK_OK(bk->b->output_error(w, w, h, n, k, 1, &e, &err), &err);
            CHECK(e == 0, "%s output_error of W against itself: %g", bk->name, e);
            note(bk->name, "output_error", sh, "ok (rel 1e-4 vs double from X)");
            free(x);
            free(h);
            free(w);
            free(q);
        } else note(bk->name, "output_error", sh, "skipped (not on this backend yet)");
        if (bk->b->supports(SQ_OP_ABSMAX, 0)) {
            float *v = rand_vec(n * k, 3);
            double m = max_abs(v, n * k);
            int64_t bad = 7;
            CHECK(bk->b->absmax(v, n * k, &bad) == (float)m && bad == -1, "%s absmax %s", bk->name, sh);
            v[n * k - 1] = NAN;
            CHECK(bk->b->absmax(v, n * k, &bad) == -1 && bad == n * k - 1, "%s absmax finds the NaN at %lld", bk->name, (long long)bad);
            note(bk->name, "absmax", sh, "ok (exact; NaN found)");
            free(v);
        } else note(bk->name, "absmax", sh, "skipped (not on this backend yet)");
    }
}

/* The grids each quantiser op is run on. */
typedef struct { sq_qgrid_kind kind; int bits, gs; bool sym, stat, act; } gcase;
static const gcase gcases[] = {
    {SQ_QGRID_INT_MINMAX, 4, 8, false, false, true}, {SQ_QGRID_INT_MINMAX, 8, -1, true, false, false},
    {SQ_QGRID_INT_MINMAX, 4, 8, true, true, true},   {SQ_QGRID_INT_MSE, 4, 8, false, false, true},
    {SQ_QGRID_INT_MSE, 4, -1, true, false, true},    {SQ_QGRID_FP8_TENSOR, 0, 0, false, false, true},
    {SQ_QGRID_FP8_CHANNEL, 0, 0, false, false, false}, {SQ_QGRID_FP8_BLOCK, 0, 0, false, false, false},
    {SQ_QGRID_FP8_BLOCK, 0, 0, false, false, true},
};

/* The scale of W[r, c] on an FP8 grid: block-wise the (r / 128, c / 128) block of (ceil(N/128), ceil(K/128)). */
static int64_t fp8_idx(sq_qgrid_kind kind, int64_t r, int64_t c, int64_t k) {
    if (kind == SQ_QGRID_FP8_BLOCK) return (r / 128) * ((k + 127) / 128) + c / 128;
    return kind == SQ_QGRID_FP8_CHANNEL ? r : 0;
}

static bool is_int(sq_qgrid_kind k) { return k == SQ_QGRID_INT_MINMAX || k == SQ_QGRID_INT_MSE; }

/* Quantises with op (GPTQ or RTN) on b; dq gets the values the codes stand for. */
static int quant_threads = 1; /* the threads rtn and gptq are given (test_threads changes it) */

static sq_status quantise(const sq_backend_i *b, bool gptq, const float *w, const float *h, int64_t n, int64_t k, const gcase *gc, const float *imp,
                          sq_qmatrix *q, uint8_t *codes, const float *fscale, float *dq, double *damp, sq_err *err) {
    sq_qgrid g = {.kind = gc->kind, .bits = gc->bits, .group_size = gc->gs, .sym = gc->sym, .static_groups = gc->stat, .imp = imp,
                  .fp8_scale = fscale, .threads = quant_threads};
    sq_gptq_args a = {.act_order = gc->act, .damp = 0.01, .block_size = 16};
    sq_qout o = {.codes = codes};
    sq_status s = SQ_OK;
    memset(q, 0, sizeof *q);
    if (is_int(gc->kind) && (s = sq_qmatrix_alloc(q, n, k, gc->bits, gc->gs, err))) return s;
    o.q = is_int(gc->kind) ? q : NULL;
    *damp = 0;
    s = gptq ? b->gptq(w, h, NULL, n, k, &g, &a, &o, damp, err) : b->rtn(w, n, k, &g, &o, err);
    if (s) return s;
    if (is_int(gc->kind)) sq_qmatrix_dequant(q, dq);
    else
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < k; c++) dq[r * k + c] = sq_e4m3_to_f32(codes[r * k + c]) * fscale[fp8_idx(gc->kind, r, c, k)];
    return SQ_OK;
}

/* The CPU's solves in fixed chunks of rows: rtn, gptq and the output error give the same bits on 1
 * and on 3 threads (the shapes of more than 64 rows have several chunks and a short one), and the
 * eight-lane mse grid search gives the scalar search's scales and zeros. */
static void test_threads(void) {
    sq_err err = {0};
    int bad = 0, cases = 0;
    sq_isa top = sq_cpu_isa();
    for (int rep = 0; rep < 200; rep++) { /* the grid search, lane by lane against the scalar one */
        int64_t m = 1 + (int64_t)(urand() * 130);
        float *x = rand_vec(8 * m, rep % 3 ? 0.05f : 3.0f), *d = rand_vec(m, 1.0f);
        for (int64_t i = 0; i < m; i++) d[i] = fabsf(d[i]) + 0.01f;
        if (rep % 7 == 0) for (int64_t i = 0; i < m; i++) x[i * 8 + 3] = 0; /* a lane of zeros */
        int bits = rep % 4 == 3 ? 8 : 4;
        bool sym = rep % 2, withd = rep % 5 != 0;
        double norm = rep % 11 == 0 ? 2.4 : rep % 2 ? 0 : 2;
        float s1[8], s2[8];
        int32_t z1[8], z2[8];
        sq_cpu_grid_search8_ref(x, 8, withd ? d : NULL, m, bits, sym, norm, s2, z2);
        for (int v = SQ_ISA_AVX2; v <= (int)top; v++) { /* every variant the CPU has: avx2, avx512 */
            sq_cpu_set_isa((sq_isa)v);
            sq_cpu_grid_search8(x, 8, withd ? d : NULL, m, bits, sym, norm, s1, z1);
            bad += memcmp(s1, s2, sizeof s1) != 0 || memcmp(z1, z2, sizeof z1) != 0;
        }
        sq_cpu_set_isa(top);
        free(x);
        free(d);
    }
    CHECK(bad == 0, "grid_search8: %d of 200 searches off the scalar search", bad);
    note("cpu", "grid_search8", top == SQ_ISA_AVX512 ? "200 random groups, avx2 and avx512" : "200 random groups, avx2 (no avx512 here)",
         bad ? "FAILED" : "ok (bit-identical to the scalar search)");
    for (size_t si = 1; si < sizeof cshapes / sizeof *cshapes; si++) {
        int64_t n = cshapes[si].n, k = cshapes[si].k, t = cshapes[si].t;
        float *x = rand_acts(t, k), *h = hessian_on(cpu, x, t, k), *w = rand_vec(n * k, 0.05f);
        float *imp = malloc((size_t)k * sizeof *imp), *fs = malloc((size_t)(n + ((n + 127) / 128) * ((k + 127) / 128)) * sizeof *fs);
        float *dq1 = malloc((size_t)(n * k) * sizeof *dq1), *dq3 = malloc((size_t)(n * k) * sizeof *dq3);
        uint8_t *c1 = calloc((size_t)(n * k), 1), *c3 = calloc((size_t)(n * k), 1);
        for (int64_t c = 0; c < k; c++) imp[c] = h[c * k + c];
        float tmax = (float)max_abs(w, n * k);
        for (int64_t r = 0; r < n; r++) fs[r] = tmax / 448.0f;
        for (size_t gi = 0; gi < sizeof gcases / sizeof *gcases; gi++) {
            const gcase *gc = &gcases[gi];
            if (gc->kind != SQ_QGRID_INT_MSE && gc->kind != SQ_QGRID_INT_MINMAX && gc->kind != SQ_QGRID_FP8_TENSOR &&
                gc->kind != SQ_QGRID_FP8_CHANNEL && gc->kind != SQ_QGRID_FP8_BLOCK)
                continue;
            for (int gptq = 0; gptq < 2; gptq++) {
                sq_qmatrix q1, q3;
                double d1, d3, e1, e3;
                quant_threads = 1;
                CHECK_OK(quantise(cpu, gptq, w, h, n, k, gc, imp, &q1, c1, fs, dq1, &d1, &err), &err);
                quant_threads = 3;
                CHECK_OK(quantise(cpu, gptq, w, h, n, k, gc, imp, &q3, c3, fs, dq3, &d3, &err), &err);
                quant_threads = 1;
                CHECK_OK(cpu->output_error(w, dq1, h, n, k, 1, &e1, &err), &err);
                CHECK_OK(cpu->output_error(w, dq3, h, n, k, 3, &e3, &err), &err);
                bool same = !memcmp(dq1, dq3, (size_t)(n * k) * sizeof *dq1) && !memcmp(c1, c3, (size_t)(n * k)) && e1 == e3 && d1 == d3;
                if (same && q1.q) same = !memcmp(q1.q, q3.q, (size_t)(n * k)) && !memcmp(q1.scale, q3.scale, (size_t)(q1.n_groups * n) * 4) &&
                                         !memcmp(q1.zero, q3.zero, (size_t)(q1.n_groups * n) * 4);
                CHECK(same, "cpu %s %lldx%lld %s b%d g%d: 3 threads differ from 1", gptq ? "gptq" : "rtn", (long long)n, (long long)k,
                      sq_qgrid_name(gc->kind), gc->bits, gc->gs);
                cases++;
                sq_qmatrix_free(&q1);
                sq_qmatrix_free(&q3);
            }
        }
        free(x), free(h), free(w), free(imp), free(fs), free(dq1), free(dq3), free(c1), free(c3);
    }
    char what[64];
    snprintf(what, sizeof what, "ok (%d cases: 3 threads = 1, bytes and error)", cases);
    note("cpu", "rtn/gptq", "every shape, int/fp8", what);
}

static void test_quantisers(const backend *bk) {
    char sh[96];
    for (size_t si = 1; si < sizeof cshapes / sizeof *cshapes; si++) {
        int64_t n = cshapes[si].n, k = cshapes[si].k, t = cshapes[si].t;
        float *x = rand_acts(t, k), *h = hessian_on(cpu, x, t, k), *w = rand_vec(n * k, 0.05f);
        float *imp = malloc((size_t)k * sizeof *imp), *fs = malloc((size_t)(n + ((n + 127) / 128) * ((k + 127) / 128)) * sizeof *fs);
        float *dq = malloc((size_t)(n * k) * sizeof *dq), *dqr = malloc((size_t)(n * k) * sizeof *dqr);
        uint8_t *codes = malloc((size_t)(n * k)), *codesr = malloc((size_t)(n * k));
        for (int64_t c = 0; c < k; c++) imp[c] = h[c * k + c];
        for (size_t gi = 0; gi < sizeof gcases / sizeof *gcases; gi++) {
            const gcase *gc = &gcases[gi];
            snprintf(sh, sizeof sh, "%lldx%lld %s b%d g%d%s%s%s", (long long)n, (long long)k, sq_qgrid_name(gc->kind), gc->bits, gc->gs,
                     gc->sym ? " sym" : "", gc->stat ? " static" : "", gc->act ? " act" : "");
            if (!bk->present) {
                note(bk->name, "rtn", sh, "skipped (no device)");
                note(bk->name, "gptq", sh, "skipped (no device)");
                continue;
            }
            bool pc = gc->kind == SQ_QGRID_FP8_CHANNEL;
            float tmax = (float)max_abs(w, n * k);
            for (int64_t r = 0; r < n; r++) fs[r] = (pc ? (float)max_abs(w + r * k, k) : tmax) / 448.0f;
            if (gc->kind == SQ_QGRID_FP8_BLOCK) { /* each 128 x 128 block's max / 448 (the edge blocks short) */
                for (int64_t i = 0; i < ((n + 127) / 128) * ((k + 127) / 128); i++) fs[i] = 0;
                for (int64_t r = 0; r < n; r++)
                    for (int64_t c = 0; c < k; c++) fs[fp8_idx(gc->kind, r, c, k)] = fmaxf(fs[fp8_idx(gc->kind, r, c, k)], fabsf(w[r * k + c]) / 448.0f);
            }
            sq_err err = {0};
            sq_qmatrix q, qr;
            double damp, dampr, erq, err_rtn, err_gptq;
            /* RTN: the CPU by its definition, another backend bit for bit against the CPU */
            if (!bk->b->supports(SQ_OP_RTN, gc->kind)) note(bk->name, "rtn", sh, "skipped (not on this backend)");
            else {
                CHECK_OK(quantise(bk->b, false, w, h, n, k, gc, imp, &q, codes, fs, dq, &damp, &err), &err);
                if (bk->b == cpu) {
                    int bad = 0;
                    if (is_int(gc->kind)) {
                        int64_t gs = gc->gs > 0 ? gc->gs : k;
                        for (int64_t r = 0; r < n; r++)
                            for (int64_t c = 0; c < k; c++) {
                                float s = q.scale[(c / gs) * n + r];
                                int32_t z = q.zero[(c / gs) * n + r];
                                float want = nearbyintf(w[r * k + c] / s) + (float)z;
                                want = want < 0 ? 0 : want > (float)((1 << gc->bits) - 1) ? (float)((1 << gc->bits) - 1) : want;
                                bad += q.q[c * n + r] != (uint8_t)want || q.g_idx[c] != c / gs;
                                bad += !(s > 0) || sq_f16_to_f32(sq_f32_to_f16(s)) != s;
                            }
                    } else
                        for (int64_t r = 0; r < n; r++)
                            for (int64_t c = 0; c < k; c++)
                                bad += codes[r * k + c] != sq_f32_to_e4m3(fmaxf(-448.0f, fminf(w[r * k + c] / fs[fp8_idx(gc->kind, r, c, k)], 448.0f)));
                    CHECK(bad == 0, "cpu rtn %s: %d codes off their definition", sh, bad);
                    note(bk->name, "rtn", sh, "ok (codes by definition; fp16 scales)");
                } else {
                    CHECK_OK(quantise(cpu, false, w, h, n, k, gc, imp, &qr, codesr, fs, dqr, &dampr, &err), &err);
                    bool same = is_int(gc->kind) ? !memcmp(q.q, qr.q, (size_t)(n * k)) && !memcmp(q.scale, qr.scale, (size_t)(q.n_groups * n) * 4) &&
                                                       !memcmp(q.zero, qr.zero, (size_t)(q.n_groups * n) * 4) && !memcmp(q.g_idx, qr.g_idx, (size_t)k * 4)
                                                 : !memcmp(codes, codesr, (size_t)(n * k));
                    CHECK(same, "%s rtn %s: not bit-identical to cpu", bk->name, sh);
                    note(bk->name, "rtn", sh, "ok (bit-identical to cpu)");
                    sq_qmatrix_free(&qr);
                }
                sq_qmatrix_free(&q);
            }
            if (!bk->b->supports(SQ_OP_GPTQ, gc->kind)) { note(bk->name, "gptq", sh, "skipped (not on this backend)"); continue; }
            /* RTN's error on the same grid, the bar GPTQ must clear (FP8 RTN: the same fixed scales) */
            CHECK_OK(quantise(cpu, false, w, h, n, k, gc, imp, &qr, codesr, fs, dqr, &dampr, &err), &err);
            CHECK_OK(cpu->output_error(w, dqr, h, n, k, 1, &err_rtn, &err), &err);
            sq_qmatrix_free(&qr);
            CHECK_OK(quantise(bk->b, true, w, h, n, k, gc, imp, &q, codes, fs, dq, &damp, &err), &err);
            CHECK_OK(cpu->output_error(w, dq, h, n, k, 1, &err_gptq, &err), &err);
            CHECK(damp == 0.01, "%s gptq %s: damping %g", bk->name, sh, damp);
            CHECK(err_gptq < 0.9 * err_rtn, "%s gptq %s: output error %.4g not below RTN's %.4g", bk->name, sh, err_gptq, err_rtn);
            int range = 0;
            for (int64_t i = 0; is_int(gc->kind) && i < n * k; i++) range += q.q[i] > (1 << gc->bits) - 1;
            for (int64_t i = 0; !is_int(gc->kind) && i < n * k; i++) range += (codes[i] & 0x7F) == 0x7F;
            CHECK(range == 0, "%s gptq %s: %d codes out of range", bk->name, sh, range);
            if (bk->b == cpu) {
                char what[96];
                snprintf(what, sizeof what, "ok (err %.4f < 0.9 x RTN's %.4f)", err_gptq, err_rtn);
                note(bk->name, "gptq", sh, what);
            } else {
                CHECK_OK(quantise(cpu, true, w, h, n, k, gc, imp, &qr, codesr, fs, dqr, &dampr, &err), &err);
                CHECK_OK(cpu->output_error(w, dqr, h, n, k, 1, &erq, &err), &err);
                const uint8_t *a = is_int(gc->kind) ? q.q : codes, *b = is_int(gc->kind) ? qr.q : codesr;
                int64_t same = 0;
                for (int64_t i = 0; i < n * k; i++) same += a[i] == b[i];
                double agree = (double)same / (double)(n * k), rel = fabs(err_gptq - erq) / erq;
                CHECK(agree >= 0.999 && rel <= 0.01, "%s gptq %s: %.4f%% of codes equal to cpu's, output error %.4g vs %.4g", bk->name, sh,
                      100 * agree, err_gptq, erq);
                if (is_int(gc->kind)) CHECK(!memcmp(q.g_idx, qr.g_idx, (size_t)k * 4), "%s gptq %s: g_idx", bk->name, sh);
                char what[96];
                snprintf(what, sizeof what, "ok (%.3f%% codes = cpu; err %+.3f%%)", 100 * agree, 100 * (err_gptq - erq) / erq);
                note(bk->name, "gptq", sh, what);
                sq_qmatrix_free(&qr);
            }
            sq_qmatrix_free(&q);
        }
        free(x);
        free(h);
        free(w);
        free(imp);
        free(fs);
        free(dq);
        free(dqr);
        free(codes);
        free(codesr);
    }
}

/* The method over the ops (quant/gptq.c): a Hessian accumulated on the backend goes to its own GPTQ
 * (on a device: without leaving it), and one that will not factor falls back to RTN. */
static void test_method(const backend *bk) {
    if (!bk->present) { note(bk->name, "gptq method", "96x64 T200", "skipped (no device)"); return; }
    enum { N = 96, K = 64, T = 200 };
    float *x = rand_acts(T, K), *w = rand_vec(N * K, 0.05f);
    sq_err err = {0};
    sq_hessian hs;
    CHECK_OK(sq_hessian_init_on(&hs, bk->b, K, &err), &err);
    CHECK_OK(sq_hessian_add(&hs, x, T, &err), &err);
    CHECK_OK(sq_hessian_finish(&hs, &err), &err);
    sq_qparams p = {.bits = 4, .group_size = 16, .sym = false, .act_order = true, .damp = 0.01, .block_size = 32};
    sq_qmatrix q, qc;
    CHECK_OK(sq_quant_gptq_on(bk->b, w, &hs, N, K, &p, &q, &err), &err);
    CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &p, &qc, &err), &err);
    int64_t same = 0;
    for (int64_t i = 0; q.q && qc.q && i < N * K; i++) same += q.q[i] == qc.q[i];
    CHECK(q.fallback == 0 && (double)same >= 0.999 * N * K, "%s gptq method: %lld of %d codes equal to cpu's", bk->name, (long long)same, N * K);
    sq_qmatrix_free(&q);
    sq_qmatrix_free(&qc);
    /* a negative definite Hessian never factors: the RTN fallback, the same codes as RTN */
    memset(hs.h, 0, sizeof(float) * K * K);
    for (int c = 0; c < K; c++) hs.h[c * K + c] = -1;
    sq_hessian h0 = {.k = K, .h = hs.h};
    CHECK_OK(sq_quant_gptq_on(bk->b, w, &h0, N, K, &p, &q, &err), &err);
    CHECK_OK(sq_quant_rtn(w, N, K, &p, &qc, &err), &err);
    CHECK(q.fallback == 1 && q.q && qc.q && !memcmp(q.q, qc.q, N * K), "%s gptq method: -I falls back to RTN", bk->name);
    note(bk->name, "gptq method", "96x64 T200", "ok (device Hessian used; RTN fallback)");
    sq_qmatrix_free(&q);
    sq_qmatrix_free(&qc);
    sq_hessian_free(&hs);
    free(x);
    free(w);
}

/* ---------------------------------------------------------------- the device GPTQ plan (host only) */

static void test_plan(void) {
    const double GiB = 1073741824.0;
    sq_qgrid g = {.kind = SQ_QGRID_INT_MINMAX, .bits = 4, .group_size = 128, .sym = true};
    sq_gptq_plan a, b;
    sq_err err = {0};
    /* A 7B q_proj: at most two K x K buffers at once, W twice, codes, grids: well under 1 GiB. */
    CHECK_OK(sq_gptq_plan_device(4096, 4096, &g, 128, false, &a, &err), &err);
    CHECK(a.block_size == 128 && a.n_groups == 32, "plan: block %lld groups %lld", (long long)a.block_size, (long long)a.n_groups);
    CHECK(a.bytes > 2 * 64.0 * 1048576 && a.bytes < 1.0 * GiB, "7B q_proj plan %.3f GiB", a.bytes / GiB);
    CHECK_OK(sq_gptq_plan_device(4096, 4096, &g, 128, true, &b, &err), &err);
    CHECK(b.bytes < a.bytes, "device H plans less memory (%.0f vs %.0f)", b.bytes, a.bytes);
    /* A 70B down_proj: K = 28672, two K x K float buffers (6.1 GiB) and W twice (1.75 GiB): about 8 GiB. */
    CHECK_OK(sq_gptq_plan_device(8192, 28672, &g, 128, false, &a, &err), &err);
    CHECK(a.bytes > 7.5 * GiB && a.bytes < 9.0 * GiB, "70B down_proj plan %.2f GiB", a.bytes / GiB);
    g.group_size = -1;
    CHECK_OK(sq_gptq_plan_device(96, 100, &g, 0, false, &a, &err), &err);
    CHECK(a.block_size == 128 && a.n_groups == 1, "defaults: block %lld groups %lld", (long long)a.block_size, (long long)a.n_groups);
    g.group_size = 32;
    g.static_groups = true;
    CHECK_OK(sq_gptq_plan_device(96, 100, &g, 0, false, &b, &err), &err);
    CHECK(b.n_groups == 4 && b.bytes > a.bytes, "partial groups, static grids planned");
    g.kind = SQ_QGRID_FP8_CHANNEL;
    CHECK_OK(sq_gptq_plan_device(96, 100, &g, 0, false, &b, &err), &err);
    CHECK(b.n_groups == 1, "fp8: one group");
    g = (sq_qgrid){.kind = SQ_QGRID_INT_MINMAX, .bits = 4, .group_size = 128};
    CHECK(sq_gptq_plan_device(0, 128, &g, 128, false, &a, &err) == SQ_ERR_ARG && strstr(err.msg, "empty"), "empty: %s", err.msg);
    g.bits = 3;
    CHECK(sq_gptq_plan_device(64, 128, &g, 128, false, &a, &err) == SQ_ERR_ARG && strstr(err.msg, "3 bits"), "bits: %s", err.msg);
    g.bits = 8;
    CHECK(sq_gptq_plan_device(64, 128, &g, 4096, false, &a, &err) == SQ_ERR_ARG && strstr(err.msg, "block size"), "block: %s", err.msg);
    CHECK(sq_gptq_plan_device(64, 53248, &g, 128, false, &a, &err) == SQ_ERR_UNSUPPORTED && strstr(err.msg, "--device cpu"),
          "K past cuSOLVER's limit: %s", err.msg);
    printf("plan: device GPTQ argument checks and memory estimates\n");
}

/* ---------------------------------------------------------------- the CPU's weight kinds (kernels/cpu/traits.c) */

/* Each kind's fast rows_to_f32 equals its scalar row_to_f32_ref on every row (odd sizes), and
 * sq_cpu_wkind_of names the kind of each weight. */
static void test_wkinds(void) {
    enum { R = 19, C = 96 };
    float *wf = rand_vec(R * C, 0.5f), *fast = malloc(sizeof(float) * R * C), *row = malloc(sizeof(float) * C);
    uint16_t *wh = malloc(sizeof(uint16_t) * R * C), *wb = malloc(sizeof(uint16_t) * R * C);
    uint8_t *w8 = malloc(R * C);
    uint32_t *codes = malloc(sizeof(uint32_t) * R * C / 4);
    float scale[R * 3], zero[R * 3], f8s[R];
    for (int i = 0; i < R * C; i++) wh[i] = sq_f32_to_f16(wf[i]), wb[i] = sq_f32_to_bf16(wf[i]), w8[i] = sq_f32_to_e4m3(wf[i] * 100);
    for (int i = 0; i < R * C / 4; i++) codes[i] = (uint32_t)(urand() * 4294967296.0);
    for (int i = 0; i < R * 3; i++) scale[i] = 0.01f + (float)urand(), zero[i] = (float)(int)(urand() * 8);
    for (int i = 0; i < R; i++) f8s[i] = 0.001f * (1 + i);
    sq_qweight q4 = {.bits = 4, .group_size = 32, .n_groups = 3, .codes = codes, .scale = scale, .zero = zero};
    sq_qweight q8 = {.bits = 8, .group_size = 32, .n_groups = 3, .codes = codes, .scale = scale, .zero = zero};
    sq_fp8weight f8 = {.scale = f8s, .per_channel = true};
    sq_fp8weight w8a8 = {.scale = f8s, .per_channel = true, .act = SQ_FP8_ACT_DYNAMIC_TOKEN};
    float f8b[3 * 3];
    for (int i = 0; i < 9; i++) f8b[i] = 0.002f * (1 + i);
    sq_fp8weight f8blk = {.scale = f8b, .act = SQ_FP8_ACT_DYNAMIC_GROUP, .block_n = 8, .block_k = 32}; /* 3 x 3 blocks, the last row short */
    sq_fp4weight f4 = {.scale = scale, .group = 32}; /* MXFP4-shaped: 3 groups of 32 a row, codes the first R * C / 2 bytes of w8 */
    const sq_wmat ws[SQ_WKIND_COUNT] = {
        [SQ_WKIND_F32] = {.dtype = SQ_DT_F32, .rows = R, .cols = C, .data = wf},
        [SQ_WKIND_F16] = {.dtype = SQ_DT_F16, .rows = R, .cols = C, .data = wh},
        [SQ_WKIND_BF16] = {.dtype = SQ_DT_BF16, .rows = R, .cols = C, .data = wb},
        [SQ_WKIND_INT4] = {.rows = R, .cols = C, .q = &q4},
        [SQ_WKIND_INT8] = {.rows = R, .cols = C, .q = &q8},
        [SQ_WKIND_FP8_E4M3] = {.dtype = SQ_DT_F8_E4M3, .rows = R, .cols = C, .data = w8, .f8 = &f8},
        [SQ_WKIND_FP8_BLOCK] = {.dtype = SQ_DT_F8_E4M3, .rows = R, .cols = C, .data = w8, .f8 = &f8blk},
        [SQ_WKIND_FP4] = {.dtype = SQ_DT_U8, .rows = R, .cols = C, .data = w8, .f4 = &f4},
        [SQ_WKIND_W8A8] = {.dtype = SQ_DT_I8, .rows = R, .cols = C, .data = w8, .f8 = &w8a8}, /* the bytes read as signed INT8 codes */
    };
    for (int kd = 0; kd < SQ_WKIND_COUNT; kd++) {
        const sq_wkind_traits *t = sq_cpu_wkind_traits((sq_wkind)kd);
        CHECK(sq_cpu_wkind_of(&ws[kd]) == kd, "kind of weight %d: %d", kd, sq_cpu_wkind_of(&ws[kd]));
        CHECK(t && t->name && t->matmul && t->matmul_ref && t->row_to_f32_ref && t->rows_to_f32, "traits of kind %d", kd);
        if (!t || !sq_cpu_has_avx2()) continue;
        t->rows_to_f32(&ws[kd], 0, R, fast);
        int bad = 0;
        for (int r = 0; r < R; r++) {
            t->row_to_f32_ref(&ws[kd], r, row);
            bad += memcmp(row, fast + r * C, sizeof(float) * C) != 0;
        }
        CHECK(bad == 0, "kind %s: rows_to_f32 differs from the reference on %d rows", t->name, bad);
        if (kd == SQ_WKIND_FP8_BLOCK) { /* the reference row itself: each code times its block's scale */
            int off = 0;
            for (int r = 0; r < R; r++) {
                t->row_to_f32_ref(&ws[kd], r, row);
                for (int c = 0; c < C; c++) off += row[c] != sq_e4m3_to_f32(w8[r * C + c]) * f8b[(r / 8) * 3 + c / 32];
            }
            CHECK(off == 0, "fp8-block rows: %d values not code x block scale", off);
        }
        note("cpu", "wkind rows", t->name, "ok (19x96; exact)");
    }
    sq_wmat bad = {.dtype = SQ_DT_I32, .rows = 1, .cols = 1};
    CHECK(sq_cpu_wkind_of(&bad) == -1, "an I32 weight is no kind");
    free(wf);
    free(fast);
    free(row);
    free(wh);
    free(wb);
    free(w8);
    free(codes);
}

/* base.c's triangles (the calibration tree's packed Hessians): the tiled mirror gives every lower element
 * its upper twin, the packing holds the upper triangle row by row, and unpacking puts it back with its
 * mirror; sizes around the 64-wide tiles. */
static void test_triangles(void) {
    const int64_t ks[] = {1, 2, 3, 63, 64, 65, 129, 200};
    for (size_t n = 0; n < sizeof ks / sizeof ks[0]; n++) {
        int64_t k = ks[n], bad = 0;
        float *a = malloc((size_t)(k * k) * sizeof *a), *b = malloc((size_t)(k * k) * sizeof *b);
        for (int64_t i = 0; i < k * k; i++) a[i] = (float)(i % 9973) * 0.5f - 7.0f;
        memcpy(b, a, (size_t)(k * k) * sizeof *b);
        sq_mirror_upper(b, k);
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) bad += b[i * k + j] != (j >= i ? a[i * k + j] : a[j * k + i]);
        CHECK(bad == 0, "mirror k %lld: %lld elements wrong", (long long)k, (long long)bad);
        memcpy(b, a, (size_t)(k * k) * sizeof *b);
        sq_pack_upper(b, k);
        bad = 0;
        for (int64_t i = 0, at = 0; i < k; i++)
            for (int64_t j = i; j < k; j++) bad += b[at++] != a[i * k + j];
        CHECK(bad == 0, "pack k %lld: %lld elements wrong", (long long)k, (long long)bad);
        sq_unpack_upper(b, k);
        bad = 0;
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) bad += b[i * k + j] != (j >= i ? a[i * k + j] : a[j * k + i]);
        CHECK(bad == 0, "unpack k %lld: %lld elements wrong", (long long)k, (long long)bad);
        free(a);
        free(b);
    }
}

/* GPTQ's kept factor: a second solve over the same H (q, k, v) takes the first one's factor of H^-1 and
 * says so, with the bits a solve that computes it gives; another H, damping or column order computes. */
static void test_factor_kept(void) {
    sq_err err = {0};
    int64_t n = 80, k = 48, t = 200;
    float *x = rand_acts(t, k), *h = hessian_on(cpu, x, t, k), *w = rand_vec(n * k, 0.05f);
    float *h2 = malloc((size_t)(k * k) * sizeof *h2);
    memcpy(h2, h, (size_t)(k * k) * sizeof *h2);
    h2[1 * k + 2] *= 1.001f, h2[2 * k + 1] = h2[1 * k + 2];
    struct { const float *h; double damp; bool act; bool kept; } steps[] = {
        {h2, 0.01, false, false}, {h, 0.01, false, false}, {h, 0.01, false, true}, {h, 0.01, false, true},
        {h, 0.02, false, false}, {h, 0.01, true, false}, {h, 0.01, true, true}, {h2, 0.01, false, false}, {h, 0.01, false, false},
    };
    sq_qmatrix first = {0}, q;
    int bad = 0;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        sq_qgrid g = {.kind = SQ_QGRID_INT_MINMAX, .bits = 4, .group_size = 16, .threads = 2};
        sq_gptq_args a = {.act_order = steps[i].act, .damp = steps[i].damp, .block_size = 16};
        CHECK_OK(sq_qmatrix_alloc(&q, n, k, 4, 16, &err), &err);
        sq_qout o = {.q = &q};
        double damp = 0;
        CHECK_OK(cpu->gptq(w, steps[i].h, NULL, n, k, &g, &a, &o, &damp, &err), &err);
        CHECK(o.factor_kept == steps[i].kept, "factor kept at step %zu: %d, expected %d", i, o.factor_kept, steps[i].kept);
        if (i == 1) first = q;
        else {
            /* steps 2, 3 and 8 solve what step 1 did: the same codes, scales and zeros, kept factor or not */
            if ((i == 2 || i == 3 || i == 8) && (memcmp(first.q, q.q, (size_t)(n * k)) || memcmp(first.scale, q.scale, (size_t)(q.n_groups * n) * 4)))
                bad++;
            sq_qmatrix_free(&q);
        }
    }
    CHECK(bad == 0, "kept factor: %d solves differ from the one that computed it", bad);
    note("cpu", "gptq", "factor kept over the same H", bad ? "FAILED" : "ok (hits and misses as expected, the same bits)");
    sq_qmatrix_free(&first);
    free(x), free(h), free(h2), free(w);
}

int main(void) {
    sq_err err = {0};
    cpu = sq_backend_cpu();
    ref = sq_backend_cpu_ref();
    test_qmath();
    test_triangles();
    test_plan();
    test_wkinds();
    backends[nbackends++] = (backend){cpu, "cpu", true};
    const sq_backend_i *cuda = NULL;
    sq_status cs = sq_backend_get("cuda", &cuda, &err);
    const char *need = getenv("SPOTQ_NEED_DEVICE");
    if (cs) {
        /* no GPU (or no CUDA in this build): one line, SQ_ERR_DEVICE, naming CUDA */
        CHECK(cs == SQ_ERR_DEVICE && !strchr(err.msg, '\n') && (strstr(err.msg, "cuda") || strstr(err.msg, "CUDA")), "no device: %s", err.msg);
        CHECK(!(need && !strcmp(need, "cuda")), "SPOTQ_NEED_DEVICE=cuda but: %s", err.msg);
        printf("cuda: %s\n", err.msg);
    } else {
        char desc[256];
        CHECK_OK(cuda->query(desc, sizeof desc, &err), &err);
        printf("device %s\n", desc);
    }
    backends[nbackends++] = (backend){cuda, "cuda", cs == SQ_OK};
    /* supports(): the CPU has every op and grid */
    for (int op = 0; op < SQ_OP_COUNT; op++)
        for (int g = 0; g < SQ_QGRID_COUNT; g++) CHECK(cpu->supports((sq_op)op, (sq_qgrid_kind)g), "cpu supports %s", sq_op_name((sq_op)op));
    test_threads();
    test_factor_kept();
    for (int i = 0; i < nbackends; i++) {
        const backend *bk = &backends[i];
        printf("%s:\n", bk->name);
        test_runtime_ops(bk);
        test_hessian(bk);
        test_factor(bk);
        test_output_error_absmax(bk);
        test_awq_clip(bk);
        test_awq_candidate(bk);
        test_gram_quad(bk);
        test_quantisers(bk);
        test_method(bk);
    }
    return check_report("test_backend_ops");
}
