/* test_safetensors.c: the reader on the bundled model, writer round trips, sharded indexes, header checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../formats/checkpoint.h"
#include "check.h"

static char tmpdir[256];

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_bundled(void) {
    sq_err err = {0};
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, "models/stories260K/model.safetensors", &err), &err);
    if (!st) return;
    /* 2 + 5 layers x 9 tensors (the classifier is tied) */
    CHECK(sq_st_count(st) == 47, "count %lld", (long long)sq_st_count(st));
    const sq_tensor *t = sq_st_find(st, "model.embed_tokens.weight");
    CHECK(t && t->dtype == SQ_DT_F32 && t->ndim == 2 && t->shape[0] == 512 && t->shape[1] == 64, "embed");
    t = sq_st_find(st, "model.layers.4.mlp.down_proj.weight");
    CHECK(t && t->shape[0] == 64 && t->shape[1] == 172 && t->nbytes == 64 * 172 * 4, "down_proj");
    CHECK(sq_st_find(st, "lm_head.weight") == NULL, "tied model has no lm_head");
    for (int64_t i = 1; i < sq_st_count(st); i++)
        CHECK(strcmp(sq_st_get(st, i - 1)->name, sq_st_get(st, i)->name) < 0, "sorted");
    int64_t params = 0;
    for (int64_t i = 0; i < sq_st_count(st); i++) params += sq_st_get(st, i)->numel;
    /* embed 512x64 + 5 x (2 norms, q 64x64, k,v 32x64, o 64x64, gate,up 172x64, down 64x172) + final norm */
    CHECK(params == 512 * 64 + 5 * (2 * 64 + 2 * 4096 + 2 * 2048 + 3 * 172 * 64) + 64, "params %lld", (long long)params);
    sq_st_close(st);

    sq_ckpt *ck = NULL;
    CHECK_OK(sq_ckpt_open(&ck, "models/stories260K", &err), &err);
    if (ck) {
        CHECK(ck->cfg.hidden == 64 && ck->cfg.intermediate == 172 && ck->cfg.n_layers == 5 && ck->cfg.n_heads == 8 &&
                  ck->cfg.n_kv_heads == 4 && ck->cfg.vocab == 512 && ck->cfg.head_dim == 8 && ck->cfg.tied_embeddings,
              "config");
        CHECK(ck->cfg.bos_id == 1 && ck->cfg.eos_id == 2, "bos/eos");
        CHECK(ck->tokenizer_path[0], "tokenizer found");
    }
    sq_ckpt_close(ck);
    ck = NULL;
    CHECK_OK(sq_ckpt_open(&ck, "models/stories260K/model.safetensors", &err), &err);
    sq_ckpt_close(ck);
}

static void test_roundtrip(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    sq_err err = {0};
    sq_stw *w = NULL;
    CHECK_OK(sq_stw_open(&w, path, &err), &err);
    if (!w) return;
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3c00, 0x4000, 0xc000};
    int8_t c[5] = {-1, 2, -3, 4, -5};
    int64_t sa[2] = {2, 3}, sb[1] = {3}, sc[1] = {5}, se[2] = {0, 4};
    CHECK_OK(sq_stw_meta(w, "format", "pt", &err), &err);
    CHECK_OK(sq_stw_add(w, "a.weight", SQ_DT_F32, 2, sa, a, &err), &err);
    CHECK_OK(sq_stw_add(w, "b \"quoted\"", SQ_DT_F16, 1, sb, b, &err), &err);
    CHECK_OK(sq_stw_add(w, "c", SQ_DT_I8, 1, sc, c, &err), &err);
    CHECK_OK(sq_stw_add(w, "empty", SQ_DT_F32, 2, se, NULL, &err), &err);
    CHECK_OK(sq_stw_add(w, "scalar", SQ_DT_F32, 0, NULL, a, &err), &err);
    CHECK(sq_stw_add(w, "c", SQ_DT_I8, 1, sc, c, &err) == SQ_ERR_ARG, "duplicate name refused");
    CHECK(access(path, F_OK) != 0, "nothing at the path before finish");
    CHECK_OK(sq_stw_finish(w, &err), &err);
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, path, &err), &err);
    if (!st) return;
    CHECK(sq_st_count(st) == 5, "count");
    const sq_tensor *t = sq_st_find(st, "a.weight");
    CHECK(t && t->dtype == SQ_DT_F32 && memcmp(t->data, a, sizeof a) == 0 && ((uintptr_t)t->data % 8) == 0, "a");
    t = sq_st_find(st, "b \"quoted\"");
    CHECK(t && t->dtype == SQ_DT_F16 && memcmp(t->data, b, sizeof b) == 0, "b");
    t = sq_st_find(st, "c");
    CHECK(t && t->dtype == SQ_DT_I8 && memcmp(t->data, c, sizeof c) == 0, "c");
    t = sq_st_find(st, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0, "empty");
    t = sq_st_find(st, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && *(const float *)t->data == 1.0f, "scalar");
    /* the writer lays tensors out largest element first: each is aligned to its element size */
    for (int64_t i = 0; i < sq_st_count(st); i++) {
        t = sq_st_get(st, i);
        CHECK(!t->data || (uintptr_t)t->data % (uintptr_t)sq_dtype_size(t->dtype) == 0, "%s misaligned", t->name);
    }
    CHECK(sq_st_meta(st, "format") && strcmp(sq_st_meta(st, "format"), "pt") == 0, "metadata");
    sq_st_close(st);

    /* An aborted writer leaves nothing behind. */
    char path2[512];
    snprintf(path2, sizeof path2, "%s/aborted.safetensors", tmpdir);
    CHECK_OK(sq_stw_open(&w, path2, &err), &err);
    CHECK_OK(sq_stw_add(w, "a", SQ_DT_F32, 2, sa, a, &err), &err);
    sq_stw_abort(w);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls %s | grep aborted)\"", tmpdir);
    CHECK(system(cmd) == 0, "aborted writer left files");
}

