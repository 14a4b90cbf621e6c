/* test_qpack.c: GPTQ v1 and compressed-tensors packing. The packed tensors that spotq writes for a few
 * configurations must (1) be byte-identical to tests/fixtures/peers/spotq_packed.safetensors and
 * (2) dequantise, through spotq's unpackers, to exactly the fp16 weights that the peers' own code
 * (AutoGPTQ's QuantLinear, compressed-tensors' decompressor; scripts/check_peers.py) read from that
 * file: tests/fixtures/peers/peer_dequant.safetensors. `test_qpack --write FILE` rewrites (1).
 * The AWQ GEMM configuration is held to AutoAWQ's dequantize_gemm the same way, and every packed tensor
 * of every format (qweight, qzeros, scales, g_idx; weight_packed, weight_scale, weight_zero_point)
 * must equal the golden byte for byte.
 * Also: a GPTQ v1 writer never stores a zero of 0 (loaders disagree on it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../formats/safetensors.h"
#include "../../quant/awq.h"
#include "check.h"

static const int64_t N = 96, K = 256;

typedef struct { const char *name; int bits, gs; bool sym, act, gptq; } config;
static const config configs[] = {
    {"rtn_b4_g32_asym", 4, 32, false, false, false},
    {"gptq_b4_g32_act", 4, 32, false, true, true},     /* non-monotone g_idx */
    {"gptq_b4_g128_sym", 4, 128, true, false, true},
    {"rtn_b8_g64_asym", 8, 64, false, false, false},
    {"rtn_b4_pc_asym", 4, -1, false, false, false},
};
#define NCONF (int)(sizeof configs / sizeof *configs)

static sq_status quantize(const config *c, const float *w, const float *h, sq_qmatrix *m, sq_err *err) {
    sq_qparams p = {.bits = c->bits, .group_size = c->gs, .sym = c->sym, .act_order = c->act, .damp = 0.01, .block_size = 128};
    return c->gptq ? sq_quant_gptq(w, h, N, K, &p, m, err) : sq_quant_rtn(w, N, K, &p, m, err);
}

/* Every packed tensor of one configuration, named "<config>.<tensor>". */
typedef struct { char name[96]; sq_dtype dt; int nd; int64_t shape[2]; void *data; } packed;

static int pack_all(const sq_qmatrix *m, const config *c, packed *out) {
    int per = 32 / c->bits, G = m->n_groups, n = 0;
    int32_t *qw = calloc((size_t)(K / per * N), 4), *qz = calloc((size_t)(G * N / per), 4), *gi = calloc((size_t)K, 4);
    uint16_t *sc = calloc((size_t)(G * N), 2);
    sq_pack_gptq(m, qw, qz, sc, gi);
    out[n++] = (packed){"", SQ_DT_I32, 2, {K / per, N}, qw};
    snprintf(out[n - 1].name, 96, "%s.gptq.qweight", c->name);
    out[n++] = (packed){"", SQ_DT_I32, 2, {G, N / per}, qz};
    snprintf(out[n - 1].name, 96, "%s.gptq.qzeros", c->name);
    out[n++] = (packed){"", SQ_DT_F16, 2, {G, N}, sc};
    snprintf(out[n - 1].name, 96, "%s.gptq.scales", c->name);
    out[n++] = (packed){"", SQ_DT_I32, 1, {K, 0}, gi};
    snprintf(out[n - 1].name, 96, "%s.gptq.g_idx", c->name);
    if (!c->act) { /* compressed-tensors: static group order only (its decompressor has no g_idx) */
        int32_t *wp = calloc((size_t)(N * K / per), 4), *zp = c->sym ? NULL : calloc((size_t)(N / per * G), 4);
        uint16_t *ws = calloc((size_t)(N * G), 2);
        sq_pack_ct(m, wp, ws, zp);
        out[n++] = (packed){"", SQ_DT_I32, 2, {N, K / per}, wp};
        snprintf(out[n - 1].name, 96, "%s.ct.weight_packed", c->name);
        out[n++] = (packed){"", SQ_DT_F16, 2, {N, G}, ws};
        snprintf(out[n - 1].name, 96, "%s.ct.weight_scale", c->name);
        if (zp) {
            out[n++] = (packed){"", SQ_DT_I32, 2, {N / per, G}, zp};
            snprintf(out[n - 1].name, 96, "%s.ct.weight_zero_point", c->name);
        }
    }
    return n;
}

