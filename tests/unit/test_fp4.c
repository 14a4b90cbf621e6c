/* test_fp4.c: FP4 (E2M1) weights against independent references.
 * (1) E2M1 encoding (round to nearest even, saturating at 6) and decoding, and E8M0 decoding, equal
 *     ml_dtypes' float4_e2m1fn / float8_e8m0fnu (tests/fixtures/fp4/golden.txt, scripts/gen_fp4_golden.py).
 * (2) NVFP4 and MXFP4 of the weights in tests/fixtures/peers/peer_fp4.safetensors: spotq's packed codes,
 *     group scales and global scale equal compressed-tensors 0.20's own compressor bit for bit, and the
 *     weights the CPU kernel executes equal its decompress (scripts/gen_fp4_peer.py wrote them).
 * (3) The fast FP4 matmul (tiled sgemm, W4A16 and NVFP4 W4A4) agrees with the scalar reference; W4A4's
 *     activations land on the FP4 grid times their group scale.
 * (4) GPTQ on the FP4 grid lowers the output error below round-to-nearest on correlated inputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../formats/safetensors.h"
#include "../../kernels/cpu/cpu.h"
#include "../../kernels/qmath.h"
#include "../../quant/method.h"
#include "check.h"

#define GOLDEN "tests/fixtures/fp4/golden.txt"
#define PEER "tests/fixtures/peers/peer_fp4.safetensors"

static void test_golden(void) {
    FILE *f = fopen(GOLDEN, "r");
    CHECK(f, "cannot open %s", GOLDEN);
    if (!f) return;
    char kind[16];
    unsigned a, b;
    int n_enc = 0, n_dec = 0, n_e8 = 0;
    while (fscanf(f, "%15s %x %x", kind, &a, &b) == 3) {
        if (!strcmp(kind, "e2m1enc")) {
            float x = sq_qm_float(a);
            uint8_t c = sq_qm_e2m1_encode(fmaxf(-6.0f, fminf(x, 6.0f)));
            /* ml_dtypes' 0x8 (-0) and 0x0 both stand for 0; the sign of zero is kept here, as torch's packer keeps it */
            CHECK(c == b || ((c & 7) == 0 && (b & 7) == 0), "e2m1(%g) = %u, ml_dtypes %u", (double)x, c, b);
            n_enc++;
        } else if (!strcmp(kind, "e2m1dec")) {
            float v = sq_qm_e2m1_decode((uint8_t)a);
            CHECK(sq_qm_bits(v) == b, "decode(%u) = %g", a, (double)v);
            n_dec++;
        } else if (!strcmp(kind, "e8m0dec")) {
            float v = sq_qm_e8m0_decode((uint8_t)a);
            CHECK(sq_qm_bits(v) == b, "e8m0(%u) = %g (bits %08x, want %08x)", a, (double)v, sq_qm_bits(v), b);
            CHECK(a == 0 || a >= 254 || sq_fp4_mx_exponent(sq_qm_float(b) * 4.0f) == a, "mx exponent of 4 * 2^(%u - 127)", a);
            n_e8++;
        }
    }
    fclose(f);
    CHECK(n_enc > 400 && n_dec == 16 && n_e8 == 255, "golden lines %d %d %d", n_enc, n_dec, n_e8);
}

static const sq_tensor *need(const sq_st *st, const char *a, const char *b) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", a, b);
    const sq_tensor *t = sq_st_find(st, name);
    CHECK(t, "missing %s", name);
    return t;
}

/* spotq's quantisation of w (RTN) as method_fp4.c runs it: scales, codes, packed */
static void quantize(const float *w, int64_t n, int64_t k, sq_fp4_variant v, uint8_t *raw, float *eff, uint8_t *packed, float *gs) {
    int64_t g = v == SQ_FP4_NV ? 16 : 32;
    float m = 0;
    for (int64_t i = 0; i < n * k; i++) m = fmaxf(m, fabsf(w[i]));
    *gs = v == SQ_FP4_NV ? sq_fp4_global_scale(m) : 0;
    sq_fp4_scales(w, n, k, v, *gs, raw, eff);
    uint8_t *codes = malloc((size_t)(n * k));
    sq_qgrid grid = {.kind = SQ_QGRID_FP4, .group_size = (int)g, .fp8_scale = eff};
    sq_qout o = {.codes = codes};
    sq_err err = {0};
    CHECK_OK(sq_backend_cpu()->rtn(w, n, k, &grid, &o, &err), &err);
    sq_fp4_pack(codes, n, k, packed);
    free(codes);
}

