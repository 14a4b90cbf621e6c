/* test_kernels.c: every fast CPU kernel against its scalar reference (kernels/cpu/ref.c), on odd
 * sizes, every weight dtype, both matmul paths (GEMV and tiled sgemm), both attention paths, and
 * 1 to 3 threads; the thread pool under many small jobs. Tolerances are stated per kernel. */
#include <math.h>
#include <string.h>

#include "../../kernels/cpu/cpu.h"
#include "check.h"

static uint64_t rng = 0x1234567;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) * (1.0 / 8388608.0) - 1.0);
}
static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = frand() * scale;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* A weight matrix of the given dtype with values of the given scale. */
static void *make_weights(sq_dtype dt, int64_t rows, int64_t cols) {
    int64_t n = rows * cols;
    float *f = malloc((size_t)n * sizeof *f);
    fill(f, n, 1.0f);
    if (dt == SQ_DT_F32) return f;
    uint16_t *h = malloc((size_t)n * 2);
    sq_dtype_from_f32(dt, f, h, (size_t)n);
    free(f);
    return h;
}

/* One matmul case, n tokens of x against W (rows, cols) of dtype dt: |fast - ref| <= 1e-5 * sqrt(cols)
 * (values of x and W in [-1, 1], float vs double sums), with and without bias. Each token's y the
 * same bits as that token alone (its decode step), where the kernels promise it: the GEMV (n <= 8,
 * also sq_cpu_dot_row's), and with decode_kernels (a context set for them: generate, bench) a prefill
 * of more than 8 tokens on AVX-512 with cols a multiple of 32. */
static void matmul_case(sq_kctx *c, sq_dtype dt, int64_t rows, int64_t cols, int n, bool decode_kernels) {
    sq_err err = {0};
    void *wd = make_weights(dt, rows, cols);
    sq_wmat w = {.dtype = dt, .rows = rows, .cols = cols, .data = wd};
    float *bias = malloc((size_t)rows * sizeof *bias), *x = malloc((size_t)(n * cols) * sizeof *x), *y = malloc((size_t)(n * rows) * sizeof *y),
          *yr = malloc((size_t)(n * rows) * sizeof *yr);
    fill(bias, rows, 1.0f);
    fill(x, n * cols, 1.0f);
    const char *what = decode_kernels ? "prefill" : "matmul";
    for (int b = 0; b < 2; b++) {
        CHECK_OK(sq_cpu_matmul_ref(c, &w, b ? bias : NULL, x, yr, n, &err), &err);
        CHECK_OK(sq_cpu_matmul(c, &w, b ? bias : NULL, x, y, n, &err), &err);
        double diff = max_abs_diff(y, yr, n * rows), tol = 1e-5 * sqrt((double)cols);
        CHECK(diff <= tol, "%s %s %lldx%lld n=%d bias=%d threads=%d: %.3g > %.3g", what, sq_dtype_name(dt), (long long)rows, (long long)cols, n, b,
              c->threads, diff, tol);
    }
    if (n <= 8 || (decode_kernels && sq_cpu_isa() >= SQ_ISA_AVX512 && cols % 32 == 0)) {
        bool same = true;
        for (int t = 0; t < n; t++) {
            CHECK_OK(sq_cpu_matmul(c, &w, bias, x + (int64_t)t * cols, yr, 1, &err), &err); /* y has the bias (b = 1) */
            same &= memcmp(yr, y + (int64_t)t * rows, (size_t)rows * sizeof *yr) == 0;
            for (int64_t r = 0; r < rows && n <= 8; r++) same &= sq_cpu_dot_row(&w, r, x + (int64_t)t * cols) + bias[r] == yr[r];
        }
        CHECK(same, "%s %s %lldx%lld n=%d threads=%d: a token's y is not its decode step's", what, sq_dtype_name(dt), (long long)rows,
              (long long)cols, n, c->threads);
    }
    free(x);
    free(y);
    free(yr);
    free(bias);
    free(wd);
}

