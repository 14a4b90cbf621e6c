/* par.c: the processes of one job (par.h): MPI's collectives when built with SQ_MPI, else one rank. */
#include "par.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef SQ_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_local = 0;
#ifdef SQ_MPI
static bool g_mpi = false; /* MPI_Init was called */
#endif
static bool g_started = false, g_together = false;
static int g_err_fd = 2;
static uint64_t g_self_hash = SQ_PAR_HASH0; /* the binary and argv */
static int64_t g_sent = 0;
static double g_wait = 0; /* seconds inside the collectives */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

uint64_t sq_par_hash(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

bool sq_par_built(void) {
#ifdef SQ_MPI
    return true;
#else
    return false;
#endif
}
int sq_par_rank(void) { return g_rank; }
int sq_par_size(void) { return g_size; }
int sq_par_local_rank(void) { return g_local; }
bool sq_par_started(void) { return g_started; }
bool sq_par_failed_together(void) { return g_together; }
void sq_par_set_error_fd(int fd) { g_err_fd = fd; }

bool sq_par_test_fault(int step) {
    const char *f = getenv("SPOTQ_TEST_FAULT");
    int r = -1, st = -1;
    char how[8] = "";
    if (!f || sscanf(f, "%d:%d:%7s", &r, &st, how) < 2 || r != g_rank || st != step) return false;
    if (!strcmp(how, "kill")) raise(SIGKILL);
    return true;
}
int64_t sq_par_bytes_sent(void) { return g_sent; }
double sq_par_wait_seconds(void) { return g_wait; }

sq_status sq_par_init(int *argc, char ***argv, sq_err *err) {
    for (int i = 0; i < *argc; i++) g_self_hash = sq_par_hash(g_self_hash, (*argv)[i], strlen((*argv)[i]) + 1);
#ifdef SQ_MPI
    /* Only under a launcher: a plain `spotq` run stays one process and never starts MPI (or its daemon). */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_RANK")) return SQ_OK;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return sq_fail(err, SQ_ERR_IO, "MPI_Init failed");
    g_mpi = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &g_local);
        MPI_Comm_free(&node);
    }
    /* the running binary, so that ranks built differently refuse to work together */
    FILE *f = fopen("/proc/self/exe", "rb");
    if (f) {
        char buf[1 << 16];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, f)) > 0) g_self_hash = sq_par_hash(g_self_hash, buf, got);
        fclose(f);
    }
#else
    (void)err;
#endif
    return SQ_OK;
}

void sq_par_finalize(void) {
#ifdef SQ_MPI
    if (g_mpi) MPI_Finalize();
    g_mpi = false;
#endif
}