static void test_peer(sq_kctx *fast) {
    sq_err err = {0};
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, PEER, &err), &err);
    if (!st) return;
    const char *mats[] = {"a", "b"};
    for (int mi = 0; mi < 2; mi++)
        for (int v = 0; v < 2; v++) {
            const char *var = v == SQ_FP4_NV ? "nvfp4" : "mxfp4";
            const sq_tensor *wt = need(st, mats[mi], "weight");
            char pre[32];
            snprintf(pre, sizeof pre, "%s.%s", mats[mi], var);
            const sq_tensor *pp = need(st, pre, "weight_packed"), *ps = need(st, pre, "weight_scale"), *pd = need(st, pre, "dequant");
            if (!wt || !pp || !ps || !pd) continue;
            int64_t n = wt->shape[0], k = wt->shape[1], g = v == SQ_FP4_NV ? 16 : 32, ng = k / g;
            const float *w = wt->data;
            uint8_t *raw = malloc((size_t)(n * ng)), *packed = malloc((size_t)(n * k / 2));
            float *eff = malloc((size_t)(n * ng) * sizeof *eff), gs;
            quantize(w, n, k, (sq_fp4_variant)v, raw, eff, packed, &gs);
            CHECK(pp->numel == n * k / 2 && !memcmp(packed, pp->data, (size_t)(n * k / 2)), "%s: packed codes differ from compressed-tensors'", pre);
            CHECK(ps->numel == n * ng && !memcmp(raw, ps->data, (size_t)(n * ng)), "%s: group scales differ from compressed-tensors'", pre);
            if (v == SQ_FP4_NV) {
                const sq_tensor *pg = need(st, pre, "weight_global_scale");
                CHECK(pg && !memcmp(&gs, pg->data, 4), "%s: global scale %.9g differs", pre, (double)gs);
            }
            /* what the kernel executes = compressed-tensors' decompress */
            sq_fp4weight f = {.scale = eff, .group = (int)g};
            sq_wmat wm = {.dtype = SQ_DT_U8, .rows = n, .cols = k, .data = packed, .f4 = &f};
            float *row = malloc((size_t)k * sizeof *row), *rows = malloc((size_t)(n * k) * sizeof *rows);
            sq_cpu_fp4_rows_to_f32(&wm, 0, n, rows);
            int bad = 0;
            for (int64_t r = 0; r < n; r++) {
                sq_cpu_fp4_row_to_f32_ref(&wm, r, row);
                bad += memcmp(row, (const float *)pd->data + r * k, (size_t)k * sizeof *row) != 0;
                bad += memcmp(rows + r * k, row, (size_t)k * sizeof *row) != 0;
            }
            CHECK(!bad, "%s: %d rows of the executed weights differ from compressed-tensors' decompress", pre, bad);
            (void)fast;
            free(row); free(rows); free(raw); free(packed); free(eff);
        }
    sq_st_close(st);
}

static uint32_t rng_state = 14;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static void test_kernels(sq_kctx *fast, sq_kctx *ref) {
    sq_err err = {0};
    const int64_t n = 40, k = 96;
    const int T = 5;
    float *w = malloc((size_t)(n * k) * sizeof *w), *x = malloc((size_t)(T * k) * sizeof *x), *bias = malloc((size_t)n * sizeof *bias);
    for (int64_t i = 0; i < n * k; i++) w[i] = frand() * 0.1f;
    for (int64_t i = 0; i < T * k; i++) x[i] = frand() * (i % 7 == 0 ? 8.0f : 1.0f);
    for (int64_t i = 0; i < n; i++) bias[i] = frand();
    for (int v = 0; v < 2; v++)
        for (int a4 = 0; a4 < 2 - v; a4++) {
            int64_t g = v == SQ_FP4_NV ? 16 : 32, ng = k / g;
            uint8_t *raw = malloc((size_t)(n * ng)), *packed = malloc((size_t)(n * k / 2));
            float *eff = malloc((size_t)(n * ng) * sizeof *eff), gs;
            quantize(w, n, k, (sq_fp4_variant)v, raw, eff, packed, &gs);
            float xm = 0;
            for (int64_t i = 0; i < T * k; i++) xm = fmaxf(xm, fabsf(x[i]));
            sq_fp4weight f = {.scale = eff, .group = (int)g, .act_fp4 = a4, .input_global_scale = sq_fp4_global_scale(xm)};
            sq_wmat wm = {.dtype = SQ_DT_U8, .rows = n, .cols = k, .data = packed, .f4 = &f};
            float *y = calloc((size_t)(T * n), sizeof *y), *yr = calloc((size_t)(T * n), sizeof *yr);
            CHECK_OK(sq_cpu_matmul(fast, &wm, bias, x, y, T, &err), &err);
            CHECK_OK(sq_cpu_matmul_ref(ref, &wm, bias, x, yr, T, &err), &err);
            double md = 0, mr = 0;
            for (int64_t i = 0; i < T * n; i++) md = fmax(md, fabs((double)y[i] - yr[i])), mr = fmax(mr, fabs((double)yr[i]));
            CHECK(md <= 1e-5 * (mr + 1), "fp4 %d w4a4 %d: fast vs reference differ by %g (max %g)", v, a4, md, mr);
            /* the dequantised W is close to W: the grid is right */
            double e = 0, s = 0;
            float *rowv = malloc((size_t)k * sizeof *rowv);
            for (int64_t r = 0; r < n; r++) {
                sq_cpu_fp4_row_to_f32_ref(&wm, r, rowv);
                for (int64_t j = 0; j < k; j++) e += ((double)rowv[j] - w[r * k + j]) * ((double)rowv[j] - w[r * k + j]), s += (double)w[r * k + j] * w[r * k + j];
            }
            CHECK(sqrt(e / s) < 0.2, "fp4 %d: relative weight error %g", v, sqrt(e / s));
            if (a4) { /* the activations on the FP4 grid times their group scale */
                float *xa = malloc((size_t)(T * k) * sizeof *xa);
                sq_cpu_fp4_act_ref(&f, x, xa, T, k);
                int off = 0;
                for (int64_t t = 0; t < T; t++)
                    for (int64_t c0 = 0; c0 < k; c0 += 16) {
                        float m = 0;
                        for (int64_t c = c0; c < c0 + 16; c++) m = fmaxf(m, fabsf(xa[t * k + c]));
                        for (int64_t c = c0; c < c0 + 16 && m > 0; c++) {
                            float q = xa[t * k + c] / (m / 6.0f);
                            off += fabsf(q - sq_qm_e2m1_decode(sq_qm_e2m1_encode(q))) > 1e-4f * 6;
                        }
                    }
                CHECK(off == 0, "%d W4A4 activations off the FP4 grid", off);
                free(xa);
            }
            free(rowv); free(y); free(yr); free(raw); free(packed); free(eff);
        }
    free(w); free(x); free(bias);
}