static void test_matmul(sq_kctx *c) {
    sq_err err = {0};
    const sq_dtype dts[] = {SQ_DT_F32, SQ_DT_F16, SQ_DT_BF16};
    const int64_t shapes[][2] = {{37, 70}, {300, 256}, {200, 4100}, {16, 8}, {5, 1}};
    const int ns[] = {1, 3, 4, 5, 33};
    for (int d = 0; d < 3; d++)
        for (int si = 0; si < 5; si++)
            for (int ni = 0; ni < 5; ni++) matmul_case(c, dts[d], shapes[si][0], shapes[si][1], ns[ni], false);
    /* decode kernels: rows past a multiple of 6 and tokens past a multiple of 8 included */
    const int64_t pshapes[][2] = {{37, 256}, {100, 1024}, {7, 96}, {13, 100}};
    const int pns[] = {9, 16, 17, 40};
    sq_cpu_ctx_set_int_rows(c, 1 << 20);
    for (int d = 0; d < 3; d++)
        for (int si = 0; si < 4; si++)
            for (int ni = 0; ni < 4; ni++) matmul_case(c, dts[d], pshapes[si][0], pshapes[si][1], pns[ni], true);
    sq_cpu_ctx_set_int_rows(c, 0);
    float *x = calloc(4, sizeof *x), *y = calloc(4, sizeof *y);
    sq_wmat bad = {.dtype = SQ_DT_I8, .rows = 2, .cols = 2, .data = x};
    CHECK(sq_cpu_matmul(c, &bad, NULL, x, y, 1, &err) == SQ_ERR_UNSUPPORTED, "I8 weights refused");
    free(x);
    free(y);
}

/* embed: exact (a conversion). */
static void test_embed(sq_kctx *c) {
    const sq_dtype dts[] = {SQ_DT_F32, SQ_DT_F16, SQ_DT_BF16};
    int ids[70];
    for (int i = 0; i < 70; i++) ids[i] = (i * 37) % 50;
    for (int d = 0; d < 3; d++) {
        void *wd = make_weights(dts[d], 50, 19);
        sq_wmat w = {.dtype = dts[d], .rows = 50, .cols = 19, .data = wd};
        float a[70 * 19], b[70 * 19];
        sq_cpu_embed(c, &w, ids, 70, a);
        sq_cpu_embed_ref(c, &w, ids, 70, b);
        CHECK(memcmp(a, b, sizeof a) == 0, "embed %s", sq_dtype_name(dts[d]));
        free(wd);
    }
}

