/* safetensors.c: validated mmap reader (single file or sharded index) and a streaming writer. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The safetensors reference loader refuses headers past 100 MB; so do we. */
#define SQ_ST_MAX_HEADER 100000000LL
/* Integers in JSON are doubles to cJSON: only values below 2^53 are exact. */
#define SQ_JSON_MAX_INT 9007199254740992.0

/* ---------------------------------------------------------------- header parsing */

static int json_int(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d < SQ_JSON_MAX_INT) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

void sq_st_header_free(sq_st_header *h) {
    if (!h) return;
    for (int64_t i = 0; i < h->count; i++) free((char *)h->tensors[i].name);
    for (int64_t i = 0; i < h->nmeta; i++) { free(h->meta_keys[i]); free(h->meta_vals[i]); }
    free(h->tensors);
    free(h->begin);
    free(h->meta_keys);
    free(h->meta_vals);
    memset(h, 0, sizeof *h);
}

static int cmp_by_begin(const void *a, const void *b, void *ctx) {
    const int64_t *begin = ctx;
    int64_t x = begin[*(const int64_t *)a], y = begin[*(const int64_t *)b];
    return (x > y) - (x < y);
}

static sq_status parse_tensor(const cJSON *item, const char *path, int64_t data_len, sq_tensor *t,
                              int64_t *begin, int64_t *end, sq_err *err) {
    const char *name = item->string;
    if (!cJSON_IsObject(item)) return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': missing dtype", path, name);
    int code = sq_dtype_from_name(dt->valuestring);
    if (code < 0) return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name, dt->valuestring);
    t->dtype = (sq_dtype)code;
    if (!cJSON_IsArray(shape)) return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': missing shape", path, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > SQ_MAX_DIMS) return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", path, name, nd, SQ_MAX_DIMS);
    t->ndim = nd;
    int64_t numel = 1;
    int k = 0;
    for (const cJSON *d = shape->child; d; d = d->next, k++) {
        if (!json_int(d, &t->shape[k]))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, k);
        if (!sq_mul_i64(numel, t->shape[k], &numel))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': shape product overflows", path, name);
    }
    int64_t nbytes;
    if (!sq_mul_i64(numel, sq_dtype_size(t->dtype), &nbytes))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': byte count overflows", path, name);
    t->numel = numel;
    t->nbytes = nbytes;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_int(offs->child, begin) ||
        !json_int(offs->child->next, end))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': data_offsets must be two non-negative integers", path, name);
    if (*begin > *end)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %lld > end %lld", path, name,
                       (long long)*begin, (long long)*end);
    if (*end > data_len)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': data_offsets end %lld is past the data (%lld bytes)", path,
                       name, (long long)*end, (long long)data_len);
    if (*end - *begin != nbytes)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s': %lld bytes in data_offsets but %s x %lld elements needs %lld",
                       path, name, (long long)(*end - *begin), sq_dtype_name(t->dtype), (long long)numel, (long long)nbytes);
    return SQ_OK;
}

static sq_status parse_meta(const cJSON *meta, const char *path, sq_st_header *h, sq_err *err) {
    if (!cJSON_IsObject(meta)) return sq_fail(err, SQ_ERR_FORMAT, "%s: __metadata__ is not an object", path);
    int n = cJSON_GetArraySize(meta);
    h->meta_keys = sq_calloc((size_t)n, sizeof(char *), err);
    h->meta_vals = sq_calloc((size_t)n, sizeof(char *), err);
    if (!h->meta_keys || !h->meta_vals) return SQ_ERR_NOMEM;
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", path, m->string);
        h->meta_keys[h->nmeta] = sq_strdup(m->string, err);
        h->meta_vals[h->nmeta] = sq_strdup(m->valuestring, err);
        if (!h->meta_keys[h->nmeta] || !h->meta_vals[h->nmeta]) { h->nmeta++; return SQ_ERR_NOMEM; }
        h->nmeta++;
    }
    return SQ_OK;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const sq_tensor *)a)->name, ((const sq_tensor *)b)->name);
}

