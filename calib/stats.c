/* stats.c: calibration statistics files (see stats.h). */
#include "stats.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "../formats/outdir.h"

#define MAGIC "SPOTQST1"

sq_status sq_stats_reserve(sq_stats *st, int64_t n, sq_err *err) {
    if (st->data_len + n <= st->data_cap) return SQ_OK;
    float *g = realloc(st->data, (size_t)(st->data_len + n) * sizeof *g);
    if (!g) return sq_fail(err, SQ_ERR_NOMEM, "out of memory for calibration statistics (%lld floats)", (long long)(st->data_len + n));
    st->data = g;
    st->data_cap = st->data_len + n;
    return SQ_OK;
}

sq_status sq_stats_add(sq_stats *st, int layer, int site, int unit, int64_t k, int64_t tokens, float absmax, const float *h, sq_err *err) {
    int64_t tri = k * (k + 1) / 2;
    if (st->n == st->cap) {
        int64_t cap = st->cap ? 2 * st->cap : 64;
        sq_stat_entry *g = realloc(st->entries, (size_t)cap * sizeof *g);
        if (!g) return sq_fail(err, SQ_ERR_NOMEM, "out of memory for calibration statistics");
        st->entries = g;
        st->cap = cap;
    }
    if (st->data_len + tri > st->data_cap) {
        int64_t cap = (st->data_len + tri) * 2;
        float *g = realloc(st->data, (size_t)cap * sizeof *g);
        if (!g) return sq_fail(err, SQ_ERR_NOMEM, "out of memory for calibration statistics (%lld floats)", (long long)cap);
        st->data = g;
        st->data_cap = cap;
    }
    st->entries[st->n++] = (sq_stat_entry){layer, site, unit, k, tokens, absmax, st->data_len};
    float *d = st->data + st->data_len;
    for (int64_t i = 0; i < k; i++) {
        memcpy(d, h + i * k + i, (size_t)(k - i) * sizeof *d);
        d += k - i;
    }
    st->data_len += tri;
    return SQ_OK;
}

const sq_stat_entry *sq_stats_find(const sq_stats *st, int layer, int site, int unit) {
    for (int64_t i = 0; i < st->n; i++)
        if (st->entries[i].layer == layer && st->entries[i].site == site && st->entries[i].unit == unit) return &st->entries[i];
    return NULL;
}

void sq_stats_hessian(const sq_stats *st, const sq_stat_entry *e, float *h) {
    const float *d = st->data + e->offset;
    int64_t k = e->k;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = i; j < k; j++) h[i * k + j] = h[j * k + i] = *d++;
}

void sq_stats_free(sq_stats *st) {
    if (!st) return;
    free(st->entries);
    free(st->data);
    memset(st, 0, sizeof *st);
}

static cJSON *header_json(const sq_stats *st) {
    cJSON *j = cJSON_CreateObject(), *m = cJSON_AddObjectToObject(j, "model"), *c = cJSON_AddObjectToObject(j, "calibration");
    cJSON_AddStringToObject(m, "architecture", st->arch);
    cJSON_AddNumberToObject(m, "hidden", st->hidden);
    cJSON_AddNumberToObject(m, "layers", st->n_layers);
    cJSON_AddNumberToObject(m, "vocab", st->vocab);
    cJSON_AddNumberToObject(m, "experts", st->n_experts);
    cJSON_AddStringToObject(c, "file", st->calib);
    cJSON_AddStringToObject(c, "fnv1a64_of_window_ids", st->hash);
    cJSON_AddNumberToObject(c, "text_tokens", (double)st->text_tokens);
    cJSON_AddNumberToObject(c, "nsamples", st->nsamples);
    cJSON_AddNumberToObject(c, "seqlen", st->seqlen);
    cJSON_AddNumberToObject(c, "seed", (double)st->seed);
    cJSON *es = cJSON_AddArrayToObject(j, "entries");
    for (int64_t i = 0; i < st->n; i++) {
        const sq_stat_entry *e = &st->entries[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "layer", e->layer);
        cJSON_AddNumberToObject(x, "site", e->site);
        cJSON_AddNumberToObject(x, "unit", e->unit);
        cJSON_AddNumberToObject(x, "k", (double)e->k);
        cJSON_AddNumberToObject(x, "tokens", (double)e->tokens);
        cJSON_AddNumberToObject(x, "absmax", e->absmax);
        cJSON_AddItemToArray(es, x);
    }
    return j;
}