/* rmsnorm 1e-6 relative, rope 1e-6, swiglu 1e-6 relative, add exact, exp 3e-7 relative. */
static void test_elementwise(sq_kctx *c) {
    enum { N = 5, D = 99 };
    float x[N * D], g[D], y[N * D], yr[N * D];
    fill(x, N * D, 3.0f);
    fill(g, D, 2.0f);
    sq_cpu_rmsnorm(c, x, g, 1e-5f, y, N, D);
    sq_cpu_rmsnorm_ref(c, x, g, 1e-5f, yr, N, D);
    CHECK(max_abs_diff(y, yr, N * D) < 1e-5, "rmsnorm: %.3g", max_abs_diff(y, yr, N * D));
    memcpy(y, x, sizeof x);
    sq_cpu_rmsnorm(c, y, g, 1e-5f, y, N, D);
    CHECK(max_abs_diff(y, yr, N * D) < 1e-5, "rmsnorm in place");

    const int hds[] = {8, 12, 64, 34};
    for (int k = 0; k < 4; k++) {
        int hd = hds[k], heads = 3, stride = heads * hd + 5, n = 4;
        float *a = malloc((size_t)(n * stride) * sizeof *a), *b = malloc((size_t)(n * stride) * sizeof *b);
        float *cs = malloc((size_t)(n * hd / 2) * sizeof *cs), *sn = malloc((size_t)(n * hd / 2) * sizeof *sn);
        fill(a, n * stride, 2.0f);
        memcpy(b, a, (size_t)(n * stride) * sizeof *a);
        for (int i = 0; i < n * hd / 2; i++) {
            cs[i] = cosf((float)i * 0.37f);
            sn[i] = sinf((float)i * 0.37f);
        }
        sq_cpu_rope(c, a, n, stride, heads, hd, cs, sn);
        sq_cpu_rope_ref(c, b, n, stride, heads, hd, cs, sn);
        CHECK(max_abs_diff(a, b, n * stride) < 1e-6, "rope head_dim %d: %.3g", hd, max_abs_diff(a, b, n * stride));
        free(a);
        free(b);
        free(cs);
        free(sn);
    }

    enum { M = 40000 };
    float *gt = malloc(M * sizeof *gt), *up = malloc(M * sizeof *up), *o = malloc(M * sizeof *o), *orf = malloc(M * sizeof *orf);
    fill(gt, M, 30.0f);
    fill(up, M, 2.0f);
    gt[0] = 100.0f;
    gt[1] = -100.0f;
    sq_cpu_swiglu(c, gt, up, o, M);
    sq_cpu_swiglu_ref(c, gt, up, orf, M);
    double worst = 0;
    for (int i = 0; i < M; i++) worst = fmax(worst, fabs((double)o[i] - orf[i]) / (fabs(orf[i]) + 1e-6));
    CHECK(worst < 1e-6, "swiglu: %.3g relative", worst);
    memcpy(o, up, M * sizeof *o);
    memcpy(orf, up, M * sizeof *o);
    sq_cpu_add(c, o, gt, 1001);
    sq_cpu_add_ref(c, orf, gt, 1001);
    CHECK(memcmp(o, orf, M * sizeof *o) == 0, "add");

    float e[1003];
    for (int i = 0; i < 1003; i++) e[i] = -104.0f + (float)i * 0.2f;
    e[0] = -INFINITY;
    e[1] = NAN;
    float er[1003];
    memcpy(er, e, sizeof e);
    sq_cpu_vexp(e, 1003);
    worst = 0;
    for (int i = 2; i < 1003; i++)
        if (er[i] > -87.0f && er[i] < 88.0f) worst = fmax(worst, fabs(e[i] - exp((double)er[i])) / exp((double)er[i]));
    CHECK(worst < 3e-7, "exp: %.3g relative", worst);
    CHECK(e[0] == 0.0f && isnan(e[1]) && e[2] == 0.0f, "exp(-inf) = 0, exp(NaN) = NaN, exp(-104) = 0");
    free(gt);
    free(up);
    free(o);
    free(orf);
}

/* attention: 2e-6 absolute (values in [-1, 1]; softmax weights sum to one). With a sliding window
 * (the last cases), the same against the reference, and the window must change the output. */