sq_status sq_st_parse_header(const char *json, size_t len, int64_t data_len, const char *path, sq_st_header *h,
                             sq_err *err) {
    memset(h, 0, sizeof *h);
    if (!sq_utf8_valid(json, len)) return sq_fail(err, SQ_ERR_FORMAT, "%s: header is not valid UTF-8", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) return sq_fail(err, SQ_ERR_FORMAT, "%s: header is not valid JSON", path);
    sq_status s = SQ_OK;
    for (const char *p = end; p < json + len; p++) /* writers pad the header with spaces */
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r') {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: trailing bytes after the header JSON", path);
            goto done;
        }
    if (!cJSON_IsObject(root)) { s = sq_fail(err, SQ_ERR_FORMAT, "%s: header is not a JSON object", path); goto done; }
    int n = cJSON_GetArraySize(root);
    h->tensors = sq_calloc((size_t)n, sizeof *h->tensors, err);
    h->begin = sq_calloc((size_t)n, sizeof *h->begin, err);
    int64_t *ends = sq_calloc((size_t)n, sizeof *ends, err);
    int64_t *order = sq_calloc((size_t)n, sizeof *order, err);
    if (!h->tensors || !h->begin || !ends || !order) { s = SQ_ERR_NOMEM; goto done_tmp; }
    int seen_meta = 0;
    for (const cJSON *item = root->child; item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta++) { s = sq_fail(err, SQ_ERR_FORMAT, "%s: duplicate __metadata__", path); goto done_tmp; }
            if ((s = parse_meta(item, path, h, err))) goto done_tmp;
            continue;
        }
        if (item->string[0] == 0) { s = sq_fail(err, SQ_ERR_FORMAT, "%s: empty tensor name", path); goto done_tmp; }
        sq_tensor *t = &h->tensors[h->count];
        if ((s = parse_tensor(item, path, data_len, t, &h->begin[h->count], &ends[h->count], err))) goto done_tmp;
        if (!(t->name = sq_strdup(item->string, err))) { s = SQ_ERR_NOMEM; goto done_tmp; }
        h->count++;
    }
    /* Names sorted for lookup and checked unique first; begin[] and ends[] travel with their tensor. */
    for (int64_t i = 0; i < h->count; i++) {
        h->tensors[i].data = (const void *)(intptr_t)h->begin[i];
        h->tensors[i].shard = (int)i; /* original index, to carry ends[] too */
    }
    qsort(h->tensors, (size_t)h->count, sizeof *h->tensors, cmp_tensor_name);
    for (int64_t i = 0; i < h->count; i++) {
        h->begin[i] = (int64_t)(intptr_t)h->tensors[i].data;
        order[i] = ends[h->tensors[i].shard];
        h->tensors[i].data = NULL;
        h->tensors[i].shard = 0;
        if (i && strcmp(h->tensors[i].name, h->tensors[i - 1].name) == 0) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: duplicate tensor name '%s'", path, h->tensors[i].name);
            goto done_tmp;
        }
    }
    memcpy(ends, order, (size_t)h->count * sizeof *ends);
    /* Offsets: sorted by start, they must tile the data section exactly, as the reference loader demands. */
    for (int64_t i = 0; i < h->count; i++) order[i] = i;
    qsort_r(order, (size_t)h->count, sizeof *order, cmp_by_begin, h->begin);
    int64_t pos = 0;
    for (int64_t i = 0; i < h->count; i++) {
        int64_t k = order[i];
        if (h->begin[k] < pos) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s' overlaps the tensor before it (starts at %lld, previous ends at %lld)",
                        path, h->tensors[k].name, (long long)h->begin[k], (long long)pos);
            goto done_tmp;
        }
        if (h->begin[k] > pos) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: gap in the data before tensor '%s' (starts at %lld, previous ends at %lld)",
                        path, h->tensors[k].name, (long long)h->begin[k], (long long)pos);
            goto done_tmp;
        }
        pos = ends[k];
    }
    if (pos != data_len) {
        s = sq_fail(err, SQ_ERR_FORMAT, "%s: tensors cover %lld bytes but the data section has %lld", path, (long long)pos,
                    (long long)data_len);
        goto done_tmp;
    }
done_tmp:
    free(ends);
    free(order);
done:
    cJSON_Delete(root);
    if (s) sq_st_header_free(h);
    return s;
}

/* ---------------------------------------------------------------- files and shards */

typedef struct {
    char *path;
    void *map;
    size_t map_len;
    int64_t size;
} st_shard;

struct sq_st {
    int nshards;
    st_shard *shards;
    int64_t count;
    sq_tensor *tensors;   /* sorted by name */
    sq_st_header meta;    /* first shard's __metadata__ (tensor table unused) */
};

