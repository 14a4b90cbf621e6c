/* shards.c: a checkpoint's weights written as safetensors shards of at most max_bytes of tensor data
 * each, in Hugging Face's layout: one file is model.safetensors; several are
 * model-00001-of-0000N.safetensors with model.safetensors.index.json (metadata.total_size and a
 * weight_map from each tensor to its file), as transformers' save_pretrained writes them. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sq_shards {
    char *dir;
    int64_t max_bytes;
    int64_t cur_bytes, total_bytes;
    sq_stw *cur;                 /* the shard being written */
    int n;                       /* shards begun */
    char **names;                /* every tensor, in order... */
    int *shard;                  /* ...and the shard (1-based) it went to */
    int64_t count, cap;
};

static void shard_path(const sq_shards *w, int i, int n, char *buf, size_t cap) {
    if (n == 1) snprintf(buf, cap, "%s/model.safetensors", w->dir);
    else if (n == 0) snprintf(buf, cap, "%s/model.shard%05d.safetensors", w->dir, i); /* before the count is known */
    else snprintf(buf, cap, "%s/model-%05d-of-%05d.safetensors", w->dir, i, n);
}

sq_status sq_shards_open(sq_shards **out, const char *dir, int64_t max_bytes, sq_err *err) {
    *out = NULL;
    if (max_bytes < 1) return sq_fail(err, SQ_ERR_ARG, "shard size %lld: must be positive", (long long)max_bytes);
    sq_shards *w = sq_calloc(1, sizeof *w, err);
    if (!w) return SQ_ERR_NOMEM;
    if (!(w->dir = sq_strdup(dir, err))) {
        free(w);
        return SQ_ERR_NOMEM;
    }
    w->max_bytes = max_bytes;
    *out = w;
    return SQ_OK;
}

int64_t sq_shards_bytes(const sq_shards *w) { return w ? w->total_bytes : 0; }

sq_status sq_shards_add(sq_shards *w, const char *name, sq_dtype dtype, int ndim, const int64_t *shape, const void *data, sq_err *err) {
    if (!w) return SQ_OK; /* an MPI rank other than 0, which writes nothing (base/par.h) */
    int64_t nbytes = sq_dtype_size(dtype);
    for (int k = 0; k < ndim; k++)
        if (shape[k] < 0 || !sq_mul_i64(nbytes, shape[k], &nbytes)) return sq_fail(err, SQ_ERR_ARG, "%s: tensor '%s': bad shape", w->dir, name);
    char path[4200];
    sq_status s;
    if (w->cur && w->cur_bytes > 0 && w->cur_bytes + nbytes > w->max_bytes) { /* this shard is full */
        s = sq_stw_finish(w->cur, err);
        w->cur = NULL;
        if (s) return s;
    }
    if (!w->cur) {
        shard_path(w, ++w->n, 0, path, sizeof path);
        if ((s = sq_stw_open(&w->cur, path, err))) return s;
        if ((s = sq_stw_meta(w->cur, "format", "pt", err))) return s;
        w->cur_bytes = 0;
    }
    if (w->count == w->cap) {
        int64_t cap = w->cap ? 2 * w->cap : 256;
        char **g = realloc(w->names, (size_t)cap * sizeof *g);
        int *h = g ? realloc(w->shard, (size_t)cap * sizeof *h) : NULL;
        if (g) w->names = g;
        if (!h) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        w->shard = h;
        w->cap = cap;
    }
    if ((s = sq_stw_add(w->cur, name, dtype, ndim, shape, data, err))) return s;
    if (!(w->names[w->count] = sq_strdup(name, err))) return SQ_ERR_NOMEM;
    w->shard[w->count++] = w->n;
    w->cur_bytes += nbytes;
    w->total_bytes += nbytes;
    return SQ_OK;
}

static void free_shards(sq_shards *w) {
    for (int64_t i = 0; i < w->count; i++) free(w->names[i]);
    free(w->names);
    free(w->shard);
    free(w->dir);
    free(w);
}

sq_status sq_shards_finish(sq_shards *w, int *n_shards, sq_err *err) {
    sq_status s = SQ_OK;
    char from[4200], to[4200];
    if (!w->cur && !w->n) { /* no tensor at all: still one (empty) file */
        shard_path(w, ++w->n, 0, from, sizeof from);
        s = sq_stw_open(&w->cur, from, err);
    }
    if (!s && w->cur) s = sq_stw_finish(w->cur, err);
    w->cur = NULL;
    for (int i = 1; i <= w->n && !s; i++) {
        shard_path(w, i, 0, from, sizeof from);
        shard_path(w, i, w->n, to, sizeof to);
        if (rename(from, to) != 0) s = sq_fail(err, SQ_ERR_IO, "%s: cannot rename to %s: %s", from, to, strerror(errno));
    }
    if (!s && w->n > 1) {
        cJSON *idx = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(idx, "metadata"), *map = cJSON_AddObjectToObject(idx, "weight_map");
        cJSON_AddNumberToObject(meta, "total_size", (double)w->total_bytes);
        for (int64_t i = 0; i < w->count; i++) {
            shard_path(w, w->shard[i], w->n, to, sizeof to);
            cJSON_AddStringToObject(map, w->names[i], strrchr(to, '/') + 1);
        }
        char *text = cJSON_Print(idx);
        cJSON_Delete(idx);
        snprintf(to, sizeof to, "%s/model.safetensors.index.json", w->dir);
        FILE *f = text ? fopen(to, "w") : NULL;
        if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0) s = sq_fail(err, SQ_ERR_IO, "%s: cannot write: %s", to, strerror(errno));
        if (f && fclose(f) != 0 && !s) s = sq_fail(err, SQ_ERR_IO, "%s: cannot write: %s", to, strerror(errno));
        free(text);
    }
    if (n_shards) *n_shards = w->n;
    free_shards(w);
    return s;
}

void sq_shards_abort(sq_shards *w) {
    if (!w) return;
    sq_stw_abort(w->cur); /* finished shards lie in the output's temporary directory, removed with it */
    free_shards(w);
}