static void test_attention(sq_kctx *c) {
    sq_err err = {0};
    const struct { int n, pos0, heads, kv, hd, window; } cases[] = {
        {1, 0, 4, 4, 8, 0}, {1, 20, 8, 2, 16, 0}, {3, 5, 6, 3, 12, 0}, {20, 0, 4, 1, 64, 0}, {17, 9, 8, 4, 8, 0}, {8, 100, 2, 2, 34, 0},
        {64, 0, 4, 2, 16, 0}, {1, 20, 8, 2, 16, 7}, {3, 5, 6, 3, 12, 4}, {20, 0, 4, 1, 64, 5}, {17, 9, 8, 4, 8, 16}, {64, 30, 4, 2, 16, 33},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int n = cases[k].n, nk = cases[k].pos0 + n, hd = cases[k].hd;
        int qs = cases[k].heads * hd, kvs = cases[k].kv * hd + 3;
        float *q = malloc((size_t)(n * qs) * sizeof *q), *kc = malloc((size_t)(nk * kvs) * sizeof *kc),
              *vc = malloc((size_t)(nk * kvs) * sizeof *vc), *o = malloc((size_t)(n * qs) * sizeof *o),
              *orf = malloc((size_t)(n * qs) * sizeof *orf);
        fill(q, n * qs, 2.0f);
        fill(kc, nk * kvs, 2.0f);
        fill(vc, nk * kvs, 1.0f);
        sq_attn a = {q, kc, vc, o, n, cases[k].pos0, cases[k].heads, cases[k].kv, hd, kvs, 1.0f / sqrtf((float)hd), cases[k].window};
        CHECK_OK(sq_cpu_attention(c, &a, &err), &err);
        a.out = orf;
        CHECK_OK(sq_cpu_attention_ref(c, &a, &err), &err);
        double d = max_abs_diff(o, orf, n * qs);
        CHECK(d < 2e-6, "attention n=%d pos0=%d heads=%d/%d hd=%d window=%d threads=%d: %.3g", n, cases[k].pos0, cases[k].heads, cases[k].kv,
              hd, cases[k].window, c->threads, d);
        if (cases[k].window) {
            a.window = 0;
            CHECK_OK(sq_cpu_attention_ref(c, &a, &err), &err);
            CHECK(max_abs_diff(o, orf, n * qs) > 1e-3, "window %d changes nothing", cases[k].window);
        }
        free(q);
        free(kc);
        free(vc);
        free(o);
        free(orf);
    }
}

typedef struct {
    int counts[8];
    int nth_seen;
} pool_job;

static void count(void *arg, int ith, int nth) {
    pool_job *j = arg;
    j->counts[ith]++;
    j->nth_seen = nth;
}

static void test_pool(void) {
    sq_err err = {0};
    for (int t = 1; t <= 4; t++) {
        sq_pool *p;
        CHECK_OK(sq_pool_new(&p, t, &err), &err);
        pool_job j = {{0}, 0};
        for (int i = 0; i < 2000; i++) sq_pool_run(p, count, &j);
        int ok = j.nth_seen == t;
        for (int i = 0; i < t; i++) ok &= j.counts[i] == 2000;
        CHECK(ok, "pool of %d: every thread ran every job", t);
        sq_pool_free(p);
    }
    int64_t lo, hi, total = 0;
    for (int i = 0; i < 3; i++) {
        sq_split(100, i, 3, 16, &lo, &hi);
        CHECK(lo % 16 == 0 && hi >= lo, "split aligned");
        total += hi - lo;
    }
    CHECK(total == 100, "split covers everything");
}

/* The integer GEMV of quantised weights (4 and 8 bits, groups of 32, 64, 128 and one a row, zeros
 * anywhere in the grid): the activation quantiser equals its scalar reference bit for bit (ties,
 * an all-zero block); the GEMV is within 1e-5 relative of its own double reference (W times x as
 * quantised) and within sum_b (d_b / 2) sum_{j in b} |W_j| (+1e-5 relative) of the exact product;
 * a token's y is the same bit for bit whatever the number of threads and of rows of x beside it. */