static int64_t nbytes(const packed *p) {
    int64_t b = sq_dtype_size(p->dt);
    for (int i = 0; i < p->nd; i++) b *= p->shape[i];
    return b;
}

/* fp16 weights [N, K] as spotq's runtime will use them. */
static void dequant_f16(const sq_qmatrix *m, uint16_t *out) {
    float *f = malloc((size_t)(N * K) * sizeof *f);
    sq_qmatrix_dequant(m, f);
    sq_dtype_from_f32(SQ_DT_F16, f, out, (size_t)(N * K));
    free(f);
}

static void test_zero_never_zero(void) {
    /* Rows whose groups are all non-negative (or nearly) would get zero 0 on the reference grid. */
    float w[8 * 64];
    for (int i = 0; i < 8 * 64; i++) w[i] = (float)((i * 37) % 101) / 100.0f - (i % 5 == 0 ? 0.001f : 0.0f);
    sq_qparams p = {.bits = 4, .group_size = 32, .sym = false};
    sq_qmatrix m;
    sq_err err = {0};
    CHECK_OK(sq_quant_rtn(w, 8, 64, &p, &m, &err), &err);
    int32_t qw[8 * 8], qz[2], gi[64];
    uint16_t sc[16];
    sq_pack_gptq(&m, qw, qz, sc, gi);
    int bad = 0;
    for (int g = 0; g < 2; g++)
        for (int r = 0; r < 8; r++) bad += ((uint32_t)qz[g] >> (4 * r) & 15) == 15; /* stored -1 */
    CHECK(bad == 0, "%d stored zeros of -1 (a zero of 0)", bad);
    CHECK(m.zero[0] >= 1, "zero >= 1");
    /* and the asymmetric range still covers each group: the error stays within half a step */
    float *dq = malloc(sizeof w);
    sq_qmatrix_dequant(&m, dq);
    double worst = 0;
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 64; c++) {
            double e = fabs(dq[r * 64 + c] - w[r * 64 + c]) / m.scale[(c / 32) * 8 + r];
            if (e > worst) worst = e;
        }
    CHECK(worst <= 0.5 + 1e-3, "worst error %.3f steps", worst);
    free(dq);
    sq_qmatrix_free(&m);
}

