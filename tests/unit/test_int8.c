/* test_int8.c: INT8 W8A8 against the peers and against its own scalar reference.
 * (1) tests/fixtures/peers/peer_int8.safetensors (scripts/check_peers.py, make check-peers): fixed matrices
 *     quantised by compressed-tensors 0.20's own calculate_qparams + IntQuantizationCompressor.compress
 *     (weight I8, weight_scale F32 [N, 1]): sq_int8_quantize's codes and scales equal them bit for bit, a zero
 *     row and an outlier column included; activations under vLLM's dynamic per-token INT8 formula (a zero token
 *     included) and the int32 GEMM with CUTLASS's epilogue: the W8A8 kernel and its reference equal them bit
 *     for bit.
 * (2) The threaded AVX2 kernel equals the scalar reference bit for bit at several shapes (K not a multiple of
 *     16, 1 to 19 tokens, bias), through the traits table's dispatch.
 * (3) The format row (compressed-tensors int-quantized) writes a linear and reads it back unchanged; it
 *     refuses what it cannot hold.
 * (4) GPTQ on the INT8 channel grid lowers the Hessian-weighted error below round-to-nearest on the same scales. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../formats/format.h"
#include "../../formats/safetensors.h"
#include "../../kernels/cpu/cpu.h"
#include "../../quant/method.h"
#include "check.h"

#define PEER_FIXTURE "tests/fixtures/peers/peer_int8.safetensors"

static uint64_t rng = 0x14C0FFEEull;
static float frand(void) { /* xorshift -> [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) * 0x1p-52 - 1.0);
}

static const sq_tensor *get(const sq_st *st, const char *m, const char *suffix) {
    char name[64];
    snprintf(name, sizeof name, "%s.%s", m, suffix);
    const sq_tensor *t = sq_st_find(st, name);
    CHECK(t != NULL, "missing fixture tensor %s (make check-peers)", name);
    return t;
}

static void test_peer(sq_kctx *fast, sq_kctx *ref) {
    sq_err err = {0};
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, PEER_FIXTURE, &err), &err);
    if (!st) return;
    static const char *mats[] = {"m0", "m1"};
    for (int mi = 0; mi < 2; mi++) {
        const sq_tensor *src = get(st, mats[mi], "source"), *cw = get(st, mats[mi], "ct_weight"), *cs = get(st, mats[mi], "ct_weight_scale"),
                        *x = get(st, mats[mi], "x"), *xq = get(st, mats[mi], "x_q"), *xs = get(st, mats[mi], "x_scale"), *y = get(st, mats[mi], "y");
        if (!src || !cw || !cs || !x || !xq || !xs || !y) continue;
        int64_t n = src->shape[0], k = src->shape[1];
        int t = (int)x->shape[0];
        int8_t *codes = malloc((size_t)(n * k));
        float *scale = malloc((size_t)n * sizeof *scale), *got = malloc((size_t)(t * (k > n ? k : n)) * sizeof *got);
        CHECK_OK(sq_int8_quantize(src->data, n, k, codes, scale, "fixture", &err), &err);
        CHECK(cw->dtype == SQ_DT_I8 && !memcmp(codes, cw->data, (size_t)(n * k)), "%s: codes differ from compressed-tensors'", mats[mi]);
        CHECK(cs->dtype == SQ_DT_F32 && !memcmp(scale, cs->data, (size_t)n * sizeof *scale), "%s: scales differ from compressed-tensors'", mats[mi]);
        sq_fp8weight f = {.scale = cs->data, .per_channel = true, .act = SQ_FP8_ACT_DYNAMIC_TOKEN};
        sq_wmat w = {.dtype = SQ_DT_I8, .rows = n, .cols = k, .data = cw->data, .f8 = &f};
        CHECK(sq_cpu_wkind_of(&w) == SQ_WKIND_W8A8, "kind");
        /* the activations as the GEMM sees them: vLLM's codes times its scale */
        sq_cpu_w8a8_act_ref(&w, x->data, got, t);
        int bad = 0;
        for (int i = 0; i < t; i++)
            for (int64_t j = 0; j < k; j++) bad += got[i * k + j] != (float)((const int8_t *)xq->data)[i * k + j] * ((const float *)xs->data)[i];
        CHECK(bad == 0, "%s: %d activations differ from vLLM's per-token INT8", mats[mi], bad);
        for (int pass = 0; pass < 2; pass++) {
            CHECK_OK((pass ? sq_cpu_matmul_ref(ref, &w, NULL, x->data, got, t, &err) : sq_cpu_matmul(fast, &w, NULL, x->data, got, t, &err)), &err);
            CHECK(!memcmp(got, y->data, (size_t)(t * n) * sizeof *got), "%s: %s output differs from vLLM's formula", mats[mi], pass ? "reference" : "fast");
        }
        free(codes), free(scale), free(got);
    }
    sq_st_close(st);
}