static void test_qint(sq_kctx *c) {
    sq_err err = {0};
    sq_kctx *one = NULL;
    CHECK_OK(sq_cpu_ctx_new(&one, 1, &err), &err);
    /* the quantiser: x = 127 (so d = 1) and halves, which round to even; then an all-zero block */
    float xt[64];
    for (int i = 0; i < 32; i++) xt[i] = i == 0 ? 127.0f : (float)(i - 16) + 0.5f;
    for (int i = 32; i < 64; i++) xt[i] = 0;
    for (int bits = 4; bits <= 8; bits += 4) {
        int8_t c1[64], c2[64];
        float d1[2], d2[2], s1[2], s2[2];
        sq_cpu_q8_quantize(xt, 64, bits, c1, d1, s1);
        sq_cpu_q8_quantize_ref(xt, 64, bits, c2, d2, s2);
        CHECK(!memcmp(c1, c2, 64) && !memcmp(d1, d2, sizeof d1) && !memcmp(s1, s2, sizeof s1), "q8 quantiser (%d-bit order) differs from its reference", bits);
#define SLOT(j) (bits == 4 ? ((j) & ~63) + (((j) & 1) ? 32 : 0) + (((j) & 63) >> 1) : (j))
        /* x 1.5, 2.5, 3.5, -1.5, -0.5 at columns 17, 18, 19, 14, 15: codes 2, 2, 4, -2, 0 */
        CHECK(c2[SLOT(17)] == 2 && c2[SLOT(18)] == 2 && c2[SLOT(19)] == 4 && c2[SLOT(14)] == -2 && c2[SLOT(15)] == 0 && c2[SLOT(0)] == 127,
              "ties to even (%d-bit order)", bits);
#undef SLOT
        CHECK(d2[0] == 1.0f && d2[1] == 0.0f && s2[1] == 0.0f, "block scales %g %g", d2[0], d2[1]);
        float xr[384];
        fill(xr, 384, 3.0f);
        int8_t r1[384], r2[384];
        float e1[12], e2[12], f1[12], f2[12];
        sq_cpu_q8_quantize(xr, 384, bits, r1, e1, f1);
        sq_cpu_q8_quantize_ref(xr, 384, bits, r2, e2, f2);
        CHECK(!memcmp(r1, r2, 384) && !memcmp(e1, e2, sizeof e1) && !memcmp(f1, f2, sizeof f1), "q8 quantiser (%d-bit, random) differs from its reference", bits);
    }
    const int64_t shapes[][2] = {{37, 64}, {130, 384}, {5, 384}};
    const int gss[] = {32, 64, 128, -1};
    const int ns[] = {1, 2, 3, 4, 5, 8};
    /* uni: one zero point (symmetric: 8 or 128), the kernels' zero_uniform paths (the zeros not read;
     * 8-bit: no correction at all) */
    for (int uni = 0; uni < 2; uni++)
    for (int bits = 4; bits <= 8; bits += 4)
        for (int si = 0; si < 3; si++)
            for (int gi = 0; gi < 4; gi++) {
                int64_t R = shapes[si][0], K = shapes[si][1], gs = gss[gi] < 0 ? K : gss[gi];
                if (K % gs) continue;
                int64_t G = K / gs, words = R * K * bits / 32;
                uint32_t *codes = malloc((size_t)words * sizeof *codes);
                float *sc = malloc((size_t)(R * G) * sizeof *sc), *zr = malloc((size_t)(R * G) * sizeof *zr);
                for (int64_t i = 0; i < words; i++) {
                    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                    codes[i] = (uint32_t)(rng >> 32);
                }
                for (int64_t i = 0; i < R * G; i++) {
                    sc[i] = 0.01f + 0.005f * frand();
                    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                    zr[i] = uni ? (float)(1u << (bits - 1)) : (float)((rng >> 40) % (1u << bits));
                }
                sq_qweight q = {.bits = bits, .group_size = (int)gs, .n_groups = G, .codes = codes, .scale = sc, .zero = zr, .zero_uniform = uni};
                sq_wmat w = {.dtype = SQ_DT_F32, .rows = R, .cols = K, .q = &q};
                float *x = malloc((size_t)(8 * K) * sizeof *x), *bias = malloc((size_t)R * sizeof *bias), *row = malloc((size_t)K * sizeof *row);
                float *y = malloc((size_t)(8 * R) * sizeof *y), *y1 = malloc((size_t)(8 * R) * sizeof *y1), *yr = malloc((size_t)(8 * R) * sizeof *yr);
                fill(x, 8 * K, 2.0f);
                for (int64_t i = 0; i < K; i++) x[3 * K + i] *= i % 37 == 0 ? 50.0f : 1.0f; /* outliers in token 3 */
                fill(bias, R, 1.0f);
                int8_t *xc = malloc((size_t)K);
                float *d = malloc((size_t)(K / 32) * sizeof *d), *ds = malloc((size_t)(K / 32) * sizeof *ds);
                for (int ni = 0; ni < 6; ni++) {
                    int n = ns[ni];
                    CHECK(sq_cpu_qmatmul_int_ok(c, &w, n), "integer GEMV takes %d-bit g%lld %lldx%lld n=%d", bits, (long long)gs, (long long)R, (long long)K, n);
                    CHECK_OK(sq_cpu_qmatmul(c, &w, bias, x, y, n, &err), &err);
                    CHECK_OK(sq_cpu_qmatmul(one, &w, bias, x, y1, n, &err), &err);
                    CHECK(!memcmp(y, y1, (size_t)(n * R) * sizeof *y), "integer GEMV %d-bit g%lld n=%d: %d threads differ from 1", bits, (long long)gs, n, c->threads);
                    /* every variant the CPU has gives the same bits (the same integers, the same float operations) */
                    sq_isa now = sq_cpu_isa();
                    for (int v = SQ_ISA_AVX2; v <= (int)sq_cpu_isa_max(); v++) {
                        sq_cpu_set_isa((sq_isa)v);
                        CHECK_OK(sq_cpu_qmatmul(c, &w, bias, x, y1, n, &err), &err);
                        CHECK(!memcmp(y, y1, (size_t)(n * R) * sizeof *y), "integer GEMV %d-bit g%lld n=%d: %s differs from %s", bits, (long long)gs, n,
                              sq_cpu_isa_name((sq_isa)v), sq_cpu_isa_name(now));
                    }
                    sq_cpu_set_isa(now);
                    CHECK_OK(sq_cpu_qmatmul_ref(c, &w, bias, x, yr, n, &err), &err);
                    double worst_q = 0, over = 0, worst = 0, scale = 0;
                    for (int t = 0; t < n; t++) {
                        sq_cpu_q8_quantize_ref(x + t * K, K, bits, xc, d, ds);
                        for (int64_t r = 0; r < R; r++) {
                            sq_cpu_qrow_to_f32(&w, r, row);
                            double e = bias[r], bound = 0;
                            for (int64_t j = 0; j < K; j++) {
                                int64_t slot = bits == 4 ? (j & ~63) + ((j & 1) ? 32 : 0) + ((j & 63) >> 1) : j;
                                e += (double)row[j] * d[j / 32] * xc[slot];
                                bound += 0.5 * d[j / 32] * fabs((double)row[j]);
                            }
                            double got = y[t * R + r], ref = yr[t * R + r];
                            scale = fmax(scale, fabs(ref));
                            worst_q = fmax(worst_q, fabs(got - e));
                            worst = fmax(worst, fabs(got - ref));
                            over = fmax(over, fabs(got - ref) - bound);
                        }
                    }
                    CHECK(worst_q <= 1e-5 * (scale + 1), "integer GEMV %d-bit g%lld %lldx%lld n=%d: %.3g from its q8 reference (scale %.3g)", bits,
                          (long long)gs, (long long)R, (long long)K, n, worst_q, scale);
                    CHECK(over <= 1e-5 * (scale + 1), "integer GEMV %d-bit g%lld %lldx%lld n=%d: %.3g beyond the rounding bound", bits, (long long)gs,
                          (long long)R, (long long)K, n, over);
                    CHECK(worst > 0, "integer GEMV %d-bit g%lld n=%d equals the float reference: x was not quantised", bits, (long long)gs, n);
                    /* each token alone gives its row of the batch */
                    for (int t = 0; t < n; t++) {
                        CHECK_OK(sq_cpu_qmatmul(c, &w, bias, x + t * K, y1, 1, &err), &err);
                        CHECK(!memcmp(y1, y + t * R, (size_t)R * sizeof *y1), "integer GEMV %d-bit g%lld n=%d: token %d alone differs", bits,
                              (long long)gs, n, t);
                    }
                }
                free(codes); free(sc); free(zr); free(x); free(bias); free(row); free(y); free(y1); free(yr); free(xc); free(d); free(ds);
            }
    sq_cpu_ctx_free(one);
}