/* AWQ GEMM: the AWQ grid (zeros as they are, 0 allowed), interleaved nibbles packed along N. */
static const char *AWQ = "awq_b4_g32";
static void awq_tensors(const float *w, sq_qmatrix *m, int32_t **qw, int32_t **qz, uint16_t **sc) {
    sq_err err = {0};
    if (sq_awq_quantize(w, N, K, 32, 4, false, m, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    *qw = calloc((size_t)(K * N / 8), 4);
    *qz = calloc((size_t)(K / 32 * N / 8), 4);
    *sc = calloc((size_t)(K / 32 * N), 2);
    sq_pack_awq(m, *qw, *qz, *sc);
}

static void write_awq(const float *w, sq_stw *out) {
    sq_qmatrix m;
    int32_t *qw, *qz;
    uint16_t *sc;
    awq_tensors(w, &m, &qw, &qz, &sc);
    sq_err err = {0};
    char key[64];
    int64_t s1[2] = {K, N / 8}, s2[2] = {K / 32, N / 8}, s3[2] = {K / 32, N}, s4[2] = {N, K};
    snprintf(key, sizeof key, "%s.awq.qweight", AWQ);
    sq_stw_add(out, key, SQ_DT_I32, 2, s1, qw, &err);
    snprintf(key, sizeof key, "%s.awq.qzeros", AWQ);
    sq_stw_add(out, key, SQ_DT_I32, 2, s2, qz, &err);
    snprintf(key, sizeof key, "%s.awq.scales", AWQ);
    sq_stw_add(out, key, SQ_DT_F16, 2, s3, sc, &err);
    uint16_t *mine = malloc((size_t)(N * K) * 2);
    dequant_f16(&m, mine);
    snprintf(key, sizeof key, "%s.spotq_f16", AWQ);
    sq_stw_add(out, key, SQ_DT_F16, 2, s4, mine, &err);
    free(mine); free(qw); free(qz); free(sc);
    sq_qmatrix_free(&m);
}

static void test_awq(const float *w, const sq_st *golden, const sq_st *peer) {
    sq_qmatrix m, u;
    int32_t *qw, *qz;
    uint16_t *sc;
    awq_tensors(w, &m, &qw, &qz, &sc);
    char key[64];
    /* every packed tensor byte for byte: qweight, qzeros (interleaved like qweight) and scales */
    const struct { const char *name; const void *data; int64_t bytes; } mine_t[] = {
        {"qweight", qw, K * N / 8 * 4}, {"qzeros", qz, K / 32 * N / 8 * 4}, {"scales", sc, K / 32 * N * 2}};
    const sq_tensor *gt[3] = {0};
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "%s.awq.%s", AWQ, mine_t[i].name);
        const sq_tensor *t = gt[i] = sq_st_find(golden, key);
        CHECK(t && t->nbytes == mine_t[i].bytes && memcmp(t->data, mine_t[i].data, (size_t)mine_t[i].bytes) == 0, "AWQ %s bytes changed",
              mine_t[i].name);
    }
    sq_err err = {0};
    /* the golden's tensors, unpacked as the runtime reads them, give AutoAWQ's weights */
    if (gt[0] && gt[1] && gt[2]) {
        sq_qmatrix g;
        CHECK_OK(sq_unpack_awq(&g, N, K, 32, gt[0]->data, gt[1]->data, gt[2]->data, &err), &err);
        uint16_t *gf = malloc((size_t)(N * K) * 2);
        dequant_f16(&g, gf);
        snprintf(key, sizeof key, "%s.autoawq_f16", AWQ);
        const sq_tensor *t = sq_st_find(peer, key);
        CHECK(t && t->nbytes == N * K * 2 && memcmp(t->data, gf, (size_t)(N * K) * 2) == 0,
              "AWQ GEMM golden tensors, unpacked by spotq, differ from AutoAWQ's dequantize_gemm");
        free(gf);
        sq_qmatrix_free(&g);
    }
    CHECK_OK(sq_unpack_awq(&u, N, K, 32, qw, qz, sc, &err), &err);
    uint16_t *mine = malloc((size_t)(N * K) * 2), *theirs = malloc((size_t)(N * K) * 2);
    dequant_f16(&m, mine);
    dequant_f16(&u, theirs);
    CHECK(memcmp(mine, theirs, (size_t)(N * K) * 2) == 0, "AWQ round trip");
    snprintf(key, sizeof key, "%s.autoawq_f16", AWQ);
    const sq_tensor *t = sq_st_find(peer, key);
    CHECK(t && t->nbytes == N * K * 2 && memcmp(t->data, mine, (size_t)(N * K) * 2) == 0, "AWQ GEMM differs from AutoAWQ's dequantize_gemm");
    free(mine); free(theirs); free(qw); free(qz); free(sc);
    sq_qmatrix_free(&m);
    sq_qmatrix_free(&u);
}


/* compressed-tensors' symmetric weight_packed [N, K / 8] packs only along K, so out_features need no
 * multiple of 8 (llm-compressor writes gate/up of 172 outputs so); zero points pack N too. */
static void test_ct_any_n(const float *w) {
    enum { n = 12, k = 32 };
    sq_err err = {0};
    sq_qparams p = {.bits = 4, .group_size = 16, .sym = true};
    sq_qmatrix m, u;
    CHECK_OK(sq_quant_rtn(w, n, k, &p, &m, &err), &err);
    int32_t wp[n * k / 8], zp[2 * 2] = {0};
    uint16_t ws[n * 2];
    sq_pack_ct(&m, wp, ws, NULL);
    CHECK_OK(sq_unpack_ct(&u, n, k, 4, 16, wp, ws, NULL, NULL, &err), &err);
    float a[n * k], b[n * k];
    sq_qmatrix_dequant(&m, a);
    sq_qmatrix_dequant(&u, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "symmetric pack-quantized with 12 outputs: round trip differs");
    sq_qmatrix_free(&u);
    CHECK(sq_unpack_ct(&u, n, k, 4, 16, wp, ws, zp, NULL, &err) == SQ_ERR_FORMAT, "zero points of 12 outputs cannot be 4-bit packed");
    sq_qmatrix_free(&m);
}