static void test_sharded(void) {
    sq_err err = {0};
    char p1[512], p2[512], idx[512];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", tmpdir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", tmpdir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", tmpdir);
    float x[4] = {1, 2, 3, 4};
    int64_t s[1] = {4};
    sq_stw *w;
    CHECK_OK(sq_stw_open(&w, p1, &err), &err);
    sq_stw_add(w, "x", SQ_DT_F32, 1, s, x, &err);
    sq_stw_add(w, "y", SQ_DT_F32, 1, s, x, &err);
    CHECK_OK(sq_stw_finish(w, &err), &err);
    CHECK_OK(sq_stw_open(&w, p2, &err), &err);
    sq_stw_add(w, "z", SQ_DT_F32, 1, s, x, &err);
    CHECK_OK(sq_stw_finish(w, &err), &err);
    const char *good = "{\"metadata\":{},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
                       "\"y\":\"model-00001-of-00002.safetensors\",\"z\":\"model-00002-of-00002.safetensors\"}}";
    write_file(idx, good, strlen(good));
    sq_st *st = NULL;
    CHECK_OK(sq_st_open(&st, tmpdir, &err), &err);
    if (st) {
        CHECK(sq_st_count(st) == 3 && sq_st_nshards(st) == 2, "sharded count");
        const sq_tensor *t = sq_st_find(st, "z");
        CHECK(t && t->shard == 1 && ((const float *)t->data)[3] == 4, "z in shard 2");
    }
    sq_st_close(st);
    struct { const char *json, *want; } bad[] = {
        {"{\"weight_map\":{\"x\":\"model-00002-of-00002.safetensors\",\"y\":\"model-00001-of-00002.safetensors\","
         "\"z\":\"model-00002-of-00002.safetensors\"}}", "tensor 'x' is not in model-00002-of-00002.safetensors as weight_map says"},
        {"{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\",\"z\":\"model-00002-of-00002.safetensors\"}}",
         "tensor 'y' in"},
        {"{\"weight_map\":{\"x\":\"../etc/passwd\"}}", "is not a file name in the index's directory"},
        {"{\"weight_map\":{\"x\":\"missing.safetensors\"}}", "missing.safetensors: cannot open"},
        {"{\"weight_map\":{}}", "missing or empty weight_map"},
        {"{\"weight_map\":", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_file(idx, bad[i].json, strlen(bad[i].json));
        st = NULL;
        err.msg[0] = 0;
        sq_status r = sq_st_open(&st, idx, &err);
        CHECK(r != SQ_OK && strstr(err.msg, bad[i].want), "bad index %zu: got '%s'", i, err.msg);
        sq_st_close(st);
    }
    unlink(idx);
    unlink(p1);
    unlink(p2);
}

/* Header validation, straight on the parser. */
static void test_headers(void) {
    struct { const char *json; int64_t data_len; const char *want; } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ", 8, NULL},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, "tensors cover 8 bytes but the data section has 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, "past the data"},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype 'F33'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "begin 8 > end 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
         12, "gap in the data"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "duplicate tensor name 'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets must be two non-negative integers"},
        {"{\"a\":5}", 0, "entry is not an object"},
        {"[1,2]", 0, "not a JSON object"},
        {"{\"a\":", 0, "not valid JSON"},
        {"{\"\xff\":{}}", 0, "not valid UTF-8"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of 'k' is not a string"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "trailing bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dimensions"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sq_st_header h;
        sq_err err = {0};
        sq_status r = sq_st_parse_header(cases[i].json, strlen(cases[i].json), cases[i].data_len, "x.safetensors", &h, &err);
        if (!cases[i].want) {
            CHECK(r == SQ_OK, "case %zu: %s", i, err.msg);
            if (!r) sq_st_header_free(&h);
        } else
            CHECK(r == SQ_ERR_FORMAT && strstr(err.msg, cases[i].want) && strncmp(err.msg, "x.safetensors: ", 15) == 0,
                  "case %zu: want '%s', got '%s'", i, cases[i].want, err.msg);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spotq-test-st-%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    if (system(cmd) != 0) return 1;
    test_bundled();
    test_roundtrip();
    test_sharded();
    test_headers();
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    return check_report("test_safetensors");
}