/* Block-wise FP8 (kernels/cpu/fp8block.c, the fp8-block weight kind) against vLLM's computation written
 * out here independently: activations per token and group of block_k, s = max(amax, 1e-10) / 448,
 * q = e4m3(clamp(x / s, +-448)); y = sum over K blocks of a_s * b_s * (sum of e4m3 products), in double.
 * The kernels' reference equals it to float rounding (<= 1e-6 relative); the fast path (x' and W' each
 * rounded to float once, then sgemm) within 1e-5 * sqrt(cols) of |y|'s scale. K not a multiple of the
 * block: the last group is short (vLLM would assert; spotq's serving check rejects it). */
static double fp8b_want(const uint8_t *w, const float *bs, const float *x, int64_t rows, int64_t K, int bn, int bk, int64_t t, int64_t r,
                        bool quant) {
    int64_t kb = (K + bk - 1) / bk;
    const float *xt = x + t * K;
    double y = 0;
    for (int64_t b = 0; b < kb; b++) {
        int64_t c0 = b * bk, c1 = c0 + bk < K ? c0 + bk : K;
        double amax = 0, part = 0;
        for (int64_t c = c0; c < c1; c++) amax = fmax(amax, fabs(xt[c]));
        float s = (float)fmax(amax, 1e-10) / 448.0f;
        for (int64_t c = c0; c < c1; c++) {
            double xv = quant ? (double)sq_e4m3_to_f32(sq_f32_to_e4m3(fmaxf(-448.0f, fminf(xt[c] / s, 448.0f)))) : (double)xt[c];
            part += xv * (double)sq_e4m3_to_f32(w[r * K + c]);
        }
        y += part * (quant ? (double)s : 1.0) * (double)bs[(r / bn) * kb + b];
    }
    (void)rows;
    return y;
}

