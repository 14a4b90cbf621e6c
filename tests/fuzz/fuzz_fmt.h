/* fuzz_fmt.h: the harness of the format readers' fuzz targets (fuzz_fmt_*.c): the input is a linear's
 * tensors as records, each read by the row the target names.
 *   byte 0: out_features N (0 -> 1), byte 1: in_features K / 2 (0 -> 1), byte 2: bit 0 static activations
 *   then records: [suffix index][dtype][ndim 0..2][d0 u16 LE][d1 u16 LE][data: numel * dtype size bytes,
 *   zero-filled where the input ends]
 * Each tensor is a separate allocation, so a read past one is a heap overflow ASan sees. Built with
 * -DFUZZ_FMT_SEED, the file is instead a program writing seeds: a random valid linear written by the
 * row, as records (fuzz_fmt_seed OUT N K BITS GROUP SYM). With FUZZ_FMT_BLOCK defined (the block size),
 * the config states block-wise FP8 weights of that block (vLLM's weight_block_size, compressed-tensors'
 * block_structure) and, unless byte 2 asks for static ones, activations dynamic per group. */
#ifndef FUZZ_FMT_H
#define FUZZ_FMT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/dtype.h"
#include "../../formats/format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_TENSORS 8
#define FUZZ_MAX_NUMEL (1 << 18)

typedef struct {
    sq_tensor t[FUZZ_MAX_TENSORS];
    char names[FUZZ_MAX_TENSORS][64];
    int n;
} fuzz_store;

static const sq_tensor *fuzz_find(void *user, const char *name) {
    fuzz_store *s = user;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return &s->t[i];
    return NULL;
}

static int fuzz_n_suffixes(const char *const *suffixes) {
    int n = 0;
    while (suffixes[n]) n++;
    return n;
}

/* Reads the input as records and the linear through row f. */
static int fuzz_fmt_run(const sq_fmt *f, const char *const *suffixes, const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int64_t N = data[0] ? data[0] : 1, K = data[1] ? 2 * data[1] : 1;
    sq_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.quant_method = f->format;
    snprintf(cfg.quant_format, sizeof cfg.quant_format, "%s", f->ct_format ? f->ct_format : "");
    cfg.quant_act = data[2] & 1 ? SQ_QACT_STATIC : SQ_QACT_NONE;
#ifdef FUZZ_FMT_BLOCK
    cfg.quant_block_n = cfg.quant_block_k = FUZZ_FMT_BLOCK;
    if (!(data[2] & 1)) cfg.quant_act = SQ_QACT_DYNAMIC_GROUP, cfg.quant_act_group = FUZZ_FMT_BLOCK;
#endif
    fuzz_store st = {.n = 0};
    size_t p = 3;
    int ns = fuzz_n_suffixes(suffixes);
    while (p + 7 <= size && st.n < FUZZ_MAX_TENSORS) {
        const uint8_t *r = data + p;
        p += 7;
        sq_tensor *t = &st.t[st.n];
        memset(t, 0, sizeof *t);
        snprintf(st.names[st.n], sizeof st.names[st.n], "m.%s", suffixes[r[0] % ns]);
        t->name = st.names[st.n];
        t->dtype = (sq_dtype)(r[1] % SQ_DT_COUNT);
        t->ndim = r[2] % 3;
        t->shape[0] = r[3] | r[4] << 8;
        t->shape[1] = r[5] | r[6] << 8;
        t->numel = 1;
        for (int i = 0; i < t->ndim; i++) t->numel *= t->shape[i];
        if (t->numel > FUZZ_MAX_NUMEL) break;
        t->nbytes = t->numel * sq_dtype_size(t->dtype);
        uint8_t *buf = calloc(1, (size_t)(t->nbytes ? t->nbytes : 1));
        if (!buf) break;
        size_t take = p < size ? (size - p < (size_t)t->nbytes ? size - p : (size_t)t->nbytes) : 0;
        memcpy(buf, data + p, take);
        p += take;
        t->data = buf;
        st.n++;
    }
    sq_tensor_src src = {fuzz_find, &st, "fuzz.safetensors"};
    sq_err err;
    sq_qlinear l;
    bool ok = f->holds(&src, "m", &cfg) && f->read(&src, "m", N, K, &cfg, &l, &err) == SQ_OK;
#ifdef FUZZ_FMT_VERBOSE /* which inputs read: the seeds must */
    fprintf(stderr, "%s: %s\n", f->name, ok ? "read" : f->holds(&src, "m", &cfg) ? err.msg : "not this format");
#endif
    if (ok) {
        /* what was read must be whole: every array touched */
        if (l.kind == SQ_SCHEME_INT) {
            float *w = malloc((size_t)(N * K) * sizeof *w);
            if (w) sq_qmatrix_dequant(&l.q, w);
            for (int64_t c = 0; c < K; c++)
                if (l.q.g_idx[c] < 0 || l.q.g_idx[c] >= l.q.n_groups) abort();
            free(w);
        } else {
            volatile float acc = 0;
            int64_t kb = l.block_n > 0 ? (K + l.block_k - 1) / l.block_k : 0;
            for (int64_t i = 0; i < N * K; i++)
                acc += sq_e4m3_to_f32(l.codes[i]) * l.scale[l.block_n > 0 ? (i / K / l.block_n) * kb + (i % K) / l.block_k : l.per_channel ? i / K : 0];
            if (!(l.input_scale >= 0)) abort();
        }
        sq_qlinear_free(&l);
    }
    for (int i = 0; i < st.n; i++) free((void *)st.t[i].data);
    return 0;
}

