/* calib.h: calibration data (seeded windows of a token stream) and the block-by-block calibration
 * driver that feeds each transformer block the outputs of the already quantised blocks before it. */
#ifndef SQ_CALIB_H
#define SQ_CALIB_H

#include "../base/base.h"

/* A seeded generator (splitmix64): the same seed gives the same windows on every machine. */
typedef struct { uint64_t s; } sq_rng;
void sq_rng_seed(sq_rng *r, uint64_t seed);
uint64_t sq_rng_next(sq_rng *r);
/* Uniform in [0, n). */
uint64_t sq_rng_below(sq_rng *r, uint64_t n);

/* GPTQ's method: nsamples windows of seqlen tokens at offsets uniform in [0, n - seqlen], from the
 * one token stream ids[0..n). *out is malloc'd, (nsamples, seqlen). path names the data in errors
 * ("FILE: 812 tokens, too short for --seqlen 2048"). */
sq_status sq_calib_windows(const int *ids, int64_t n, const char *path, int nsamples, int seqlen, uint64_t seed,
                           int **out /* OUT */, sq_err *err);
/* The start of the next window of seqlen tokens in a stream of n (>= seqlen) tokens, as sq_calib_windows
 * draws them from r seeded with its seed: replaying it finds the tokens calibration saw (held-out
 * windows are the others). */
int64_t sq_calib_window_start(sq_rng *r, int64_t n, int seqlen);

/* FNV-1a 64 of the window ids, recorded in spotq.json so a run can be tied to its data. */
uint64_t sq_calib_hash(const int *ids, int64_t n);

#endif
