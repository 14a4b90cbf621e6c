/* coll.h: NCCL between the GPUs of an MPI job (compiled by cc and nvcc; the CUDA library's only NCCL
 * user). MPI (base/par.h) stays the job's control path: rank 0's ncclUniqueId travels by sq_par_bcast,
 * then every rank's communicator moves device buffers GPU to GPU (NVLink, or the network between
 * nodes). The collectives keep calibration's rule (calib/driver.c, base/par.h): nothing is reduced by
 * NCCL's own all-reduce (whose summation order depends on the number of ranks and the topology); the
 * partial Hessians of a round's chunks go whole to the rank that solves from them (gather_to), which
 * adds them in chunk order with combine, the device twin of the host's running-mean step, so that the
 * Hessians are the same bits for every N. Found with sq_cuda_symbol("sq_cuda_coll_impl")
 * (kernels/backend.h); NULL in a build without CUDA. Compile-only where there is no GPU. */
#ifndef SQ_CUDA_COLL_H
#define SQ_CUDA_COLL_H

#include "../backend.h"

typedef struct sq_coll sq_coll;

#define SQ_COLL_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */

typedef struct {
    /* Rank 0: a fresh id (SQ_COLL_ID_BYTES) for every rank's init (sent to them by sq_par_bcast). */
    sq_status (*unique_id)(void *id /* OUT */, sq_err *err);
    /* Collective over the nranks ranks: this rank's communicator, on GPU `device` (the local rank). */
    sq_status (*init)(sq_coll **out /* OUT */, const void *id, int nranks, int rank, int device, sq_err *err);
    void (*destroy)(sq_coll *c); /* NULL is fine */
    /* Root's bytes at dev (device memory) to every rank's dev. */
    sq_status (*bcast)(sq_coll *c, void *dev, int64_t bytes, int root, sq_err *err);
    /* Each rank's `bytes` at mine land at root's all + rank * bytes (all: root's, nranks * bytes; other
     * ranks pass NULL). */
    sq_status (*gather_to)(sq_coll *c, const void *mine, void *all, int64_t bytes, int root, sq_err *err);
    /* Every rank's `bytes` at mine into every rank's all + rank * bytes. */
    sq_status (*allgather)(sq_coll *c, const void *mine, void *all, int64_t bytes, sq_err *err);
    /* h = keep * h + add * p over n floats, in device memory on the communicator's stream (the chunk
     * step of calib/driver.c's combine, the same float arithmetic element by element). */
    sq_status (*combine)(sq_coll *c, float *h, const float *p, int64_t n, float keep, float add, sq_err *err);
    /* Waits for everything queued on the communicator's stream. */
    sq_status (*sync)(sq_coll *c, sq_err *err);
    int64_t (*bytes_sent)(const sq_coll *c); /* bytes this rank has sent through it */
} sq_cuda_coll_i;

#endif