static void test_fast_vs_ref(sq_kctx *fast, sq_kctx *ref) {
    static const struct { int64_t n, k; int t; } cases[] = {{64, 64, 1}, {172, 64, 3}, {64, 172, 19}, {33, 100, 8}, {130, 260, 5}};
    sq_err err = {0};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        int64_t n = cases[ci].n, k = cases[ci].k;
        int t = cases[ci].t;
        float *w = malloc((size_t)(n * k) * sizeof *w), *x = malloc((size_t)(t * k) * sizeof *x), *bias = malloc((size_t)n * sizeof *bias);
        float *y0 = malloc((size_t)(t * n) * sizeof *y0), *y1 = malloc((size_t)(t * n) * sizeof *y1), *scale = malloc((size_t)n * sizeof *scale);
        int8_t *codes = malloc((size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) w[i] = frand() * 0.1f;
        for (int64_t i = 0; i < t * k; i++) x[i] = frand() * 3.0f;
        for (int64_t i = 0; i < n; i++) bias[i] = frand();
        if (t > 1) memset(x + k, 0, (size_t)k * sizeof *x); /* a zero token */
        CHECK_OK(sq_int8_quantize(w, n, k, codes, scale, "random", &err), &err);
        sq_fp8weight f = {.scale = scale, .per_channel = true, .act = SQ_FP8_ACT_DYNAMIC_TOKEN};
        sq_wmat wm = {.dtype = SQ_DT_I8, .rows = n, .cols = k, .data = codes, .f8 = &f};
        CHECK_OK(sq_cpu_matmul(fast, &wm, bias, x, y0, t, &err), &err);
        CHECK_OK(sq_cpu_matmul_ref(ref, &wm, bias, x, y1, t, &err), &err);
        CHECK(!memcmp(y0, y1, (size_t)(t * n) * sizeof *y0), "%lld x %lld, %d tokens: fast != reference", (long long)n, (long long)k, t);
        /* and close to the float product (the INT8 rounding of x and W is all that differs) */
        double e = 0, m = 0;
        for (int i = 0; i < t; i++)
            for (int64_t r = 0; r < n; r++) {
                double s = bias[r];
                for (int64_t j = 0; j < k; j++) s += (double)w[r * k + j] * x[i * k + j];
                e = fmax(e, fabs(s - y1[i * n + r]));
                m = fmax(m, fabs(s));
            }
        CHECK(e < 0.02 * m, "%lld x %lld: W8A8 output %g from the float product (max %g)", (long long)n, (long long)k, e, m);
        free(w), free(x), free(bias), free(y0), free(y1), free(scale), free(codes);
    }
}

typedef struct { sq_tensor t[4]; char names[4][64]; int n; } store;
static sq_status store_add(void *user, const char *name, sq_dtype dt, int nd, const int64_t *shape, const void *data, sq_err *err) {
    store *s = user;
    if (s->n == 4) return sq_fail(err, SQ_ERR_INTERNAL, "store full");
    sq_tensor *t = &s->t[s->n];
    snprintf(s->names[s->n], sizeof s->names[s->n], "%s", name);
    memset(t, 0, sizeof *t);
    t->name = s->names[s->n], t->dtype = dt, t->ndim = nd, t->numel = 1;
    for (int i = 0; i < nd; i++) t->numel *= (t->shape[i] = shape[i]);
    t->nbytes = t->numel * sq_dtype_size(dt);
    void *copy = malloc((size_t)t->nbytes + 8);
    memcpy(copy, data, (size_t)t->nbytes);
    t->data = copy;
    s->n++;
    return SQ_OK;
}
static const sq_tensor *store_find(void *user, const char *name) {
    store *s = user;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return &s->t[i];
    return NULL;
}