sq_status sq_par_start(sq_status s, uint64_t inputs_hash, sq_err *err) {
    g_started = true;
    if (g_size == 1) return s;
#ifdef SQ_MPI
    /* the first failing rank, else the first whose hash differs from rank 0's */
    uint64_t h[2] = {g_self_hash, inputs_hash}, h0[2] = {g_self_hash, inputs_hash};
    MPI_Bcast(h0, 2, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int mine[2] = {s ? g_rank : g_size, h[0] != h0[0] || h[1] != h0[1] ? g_rank : g_size}, first[2];
    MPI_Allreduce(mine, first, 2, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first[0] == g_size && first[1] == g_size) return SQ_OK;
    g_together = true;
    sq_err e = {0};
    int who = first[0] < g_size ? first[0] : first[1];
    if (g_rank == who) {
        if (first[0] < g_size) e = err ? *err : (sq_err){.code = s};
        else
            sq_fail(&e, SQ_ERR_ARG, "its %s differ from rank 0's: every rank must run the same spotq with the same arguments on the same files",
                    h[0] != h0[0] ? "binary or arguments" : "checkpoint or data");
        if (!e.code) e.code = SQ_ERR_INTERNAL;
    }
    int code = (int)e.code;
    MPI_Bcast(&code, 1, MPI_INT, who, MPI_COMM_WORLD);
    MPI_Bcast(e.msg, (int)sizeof e.msg, MPI_CHAR, who, MPI_COMM_WORLD);
    return sq_fail(err, (sq_status)code, "rank %d: %.490s", who, e.msg);
#else
    (void)inputs_hash;
    (void)err;
    return s;
#endif
}

void sq_par_abort(const sq_err *err) {
    if (g_size == 1) return;
    dprintf(g_err_fd, "spotq: error: rank %d: %s\n", g_rank, err && err->code ? err->msg : "failed");
#ifdef SQ_MPI
    MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    _exit(1);
}

#ifdef SQ_MPI
static void too_big(const char *what, int64_t n) {
    sq_err e;
    sq_fail(&e, SQ_ERR_UNSUPPORTED, "%s of %lld bytes: MPI messages over 2 GiB are not supported yet", what, (long long)n);
    sq_par_abort(&e);
}
#endif

static void sq_par_bcast_(void *buf, int64_t bytes, int root) {
    if (g_size == 1 || bytes <= 0) return;
#ifdef SQ_MPI
    if (g_rank == root) g_sent += bytes * (g_size - 1);
    for (int64_t off = 0; off < bytes; off += 1 << 30) {
        int64_t n = bytes - off < (1 << 30) ? bytes - off : (1 << 30);
        MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
    }
#endif
}

static void sq_par_send_(void *buf, int64_t bytes, int from, int to) {
    if (g_size == 1 || from == to || bytes <= 0) return;
#ifdef SQ_MPI
    for (int64_t off = 0; off < bytes; off += 1 << 30) {
        int n = (int)(bytes - off < (1 << 30) ? bytes - off : (1 << 30));
        if (g_rank == from) MPI_Send((char *)buf + off, n, MPI_BYTE, to, 0, MPI_COMM_WORLD);
        else if (g_rank == to) MPI_Recv((char *)buf + off, n, MPI_BYTE, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    if (g_rank == from) g_sent += bytes;
#else
    (void)buf;
#endif
}

static void sq_par_gather_chunks_(void *buf, int64_t n, int64_t chunk_bytes) {
    if (g_size == 1 || n <= 0 || chunk_bytes <= 0) return;
#ifdef SQ_MPI
    if (chunk_bytes > INT_MAX) too_big("a chunk", chunk_bytes);
    /* round j: chunks j*size .. j*size+size-1, chunk j*size+q from rank q */
    for (int64_t j0 = 0; j0 < n; j0 += g_size) {
        int m = n - j0 < g_size ? (int)(n - j0) : g_size;
        char *base = (char *)buf + j0 * chunk_bytes;
        if (m == g_size) MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, base, (int)chunk_bytes, MPI_BYTE, MPI_COMM_WORLD);
        else
            for (int q = 0; q < m; q++) MPI_Bcast(base + (int64_t)q * chunk_bytes, (int)chunk_bytes, MPI_BYTE, q, MPI_COMM_WORLD);
        if (g_rank < m) g_sent += chunk_bytes * (g_size - 1);
    }
#endif
}

void sq_par_chunk_sum(double *part, int64_t n, int64_t width, double *out) {
    sq_par_gather_chunks(part, n, width * (int64_t)sizeof *part);
    for (int64_t w = 0; w < width; w++) out[w] = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t w = 0; w < width; w++) out[w] += part[i * width + w];
}

static void *sq_par_allgatherv_(const void *mine, int64_t n, int64_t *offset) {
    if (g_size == 1) {
        offset[0] = 0, offset[1] = n;
        void *out = malloc(n > 0 ? (size_t)n : 1);
        if (!out) {
            sq_err e;
            sq_fail(&e, SQ_ERR_NOMEM, "out of memory gathering %lld bytes", (long long)n);
            sq_par_abort(&e);
            return NULL;
        }
        if (n > 0) memcpy(out, mine, (size_t)n);
        return out;
    }
#ifdef SQ_MPI
    long long mn = n, *all = malloc((size_t)g_size * sizeof *all);
    int *cnt = malloc((size_t)g_size * sizeof *cnt), *dsp = malloc((size_t)g_size * sizeof *dsp);
    if (!all || !cnt || !dsp) {
        sq_err e;
        sq_fail(&e, SQ_ERR_NOMEM, "out of memory");
        sq_par_abort(&e);
    }
    MPI_Allgather(&mn, 1, MPI_LONG_LONG, all, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
    offset[0] = 0;
    for (int q = 0; q < g_size; q++) offset[q + 1] = offset[q] + all[q];
    if (offset[g_size] > INT_MAX) too_big("a gather", offset[g_size]);
    for (int q = 0; q < g_size; q++) cnt[q] = (int)all[q], dsp[q] = (int)offset[q];
    char *out = malloc(offset[g_size] > 0 ? (size_t)offset[g_size] : 1);
    if (!out) {
        sq_err e;
        sq_fail(&e, SQ_ERR_NOMEM, "out of memory gathering %lld bytes", (long long)offset[g_size]);
        sq_par_abort(&e);
    }
    MPI_Allgatherv(mine, (int)n, MPI_BYTE, out, cnt, dsp, MPI_BYTE, MPI_COMM_WORLD);
    g_sent += n * (g_size - 1);
    free(all);
    free(cnt);
    free(dsp);
    return out;
#else
    return NULL;
#endif
}

static void *sq_par_alltoallv_(const void *send, const int64_t *count, int64_t *offset) {
    if (g_size == 1) return sq_par_allgatherv(send, count[0], offset);
#ifdef SQ_MPI
    int N = g_size;
    long long *sc = malloc((size_t)N * sizeof *sc), *rc = malloc((size_t)N * sizeof *rc);
    int *si = malloc((size_t)N * sizeof *si), *sd = malloc((size_t)N * sizeof *sd), *ri = malloc((size_t)N * sizeof *ri),
        *rd = malloc((size_t)N * sizeof *rd);
    if (!sc || !rc || !si || !sd || !ri || !rd) {
        sq_err e;
        sq_fail(&e, SQ_ERR_NOMEM, "out of memory");
        sq_par_abort(&e);
    }
    int64_t at = 0;
    for (int q = 0; q < N; q++) {
        sc[q] = count[q], si[q] = (int)count[q], sd[q] = (int)at;
        at += count[q];
        if (q != g_rank) g_sent += count[q];
    }
    if (at > INT_MAX) too_big("an exchange", at);
    MPI_Alltoall(sc, 1, MPI_LONG_LONG, rc, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
    offset[0] = 0;
    for (int q = 0; q < N; q++) offset[q + 1] = offset[q] + rc[q];
    if (offset[N] > INT_MAX) too_big("an exchange", offset[N]);
    for (int q = 0; q < N; q++) ri[q] = (int)rc[q], rd[q] = (int)offset[q];
    char *out = malloc(offset[N] > 0 ? (size_t)offset[N] : 1);
    if (!out) {
        sq_err e;
        sq_fail(&e, SQ_ERR_NOMEM, "out of memory receiving %lld bytes", (long long)offset[N]);
        sq_par_abort(&e);
    }
    MPI_Alltoallv(send, si, sd, MPI_BYTE, out, ri, rd, MPI_BYTE, MPI_COMM_WORLD);
    free(sc), free(rc), free(si), free(sd), free(ri), free(rd);
    return out;
#else
    (void)send;
    (void)count;
    (void)offset;
    return NULL;
#endif
}

static void sq_par_sum_i64_(int64_t *v, int64_t n) {
    if (g_size == 1 || n <= 0) return;
#ifdef SQ_MPI
    if (n > INT_MAX / 8) too_big("a reduction", n * 8);
    MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    g_sent += n * 8 * (g_size - 1);
#endif
}

static void sq_par_max_f32_(float *v, int64_t n) {
    if (g_size == 1 || n <= 0) return;
#ifdef SQ_MPI
    if (n > INT_MAX / 4) too_big("a reduction", n * 4);
    MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    g_sent += n * 4 * (g_size - 1);
#endif
}

void sq_par_bcast(void *buf, int64_t bytes, int root) {
    double t = now_s();
    sq_par_bcast_(buf, bytes, root);
    g_wait += now_s() - t;
}

void sq_par_send(void *buf, int64_t bytes, int from, int to) {
    double t = now_s();
    sq_par_send_(buf, bytes, from, to);
    g_wait += now_s() - t;
}

void sq_par_gather_chunks(void *buf, int64_t n, int64_t chunk_bytes) {
    double t = now_s();
    sq_par_gather_chunks_(buf, n, chunk_bytes);
    g_wait += now_s() - t;
}

void sq_par_sum_i64(int64_t *v, int64_t n) {
    double t = now_s();
    sq_par_sum_i64_(v, n);
    g_wait += now_s() - t;
}

void sq_par_max_f32(float *v, int64_t n) {
    double t = now_s();
    sq_par_max_f32_(v, n);
    g_wait += now_s() - t;
}

void *sq_par_allgatherv(const void *mine, int64_t n, int64_t *offset) {
    double t = now_s();
    void *out = sq_par_allgatherv_(mine, n, offset);
    g_wait += now_s() - t;
    return out;
}

void *sq_par_alltoallv(const void *send, const int64_t *count, int64_t *offset) {
    double t = now_s();
    void *out = sq_par_alltoallv_(send, count, offset);
    g_wait += now_s() - t;
    return out;
}