/* The table's row of that name. */
static const sq_fmt *fuzz_row(const char *name) {
    for (int i = 0; i < sq_fmt_count(); i++)
        if (!strcmp(sq_fmt_get(i)->name, name)) return sq_fmt_get(i);
    abort();
}

#ifdef FUZZ_FMT_SEED
static FILE *seed_out;
static sq_status seed_add(void *user, const char *name, sq_dtype dt, int nd, const int64_t *shape, const void *d, sq_err *err) {
    const char *const *suffixes = user;
    const char *suffix = strrchr(name, '.') + 1;
    int i = 0;
    while (suffixes[i] && strcmp(suffixes[i], suffix)) i++;
    int64_t numel = 1;
    for (int j = 0; j < nd; j++) numel *= shape[j];
    uint8_t r[7] = {(uint8_t)i, (uint8_t)dt, (uint8_t)nd, (uint8_t)(nd > 0 ? shape[0] : 0), (uint8_t)((nd > 0 ? shape[0] : 0) >> 8),
                    (uint8_t)(nd > 1 ? shape[1] : 0), (uint8_t)((nd > 1 ? shape[1] : 0) >> 8)};
    fwrite(r, 1, 7, seed_out);
    fwrite(d, (size_t)sq_dtype_size(dt), (size_t)numel, seed_out);
    return SQ_OK;
}

static int fuzz_fmt_seed(const sq_fmt *f, const char *const *suffixes, int argc, char **argv) {
    if (argc != 7) return 2;
    int64_t n = atoi(argv[2]), k = atoi(argv[3]);
    int bits = atoi(argv[4]), gs = atoi(argv[5]), sym = atoi(argv[6]);
    seed_out = fopen(argv[1], "wb");
    if (!seed_out) return 1;
#ifdef FUZZ_FMT_BLOCK
    const int block = FUZZ_FMT_BLOCK; /* block-wise: activations dynamic (byte 2 clear) */
#else
    const int block = 0;
#endif
    uint8_t hdr[3] = {(uint8_t)n, (uint8_t)(k / 2), (uint8_t)(f->kind == SQ_SCHEME_FP8 && !block)};
    fwrite(hdr, 1, 3, seed_out);
    sq_scheme s = {.kind = f->kind, .bits = bits, .group_size = gs, .sym = sym, .act = f->kind == SQ_SCHEME_FP8 ? SQ_ACT_STATIC : SQ_ACT_NONE,
                   .fp8_per_channel = gs == -1 && f->format == SQ_FORMAT_CT && !block, .fp8_block = block > 0};
    if (block) s.act = SQ_ACT_DYNAMIC;
    sq_tensor_sink out = {seed_add, (void *)suffixes};
    sq_err err;
    double bytes;
    sq_qlinear l = {.kind = f->kind, .n = n, .k = k};
    uint8_t *codes = NULL;
    float scale[256];
    if (f->kind == SQ_SCHEME_INT) {
        if (sq_qmatrix_alloc(&l.q, n, k, bits, gs, &err)) return 1;
        for (int64_t i = 0; i < n * k; i++) l.q.q[i] = (uint8_t)((i * 7 + 3) % (1 << bits));
        for (int64_t i = 0; i < l.q.n_groups * n; i++) {
            l.q.scale[i] = 0.0078125f * (float)(1 + i % 5);
            l.q.zero[i] = sym ? 1 << (bits - 1) : 1 + (int32_t)(i % ((1 << bits) - 1));
        }
        for (int64_t c = 0; c < k; c++) l.q.g_idx[c] = (int32_t)(c / (gs > 0 ? gs : k));
    } else {
        codes = malloc((size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) codes[i] = (uint8_t)(i * 37 % 0x7E);
        for (int i = 0; i < 256; i++) scale[i] = 0.01f * (float)(1 + i % 7);
        l.codes = codes;
        l.scale = scale;
        l.per_channel = s.fp8_per_channel;
        l.input_scale = block ? 0 : 0.05f;
        l.block_n = l.block_k = block;
    }
    sq_status st = f->write(&s, "m", &l, &out, &bytes, &err);
    fclose(seed_out);
    sq_qmatrix_free(&l.q);
    free(codes);
    if (st) fprintf(stderr, "%s\n", err.msg);
    return st != SQ_OK;
}
#define FUZZ_FMT_TARGET(row, ...)                                                                                    \
    static const char *const suffixes[] = {__VA_ARGS__, NULL};                                                      \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_fmt_run(fuzz_row(row), suffixes, data, size); } \
    int main(int argc, char **argv) { return fuzz_fmt_seed(fuzz_row(row), suffixes, argc, argv); }
#else
#define FUZZ_FMT_TARGET(row, ...)                                                                                    \
    static const char *const suffixes[] = {__VA_ARGS__, NULL};                                                      \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_fmt_run(fuzz_row(row), suffixes, data, size); }
#endif

#endif
