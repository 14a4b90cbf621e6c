/* stats.h: calibration statistics kept in a file (`spotq calib`), so that a sweep of quantisation
 * settings calibrates once (`spotq quantize --stats`): for every layer, site and FFN unit, the Hessian
 * 2/T sum x x^T of its input over the calibration tokens, the token count and max |x|.
 *
 * File: zstd-compressed; inside, "SPOTQST1", a little-endian uint64 header length, the header (JSON:
 * the model's shape, the calibration settings, one entry {layer, site, unit, k, tokens, absmax} per
 * statistic), then each entry's Hessian as the k(k+1)/2 float32 of its upper triangle, row by row. */
#ifndef SQ_STATS_H
#define SQ_STATS_H

#include "../base/base.h"

typedef struct {
    int layer, site, unit;
    int64_t k, tokens;
    float absmax;
    int64_t offset;              /* of its upper triangle in the data (floats) */
} sq_stat_entry;

typedef struct {
    /* the model the statistics belong to */
    char arch[32];
    int hidden, n_layers, vocab, n_experts;
    /* how they were taken */
    char calib[1024];
    char hash[20];               /* FNV-1a 64 of the window ids, hex */
    int64_t text_tokens;
    int nsamples, seqlen;
    uint64_t seed;
    sq_stat_entry *entries;
    int64_t n, cap;
    float *data;                 /* every entry's upper triangle */
    int64_t data_len, data_cap;  /* floats */
} sq_stats;

/* Adds an entry from a full symmetric k x k Hessian (its upper triangle is kept). */
/* Room for n more floats of statistics, so that adding them moves nothing (optional: add grows as it must). */
sq_status sq_stats_reserve(sq_stats *st, int64_t n, sq_err *err);
sq_status sq_stats_add(sq_stats *st, int layer, int site, int unit, int64_t k, int64_t tokens, float absmax, const float *h, sq_err *err);
/* Writes st to path (into path.tmp, then renamed). */
sq_status sq_stats_write(const sq_stats *st, const char *path, sq_err *err);
/* Reads path; every field is checked (a truncated or altered file is an error naming it). */
sq_status sq_stats_read(sq_stats *st /* OUT */, const char *path, sq_err *err);
/* The same on the decompressed content (len bytes; path names it in errors). */
sq_status sq_stats_parse(sq_stats *st /* OUT */, const char *buf, size_t len, const char *path, sq_err *err);
/* The entry of (layer, site, unit), or NULL. */
const sq_stat_entry *sq_stats_find(const sq_stats *st, int layer, int site, int unit);
/* h (k x k) = the full symmetric Hessian of e. */
void sq_stats_hessian(const sq_stats *st, const sq_stat_entry *e, float *h);
void sq_stats_free(sq_stats *st);

#endif
