/* test_formats.c: every row of the format table (formats/format.h): random linears at a few shapes
 * written by the row and read back by it (codes, scales, zeros, g_idx, FP8 codes and scales identical;
 * dequantised weights equal), the row found again from the tensors and from the config it writes
 * (config.json parsed as a checkpoint's), and can_hold's refusals of what each format cannot hold. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../formats/format.h"
#include "../../quant/fp8.h"
#include "check.h"

/* ---------------------------------------------------------------- an in-memory tensor store */

typedef struct {
    sq_tensor t[16];
    char names[16][128];
    int n;
} store;

static sq_status store_add(void *user, const char *name, sq_dtype dt, int nd, const int64_t *shape, const void *data, sq_err *err) {
    store *s = user;
    if (s->n == 16) return sq_fail(err, SQ_ERR_INTERNAL, "store full");
    sq_tensor *t = &s->t[s->n];
    snprintf(s->names[s->n], sizeof s->names[s->n], "%s", name);
    memset(t, 0, sizeof *t);
    t->name = s->names[s->n];
    t->dtype = dt;
    t->ndim = nd;
    t->numel = 1;
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

static void store_clear(store *s) {
    for (int i = 0; i < s->n; i++) free((void *)s->t[i].data);
    s->n = 0;
}

/* ---------------------------------------------------------------- random linears */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* A random fp16 normal in [2^-10, 2) (scales are exactly representable in fp16). */
static float rnd_scale(void) { return sq_f16_to_f32((uint16_t)((5 + rnd() % 11) << 10 | (rnd() & 0x3FF))); }

static void rnd_qmatrix(sq_qmatrix *m, const sq_scheme *s, int64_t n, int64_t k) {
    sq_err err;
    sq_status st = sq_qmatrix_alloc(m, n, k, s->bits, s->group_size, &err);
    if (st) abort();
    int levels = 1 << s->bits, gs = s->group_size > 0 ? s->group_size : (int)k;
    for (int64_t i = 0; i < n * k; i++) m->q[i] = (uint8_t)(rnd() % (unsigned)levels);
    for (int64_t i = 0; i < m->n_groups * n; i++) {
        m->scale[i] = rnd_scale();
        m->zero[i] = s->sym ? levels / 2 : 1 + (int32_t)(rnd() % (unsigned)(levels - 1));
    }
    for (int64_t c = 0; c < k; c++) m->g_idx[c] = (int32_t)(c / gs);
    if (sq_scheme_g_idx(s)) /* act-order: the columns' groups shuffled (equal sizes kept) */
        for (int64_t c = k - 1; c > 0; c--) {
            int64_t j = rnd() % (uint64_t)(c + 1);
            int32_t t = m->g_idx[c];
            m->g_idx[c] = m->g_idx[j];
            m->g_idx[j] = t;
        }
}

static bool same_qmatrix(const sq_qmatrix *a, const sq_qmatrix *b) {
    if (a->n != b->n || a->k != b->k || a->bits != b->bits || a->n_groups != b->n_groups) return false;
    int64_t n = a->n, k = a->k, g = a->n_groups;
    if (memcmp(a->q, b->q, (size_t)(n * k)) || memcmp(a->scale, b->scale, (size_t)(g * n) * sizeof(float)) ||
        memcmp(a->zero, b->zero, (size_t)(g * n) * sizeof(int32_t)) || memcmp(a->g_idx, b->g_idx, (size_t)k * sizeof(int32_t)))
        return false;
    float *da = malloc((size_t)(n * k) * sizeof *da), *db = malloc((size_t)(n * k) * sizeof *db);
    sq_qmatrix_dequant(a, da);
    sq_qmatrix_dequant(b, db);
    bool eq = !memcmp(da, db, (size_t)(n * k) * sizeof *da);
    free(da);
    free(db);
    return eq;
}

/* The config a row writes, inside a config.json, parsed as a checkpoint's. */
static bool config_round_trip(const sq_fmt *f, const sq_scheme *s, sq_config *cfg) {
    cJSON *kept = cJSON_CreateArray();
    cJSON_AddItemToArray(kept, cJSON_CreateString("model.layers.0.mlp.down_proj"));
    cJSON *q = f->config(s, kept);
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(q, "quant_method"), *fm = cJSON_GetObjectItemCaseSensitive(q, "format");
    bool ok = cJSON_IsString(qm) && !strcmp(qm->valuestring, f->quant_method) &&
              (f->ct_format ? cJSON_IsString(fm) && !strcmp(fm->valuestring, f->ct_format) : !fm);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_type", "llama");
    cJSON_AddNumberToObject(root, "hidden_size", 64);
    cJSON_AddNumberToObject(root, "intermediate_size", 128);
    cJSON_AddNumberToObject(root, "num_hidden_layers", 1);
    cJSON_AddNumberToObject(root, "num_attention_heads", 4);
    cJSON_AddNumberToObject(root, "vocab_size", 32);
    cJSON_AddNumberToObject(root, "rms_norm_eps", 1e-5);
    cJSON_AddItemToObject(root, "quantization_config", q);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    sq_err err = {0};
    sq_status st = sq_config_parse(cfg, text, strlen(text), "config.json", &err);
    free(text);
    CHECK(st == SQ_OK, "%s: %s", f->name, err.msg);
    return ok && st == SQ_OK && sq_fmt_of_config(cfg) == f;
}

/* ---------------------------------------------------------------- round trips */

static const int64_t shapes[][2] = {{32, 64}, {64, 128}, {96, 256}, {8, 32}, {136, 264}}; /* the last: FP8 edge blocks */
#define NSHAPES (int)(sizeof shapes / sizeof *shapes)

static int int_trips, fp8_trips, block_trips;

static void int_round_trip(const sq_fmt *f, const sq_scheme *s, int64_t n, int64_t k) {
    char why[256];
    if (!f->can_hold(s, n, k, why, sizeof why)) return;
    sq_qmatrix m;
    rnd_qmatrix(&m, s, n, k);
    store st = {0};
    sq_tensor_sink out = {store_add, &st};
    sq_tensor_src src = {store_find, &st, "mem.safetensors"};
    sq_err err = {0};
    double bytes = 0;
    const char *mod = "model.layers.0.self_attn.q_proj";
    sq_qlinear l = {.kind = SQ_SCHEME_INT, .n = n, .k = k, .q = m};
    CHECK_OK(f->write(s, mod, &l, &out, &bytes, &err), &err);
    CHECK(bytes >= (double)(n * k) * s->bits / 8, "%s: %g bytes for %lld x %lld", f->name, bytes, (long long)n, (long long)k);
    sq_config cfg;
    CHECK(config_round_trip(f, s, &cfg), "%s: config", f->name);
    CHECK(sq_fmt_of_linear(&src, mod, &cfg) == f, "%s: its tensors are its own", f->name);
    sq_qlinear back;
    sq_status rs = f->read(&src, mod, n, k, &cfg, &back, &err);
    CHECK(rs == SQ_OK, "%s %lldx%lld b%d g%d sym %d: %s", f->name, (long long)n, (long long)k, s->bits, s->group_size, s->sym, err.msg);
    if (!rs) {
        CHECK(back.kind == SQ_SCHEME_INT && back.n == n && back.k == k && same_qmatrix(&m, &back.q), "%s %lldx%lld b%d g%d sym %d g_idx %d",
              f->name, (long long)n, (long long)k, s->bits, s->group_size, s->sym, sq_scheme_g_idx(s));
        int_trips++;
    }
    /* scales as peers store them (llm-compressor: the model's dtype): F32 and BF16 read to the same values */
    for (int i = 0; i < st.n; i++) {
        sq_tensor *t = &st.t[i];
        if (t->dtype != SQ_DT_F16) continue;
        for (int dt = 0; dt < 2; dt++) {
            float *v = malloc((size_t)t->numel * sizeof *v);
            sq_dtype_to_f32(SQ_DT_F16, t->data, v, (size_t)t->numel);
            sq_dtype wide = dt ? SQ_DT_BF16 : SQ_DT_F32;
            void *w = malloc((size_t)t->numel * (size_t)sq_dtype_size(wide)), *f16 = (void *)t->data;
            sq_dtype_from_f32(wide, v, w, (size_t)t->numel);
            t->data = w;
            t->dtype = wide;
            t->nbytes = t->numel * sq_dtype_size(wide);
            sq_qlinear wb;
            sq_status ws = f->read(&src, mod, n, k, &cfg, &wb, &err);
            /* BF16 keeps 8 mantissa bits: compare with the scales rounded the same way */
            sq_qmatrix want = m;
            float *wsc = malloc((size_t)(m.n_groups * n) * sizeof *wsc);
            for (int64_t j = 0; j < m.n_groups * n; j++) wsc[j] = dt ? sq_bf16_to_f32(sq_f32_to_bf16(m.scale[j])) : m.scale[j];
            want.scale = wsc;
            CHECK(ws == SQ_OK && same_qmatrix(&want, &wb.q), "%s: scales in %s: %s", f->name, sq_dtype_name(wide), ws ? err.msg : "differ");
            sq_qlinear_free(&wb);
            free(wsc);
            free(w);
            free(v);
            t->data = f16;
            t->dtype = SQ_DT_F16;
            t->nbytes = t->numel * 2;
        }
    }
    /* the wrong shape asked for is an error naming the module, never a crash */
    sq_qlinear bad;
    CHECK(f->read(&src, mod, n + 8, k, &cfg, &bad, &err) != SQ_OK && strstr(err.msg, mod), "%s: wrong n: %s", f->name, err.msg);
    sq_qlinear_free(&back);
    sq_qmatrix_free(&m);
    store_clear(&st);
}

static void fp8_round_trip(const sq_fmt *f, const sq_scheme *s, int64_t n, int64_t k) {
    char why[256];
    if (!f->can_hold(s, n, k, why, sizeof why)) return;
    bool blk = s->fp8_block;
    int64_t nb = (n + 127) / 128, kb = (k + 127) / 128, ns = blk ? nb * kb : s->fp8_per_channel ? n : 1;
    uint8_t *codes = malloc((size_t)(n * k));
    float *scale = malloc((size_t)ns * sizeof *scale);
    for (int64_t i = 0; i < n * k; i++) {
        codes[i] = (uint8_t)rnd();
        if ((codes[i] & 0x7F) == 0x7F) codes[i] ^= 1; /* never NaN */
    }
    for (int64_t i = 0; i < ns; i++) scale[i] = ldexpf(1.0f + (float)(rnd() % 1000) / 1000.0f, -(int)(rnd() % 12));
    store st = {0};
    sq_tensor_sink out = {store_add, &st};
    sq_tensor_src src = {store_find, &st, "mem.safetensors"};
    sq_err err = {0};
    double bytes = 0;
    const char *mod = "model.layers.0.mlp.up_proj";
    float in_scale = s->act == SQ_ACT_STATIC ? 0.0123f : 0;
    sq_qlinear l = {.kind = SQ_SCHEME_FP8, .n = n, .k = k, .codes = codes, .scale = scale, .per_channel = s->fp8_per_channel,
                    .input_scale = in_scale, .block_n = blk ? 128 : 0, .block_k = blk ? 128 : 0};
    CHECK_OK(f->write(s, mod, &l, &out, &bytes, &err), &err);
    /* the scale's shape as each peer's loader expects it: vLLM's fp8 a scalar; compressed-tensors [1], or [N, 1] per channel */
    /* block-wise: vLLM's fp8 weight_scale_inv, compressed-tensors' weight_scale, both [ceil(N/128), ceil(K/128)] */
    const sq_tensor *wsc = store_find(&st, blk && f->format == SQ_FORMAT_FP8 ? "model.layers.0.mlp.up_proj.weight_scale_inv" : "model.layers.0.mlp.up_proj.weight_scale");
    int want_nd = blk ? 2 : f->format == SQ_FORMAT_FP8 ? 0 : s->fp8_per_channel ? 2 : 1;
    CHECK(wsc && wsc->dtype == SQ_DT_F32 && wsc->ndim == want_nd && wsc->numel == ns &&
              (want_nd < 2 || (blk ? wsc->shape[0] == nb && wsc->shape[1] == kb : wsc->shape[1] == 1)),
          "%s: weight_scale shape", f->name);
    CHECK(!blk || !store_find(&st, f->format == SQ_FORMAT_FP8 ? "model.layers.0.mlp.up_proj.weight_scale" : "model.layers.0.mlp.up_proj.weight_scale_inv"),
          "%s: one scale tensor", f->name);
    sq_config cfg;
    CHECK(config_round_trip(f, s, &cfg), "%s: config", f->name);
    sq_quant_act want_act = s->act == SQ_ACT_STATIC ? SQ_QACT_STATIC : s->act == SQ_ACT_DYNAMIC ? (blk ? SQ_QACT_DYNAMIC_GROUP : SQ_QACT_DYNAMIC_TOKEN) : SQ_QACT_NONE;
    CHECK(cfg.quant_act == want_act && (!blk || cfg.quant_act_group == 128), "%s: activations %d read as %d", f->name, s->act, cfg.quant_act);
    CHECK(cfg.quant_block_n == (blk ? 128 : 0) && cfg.quant_block_k == (blk ? 128 : 0), "%s: block %d x %d", f->name, cfg.quant_block_n, cfg.quant_block_k);
    CHECK(sq_fmt_of_linear(&src, mod, &cfg) == f, "%s: its tensors are its own", f->name);
    sq_qlinear back;
    sq_status rs = f->read(&src, mod, n, k, &cfg, &back, &err);
    CHECK(rs == SQ_OK, "%s: %s", f->name, err.msg);
    if (!rs) {
        bool same = back.kind == SQ_SCHEME_FP8 && back.n == n && back.k == k && back.per_channel == s->fp8_per_channel &&
                    back.block_n == (blk ? 128 : 0) && back.block_k == (blk ? 128 : 0) &&
                    !memcmp(back.codes, codes, (size_t)(n * k)) && !memcmp(back.scale, scale, (size_t)ns * sizeof *scale) &&
                    back.input_scale == in_scale;
        float *da = malloc((size_t)(n * k) * sizeof *da), *db = malloc((size_t)(n * k) * sizeof *db);
        if (blk) {
            sq_fp8_dequant_block(codes, scale, n, k, da);
            sq_fp8_dequant_block(back.codes, back.scale, n, k, db);
        } else {
            sq_fp8_dequant(codes, scale, n, k, s->fp8_per_channel, da);
            sq_fp8_dequant(back.codes, back.scale, n, k, back.per_channel, db);
        }
        CHECK(same && !memcmp(da, db, (size_t)(n * k) * sizeof *da), "%s %lldx%lld per-channel %d block %d act %d", f->name, (long long)n,
              (long long)k, s->fp8_per_channel, blk, s->act);
        if (blk) block_trips++;
        free(da);
        free(db);
        fp8_trips++;
    }
    sq_qlinear_free(&back);
    /* a NaN code is refused naming the tensor */
    for (int i = 0; i < st.n; i++)
        if (st.t[i].dtype == SQ_DT_F8_E4M3) ((uint8_t *)st.t[i].data)[n * k - 1] = 0x7F;
    CHECK(f->read(&src, mod, n, k, &cfg, &back, &err) != SQ_OK && strstr(err.msg, "NaN"), "%s: NaN code: %s", f->name, err.msg);
    store_clear(&st);
    free(codes);
    free(scale);
}

static void test_round_trips(void) {
    static const int bits[] = {4, 8}, groups[] = {-1, 32, 64};
    for (int i = 0; i < sq_fmt_count(); i++) {
        const sq_fmt *f = sq_fmt_get(i);
        int before = int_trips + fp8_trips;
        for (int sh = 0; sh < NSHAPES; sh++) {
            int64_t n = shapes[sh][0], k = shapes[sh][1];
            if (f->kind == SQ_SCHEME_INT) {
                for (int b = 0; b < 2; b++)
                    for (int g = 0; g < 3; g++)
                        for (int mode = 0; mode < 4; mode++) { /* sym, asym, act-order with g_idx, act-order with static groups */
                            sq_scheme s = {.kind = SQ_SCHEME_INT, .bits = bits[b], .group_size = groups[g], .sym = mode == 0, .act_order = mode >= 2,
                                           .static_groups = mode == 3, .damp = 0.01};
                            int_round_trip(f, &s, n, k);
                        }
            } else
                for (int pc = 0; pc < 3; pc++) /* per tensor, per channel, per 128 x 128 block */
                    for (int act = SQ_ACT_NONE; act <= SQ_ACT_DYNAMIC; act++) {
                        sq_scheme s = {.kind = SQ_SCHEME_FP8, .bits = 8, .sym = true, .fp8_per_channel = pc == 1, .fp8_block = pc == 2, .act = (sq_act)act};
                        fp8_round_trip(f, &s, n, k);
                    }
        }
        if (f->kind == SQ_SCHEME_FP4) continue; /* FP4 rows: their tensors are held to compressed-tensors' in test_fp4, the round trip through the model in tests/cli/fp4.sh */
        CHECK(int_trips + fp8_trips - before >= 8, "%s: only %d round trips ran", f->name, int_trips + fp8_trips - before);
    }
}

/* ---------------------------------------------------------------- can_hold */

static bool holds(const char *row, sq_scheme s, int64_t n, int64_t k, const char *why_part) {
    for (int i = 0; i < sq_fmt_count(); i++) {
        const sq_fmt *f = sq_fmt_get(i);
        if (strcmp(f->name, row)) continue;
        char why[256] = "";
        bool ok = f->can_hold(&s, n, k, why, sizeof why);
        if (!ok && why_part && !strstr(why, why_part)) {
            fprintf(stderr, "%s: reason '%s' lacks '%s'\n", row, why, why_part);
            return true; /* counted as a failure by the caller */
        }
        if (!ok && !why[0]) return true;
        return ok;
    }
    abort();
}

static void test_can_hold(void) {
    sq_scheme i4 = {.kind = SQ_SCHEME_INT, .bits = 4, .group_size = 32, .sym = true};
    sq_scheme i8a = i4, ao = i4, ao_static = i4, b3 = i4, f8 = {.kind = SQ_SCHEME_FP8, .bits = 8, .sym = true, .act = SQ_ACT_DYNAMIC};
    i8a.bits = 8, i8a.sym = false;
    ao.act_order = true;
    ao_static.act_order = ao_static.static_groups = true;
    b3.bits = 3;
    const char *ints[] = {"gptq", "awq", "ct-pack"}, *fps[] = {"ct-float", "fp8"};
    for (int i = 0; i < 3; i++) {
        CHECK(holds(ints[i], i4, 0, 0, NULL) && holds(ints[i], i4, 64, 128, NULL) && holds(ints[i], ao_static, 64, 128, NULL), "%s holds int4", ints[i]);
        CHECK(!holds(ints[i], f8, 0, 0, "FP8"), "%s refuses FP8", ints[i]);
        CHECK(!holds(ints[i], b3, 0, 0, "3-bit"), "%s refuses 3-bit", ints[i]);
        CHECK(!holds(ints[i], i4, 64, 100, "in_features 100"), "%s refuses k = 100", ints[i]);
        CHECK(!holds(ints[i], i4, 60, 128, "out_features 60"), "%s refuses n = 60", ints[i]);
        CHECK(!holds(ints[i], i4, 64, 48, "group size 32"), "%s refuses groups not dividing k", ints[i]);
    }
    CHECK(holds("gptq", i8a, 64, 128, NULL) && holds("gptq", ao, 64, 128, NULL), "gptq holds 8-bit asym and g_idx");
    CHECK(holds("ct-pack", i8a, 64, 128, NULL), "ct-pack holds 8-bit asym");
    CHECK(!holds("awq", i8a, 0, 0, "4-bit only"), "awq refuses 8-bit");
    CHECK(!holds("awq", ao, 0, 0, "g_idx") && !holds("ct-pack", ao, 0, 0, "g_idx"), "awq and ct-pack refuse g_idx");
    sq_scheme f8a = f8, f8pc = f8, f8w = f8;
    f8a.sym = false;
    f8pc.fp8_per_channel = true;
    f8w.act = SQ_ACT_NONE;
    for (int i = 0; i < 2; i++) {
        CHECK(holds(fps[i], f8, 0, 0, NULL) && holds(fps[i], f8, 7, 13, NULL), "%s holds E4M3 of any shape", fps[i]);
        CHECK(!holds(fps[i], i4, 0, 0, "integer"), "%s refuses integer codes", fps[i]);
        CHECK(!holds(fps[i], f8a, 0, 0, "symmetric"), "%s refuses asymmetric", fps[i]);
    }
    CHECK(holds("ct-float", f8pc, 0, 0, NULL) && holds("ct-float", f8w, 0, 0, NULL), "ct-float holds per-channel and weight-only");
    CHECK(!holds("fp8", f8pc, 0, 0, "per tensor") && !holds("fp8", f8w, 0, 0, "weight-only"), "fp8 refuses per-channel and weight-only");
    sq_scheme fb = f8, fbs = f8;
    fb.fp8_block = fbs.fp8_block = true;
    fbs.act = SQ_ACT_STATIC;
    for (int i = 0; i < 2; i++) {
        CHECK(holds(fps[i], fb, 0, 0, NULL) && holds(fps[i], fb, 200, 300, NULL), "%s holds block-wise FP8 of any shape", fps[i]);
        CHECK(!holds(fps[i], fbs, 0, 0, "dynamic"), "%s refuses block-wise FP8 with static activations", fps[i]);
    }
}

/* ---------------------------------------------------------------- the table and its names */

static void test_table(void) {
    static const sq_format fs[] = {SQ_FORMAT_GPTQ, SQ_FORMAT_CT, SQ_FORMAT_AWQ, SQ_FORMAT_FP8, SQ_FORMAT_AUTO};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
        sq_format back;
        CHECK(sq_format_parse(sq_format_name(fs[i]), &back) && back == fs[i], "name of %d: %s", fs[i], sq_format_name(fs[i]));
    }
    sq_format x;
    CHECK(!sq_format_parse("gguf", &x), "gguf is no format");
    CHECK(sq_fmt_for(SQ_FORMAT_CT, SQ_SCHEME_INT) == sq_fmt_get(4) && sq_fmt_for(SQ_FORMAT_CT, SQ_SCHEME_FP8) == sq_fmt_get(5) &&
              !sq_fmt_for(SQ_FORMAT_AUTO, SQ_SCHEME_INT) && !sq_fmt_for(SQ_FORMAT_AWQ, SQ_SCHEME_FP8),
          "rows by format and kind");
    CHECK(sq_format_of_quant_method("gptq") == SQ_FORMAT_GPTQ && sq_format_of_quant_method("compressed-tensors") == SQ_FORMAT_CT &&
              sq_format_of_quant_method("fp8") == SQ_FORMAT_FP8 && sq_format_of_quant_method("awq") == SQ_FORMAT_AWQ &&
              sq_format_of_quant_method("bitsandbytes") == SQ_FORMAT_OTHER,
          "quant_method names");
    for (int i = 0; i < sq_fmt_count(); i++) {
        const sq_fmt *f = sq_fmt_get(i);
        CHECK(f->can_hold && f->write && f->holds && f->read && f->config && f->recognise &&
                  (f->kind == SQ_SCHEME_FP4 ? sq_fmt_for_scheme(f->format, &(sq_scheme){.kind = SQ_SCHEME_FP4, .fp4 = f->fp4}) == f : sq_fmt_for(f->format, f->kind) == f),
              "%s complete", f->name);
    }
}

int main(void) {
    test_table();
    test_can_hold();
    test_round_trips();
    CHECK(int_trips >= 60 && fp8_trips >= 20 && block_trips >= 2 * NSHAPES, "%d integer, %d FP8 (%d block-wise) round trips", int_trips, fp8_trips, block_trips);
    printf("%d integer and %d FP8 round trips\n", int_trips, fp8_trips);
    return check_report("test_formats");
}