static void test_round_trip(void) {
    const sq_fmt *f = sq_fmt_for(SQ_FORMAT_CT, SQ_SCHEME_W8A8);
    CHECK(f && !strcmp(f->ct_format, "int-quantized"), "the int-quantized row");
    if (!f) return;
    sq_err err = {0};
    int64_t n = 40, k = 72;
    float w[40 * 72], scale[40];
    int8_t codes[40 * 72];
    for (int i = 0; i < n * k; i++) w[i] = frand();
    CHECK_OK(sq_int8_quantize(w, n, k, codes, scale, "rt", &err), &err);
    sq_scheme sc = {.kind = SQ_SCHEME_W8A8, .bits = 8, .group_size = -1, .sym = true};
    char why[200];
    CHECK(f->can_hold(&sc, n, k, why, sizeof why), "%s", why);
    sq_scheme asym = sc;
    asym.sym = false;
    CHECK(!f->can_hold(&asym, n, k, why, sizeof why), "asymmetric INT8 W8A8 refused");
    sq_scheme i4 = {.kind = SQ_SCHEME_INT, .bits = 4, .group_size = 128, .sym = true};
    CHECK(!f->can_hold(&i4, n, k, why, sizeof why), "INT4 refused");
    store st = {0};
    sq_tensor_sink out = {store_add, &st};
    sq_tensor_src src = {store_find, &st, "mem.safetensors"};
    sq_qlinear l = {.kind = SQ_SCHEME_W8A8, .n = n, .k = k, .codes = (const uint8_t *)codes, .scale = scale, .per_channel = true};
    double bytes = 0;
    CHECK_OK(f->write(&sc, "m", &l, &out, &bytes, &err), &err);
    CHECK(bytes == (double)(n * k + 4 * n), "bytes %g", bytes);
    sq_config cfg = {.quant_method = SQ_FORMAT_CT};
    snprintf(cfg.quant_format, sizeof cfg.quant_format, "int-quantized");
    CHECK(f->recognise(&cfg) && sq_fmt_of_config(&cfg) == f, "config recognised");
    CHECK(sq_fmt_of_linear(&src, "m", &cfg) == f, "tensors recognised");
    sq_qlinear back;
    CHECK_OK(f->read(&src, "m", n, k, &cfg, &back, &err), &err);
    CHECK(back.kind == SQ_SCHEME_W8A8 && !memcmp(back.codes, codes, (size_t)(n * k)) && !memcmp(back.scale, scale, sizeof scale), "round trip");
    sq_qlinear_free(&back);
    /* a wrong shape is a one-line error naming the tensor */
    sq_status s = f->read(&src, "m", n, k + 4, &cfg, &back, &err);
    CHECK(s && strstr(err.msg, "m.weight"), "wrong shape: %s", err.msg);
    for (int i = 0; i < st.n; i++) free((void *)st.t[i].data);
}

static void test_gptq(void) {
    sq_err err = {0};
    enum { N = 24, K = 48, T = 256 };
    float *w = malloc(N * K * sizeof *w), *h = calloc(K * K, sizeof *h), *x = malloc(T * K * sizeof *x), scale[N];
    uint8_t *rtn = malloc(N * K), *gq = malloc(N * K);
    for (int i = 0; i < N * K; i++) w[i] = frand();
    for (int t = 0; t < T; t++) {
        float common = frand();
        for (int j = 0; j < K; j++) x[t * K + j] = common + 0.3f * frand(); /* correlated inputs: GPTQ has something to compensate */
    }
    for (int a = 0; a < K; a++)
        for (int b = 0; b < K; b++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += (double)x[t * K + a] * x[t * K + b];
            h[a * K + b] = (float)(2 * s / T);
        }
    CHECK_OK(sq_int8_quantize(w, N, K, (int8_t *)rtn, scale, "g", &err), &err);
    memcpy(gq, rtn, N * K);
    sq_qgrid g = {.kind = SQ_QGRID_INT8_CHANNEL, .fp8_scale = scale};
    sq_gptq_args a = {.damp = 0.01, .block_size = 16};
    sq_qout o = {.codes = gq};
    double damp = 0;
    CHECK_OK(sq_backend_cpu()->gptq(w, h, NULL, N, K, &g, &a, &o, &damp, &err), &err);
    float *d0 = malloc(N * K * sizeof *d0), *d1 = malloc(N * K * sizeof *d1);
    for (int r = 0; r < N; r++)
        for (int j = 0; j < K; j++) d0[r * K + j] = (float)(int8_t)rtn[r * K + j] * scale[r], d1[r * K + j] = (float)(int8_t)gq[r * K + j] * scale[r];
    double e0, e1;
    CHECK_OK(sq_backend_cpu()->output_error(w, d0, h, N, K, 1, &e0, &err), &err);
    CHECK_OK(sq_backend_cpu()->output_error(w, d1, h, N, K, 1, &e1, &err), &err);
    CHECK(damp >= 0 && e1 < 0.9 * e0, "GPTQ error %g vs RTN %g", e1, e0);
    free(w), free(h), free(x), free(rtn), free(gq), free(d0), free(d1);
}

int main(void) {
    sq_err err = {0};
    sq_kctx *fast = NULL, *ref = NULL;
    CHECK_OK(sq_cpu_ctx_new(&fast, 2, &err), &err);
    CHECK_OK(sq_cpu_ctx_new_ref(&ref, 1, &err), &err);
    if (fast && ref) {
        test_peer(fast, ref);
        test_fast_vs_ref(fast, ref);
    }
    test_round_trip();
    test_gptq();
    sq_cpu_ctx_free(fast);
    sq_cpu_ctx_free(ref);
    return check_report("test_int8");
}
