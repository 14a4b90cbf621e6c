/* test_qmatmul.c: the runtime's quantised weights and kernels. For every configuration of the peer
 * fixture (tests/fixtures/peers): the weights the runtime executes (GPTQ v1 and pack-quantized tensors
 * unpacked, repacked for the kernels, each row dequantised by the kernel) equal the fp16 weights that
 * AutoGPTQ's and compressed-tensors' own code read from the same tensors, bit for bit; and the fast
 * kernel (integer GEMV and tiled GEMM paths) agrees with the scalar reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../kernels/backend.h"
#include "../../kernels/cpu/cpu.h"
#include "../../runtime/internal.h"
#include "check.h"

static const int64_t N = 96, K = 256;
static const struct { const char *name; int bits, gs; bool sym, act; } configs[] = {
    {"rtn_b4_g32_asym", 4, 32, false, false}, {"gptq_b4_g32_act", 4, 32, false, true}, {"gptq_b4_g128_sym", 4, 128, true, false},
    {"rtn_b8_g64_asym", 8, 64, false, false}, {"rtn_b4_pc_asym", 4, -1, false, false},
};

static const void *get(const sq_st *st, const char *cfg, const char *what) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", cfg, what);
    const sq_tensor *t = sq_st_find(st, key);
    return t ? t->data : NULL;
}

/* The runtime's row-by-row weights in input-column order, rounded to fp16. */
static void runtime_weights_f16(const sq_wmat *w, uint16_t *out) {
    float *row = malloc((size_t)K * sizeof *row);
    for (int64_t r = 0; r < N; r++) {
        sq_cpu_qrow_to_f32(w, r, row);
        for (int64_t j = 0; j < K; j++) {
            int64_t col = w->q->perm ? w->q->perm[j] : j;
            out[r * K + col] = sq_f32_to_f16(row[j]);
        }
    }
    free(row);
}

/* The integer GEMV's own reference, in double: the weights (packed order) times x as the kernel
 * quantised it (d_b * code), and the bound on its distance from the exact product that the rounding
 * of x allows: sum_b (d_b / 2) sum_{j in b} |W_j|. */
static void q8_expected(const sq_wmat *w, const float *x, const float *bias, int n, double *yq, double *bound) {
    int64_t nb = K / 32;
    float *row = malloc((size_t)K * sizeof *row), *xp = malloc((size_t)K * sizeof *xp), *d = malloc((size_t)nb * sizeof *d),
          *ds = malloc((size_t)nb * sizeof *ds);
    int8_t *codes = malloc((size_t)K);
    for (int t = 0; t < n; t++) {
        for (int64_t j = 0; j < K; j++) xp[j] = x[(int64_t)t * K + (w->q->perm ? w->q->perm[j] : j)];
        sq_cpu_q8_quantize_ref(xp, K, w->q->bits, codes, d, ds);
        for (int64_t r = 0; r < N; r++) {
            sq_cpu_qrow_to_f32(w, r, row);
            double s = bias[r], b = 0;
            for (int64_t j = 0; j < K; j++) {
                int64_t slot = w->q->bits == 4 ? (j & ~63) + ((j & 1) ? 32 : 0) + ((j & 63) >> 1) : j;
                s += (double)row[j] * d[j / 32] * codes[slot];
                b += 0.5 * d[j / 32] * fabs((double)row[j]);
            }
            yq[t * N + r] = s;
            bound[t * N + r] = b;
        }
    }
    free(row); free(xp); free(d); free(ds); free(codes);
}

/* fast (2 threads) against the reference, and bit for bit against one thread. Up to fast->int_rows
 * rows of x (8, or all when set for an integer prefill; the integer kernels where the shape allows):
 * within 1e-5 relative of its own reference and within the rounding bound (plus 1e-5) of the exact
 * product, each token's outputs those of its decode step; more rows (tiled sgemm): 1e-5 relative. */
