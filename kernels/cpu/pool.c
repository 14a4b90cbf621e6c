/* pool.c: the CPU backend's thread pool: every thread runs the same function on its share of the work. */
#include "cpu.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* How long an idle worker spins before it sleeps. A decode step dispatches a kernel every few tens
 * of microseconds, so a worker that slept between them would pay a wake-up each time. */
#define SPIN_NS 2000000LL
/* Busy-wait iterations (a pause each, ~ a microsecond in all) before a waiting thread starts yielding. */
#define SPIN_PAUSES 1024

struct sq_pool {
    int threads;
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic unsigned gen;        /* bumped (under mu) for every job */
    _Atomic int pending;         /* workers still running the current job */
    _Atomic int quit;
    sq_pool_fn fn;
    void *arg;
};

typedef struct {
    sq_pool *p;
    int ith;
} worker_arg;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *worker(void *varg) {
    worker_arg *wa = varg;
    sq_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0; /* gen when the pool was made: a job may be posted before this thread runs */
    for (;;) {
        /* Spin, then sleep, until a new job (or quit). */
        int64_t t0 = 0;
        for (unsigned i = 0; atomic_load_explicit(&p->gen, memory_order_acquire) == seen && !atomic_load(&p->quit); i++) {
            if (i < SPIN_PAUSES) {
                _mm_pause();
                continue;
            }
            /* Past the first spins, give the core away on every check (there may be more threads than
             * cores, or other processes), and sleep once SPIN_NS have gone by. */
            sched_yield();
            if (!t0) t0 = now_ns();
            else if ((i & 15) == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv, &p->mu);
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        p->fn(p->arg, ith, p->threads);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

sq_status sq_pool_new(sq_pool **out, int threads, sq_err *err) {
    *out = NULL;
    if (threads < 1) threads = 1;
    sq_pool *p = sq_calloc(1, sizeof *p, err);
    if (!p) return SQ_ERR_NOMEM;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->tid = sq_calloc((size_t)threads, sizeof *p->tid, err);
    if (!p->tid) {
        sq_pool_free(p);
        return SQ_ERR_NOMEM;
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, i};
        if (!wa || pthread_create(&p->tid[i], NULL, worker, wa) != 0) {
            free(wa);
            p->threads = i; /* the workers started so far are joined by free */
            sq_pool_free(p);
            return sq_fail(err, SQ_ERR_NOMEM, "could not start worker thread %d of %d", i, threads);
        }
    }
    *out = p;
    return SQ_OK;
}

void sq_pool_free(sq_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads && p->tid; i++) pthread_join(p->tid[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->tid);
    free(p);
}

int sq_pool_threads(const sq_pool *p) { return p ? p->threads : 1; }

void sq_pool_run(sq_pool *p, sq_pool_fn fn, void *arg) {
    if (!p || p->threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->threads);
    for (unsigned i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        if (i < SPIN_PAUSES) _mm_pause();
        else sched_yield();
    }
}

/* ---------------------------------------------------------------- fixed chunks on threads */

typedef struct {
    void (*fn)(void *, int64_t, int);
    void *arg;
    int64_t nchunks;
    _Atomic int64_t next;
} par_job;

static void par_run(void *v, int ith, int nth) {
    (void)nth;
    par_job *j = v;
    int64_t lo, hi;
    while (sq_chunk_next(&j->next, j->nchunks, 1, &lo, &hi)) j->fn(j->arg, lo, ith);
}

void sq_cpu_par_chunks(int threads, int64_t nchunks, void (*fn)(void *arg, int64_t c, int ith), void *arg) {
    if (threads > SQ_PAR_MAX_THREADS) threads = SQ_PAR_MAX_THREADS;
    if (threads > nchunks) threads = (int)nchunks;
    par_job j = {fn, arg, nchunks, 0};
    sq_pool *p = NULL;
    if (threads > 1 && sq_pool_new(&p, threads, NULL)) p = NULL; /* threads that will not start: the caller alone */
    sq_pool_run(p, par_run, &j);
    sq_pool_free(p);
}