static void test_gptq(void) {
    sq_err err = {0};
    const int64_t n = 32, k = 64, T = 512;
    float *w = malloc((size_t)(n * k) * sizeof *w), *x = malloc((size_t)(T * k) * sizeof *x), *h = calloc((size_t)(k * k), sizeof *h);
    for (int64_t i = 0; i < n * k; i++) w[i] = frand() * 0.1f;
    for (int64_t t = 0; t < T; t++) {
        float base = frand();
        for (int64_t j = 0; j < k; j++) x[t * k + j] = base + 0.3f * frand();
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++) h[i * k + j] += x[t * k + i] * x[t * k + j] * (2.0f / T);
    for (int v = 0; v < 2; v++) {
        int64_t g = v == SQ_FP4_NV ? 16 : 32, ng = k / g;
        uint8_t *raw = malloc((size_t)(n * ng)), *codes = malloc((size_t)(n * k));
        float *eff = malloc((size_t)(n * ng) * sizeof *eff), *dq = malloc((size_t)(n * k) * sizeof *dq);
        float m = 0;
        for (int64_t i = 0; i < n * k; i++) m = fmaxf(m, fabsf(w[i]));
        sq_fp4_scales(w, n, k, (sq_fp4_variant)v, sq_fp4_global_scale(m), raw, eff);
        sq_qgrid grid = {.kind = SQ_QGRID_FP4, .group_size = (int)g, .fp8_scale = eff};
        sq_qout o = {.codes = codes};
        double errs[2], damp;
        for (int pass = 0; pass < 2; pass++) {
            if (!pass) CHECK_OK(sq_backend_cpu()->rtn(w, n, k, &grid, &o, &err), &err);
            else {
                sq_gptq_args a = {.act_order = false, .damp = 0.01, .block_size = 128};
                CHECK_OK(sq_backend_cpu()->gptq(w, h, NULL, n, k, &grid, &a, &o, &damp, &err), &err);
            }
            for (int64_t r = 0; r < n; r++)
                for (int64_t j = 0; j < k; j++) dq[r * k + j] = sq_qm_e2m1_decode(codes[r * k + j]) * eff[r * ng + j / g];
            CHECK_OK(sq_backend_cpu()->output_error(w, dq, h, n, k, 1, &errs[pass], &err), &err);
        }
        CHECK(errs[1] < 0.9 * errs[0], "fp4 %d: GPTQ error %g not below RTN's %g", v, errs[1], errs[0]);
        CHECK(errs[0] < 0.5, "fp4 %d: RTN output error %g", v, errs[0]);
        free(raw); free(codes); free(eff); free(dq);
    }
    free(w); free(x); free(h);
}

int main(void) {
    sq_err err = {0};
    sq_kctx *fast = NULL, *ref = NULL;
    CHECK_OK(sq_cpu_ctx_new(&fast, 2, &err), &err);
    CHECK_OK(sq_cpu_ctx_new_ref(&ref, 1, &err), &err);
    test_golden();
    test_peer(fast);
    if (fast && ref) test_kernels(fast, ref);
    test_gptq();
    sq_cpu_ctx_free(fast);
    sq_cpu_ctx_free(ref);
    return check_report("test_fp4");
}