static void check_kernels(sq_kctx *fast, sq_kctx *one, sq_kctx *ref, const sq_wmat *w, const char *name) {
    static const int ns[] = {1, 3, 5, 8, 9, 200}; /* 1-8: GEMV (4 tokens a pass, then 1-3); 9 and 200: tiled sgemm (BLAS picks other kernels as shapes grow) */
    for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
        int n = ns[ni];
        float *x = malloc((size_t)(n * K) * sizeof *x), *y1 = malloc((size_t)(n * N) * sizeof *y1), *y2 = malloc((size_t)(n * N) * sizeof *y2);
        float *bias = malloc((size_t)N * sizeof *bias);
        double *yq = malloc((size_t)(n * N) * sizeof *yq), *bound = malloc((size_t)(n * N) * sizeof *bound);
        for (int64_t i = 0; i < n * K; i++) x[i] = (float)sin(0.37 * (double)i) * 2.0f;
        for (int64_t i = 0; i < N; i++) bias[i] = 0.01f * (float)i;
        sq_err err = {0};
        CHECK_OK(sq_cpu_qmatmul(fast, w, bias, x, y1, n, &err), &err);
        CHECK_OK(sq_cpu_qmatmul(one, w, bias, x, y2, n, &err), &err);
        CHECK(memcmp(y1, y2, (size_t)(n * N) * sizeof *y1) == 0, "%s n=%d: 2 threads differ from 1", name, n);
        CHECK_OK(sq_cpu_qmatmul_ref(ref, w, bias, x, y2, n, &err), &err);
        bool integer = sq_cpu_qmatmul_int_ok(fast, w, n);
        CHECK(integer == (n <= fast->int_rows && K % 64 == 0 && w->q->group_size % 32 == 0), "%s n=%d (integer up to %d rows): the integer kernels %s",
              name, n, fast->int_rows, integer ? "ran" : "did not run");
        if (integer && n > 1) { /* each token's outputs are a decode step's (one row of x alone), bit for bit */
            bool same = true;
            float *y3 = malloc((size_t)N * sizeof *y3);
            for (int t = 0; t < n && same; t++) {
                CHECK_OK(sq_cpu_qmatmul(fast, w, bias, x + (int64_t)t * K, y3, 1, &err), &err);
                same = !memcmp(y3, y1 + (int64_t)t * N, (size_t)N * sizeof *y3);
                CHECK(same, "%s n=%d: token %d's outputs differ from its decode step's", name, n, t);
            }
            free(y3);
        }
        if (integer) q8_expected(w, x, bias, n, yq, bound);
        double worst = 0, scale = 0, worst_q = 0, over = 0;
        for (int64_t i = 0; i < n * N; i++) {
            double e = fabs((double)y1[i] - y2[i]);
            worst = fmax(worst, e);
            scale = fmax(scale, fabs((double)y2[i]));
            if (integer) {
                worst_q = fmax(worst_q, fabs((double)y1[i] - yq[i]));
                over = fmax(over, e - bound[i]);
            }
        }
        if (integer) {
            CHECK(worst_q <= 1e-5 * (scale + 1), "%s n=%d: integer GEMV differs from its q8 reference by %.3g (scale %.3g)", name, n, worst_q, scale);
            CHECK(over <= 1e-5 * (scale + 1), "%s n=%d: integer GEMV beyond the rounding bound by %.3g (scale %.3g)", name, n, over, scale);
            CHECK(worst > 1e-6 * scale, "%s n=%d: integer GEMV equals the float reference (%.3g): it did not quantise x", name, n, worst);
        } else
            CHECK(worst <= 1e-5 * (scale + 1), "%s n=%d: fast kernel differs from the reference by %.3g (scale %.3g)", name, n, worst, scale);
        free(x); free(y1); free(y2); free(bias); free(yq); free(bound);
    }
}


/* sq_rt_head_int8 on stories260K's F32 head: every weight within half a step (max|w| / 254) of the
 * original, the largest of each row exact in magnitude (code 128 +- 127), the integer GEMV's logits
 * near the F32 ones; sq_model_draft_head leaves a head alone that is no more bytes than the rest. */
