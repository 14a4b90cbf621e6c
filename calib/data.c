/* data.c: seeded calibration windows over a token stream. */
#include <stdlib.h>
#include <string.h>

#include "calib.h"

void sq_rng_seed(sq_rng *r, uint64_t seed) { r->s = seed; }

uint64_t sq_rng_next(sq_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t sq_rng_below(sq_rng *r, uint64_t n) {
    /* rejection sampling: no modulo bias */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = sq_rng_next(r); while (x >= limit);
    return x % n;
}

sq_status sq_calib_windows(const int *ids, int64_t n, const char *path, int nsamples, int seqlen, uint64_t seed, int **out,
                           sq_err *err) {
    *out = NULL;
    if (nsamples < 1) return sq_fail(err, SQ_ERR_ARG, "--nsamples must be at least 1 (got %d)", nsamples);
    if (seqlen < 1) return sq_fail(err, SQ_ERR_ARG, "--seqlen must be at least 1 (got %d)", seqlen);
    if (n < seqlen)
        return sq_fail(err, SQ_ERR_ARG, "%s: %lld tokens, too short for --seqlen %d windows (use a longer text or a smaller --seqlen)",
                       path, (long long)n, seqlen);
    int64_t total;
    if (!sq_mul_i64(nsamples, seqlen, &total) || total > (int64_t)1 << 31)
        return sq_fail(err, SQ_ERR_ARG, "--nsamples %d x --seqlen %d is too many tokens", nsamples, seqlen);
    int *w = sq_malloc((size_t)total * sizeof *w, err);
    if (!w) return SQ_ERR_NOMEM;
    sq_rng r;
    sq_rng_seed(&r, seed);
    for (int s = 0; s < nsamples; s++) {
        int64_t start = sq_calib_window_start(&r, n, seqlen);
        memcpy(w + (int64_t)s * seqlen, ids + start, (size_t)seqlen * sizeof *w);
    }
    *out = w;
    return SQ_OK;
}

int64_t sq_calib_window_start(sq_rng *r, int64_t n, int seqlen) { return (int64_t)sq_rng_below(r, (uint64_t)(n - seqlen + 1)); }

uint64_t sq_calib_hash(const int *ids, int64_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) {
            h ^= (uint64_t)(((uint32_t)ids[i] >> (8 * b)) & 0xff);
            h *= 0x100000001b3ULL;
        }
    return h;
}