static sq_status map_shard(st_shard *sh, const char *path, sq_st_header *h, sq_err *err) {
    memset(sh, 0, sizeof *sh);
    if (!(sh->path = sq_strdup(path, err))) return SQ_ERR_NOMEM;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sq_fail(err, SQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sq_fail(err, SQ_ERR_IO, "%s: not a regular file", path);
    }
    sh->size = st.st_size;
    if (st.st_size < 8) {
        close(fd);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %lld bytes, too short for a safetensors header", path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return sq_fail(err, SQ_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
    sh->map = map;
    sh->map_len = (size_t)st.st_size;
    const unsigned char *b = map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > (uint64_t)(st.st_size - 8))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: header length %llu is past the end of the file (%lld bytes)", path,
                       (unsigned long long)n, (long long)st.st_size);
    if (n > SQ_ST_MAX_HEADER)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: header length %llu exceeds the 100 MB limit", path, (unsigned long long)n);
    if (n < 2) return sq_fail(err, SQ_ERR_FORMAT, "%s: header length %llu is too short", path, (unsigned long long)n);
    if (b[8] != '{') return sq_fail(err, SQ_ERR_FORMAT, "%s: header does not start with '{'", path);
    int64_t data_len = st.st_size - 8 - (int64_t)n;
    sq_status s = sq_st_parse_header((const char *)b + 8, (size_t)n, data_len, path, h, err);
    if (s) return s;
    for (int64_t i = 0; i < h->count; i++)
        h->tensors[i].data = h->tensors[i].nbytes ? (const void *)(b + 8 + n + h->begin[i]) : NULL;
    return SQ_OK;
}

void sq_st_close(sq_st *st) {
    if (!st) return;
    for (int i = 0; i < st->nshards; i++) {
        if (st->shards[i].map) munmap(st->shards[i].map, st->shards[i].map_len);
        free(st->shards[i].path);
    }
    for (int64_t i = 0; i < st->count; i++) free((char *)st->tensors[i].name);
    free(st->shards);
    free(st->tensors);
    sq_st_header_free(&st->meta);
    free(st);
}

/* Moves a shard's tensors into st (names change owner). */
static sq_status take_tensors(sq_st *st, sq_st_header *h, int shard, sq_err *err) {
    sq_tensor *grown = realloc(st->tensors, (size_t)(st->count + h->count + 1) * sizeof *grown);
    if (!grown) return sq_fail(err, SQ_ERR_NOMEM, "out of memory for the tensor table");
    st->tensors = grown;
    for (int64_t i = 0; i < h->count; i++) {
        h->tensors[i].shard = shard;
        st->tensors[st->count++] = h->tensors[i];
        h->tensors[i].name = NULL;
    }
    return SQ_OK;
}

static sq_status open_one(sq_st *st, const char *path, sq_err *err) {
    st->shards = sq_calloc(1, sizeof *st->shards, err);
    if (!st->shards) return SQ_ERR_NOMEM;
    st->nshards = 1;
    sq_st_header h;
    sq_status s = map_shard(&st->shards[0], path, &h, err);
    if (s) return s;
    s = take_tensors(st, &h, 0, err);
    st->meta.meta_keys = h.meta_keys; st->meta.meta_vals = h.meta_vals; st->meta.nmeta = h.nmeta;
    h.meta_keys = h.meta_vals = NULL; h.nmeta = 0;
    sq_st_header_free(&h);
    return s;
}

static int shard_name_ok(const char *f) {
    return f[0] && !strchr(f, '/') && strcmp(f, ".") && strcmp(f, "..");
}

