/* base.h: what every spotq module shares: status codes, error messages, logging, checked arithmetic. */
#ifndef SQ_BASE_H
#define SQ_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define SQ_VERSION "0.1.0"

/* Status codes: negative, fixed values. SQ_OK is zero. */
typedef enum {
    SQ_OK = 0,
    SQ_ERR_IO = -1,          /* a file could not be opened, read, written or renamed */
    SQ_ERR_FORMAT = -2,      /* a file's contents are malformed or lie about themselves */
    SQ_ERR_NOMEM = -3,       /* an allocation failed */
    SQ_ERR_ARG = -4,         /* a caller passed a bad argument or option */
    SQ_ERR_UNSUPPORTED = -5, /* valid input that spotq does not handle (yet) */
    SQ_ERR_NUMERIC = -6,     /* NaN/Inf or a failed factorisation */
    SQ_ERR_DEVICE = -7,      /* the requested device backend is not available */
    SQ_ERR_INTERNAL = -8,    /* a broken invariant */
} sq_status;

const char *sq_status_name(sq_status s);

/* An error: the status and one line of text naming the file and the problem.
 * Every function that can fail takes an sq_err * (which may be NULL) and fills it. */
typedef struct {
    sq_status code;
    char msg[512];
} sq_err;

/* Fills err (if not NULL) and returns code. Formats like printf. */
sq_status sq_fail(sq_err *err, sq_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logging: the library prints only through this callback (default: stderr, level >= INFO). */
typedef enum { SQ_LOG_DEBUG = 0, SQ_LOG_INFO = 1, SQ_LOG_WARN = 2, SQ_LOG_ERROR = 3 } sq_log_level;
typedef void (*sq_log_fn)(sq_log_level level, const char *msg, void *user);
void sq_log_set(sq_log_fn fn, void *user, sq_log_level min_level);
void sq_log(sq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checked arithmetic for sizes that a file controls: return false on overflow. */
static inline bool sq_mul_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool sq_add_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Allocation helpers that never return NULL silently: they fill err on failure. */
void *sq_malloc(size_t n, sq_err *err);
void *sq_calloc(size_t count, size_t size, sq_err *err);
char *sq_strdup(const char *s, sq_err *err);

/* Reads a whole file into a NUL-terminated buffer (caller frees). */
sq_status sq_read_file(const char *path, char **out /* OUT */, size_t *len /* OUT */, sq_err *err);

/* Joins dir and name into out (capacity cap). Returns SQ_ERR_ARG if it does not fit. */
sq_status sq_path_join(char *out, size_t cap, const char *dir, const char *name, sq_err *err);

/* bytes for a person: "1015.75 KiB", "427 B" (binary units). */
void sq_human_bytes(int64_t bytes, char *buf, size_t cap);

/* True when path exists and is a directory. */
bool sq_is_dir(const char *path);

/* The absolute, canonical form of path, which need not exist: the longest existing prefix is resolved
 * (symlinks, "." and ".."), the rest appended with "." and ".." applied. Returns SQ_ERR_ARG when the
 * result does not fit cap, SQ_ERR_IO when the working directory cannot be read. */
sq_status sq_path_resolve(const char *path, char *out /* OUT */, size_t cap, sq_err *err);

/* How an output path relates to an input path, both resolved by sq_path_resolve. */
typedef enum { SQ_PATH_APART = 0, SQ_PATH_SAME, SQ_PATH_CONTAINS, SQ_PATH_INSIDE } sq_path_rel;
sq_path_rel sq_path_relation(const char *out_resolved, const char *in_resolved);

/* Refuses (SQ_ERR_ARG, one line naming both) an output path that is one of the inputs, contains one or
 * lies inside one: what a writer must check before it touches anything. inputs[i] may be NULL or "";
 * what[i] names each input in the message ("the model", "the calibration text"). */
sq_status sq_path_check_output(const char *out, const char *const *inputs, const char *const *what, int n, sq_err *err);

/* Validates UTF-8 (no overlongs, no surrogates, max U+10FFFF). */
bool sq_utf8_valid(const char *s, size_t n);

/* Square matrices (row-major k x k) and their upper triangles (row i's columns i..k-1, rows one after
 * another: k (k + 1) / 2 floats): the lower triangle copied from the upper, in cache-sized tiles; the
 * upper triangle packed to the front of the matrix's own storage, and back to its place (in place,
 * element for element the same floats). */
void sq_mirror_upper(float *h, int64_t k);
void sq_pack_upper(float *h, int64_t k);
void sq_unpack_upper(float *h, int64_t k);

#endif
