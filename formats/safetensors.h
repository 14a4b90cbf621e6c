/* safetensors.h: reading (mmap, single or sharded) and streaming writing of safetensors files.
 *
 * Ownership: sq_st_open returns a checkpoint that owns its mappings, names and tensor table;
 * every sq_tensor.data pointer aliases a read-only mmap and is valid until sq_st_close. */
#ifndef SQ_SAFETENSORS_H
#define SQ_SAFETENSORS_H

#include "../base/base.h"
#include "dtype.h"

#define SQ_MAX_DIMS 8

typedef struct {
    const char *name;        /* owned by the checkpoint */
    sq_dtype dtype;
    int ndim;
    int64_t shape[SQ_MAX_DIMS];
    int64_t numel;           /* product of shape (1 for a scalar) */
    int64_t nbytes;          /* numel * dtype size */
    const void *data;        /* aliases the mmap; NULL only when nbytes == 0 */
    int shard;               /* index of the file it lives in */
} sq_tensor;

typedef struct sq_st sq_st;

/* Opens a checkpoint. path is a .safetensors file, a model.safetensors.index.json, or a directory
 * holding model.safetensors or model.safetensors.index.json. Every header field is validated. */
sq_status sq_st_open(sq_st **out /* OUT */, const char *path, sq_err *err);
void sq_st_close(sq_st *st); /* NULL is fine */

/* Tensors sorted by name. */
int64_t sq_st_count(const sq_st *st);
const sq_tensor *sq_st_get(const sq_st *st, int64_t i);
const sq_tensor *sq_st_find(const sq_st *st, const char *name); /* NULL when absent */
/* Files: count, path of shard i, its size in bytes. */
int sq_st_nshards(const sq_st *st);
const char *sq_st_shard_path(const sq_st *st, int i);
int64_t sq_st_shard_size(const sq_st *st, int i);
/* Drops the tensor's pages from this process's resident memory (the file stays mapped; a later read
 * faults them back in). Streaming passes call it on the blocks they are done with. */
void sq_st_release(const sq_st *st, const sq_tensor *t);
/* __metadata__ value for key, or NULL. */
const char *sq_st_meta(const sq_st *st, const char *key);

/* Validates a header given as bytes (the JSON after the 8-byte length) against a data section of
 * data_len bytes. Used by sq_st_open and by the fuzz target. On success fills *out with a
 * table the caller frees with sq_st_header_free. */
typedef struct {
    int64_t count;
    sq_tensor *tensors;      /* data = NULL; offsets in begin[] */
    int64_t *begin;          /* data offset of each tensor */
    char **meta_keys, **meta_vals;
    int64_t nmeta;
} sq_st_header;
sq_status sq_st_parse_header(const char *json, size_t len, int64_t data_len, const char *path,
                             sq_st_header *out /* OUT */, sq_err *err);
void sq_st_header_free(sq_st_header *h);

/* Streaming writer: tensors appended one at a time; the header is written last and the file renamed
 * into place by sq_stw_finish. Until then nothing exists at path. sq_stw_abort removes temp files. */
typedef struct sq_stw sq_stw;
sq_status sq_stw_open(sq_stw **out /* OUT */, const char *path, sq_err *err);
sq_status sq_stw_add(sq_stw *w, const char *name, sq_dtype dtype, int ndim, const int64_t *shape,
                     const void *data, sq_err *err);
sq_status sq_stw_meta(sq_stw *w, const char *key, const char *value, sq_err *err);
sq_status sq_stw_finish(sq_stw *w, sq_err *err); /* frees w whatever the result */
void sq_stw_abort(sq_stw *w);                      /* NULL is fine */

/* A checkpoint's tensors written into directory dir as shards of at most max_bytes of tensor data
 * (shards.c): model.safetensors when one is enough, else model-00001-of-0000N.safetensors and
 * model.safetensors.index.json, as transformers writes them. A tensor larger than max_bytes gets a
 * shard of its own. */
typedef struct sq_shards sq_shards;
sq_status sq_shards_open(sq_shards **out /* OUT */, const char *dir, int64_t max_bytes, sq_err *err);
sq_status sq_shards_add(sq_shards *w, const char *name, sq_dtype dtype, int ndim, const int64_t *shape, const void *data, sq_err *err);  /* w NULL: nothing (MPI ranks > 0) */
int64_t sq_shards_bytes(const sq_shards *w); /* tensor data added so far (headers not counted) */
sq_status sq_shards_finish(sq_shards *w, int *n_shards /* OUT, may be NULL */, sq_err *err); /* frees w whatever the result */
void sq_shards_abort(sq_shards *w);                                                     /* NULL is fine */

#endif
