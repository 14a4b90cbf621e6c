/* coll.cu: NCCL between the GPUs of an MPI job (kernels/cuda/coll.h). Messages over 2^31 bytes go in
 * pieces (NCCL counts are size_t, but the pieces keep each call's buffer within one allocation's
 * reach on every transport). The combine kernel is written with __fmul_rn and __fadd_rn so that no
 * fused multiply-add changes its bits from the host's (calib/driver.c combine, -ffp-contract off). */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../backend.h"
#include "coll.h"
}

struct sq_coll {
    ncclComm_t comm;
    cudaStream_t stream;
    int nranks, rank, device;
    int64_t sent;
};

#define CK_NCCL(call)                                                                                       \
    do {                                                                                                    \
        ncclResult_t e_ = (call);                                                                           \
        if (e_ != ncclSuccess) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: %s", #call, ncclGetErrorString(e_)); goto done; } \
    } while (0)
#define CK_CUDA(call)                                                                                       \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) { s = sq_fail(err, SQ_ERR_DEVICE, "%s: %s", #call, cudaGetErrorString(e_)); goto done; } \
    } while (0)

static_assert(SQ_COLL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "coll.h's id size is NCCL's");
static const int64_t PIECE = 1ll << 30;

static sq_status c_unique_id(void *id, sq_err *err) {
    sq_status s = SQ_OK;
    ncclUniqueId u;
    CK_NCCL(ncclGetUniqueId(&u));
    memcpy(id, u.internal, NCCL_UNIQUE_ID_BYTES);
done:
    return s;
}

static void c_destroy(sq_coll *c) {
    if (!c) return;
    if (c->comm) ncclCommDestroy(c->comm);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static sq_status c_init(sq_coll **out, const void *id, int nranks, int rank, int device, sq_err *err) {
    sq_status s = SQ_OK;
    ncclUniqueId u;
    sq_coll *c = (sq_coll *)calloc(1, sizeof *c);
    *out = NULL;
    if (!c) return sq_fail(err, SQ_ERR_NOMEM, "out of memory");
    c->nranks = nranks, c->rank = rank, c->device = device;
    memcpy(u.internal, id, NCCL_UNIQUE_ID_BYTES);
    CK_CUDA(cudaSetDevice(device));
    CK_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CK_NCCL(ncclCommInitRank(&c->comm, nranks, u, rank));
    *out = c;
    c = NULL;
done:
    c_destroy(c);
    return s;
}

static sq_status c_bcast(sq_coll *c, void *dev, int64_t bytes, int root, sq_err *err) {
    sq_status s = SQ_OK;
    for (int64_t at = 0; at < bytes; at += PIECE) {
        int64_t n = bytes - at < PIECE ? bytes - at : PIECE;
        CK_NCCL(ncclBroadcast((char *)dev + at, (char *)dev + at, (size_t)n, ncclChar, root, c->comm, c->stream));
        if (c->rank == root) c->sent += n * (c->nranks - 1);
    }
done:
    return s;
}

/* One process's order: root receives rank 0's piece, then rank 1's, ... (grouped, so none waits on another). */
static sq_status c_gather_to(sq_coll *c, const void *mine, void *all, int64_t bytes, int root, sq_err *err) {
    sq_status s = SQ_OK;
    for (int64_t at = 0; at < bytes; at += PIECE) {
        int64_t n = bytes - at < PIECE ? bytes - at : PIECE;
        CK_NCCL(ncclGroupStart());
        if (c->rank == root) {
            for (int q = 0; q < c->nranks; q++) {
                char *to = (char *)all + (int64_t)q * bytes + at;
                if (q == root) {
                    CK_CUDA(cudaMemcpyAsync(to, (const char *)mine + at, (size_t)n, cudaMemcpyDeviceToDevice, c->stream));
                } else {
                    CK_NCCL(ncclRecv(to, (size_t)n, ncclChar, q, c->comm, c->stream));
                }
            }
        } else {
            CK_NCCL(ncclSend((const char *)mine + at, (size_t)n, ncclChar, root, c->comm, c->stream));
            c->sent += n;
        }
        CK_NCCL(ncclGroupEnd());
    }
done:
    return s;
}

static sq_status c_allgather(sq_coll *c, const void *mine, void *all, int64_t bytes, sq_err *err) {
    sq_status s = SQ_OK;
    if (bytes <= PIECE) {
        CK_NCCL(ncclAllGather(mine, all, (size_t)bytes, ncclChar, c->comm, c->stream));
        c->sent += bytes * (c->nranks - 1);
    } else {
        for (int q = 0; q < c->nranks && !s; q++) { /* rank q's bytes to every rank, piece by piece */
            char *at = (char *)all + (int64_t)q * bytes;
            if (q == c->rank) CK_CUDA(cudaMemcpyAsync(at, mine, (size_t)bytes, cudaMemcpyDeviceToDevice, c->stream));
            s = c_bcast(c, at, bytes, q, err);
        }
    }
done:
    return s;
}

__global__ void k_combine(float *h, const float *p, int64_t n, float keep, float add) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        h[i] = __fadd_rn(__fmul_rn(keep, h[i]), __fmul_rn(add, p[i]));
}

static sq_status c_combine(sq_coll *c, float *h, const float *p, int64_t n, float keep, float add, sq_err *err) {
    sq_status s = SQ_OK;
    if (n <= 0) return SQ_OK;
    int64_t blocks = (n + 255) / 256;
    k_combine<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, c->stream>>>(h, p, n, keep, add);
    CK_CUDA(cudaGetLastError());
done:
    return s;
}

static sq_status c_sync(sq_coll *c, sq_err *err) {
    sq_status s = SQ_OK;
    CK_CUDA(cudaStreamSynchronize(c->stream));
done:
    return s;
}

static int64_t c_bytes_sent(const sq_coll *c) { return c->sent; }

static const sq_cuda_coll_i coll_table = {c_unique_id, c_init, c_destroy, c_bcast, c_gather_to, c_allgather, c_combine, c_sync, c_bytes_sent};

extern "C" const sq_cuda_coll_i *sq_cuda_coll_impl(void) { return &coll_table; }