int main(int argc, char **argv) {
    sq_err err = {0};
    sq_st *fx = NULL, *golden = NULL, *peer = NULL;
    if (sq_st_open(&fx, "tests/fixtures/gptq/gptq.safetensors", &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    const float *w = sq_st_find(fx, "W")->data, *h = sq_st_find(fx, "H")->data;
    bool write = argc == 3 && strcmp(argv[1], "--write") == 0;
    sq_stw *out = NULL;
    if (write && sq_stw_open(&out, argv[2], &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    if (!write) {
        CHECK_OK(sq_st_open(&golden, "tests/fixtures/peers/spotq_packed.safetensors", &err), &err);
        CHECK_OK(sq_st_open(&peer, "tests/fixtures/peers/peer_dequant.safetensors", &err), &err);
        if (!golden || !peer) return check_report("test_qpack");
    }
    uint16_t *mine = malloc((size_t)(N * K) * 2);
    for (int ci = 0; ci < NCONF; ci++) {
        const config *c = &configs[ci];
        sq_qmatrix m;
        CHECK_OK(quantize(c, w, h, &m, &err), &err);
        packed p[8];
        int np = pack_all(&m, c, p);
        dequant_f16(&m, mine);
        char key[128];
        snprintf(key, sizeof key, "%s.spotq_f16", c->name);
        if (write) {
            for (int i = 0; i < np; i++) sq_stw_add(out, p[i].name, p[i].dt, p[i].nd, p[i].shape, p[i].data, &err);
            int64_t shp[2] = {N, K};
            sq_stw_add(out, key, SQ_DT_F16, 2, shp, mine, &err);
        } else {
            for (int i = 0; i < np; i++) {
                const sq_tensor *t = sq_st_find(golden, p[i].name);
                CHECK(t && t->nbytes == nbytes(&p[i]) && memcmp(t->data, p[i].data, (size_t)t->nbytes) == 0, "%s: packed bytes changed",
                      p[i].name);
            }
            /* unpack what was packed, as the runtime will, and compare with the peers' fp16 weights */
            sq_qmatrix u;
            int per = 32 / c->bits;
            (void)per;
            CHECK_OK(sq_unpack_gptq(&u, N, K, c->bits, c->gs, p[0].data, p[1].data, p[2].data, p[3].data, &err), &err);
            uint16_t *theirs = malloc((size_t)(N * K) * 2);
            dequant_f16(&u, theirs);
            snprintf(key, sizeof key, "%s.autogptq_f16", c->name);
            const sq_tensor *t = sq_st_find(peer, key);
            CHECK(t && t->nbytes == N * K * 2 && memcmp(t->data, theirs, (size_t)(N * K * 2)) == 0, "%s: GPTQ v1 differs from AutoGPTQ", c->name);
            CHECK(memcmp(mine, theirs, (size_t)(N * K * 2)) == 0, "%s: GPTQ v1 round trip", c->name);
            sq_qmatrix_free(&u);
            if (!c->act) {
                CHECK_OK(sq_unpack_ct(&u, N, K, c->bits, c->gs, p[4].data, p[5].data, c->sym ? NULL : p[6].data, NULL, &err), &err);
                dequant_f16(&u, theirs);
                snprintf(key, sizeof key, "%s.ct_f16", c->name);
                t = sq_st_find(peer, key);
                CHECK(t && t->nbytes == N * K * 2 && memcmp(t->data, theirs, (size_t)(N * K * 2)) == 0,
                      "%s: pack-quantized differs from compressed-tensors", c->name);
                CHECK(memcmp(mine, theirs, (size_t)(N * K * 2)) == 0, "%s: pack-quantized round trip", c->name);
                sq_qmatrix_free(&u);
            }
            free(theirs);
        }
        for (int i = 0; i < np; i++) free(p[i].data);
        sq_qmatrix_free(&m);
    }
    free(mine);
    if (write) {
        write_awq(w, out);
        if (sq_stw_finish(out, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        printf("wrote %s\n", argv[2]);
        sq_st_close(fx);
        return 0;
    }
    test_zero_never_zero();
    test_ct_any_n(w);
    test_awq(w, golden, peer);
    sq_st_close(fx);
    sq_st_close(golden);
    sq_st_close(peer);
    return check_report("test_qpack");
}