static void test_fp8_block(sq_kctx *c) {
    sq_err err = {0};
    const int64_t shapes[][2] = {{256, 384}, {200, 300}, {37, 70}, {128, 128}};
    const int blocks[][2] = {{128, 128}, {128, 128}, {16, 32}, {64, 128}};
    const int ns[] = {1, 3, 9, 33};
    for (int si = 0; si < 4; si++) {
        int64_t rows = shapes[si][0], K = shapes[si][1];
        int bn = blocks[si][0], bk = blocks[si][1];
        int64_t nb = (rows + bn - 1) / bn, kb = (K + bk - 1) / bk;
        uint8_t *w = malloc((size_t)(rows * K));
        float *bs = malloc((size_t)(nb * kb) * sizeof *bs), *bias = malloc((size_t)rows * sizeof *bias);
        for (int64_t i = 0; i < rows * K; i++) w[i] = sq_f32_to_e4m3(frand() * 448.0f);
        for (int64_t i = 0; i < nb * kb; i++) bs[i] = (0.5f + 0.5f * (frand() + 1.0f)) / 448.0f;
        fill(bias, rows, 1.0f);
        for (int q = 0; q < 2; q++) {
            sq_fp8weight f = {.scale = bs, .act = q ? SQ_FP8_ACT_DYNAMIC_GROUP : SQ_FP8_ACT_NONE, .block_n = bn, .block_k = bk};
            sq_wmat wm = {.dtype = SQ_DT_F8_E4M3, .rows = rows, .cols = K, .data = w, .f8 = &f};
            CHECK(sq_cpu_wkind_of(&wm) == SQ_WKIND_FP8_BLOCK, "block-wise FP8 is its own weight kind");
            for (int ni = 0; ni < 4; ni++) {
                int n = ns[ni];
                float *x = malloc((size_t)(n * K) * sizeof *x), *y = malloc((size_t)(n * rows) * sizeof *y),
                      *yr = malloc((size_t)(n * rows) * sizeof *yr);
                fill(x, n * K, 3.0f);
                if (n > 1) memset(x + K, 0, (size_t)K * sizeof *x); /* an all-zero token: the 1e-10 floor, no NaN */
                CHECK_OK(sq_cpu_matmul_ref(c, &wm, bias, x, yr, n, &err), &err);
                CHECK_OK(sq_cpu_matmul(c, &wm, bias, x, y, n, &err), &err);
                double dref = 0, dfast = 0, mag = 0;
                for (int t = 0; t < n; t++)
                    for (int64_t r = 0; r < rows; r++) {
                        double want = fp8b_want(w, bs, x, rows, K, bn, bk, t, r, q) + bias[r];
                        mag = fmax(mag, fabs(want));
                        dref = fmax(dref, fabs(yr[t * rows + r] - want));
                        dfast = fmax(dfast, fabs(y[t * rows + r] - want));
                        if (!isfinite(y[t * rows + r])) dfast = INFINITY;
                    }
                CHECK(dref <= 1e-6 * fmax(mag, 1.0), "fp8-block ref %lldx%lld [%d,%d] n=%d act %d: %.3g off vLLM's formula", (long long)rows,
                      (long long)K, bn, bk, n, q, dref);
                CHECK(dfast <= 1e-5 * sqrt((double)K) * fmax(mag, 1.0), "fp8-block %lldx%lld [%d,%d] n=%d act %d threads=%d: %.3g", (long long)rows,
                      (long long)K, bn, bk, n, q, c->threads, dfast);
                free(x);
                free(y);
                free(yr);
            }
        }
        free(w);
        free(bs);
        free(bias);
    }
    /* one group by hand: x = (1, -2, 0.3) in a group of 3: s = 2/448, codes 224, -448, 67.2 -> 224, -448, 64 (e4m3: step 8 in [64, 128)) */
    float x[3] = {1.0f, -2.0f, 0.3f}, out[3];
    sq_fp8weight f = {.act = SQ_FP8_ACT_DYNAMIC_GROUP, .block_n = 1, .block_k = 3};
    sq_cpu_fp8b_act_ref(&f, x, out, 1, 3);
    float s = 2.0f / 448.0f;
    CHECK(out[0] == 224.0f * s && out[1] == -448.0f * s && out[2] == 64.0f * s, "activation group: %g %g %g", out[0] / s, out[1] / s, out[2] / s);
}