static void test_head_int8(void) {
    sq_err err = {0};
    sq_exec *ex = NULL;
    sq_model *m = NULL;
    CHECK_OK(sq_exec_new(&ex, "cpu", 1, &err), &err);
    CHECK_OK(sq_model_open(&m, "models/stories260K", ex, &err), &err);
    if (!m) return;
    bool changed = true;
    CHECK_OK(sq_model_draft_head(m, &changed, &err), &err);
    CHECK(!changed && !m->lm_head.q, "stories260K's head (smaller than its layers) was changed");
    sq_wmat f = m->lm_head;
    CHECK(f.dtype == SQ_DT_F32 && !f.q, "stories260K's head is F32");
    int64_t V = f.rows, H = f.cols;
    float *orig = malloc((size_t)(V * H) * sizeof *orig), *row = malloc((size_t)H * sizeof *row), *x = malloc((size_t)H * sizeof *x);
    float *y8 = malloc((size_t)V * sizeof *y8), *y32 = malloc((size_t)V * sizeof *y32);
    memcpy(orig, f.data, (size_t)(V * H) * sizeof *orig);
    for (int64_t j = 0; j < H; j++) x[j] = sinf((float)j * 0.7f);
    sq_kctx *c = NULL;
    CHECK_OK(sq_cpu_ctx_new(&c, 1, &err), &err);
    CHECK_OK(sq_cpu_matmul(c, &f, NULL, x, y32, 1, &err), &err);
    CHECK_OK(sq_rt_head_int8(m, &err), &err);
    CHECK(m->lm_head.q && m->lm_head.q->bits == 8 && m->lm_head.q->n_groups == 1, "head in 8 bits, one group a row");
    double worst = 0, ylim = 0, ydiff = 0;
    int exact = 0;
    for (int64_t r = 0; r < V && m->lm_head.q; r++) {
        sq_cpu_qrow_to_f32(&m->lm_head, r, row);
        float amax = 0;
        for (int64_t j = 0; j < H; j++) amax = fmaxf(amax, fabsf(orig[r * H + j]));
        for (int64_t j = 0; j < H; j++) {
            worst = fmax(worst, fabs((double)row[j] - orig[r * H + j]) / (amax / 254.0 + 1e-30));
            exact += fabsf(orig[r * H + j]) == amax && fabsf(fabsf(row[j]) - amax) <= 1e-6f * amax;
        }
        double bound = 0;
        for (int64_t j = 0; j < H; j++) bound += (amax / 254.0 + 0.5 * 2.0 / 127.0 * fabs(orig[r * H + j])) * fabs(x[j]) + 1e-6;
        ylim = fmax(ylim, bound);
    }
    CHECK(worst <= 1.0001, "8-bit head: a weight %.3g half-steps from the original", worst);
    CHECK(exact >= V, "8-bit head: each row's largest |w| kept (%d of %lld rows)", exact, (long long)V);
    if (m->lm_head.q) {
        CHECK_OK(sq_cpu_matmul(c, &m->lm_head, NULL, x, y8, 1, &err), &err);
        for (int64_t r = 0; r < V; r++) ydiff = fmax(ydiff, fabs((double)y8[r] - y32[r]));
        CHECK(ydiff > 0 && ydiff <= ylim, "8-bit head logits %.3g from the F32 ones (bound %.3g)", ydiff, ylim);
    }
    sq_cpu_ctx_free(c);
    free(orig); free(row); free(x); free(y8); free(y32);
    sq_model_close(m);
    sq_exec_free(ex);
}