static sq_status open_index(sq_st *st, const char *index_path, sq_err *err) {
    char *text = NULL;
    size_t len = 0;
    sq_status s = sq_read_file(index_path, &text, &len, err);
    if (s) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid JSON", index_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0; else strcpy(dir, ".");
    /* Distinct shard files, in order of first appearance. */
    char **files = NULL;
    int nfiles = 0;
    if (!cJSON_IsObject(wm) || !wm->child) { s = sq_fail(err, SQ_ERR_FORMAT, "%s: missing or empty weight_map", index_path); goto done; }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name in the index's directory", index_path, e->string);
            goto done;
        }
        int k = 0;
        while (k < nfiles && strcmp(files[k], e->valuestring)) k++;
        if (k == nfiles) {
            char **g = realloc(files, (size_t)(nfiles + 1) * sizeof *g);
            if (!g) { s = sq_fail(err, SQ_ERR_NOMEM, "out of memory"); goto done; }
            files = g;
            files[nfiles++] = e->valuestring;
        }
    }
    st->shards = sq_calloc((size_t)nfiles, sizeof *st->shards, err);
    if (!st->shards) { s = SQ_ERR_NOMEM; goto done; }
    for (int k = 0; k < nfiles; k++) {
        char p[4096];
        if ((s = sq_path_join(p, sizeof p, dir, files[k], err))) goto done;
        sq_st_header h;
        st->nshards = k + 1;
        s = map_shard(&st->shards[k], p, &h, err);
        if (!s) s = take_tensors(st, &h, k, err);
        if (!s && k == 0) {
            st->meta.meta_keys = h.meta_keys; st->meta.meta_vals = h.meta_vals; st->meta.nmeta = h.nmeta;
            h.meta_keys = h.meta_vals = NULL; h.nmeta = 0;
        }
        if (!s) sq_st_header_free(&h);
        if (s) goto done;
    }
    qsort(st->tensors, (size_t)st->count, sizeof *st->tensors, cmp_tensor_name);
    for (int64_t i = 1; i < st->count; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s' is in two shards (%s and %s)", index_path, st->tensors[i].name,
                        st->shards[st->tensors[i - 1].shard].path, st->shards[st->tensors[i].shard].path);
            goto done;
        }
    /* Every mapped tensor is in its named shard, and every shard tensor is in the map. */
    for (const cJSON *e = wm->child; e; e = e->next) {
        const sq_tensor *t = sq_st_find(st, e->string);
        if (!t || strcmp(files[t->shard], e->valuestring)) {
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s' is not in %s as weight_map says", index_path, e->string, e->valuestring);
            goto done;
        }
    }
    if (st->count != cJSON_GetArraySize(wm)) {
        for (int64_t i = 0; i < st->count; i++)
            if (!cJSON_GetObjectItemCaseSensitive(wm, st->tensors[i].name)) {
                s = sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s' in %s is missing from weight_map", index_path,
                            st->tensors[i].name, st->shards[st->tensors[i].shard].path);
                goto done;
            }
        s = sq_fail(err, SQ_ERR_FORMAT, "%s: weight_map lists a tensor twice", index_path);
    }
done:
    free(files);
    cJSON_Delete(root);
    return s;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