int main(void) {
    sq_err err = {0};
    CHECK(sq_cpu_has_avx2(), "this machine has AVX2/FMA/F16C (else the fast kernels are not used)");
    __builtin_cpu_init();
    /* Every kernel variant this CPU has runs the whole set (SPOTQ_CPU_ISA may lower the most); a CI
     * machine without AVX-512 runs the avx2 one only, and says so. */
    sq_isa top = sq_cpu_isa();
    printf("kernel variants: cpu has %s (avx512f %d, avx512vnni %d, avx512bf16 %d); running avx2 .. %s\n", sq_cpu_isa_name(sq_cpu_isa_max()),
           __builtin_cpu_supports("avx512f") != 0, __builtin_cpu_supports("avx512vnni") != 0, __builtin_cpu_supports("avx512bf16") != 0,
           sq_cpu_isa_name(top));
    for (int v = SQ_ISA_AVX2; v <= (int)top; v++) {
    sq_cpu_set_isa((sq_isa)v);
    printf("variant %s: integer GEMV on %s\n", sq_cpu_isa_name((sq_isa)v), v == SQ_ISA_AVX512 ? "vpdpbusd (avx512vnni: 256-bit, and 512-bit token pairs from 4 tokens on)" : "maddubs (avx2)");
    test_pool();
    for (int t = 1; t <= 3; t++) {
        sq_kctx *c;
        CHECK_OK(sq_cpu_ctx_new(&c, t, &err), &err);
        test_matmul(c);
        test_attention(c);
        test_qint(c);
        test_fp8_block(c);
        if (t == 1) {
            test_embed(c);
            test_elementwise(c);
        }
        sq_cpu_ctx_free(c);
    }
    }
    sq_cpu_set_isa(top);
    return check_report("test_kernels");
}
