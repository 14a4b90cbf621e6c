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

/* matmul: |fast - ref| <= 1e-5 * sqrt(cols) (values of x and W in [-1, 1], float vs double sums). */
static void test_matmul(sq_kctx *c) {
    sq_err err = {0};
    const sq_dtype dts[] = {SQ_DT_F32, SQ_DT_F16, SQ_DT_BF16};
    const int64_t shapes[][2] = {{37, 70}, {300, 256}, {200, 4100}, {16, 8}, {5, 1}};
    const int ns[] = {1, 3, 4, 5, 33};
    for (int d = 0; d < 3; d++)
        for (int si = 0; si < 5; si++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            void *wd = make_weights(dts[d], rows, cols);
            sq_wmat w = {.dtype = dts[d], .rows = rows, .cols = cols, .data = wd};
            float *bias = malloc((size_t)rows * sizeof *bias);
            fill(bias, rows, 1.0f);
            for (int ni = 0; ni < 5; ni++) {
                int n = ns[ni];
                float *x = malloc((size_t)(n * cols) * sizeof *x), *y = malloc((size_t)(n * rows) * sizeof *y),
                      *yr = malloc((size_t)(n * rows) * sizeof *yr);
                fill(x, n * cols, 1.0f);
                for (int b = 0; b < 2; b++) {
                    CHECK_OK(sq_cpu_matmul_ref(c, &w, b ? bias : NULL, x, yr, n, &err), &err);
                    CHECK_OK(sq_cpu_matmul(c, &w, b ? bias : NULL, x, y, n, &err), &err);
                    double diff = max_abs_diff(y, yr, n * rows), tol = 1e-5 * sqrt((double)cols);
                    CHECK(diff <= tol, "matmul %s %lldx%lld n=%d bias=%d threads=%d: %.3g > %.3g", sq_dtype_name(dts[d]), (long long)rows,
                          (long long)cols, n, b, c->threads, diff, tol);
                }
                free(x);
                free(y);
                free(yr);
            }
            free(bias);
            free(wd);
        }
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

int main(void) {
    sq_err err = {0};
    CHECK(sq_cpu_has_avx2(), "this machine has AVX2/FMA/F16C (else the fast kernels are not used)");
    test_pool();
    for (int t = 1; t <= 3; t++) {
        sq_kctx *c;
        CHECK_OK(sq_cpu_ctx_new(&c, t, &err), &err);
        test_matmul(c);
        test_attention(c);
        if (t == 1) {
            test_embed(c);
            test_elementwise(c);
        }
        sq_cpu_ctx_free(c);
    }
    return check_report("test_kernels");
}
