/* par.h: the processes of one job: under `mpirun -np N` in a build with MPI (make MPI=1), N ranks
 * talking through MPI; in a build without it, the same calls with one rank (every collective is then a
 * copy or nothing).
 *
 * Work is split into chunks whose number is fixed by the job (calibration or eval windows), never by N:
 * chunk i belongs to rank sq_par_owner(i) = i mod N, and every result is put together from the chunks
 * in chunk order 0 .. C-1, so the numbers do not depend on N.
 *
 * Errors: sq_par_start is the one check before any work (every rank's status, and a hash of its binary,
 * arguments and inputs): a failure there, on any rank, is the same error on every rank, named by the
 * first failing rank, and rank 0 alone says it. After it, a rank that fails ends the whole job with
 * sq_par_abort (one line naming it, then MPI_Abort); a rank that is killed is ended by mpirun. */
#ifndef SQ_PAR_H
#define SQ_PAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"

/* Starts MPI when this build has it and the process was started by mpirun (else one rank); keeps a
 * hash of argv and of the running binary for sq_par_start. Call once, first thing in main. */
sq_status sq_par_init(int *argc, char ***argv, sq_err *err);
void sq_par_finalize(void);
bool sq_par_built(void); /* this build has MPI */
int sq_par_rank(void);
int sq_par_size(void);
int sq_par_local_rank(void); /* the rank among those on this node (the GPU a rank takes) */
static inline int sq_par_owner(int64_t chunk) { return (int)(chunk % sq_par_size()); }
static inline bool sq_par_mine(int64_t chunk) { return sq_par_owner(chunk) == sq_par_rank(); }

/* Collective, once per job before any work: every rank's status s and the hash of its inputs (the
 * checkpoint's header, the data). When a rank failed, or its binary, arguments or inputs differ from
 * rank 0's, every rank returns the same error (the first such rank's, "rank R: ..."). */
sq_status sq_par_start(sq_status s, uint64_t inputs_hash, sq_err *err);
bool sq_par_started(void);
/* sq_par_start returned an error that every rank has (rank 0 says it, the others stay silent). */
bool sq_par_failed_together(void);
/* True where this rank should print what the job prints once (rank 0). */
static inline bool sq_par_root(void) { return sq_par_rank() == 0; }
/* Ends the job for a failure on this rank after sq_par_start: one line "spotq: error: rank R: MSG" on
 * stderr, then MPI_Abort (mpirun ends the other ranks). One rank: returns (the caller exits). */
void sq_par_abort(const sq_err *err);
/* Test only: SPOTQ_TEST_FAULT=R:S makes rank R fail at step S (quantize and calib: block S), R:S:kill
 * makes it raise SIGKILL there. True when this rank is to fail here (after a kill it never returns). */
bool sq_par_test_fault(int step);
/* Keeps fd (a copy of stderr) for sq_par_abort's line, where a rank's own stderr is closed off. */
void sq_par_set_error_fd(int fd);

/* Collectives; every rank calls each in the same order. Failures of the transport end the job. */
void sq_par_bcast(void *buf, int64_t bytes, int root);
/* From rank `from` to rank `to` (both call it; nothing when they are the same rank). */
void sq_par_send(void *buf, int64_t bytes, int from, int to);
/* Chunks of chunk_bytes each in buf (n of them): each rank fills the chunks it owns; afterwards every
 * rank holds them all. */
void sq_par_gather_chunks(void *buf, int64_t n, int64_t chunk_bytes);
/* The fixed-order reduction: part holds (n, width) per-chunk partial sums, the rows this rank owns filled;
 * out (width) = the rows added in chunk order 0 .. n-1 (part then holds every rank's rows). */
void sq_par_chunk_sum(double *part, int64_t n, int64_t width, double *out);
/* Every rank's bytes to every rank: rank q's `n` bytes of `mine` land at *out + offset[q] (size+1
 * offsets, offset[size] the total); *out is malloc'ed (free it). NULL on out of memory (ends the job). */
void *sq_par_allgatherv(const void *mine, int64_t n, int64_t *offset);
/* Rank q's bytes for each rank: send holds count[0] bytes for rank 0, then count[1] for rank 1, ...;
 * returns what every rank sent this one, rank q's at offset[q] (size+1 offsets). malloc'ed; free it. */
void *sq_par_alltoallv(const void *send, const int64_t *count, int64_t *offset);
/* Elementwise over ranks, in place: sum of int64s, max of floats. */
void sq_par_sum_i64(int64_t *v, int64_t n);
void sq_par_max_f32(float *v, int64_t n);
/* Bytes this rank has sent so far through these calls (what bench/mpi.sh reports per block). */
int64_t sq_par_bytes_sent(void);
double sq_par_wait_seconds(void); /* seconds this rank spent inside these calls (waiting for the others, moving bytes) */

/* FNV-1a 64 of bytes, continuing from h (start with SQ_PAR_HASH0). */
#define SQ_PAR_HASH0 0xcbf29ce484222325ULL
uint64_t sq_par_hash(uint64_t h, const void *data, size_t n);

#endif