sq_status sq_st_open(sq_st **out, const char *path, sq_err *err) {
    *out = NULL;
    sq_st *st = sq_calloc(1, sizeof *st, err);
    if (!st) return SQ_ERR_NOMEM;
    sq_status s;
    char p[4096];
    if (sq_is_dir(path)) {
        if ((s = sq_path_join(p, sizeof p, path, "model.safetensors.index.json", err))) goto fail;
        if (access(p, F_OK) == 0) s = open_index(st, p, err);
        else {
            if ((s = sq_path_join(p, sizeof p, path, "model.safetensors", err))) goto fail;
            if (access(p, F_OK) != 0) {
                s = sq_fail(err, SQ_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in this directory", path);
                goto fail;
            }
            s = open_one(st, p, err);
        }
    } else if (ends_with(path, ".index.json")) s = open_index(st, path, err);
    else s = open_one(st, path, err);
    if (s) goto fail;
    *out = st;
    return SQ_OK;
fail:
    sq_st_close(st);
    return s;
}

int64_t sq_st_count(const sq_st *st) { return st->count; }
const sq_tensor *sq_st_get(const sq_st *st, int64_t i) { return i >= 0 && i < st->count ? &st->tensors[i] : NULL; }
int sq_st_nshards(const sq_st *st) { return st->nshards; }
const char *sq_st_shard_path(const sq_st *st, int i) { return st->shards[i].path; }
int64_t sq_st_shard_size(const sq_st *st, int i) { return st->shards[i].size; }

const sq_tensor *sq_st_find(const sq_st *st, const char *name) {
    int64_t lo = 0, hi = st->count;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

void sq_st_release(const sq_st *st, const sq_tensor *t) {
    if (!t || !t->data || t->nbytes <= 0) return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data, b = a + (uintptr_t)t->nbytes;
    a = (a + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page; /* whole pages inside the tensor only */
    b = b / (uintptr_t)page * (uintptr_t)page;
    (void)st;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

const char *sq_st_meta(const sq_st *st, const char *key) {
    for (int64_t i = 0; i < st->meta.nmeta; i++)
        if (strcmp(st->meta.meta_keys[i], key) == 0) return st->meta.meta_vals[i];
    return NULL;
}

/* ---------------------------------------------------------------- streaming writer */

typedef struct {
    char *name;
    sq_dtype dtype;
    int ndim;
    int64_t shape[SQ_MAX_DIMS];
    int64_t begin, end;      /* within its size class until finish, then in the file's data section */
} stw_entry;

/* Tensors are kept in four streams by element size (8, 4, 2, 1 bytes) and laid out largest first,
 * as the reference writer orders them: every tensor then sits aligned to its element size, so
 * readers can use the data in place. */
#define STW_CLASSES 4
static int size_class(sq_dtype t) {
    int sz = sq_dtype_size(t);
    return sz >= 8 ? 0 : sz == 4 ? 1 : sz == 2 ? 2 : 3;
}

struct sq_stw {
    char *path, *tmp_path, *data_path[STW_CLASSES];
    FILE *data[STW_CLASSES];  /* tensor bytes of each size class, appended as they come */
    int64_t pos[STW_CLASSES];
    stw_entry *entries;
    int64_t n, cap;
    char **meta_kv;          /* key, value, key, value, ... */
    int64_t nmeta;
};

sq_status sq_stw_open(sq_stw **out, const char *path, sq_err *err) {
    *out = NULL;
    sq_stw *w = sq_calloc(1, sizeof *w, err);
    if (!w) return SQ_ERR_NOMEM;
    size_t n = strlen(path) + 64;
    w->path = sq_strdup(path, err);
    w->tmp_path = sq_malloc(n, err);
    if (!w->path || !w->tmp_path) { sq_stw_abort(w); return SQ_ERR_NOMEM; }
    snprintf(w->tmp_path, n, "%s.tmp-%d", path, (int)getpid());
    for (int c = 0; c < STW_CLASSES; c++) {
        if (!(w->data_path[c] = sq_malloc(n, err))) { sq_stw_abort(w); return SQ_ERR_NOMEM; }
        snprintf(w->data_path[c], n, "%s.data%d-%d", path, c, (int)getpid());
        w->data[c] = fopen(w->data_path[c], "w+b");
        if (!w->data[c]) {
            sq_status s = sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", w->data_path[c], strerror(errno));
            sq_stw_abort(w);
            return s;
        }
    }
    *out = w;
    return SQ_OK;
}

void sq_stw_abort(sq_stw *w) {
    if (!w) return;
    for (int c = 0; c < STW_CLASSES; c++) {
        if (w->data[c]) fclose(w->data[c]);
        if (w->data_path[c]) unlink(w->data_path[c]);
        free(w->data_path[c]);
    }
    if (w->tmp_path) unlink(w->tmp_path);
    for (int64_t i = 0; i < w->n; i++) free(w->entries[i].name);
    for (int64_t i = 0; i < 2 * w->nmeta; i++) free(w->meta_kv[i]);
    free(w->entries);
    free(w->meta_kv);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

sq_status sq_stw_add(sq_stw *w, const char *name, sq_dtype dtype, int ndim, const int64_t *shape, const void *data,
                     sq_err *err) {
    if (!name[0] || strcmp(name, "__metadata__") == 0 || !sq_utf8_valid(name, strlen(name)))
        return sq_fail(err, SQ_ERR_ARG, "%s: invalid tensor name '%s'", w->path, name);
    if (ndim < 0 || ndim > SQ_MAX_DIMS) return sq_fail(err, SQ_ERR_ARG, "%s: tensor '%s': %d dimensions", w->path, name, ndim);
    for (int64_t i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0) return sq_fail(err, SQ_ERR_ARG, "%s: tensor '%s' written twice", w->path, name);
    int64_t nbytes = sq_dtype_size(dtype);
    for (int k = 0; k < ndim; k++)
        if (shape[k] < 0 || !sq_mul_i64(nbytes, shape[k], &nbytes))
            return sq_fail(err, SQ_ERR_ARG, "%s: tensor '%s': bad shape", w->path, name);
    if (w->n == w->cap) {
        int64_t cap = w->cap ? 2 * w->cap : 64;
        stw_entry *g = realloc(w->entries, (size_t)cap * sizeof *g);
        if (!g) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
        w->entries = g;
        w->cap = cap;
    }
    stw_entry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = sq_strdup(name, err))) return SQ_ERR_NOMEM;
    e->dtype = dtype;
    e->ndim = ndim;
    for (int k = 0; k < ndim; k++) e->shape[k] = shape[k];
    int c = size_class(dtype);
    e->begin = w->pos[c];
    e->end = w->pos[c] + nbytes;
    if (nbytes && fwrite(data, 1, (size_t)nbytes, w->data[c]) != (size_t)nbytes) {
        free(e->name);
        return sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", w->data_path[c], strerror(errno));
    }
    w->pos[c] += nbytes;
    w->n++;
    return SQ_OK;
}

sq_status sq_stw_meta(sq_stw *w, const char *key, const char *value, sq_err *err) {
    char **g = realloc(w->meta_kv, (size_t)(2 * w->nmeta + 2) * sizeof *g);
    if (!g) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    w->meta_kv = g;
    g[2 * w->nmeta] = sq_strdup(key, err);
    g[2 * w->nmeta + 1] = sq_strdup(value, err);
    w->nmeta++;
    return g[2 * w->nmeta - 2] && g[2 * w->nmeta - 1] ? SQ_OK : SQ_ERR_NOMEM;
}

/* A growable string for the header. */
typedef struct { char *p; size_t n, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *g = realloc(b->p, cap);
        if (!g) { b->oom = 1; return; }
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; sb_put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); sb_put(b, esc, 6); }
        else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

sq_status sq_stw_finish(sq_stw *w, sq_err *err) {
    sq_status s = SQ_OK;
    sbuf b = {0};
    FILE *out = NULL;
    char num[64];
    int64_t base[STW_CLASSES] = {0};
    for (int c = 1; c < STW_CLASSES; c++) base[c] = base[c - 1] + w->pos[c - 1];
    for (int64_t i = 0; i < w->n; i++) {
        int c = size_class(w->entries[i].dtype);
        w->entries[i].begin += base[c];
        w->entries[i].end += base[c];
    }
    sb_str(&b, "{");
    if (w->nmeta) {
        sb_str(&b, "\"__metadata__\":{");
        for (int64_t i = 0; i < w->nmeta; i++) {
            if (i) sb_str(&b, ",");
            sb_json_string(&b, w->meta_kv[2 * i]);
            sb_str(&b, ":");
            sb_json_string(&b, w->meta_kv[2 * i + 1]);
        }
        sb_str(&b, "}");
    }
    for (int64_t i = 0; i < w->n; i++) {
        const stw_entry *e = &w->entries[i];
        if (i || w->nmeta) sb_str(&b, ",");
        sb_json_string(&b, e->name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, sq_dtype_name(e->dtype));
        sb_str(&b, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)e->shape[k]);
            sb_str(&b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%lld,%lld]}", (long long)e->begin, (long long)e->end);
        sb_str(&b, num);
    }
    sb_str(&b, "}");
    while (b.n % 8) sb_str(&b, " "); /* keeps every tensor 8-byte aligned */
    if (b.oom) { s = sq_fail(err, SQ_ERR_NOMEM, "out of memory building the header"); goto done; }
    out = fopen(w->tmp_path, "wb");
    if (!out) { s = sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno)); goto done; }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
    if (fwrite(len8, 1, 8, out) != 8 || fwrite(b.p, 1, b.n, out) != b.n) {
        s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
        goto done;
    }
    for (int c = 0; c < STW_CLASSES; c++) {
        if (fflush(w->data[c]) != 0) { s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", w->data_path[c], strerror(errno)); goto done; }
        rewind(w->data[c]);
        char buf[1 << 16];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, w->data[c])) > 0)
            if (fwrite(buf, 1, got, out) != got) {
                s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
                goto done;
            }
        if (ferror(w->data[c])) { s = sq_fail(err, SQ_ERR_IO, "%s: read failed", w->data_path[c]); goto done; }
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
        goto done;
    }
    fclose(out);
    out = NULL;
    if (rename(w->tmp_path, w->path) != 0) s = sq_fail(err, SQ_ERR_IO, "%s: cannot rename into place: %s", w->path, strerror(errno));
done:
    if (out) fclose(out);
    free(b.p);
    sq_stw_abort(w); /* removes whatever temp file is left */
    return s;
}