/* Compresses len bytes into f as part of one zstd frame. */
static bool put(ZSTD_CCtx *z, FILE *f, const void *p, size_t len, ZSTD_EndDirective end) {
    ZSTD_inBuffer in = {p, len, 0};
    char buf[1 << 16];
    for (;;) {
        ZSTD_outBuffer out = {buf, sizeof buf, 0};
        size_t left = ZSTD_compressStream2(z, &out, &in, end);
        if (ZSTD_isError(left) || (out.pos && fwrite(buf, 1, out.pos, f) != out.pos)) return false;
        if (end == ZSTD_e_end ? left == 0 : in.pos == in.size) return true;
    }
}

sq_status sq_stats_write(const sq_stats *st, const char *path, sq_err *err) {
    char tmp[4200]; /* beside path, named as outdir.c names its temporaries so that a killed run's is swept */
    sq_outdir_sweep(path);
    snprintf(tmp, sizeof tmp, "%s.spotq-tmp-%d", path, (int)getpid());
    cJSON *j = header_json(st);
    char *hdr = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    FILE *f = hdr ? fopen(tmp, "wb") : NULL;
    ZSTD_CCtx *z = ZSTD_createCCtx();
    sq_status s = SQ_OK;
    if (!hdr || !z) s = sq_fail(err, SQ_ERR_NOMEM, "out of memory writing %s", path);
    else if (!f) s = sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    else {
        uint64_t hl = strlen(hdr);
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
        ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, 3);
        if (!put(z, f, MAGIC, 8, ZSTD_e_continue) || !put(z, f, len8, 8, ZSTD_e_continue) || !put(z, f, hdr, hl, ZSTD_e_continue) ||
            !put(z, f, st->data, (size_t)st->data_len * sizeof *st->data, ZSTD_e_end))
            s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (f && fclose(f) != 0 && !s) s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (!s && rename(tmp, path) != 0) s = sq_fail(err, SQ_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (s) unlink(tmp);
    ZSTD_freeCCtx(z);
    free(hdr);
    return s;
}

/* The whole decompressed content of path. */
static sq_status inflate_file(const char *path, char **out, size_t *len, sq_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sq_fail(err, SQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ZSTD_DCtx *z = ZSTD_createDCtx();
    size_t cap = 1 << 20, n = 0, last = 1;
    char *buf = malloc(cap), in[1 << 16];
    sq_status s = SQ_OK;
    size_t got;
    while (!s && buf && z && (got = fread(in, 1, sizeof in, f)) > 0) {
        ZSTD_inBuffer ib = {in, got, 0};
        while (!s && ib.pos < ib.size) {
            if (cap - n < (1 << 16)) {
                char *g = cap < ((size_t)1 << 40) ? realloc(buf, cap *= 2) : NULL;
                if (!g) { s = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory decompressing", path); break; }
                buf = g;
            }
            ZSTD_outBuffer ob = {buf + n, cap - n, 0};
            last = ZSTD_decompressStream(z, &ob, &ib);
            if (ZSTD_isError(last)) s = sq_fail(err, SQ_ERR_FORMAT, "%s: not a spotq statistics file (zstd: %s)", path, ZSTD_getErrorName(last));
            n += ob.pos;
        }
    }
    if (!s && (!buf || !z)) s = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", path);
    if (!s && ferror(f)) s = sq_fail(err, SQ_ERR_IO, "%s: read failed", path);
    if (!s && last != 0) s = sq_fail(err, SQ_ERR_FORMAT, "%s: truncated (the compressed stream ends early)", path);
    fclose(f);
    ZSTD_freeDCtx(z);
    if (s) { free(buf); return s; }
    *out = buf;
    *len = n;
    return SQ_OK;
}

static bool num(const cJSON *o, const char *key, double lo, double hi, double *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(x) || !(x->valuedouble >= lo && x->valuedouble <= hi)) return false;
    *v = x->valuedouble;
    return true;
}

static bool str(const cJSON *o, const char *key, char *dst, size_t cap) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(x) || strlen(x->valuestring) >= cap) return false;
    strcpy(dst, x->valuestring);
    return true;
}