int main(void) {
    sq_err err = {0};
    sq_st *packed = NULL, *peer = NULL;
    CHECK_OK(sq_st_open(&packed, "tests/fixtures/peers/spotq_packed.safetensors", &err), &err);
    CHECK_OK(sq_st_open(&peer, "tests/fixtures/peers/peer_dequant.safetensors", &err), &err);
    if (!packed || !peer) return check_report("test_qmatmul");
    sq_kctx *fast = NULL, *one = NULL, *ref = NULL;
    CHECK_OK(sq_cpu_ctx_new(&fast, 2, &err), &err);
    CHECK_OK(sq_cpu_ctx_new(&one, 1, &err), &err);
    CHECK_OK(sq_cpu_ctx_new_ref(&ref, 1, &err), &err);
    test_head_int8();
    uint16_t *mine = malloc((size_t)(N * K) * 2);
    for (size_t c = 0; c < sizeof configs / sizeof *configs; c++) {
        const char *nm = configs[c].name;
        for (int fmt = 0; fmt < 2; fmt++) {
            if (fmt == 1 && configs[c].act) continue; /* pack-quantized is written in static group order only */
            sq_qmatrix qm;
            sq_status s = fmt == 0 ? sq_unpack_gptq(&qm, N, K, configs[c].bits, configs[c].gs, get(packed, nm, "gptq.qweight"),
                                                    get(packed, nm, "gptq.qzeros"), get(packed, nm, "gptq.scales"), get(packed, nm, "gptq.g_idx"), &err)
                                   : sq_unpack_ct(&qm, N, K, configs[c].bits, configs[c].gs, get(packed, nm, "ct.weight_packed"),
                                                  get(packed, nm, "ct.weight_scale"), configs[c].sym ? NULL : get(packed, nm, "ct.weight_zero_point"),
                                                  NULL, &err);
            CHECK_OK(s, &err);
            if (s) continue;
            sq_qweight *q;
            CHECK_OK(sq_rt_qweight_new(&qm, nm, &q, &err), &err);
            sq_qmatrix_free(&qm);
            if (!q) continue;
            CHECK(configs[c].act == (q->perm != NULL), "%s: act-order permutation", nm);
            sq_wmat w = {.dtype = SQ_DT_F32, .rows = N, .cols = K, .q = q};
            runtime_weights_f16(&w, mine);
            const void *theirs = get(peer, nm, fmt == 0 ? "autogptq_f16" : "ct_f16");
            CHECK(theirs && memcmp(mine, theirs, (size_t)(N * K * 2)) == 0, "%s (%s): runtime weights differ from the peer's", nm,
                  fmt == 0 ? "GPTQ v1 / AutoGPTQ" : "pack-quantized / compressed-tensors");
            check_kernels(fast, one, ref, &w, nm);
            /* a prefill through the integer kernels (generate and bench): the same checks, n 9 and 200 included */
            sq_cpu_ctx_set_int_rows(fast, 1 << 20);
            sq_cpu_ctx_set_int_rows(one, 1 << 20);
            check_kernels(fast, one, ref, &w, nm);
            /* symmetric schemes' one zero point: the kernels that skip reading the zeros (8-bit: the correction,
             * zero, skipped) give the general path's bits */
            CHECK(q->zero_uniform == configs[c].sym, "%s: zero_uniform %d for a %s scheme", nm, q->zero_uniform, configs[c].sym ? "symmetric" : "asymmetric");
            if (q->zero_uniform) {
                float *x = malloc((size_t)(200 * K) * sizeof *x), *ya = malloc((size_t)(200 * N) * sizeof *ya), *yb = malloc((size_t)(200 * N) * sizeof *yb);
                for (int64_t i = 0; i < 200 * K; i++) x[i] = (float)cos(0.11 * (double)i);
                static const int zn[] = {1, 5, 200};
                for (int i = 0; i < 3; i++) {
                    q->zero_uniform = true;
                    CHECK_OK(sq_cpu_qmatmul(fast, &w, NULL, x, ya, zn[i], &err), &err);
                    q->zero_uniform = false;
                    CHECK_OK(sq_cpu_qmatmul(fast, &w, NULL, x, yb, zn[i], &err), &err);
                    CHECK(!memcmp(ya, yb, (size_t)(zn[i] * N) * sizeof *ya), "%s n=%d: the uniform-zero path differs from the general one", nm, zn[i]);
                }
                q->zero_uniform = true;
                free(x); free(ya); free(yb);
            }
            sq_cpu_ctx_set_int_rows(fast, 0);
            sq_cpu_ctx_set_int_rows(one, 0);
            sq_rt_qweight_free(q);
        }
    }
    free(mine);
    sq_cpu_ctx_free(fast);
    sq_cpu_ctx_free(one);
    sq_cpu_ctx_free(ref);
    sq_st_close(packed);
    sq_st_close(peer);
    return check_report("test_qmatmul");
}