sq_status sq_stats_read(sq_stats *st, const char *path, sq_err *err) {
    memset(st, 0, sizeof *st);
    char *buf;
    size_t len;
    sq_status s = inflate_file(path, &buf, &len, err);
    if (s) return s;
    s = sq_stats_parse(st, buf, len, path, err);
    free(buf);
    return s;
}

sq_status sq_stats_parse(sq_stats *st, const char *buf, size_t len, const char *path, sq_err *err) {
    memset(st, 0, sizeof *st);
    uint64_t hl = 0;
    if (len < 16 || memcmp(buf, MAGIC, 8) != 0) return sq_fail(err, SQ_ERR_FORMAT, "%s: not a spotq statistics file (no %s header)", path, MAGIC);
    for (int i = 0; i < 8; i++) hl |= (uint64_t)(unsigned char)buf[8 + i] << (8 * i);
    cJSON *j = hl <= len - 16 ? cJSON_ParseWithLength(buf + 16, (size_t)hl) : NULL;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model"), *c = cJSON_GetObjectItemCaseSensitive(j, "calibration"),
                *es = cJSON_GetObjectItemCaseSensitive(j, "entries"), *e;
    double v[8];
    bool ok = j && cJSON_IsArray(es) && str(m, "architecture", st->arch, sizeof st->arch) && num(m, "hidden", 1, 1e9, &v[0]) &&
              num(m, "layers", 1, 1e9, &v[1]) && num(m, "vocab", 1, 1e9, &v[2]) && num(m, "experts", 0, 1e9, &v[3]) &&
              str(c, "file", st->calib, sizeof st->calib) && str(c, "fnv1a64_of_window_ids", st->hash, sizeof st->hash) &&
              num(c, "text_tokens", 0, 9e15, &v[4]) && num(c, "nsamples", 1, 1e9, &v[5]) && num(c, "seqlen", 1, 1e9, &v[6]) &&
              num(c, "seed", 0, 1.9e19, &v[7]);
    if (ok) {
        st->hidden = (int)v[0], st->n_layers = (int)v[1], st->vocab = (int)v[2], st->n_experts = (int)v[3];
        st->text_tokens = (int64_t)v[4], st->nsamples = (int)v[5], st->seqlen = (int)v[6], st->seed = (uint64_t)v[7];
    }
    int64_t need = 0;
    const cJSON *list = ok ? es : NULL;
    cJSON_ArrayForEach(e, list) {
        double x[6];
        if (!num(e, "layer", 0, 1e6, &x[0]) || !num(e, "site", 0, 3, &x[1]) || !num(e, "unit", 0, 1e6, &x[2]) || !num(e, "k", 1, 1e6, &x[3]) ||
            !num(e, "tokens", 0, 9e15, &x[4]) || !num(e, "absmax", -1e38, 1e38, &x[5])) {
            ok = false;
            break;
        }
        sq_stat_entry se = {(int)x[0], (int)x[1], (int)x[2], (int64_t)x[3], (int64_t)x[4], (float)x[5], need};
        if (st->n == st->cap) {
            int64_t cap = st->cap ? 2 * st->cap : 64;
            sq_stat_entry *g = realloc(st->entries, (size_t)cap * sizeof *g);
            if (!g) { ok = false; break; }
            st->entries = g;
            st->cap = cap;
        }
        st->entries[st->n++] = se;
        need += se.k * (se.k + 1) / 2;
    }
    cJSON_Delete(j);
    if (!ok) {
        sq_stats_free(st);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: the statistics header is missing, malformed or out of range", path);
    }
    size_t data_bytes = len - 16 - (size_t)hl;
    if (data_bytes != (size_t)need * sizeof(float)) {
        sq_stats_free(st);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %zu bytes of Hessians where the header describes %lld", path, data_bytes,
                       (long long)need * (long long)sizeof(float));
    }
    st->data = malloc(data_bytes + 1);
    if (!st->data) {
        sq_stats_free(st);
        return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(st->data, buf + 16 + hl, data_bytes);
    st->data_len = st->data_cap = need;
    return SQ_OK;
}
