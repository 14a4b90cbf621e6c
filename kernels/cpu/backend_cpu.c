/* backend_cpu.c: the CPU backend (OpenBLAS + LAPACK), the reference for every other backend: its
 * execution context and its two kernel tables, the fast one and the scalar reference. */
#include "cpu.h"

#include <cblas.h>
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Asked once: the kernels ask on every call, and cpuid under a hypervisor traps (microseconds). */
static _Atomic int isa_max = -1, isa_now = -1;

static int detect_isa(void) {
    __builtin_cpu_init();
    /* F16C through cpuid (leaf 1, ECX bit 29): clang's __builtin_cpu_supports does not know "f16c". */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)) return SQ_ISA_SCALAR;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
        return SQ_ISA_AVX512;
    return SQ_ISA_AVX2;
}

const char *sq_cpu_isa_name(sq_isa isa) { return isa == SQ_ISA_AVX512 ? "avx512" : isa == SQ_ISA_AVX2 ? "avx2" : "scalar"; }

sq_isa sq_cpu_isa_max(void) {
    int m = atomic_load_explicit(&isa_max, memory_order_relaxed);
    if (m < 0) {
        m = detect_isa();
        atomic_store_explicit(&isa_max, m, memory_order_relaxed);
    }
    return (sq_isa)m;
}

sq_isa sq_cpu_set_isa(sq_isa want) {
    sq_isa m = sq_cpu_isa_max(), k = want < m ? want : m;
    atomic_store_explicit(&isa_now, (int)k, memory_order_relaxed);
    return k;
}

sq_isa sq_cpu_isa(void) {
    int k = atomic_load_explicit(&isa_now, memory_order_relaxed);
    if (k >= 0) return (sq_isa)k;
    sq_isa want = sq_cpu_isa_max();
    const char *e = getenv("SPOTQ_CPU_ISA");
    if (e && *e) {
        if (!strcmp(e, "scalar")) want = SQ_ISA_SCALAR;
        else if (!strcmp(e, "avx2")) want = SQ_ISA_AVX2;
        else if (!strcmp(e, "avx512")) want = SQ_ISA_AVX512;
        else fprintf(stderr, "spotq: SPOTQ_CPU_ISA=%s is not scalar, avx2 or avx512; using %s\n", e, sq_cpu_isa_name(want));
    }
    return sq_cpu_set_isa(want);
}

bool sq_cpu_has_avx2(void) { return sq_cpu_isa() >= SQ_ISA_AVX2; }

/* OpenBLAS's kernels: a DYNAMIC_ARCH OpenBLAS picks them by CPU model when it loads (Debian 12's 0.3.21
 * gives AVX-512 CPUs with BF16 its "Cooperlake" ones, SkylakeX's sgemm), unless OPENBLAS_CORETYPE names
 * others (make test pins "Haswell" for its golden bytes). Their rate differs by up to 2x, so bench prints it. */
const char *sq_cpu_blas_core(void) {
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

static sq_status cpu_query(char *desc, size_t cap, sq_err *err) {
    (void)err;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(desc, cap, "cpu: %ld cores, %s kernels (cpu has %s), OpenBLAS %s", n, sq_cpu_isa_name(sq_cpu_isa()), sq_cpu_isa_name(sq_cpu_isa_max()),
             sq_cpu_blas_core());
    return SQ_OK;
}

/* Threads: spotq's own pool runs every kernel; OpenBLAS is called from each pool thread on that
 * thread's share of the work and must not start threads of its own (two thread pools on the same
 * cores spin against each other). */
sq_status sq_cpu_ctx_new(sq_kctx **out, int threads, sq_err *err) {
    *out = NULL;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > 256) return sq_fail(err, SQ_ERR_ARG, "--threads %d: at most 256", threads);
    openblas_set_num_threads(1);
    sq_kctx *c = sq_calloc(1, sizeof *c, err);
    if (!c) return SQ_ERR_NOMEM;
    c->threads = threads;
    c->int_rows = SQ_CPU_INT_ROWS;
    c->scratch = sq_calloc((size_t)threads, sizeof *c->scratch, err);
    c->scratch_cap = sq_calloc((size_t)threads, sizeof *c->scratch_cap, err);
    sq_status s = c->scratch && c->scratch_cap ? sq_pool_new(&c->pool, threads, err) : SQ_ERR_NOMEM;
    if (s) {
        sq_cpu_ctx_free(c);
        return s;
    }
    *out = c;
    return SQ_OK;
}

sq_status sq_cpu_ctx_new_ref(sq_kctx **out, int threads, sq_err *err) { return sq_cpu_ctx_new(out, 1, err); }

void sq_cpu_ctx_free(sq_kctx *c) {
    if (!c) return;
    sq_pool_free(c->pool);
    for (int i = 0; c->scratch && i < c->threads; i++) free(c->scratch[i]);
    free(c->scratch);
    free(c->scratch_cap);
    free(c->shared);
    free(c);
}

int sq_cpu_ctx_threads(const sq_kctx *c) { return c->threads; }
void sq_cpu_ctx_set_int_rows(sq_kctx *c, int rows) { c->int_rows = rows < SQ_CPU_INT_ROWS ? SQ_CPU_INT_ROWS : rows; }

sq_status sq_kctx_reserve(sq_kctx *c, size_t n, sq_err *err) {
    for (int i = 0; i < c->threads; i++) {
        if (c->scratch_cap[i] >= n) continue;
        size_t cap = n < 4096 ? 4096 : n + n / 4;
        size_t bytes = (cap * sizeof(float) + 63) / 64 * 64;
        float *p = aligned_alloc(64, bytes);
        if (!p) return sq_fail(err, SQ_ERR_NOMEM, "out of memory for %zu bytes of kernel scratch", bytes);
        free(c->scratch[i]);
        c->scratch[i] = p;
        c->scratch_cap[i] = cap;
    }
    return SQ_OK;
}

void *sq_kctx_shared(sq_kctx *c, size_t bytes, sq_err *err) {
    if (c->shared_cap >= bytes) return c->shared;
    size_t cap = bytes < 65536 ? 65536 : bytes + bytes / 4;
    cap = (cap + 63) / 64 * 64;
    void *p = aligned_alloc(64, cap);
    if (!p) {
        sq_fail(err, SQ_ERR_NOMEM, "out of memory for %zu bytes of kernel scratch", cap);
        return NULL;
    }
    free(c->shared);
    c->shared = p;
    c->shared_cap = cap;
    return p;
}

static const sq_backend_i cpu_backend = {
    .name = "cpu",
    .query = cpu_query,
    .ctx_new = sq_cpu_ctx_new,
    .ctx_free = sq_cpu_ctx_free,
    .ctx_threads = sq_cpu_ctx_threads,
    .ctx_set_int_rows = sq_cpu_ctx_set_int_rows,
    .matmul = sq_cpu_matmul,
    .embed = sq_cpu_embed,
    .rmsnorm = sq_cpu_rmsnorm,
    .rope = sq_cpu_rope,
    .attention = sq_cpu_attention,
    .swiglu = sq_cpu_swiglu,
    .add = sq_cpu_add,
    SQ_CPU_CALIB_OPS,
};

static const sq_backend_i cpu_ref_backend = {
    .name = "cpu-ref",
    .query = cpu_query,
    .ctx_new = sq_cpu_ctx_new_ref,
    .ctx_free = sq_cpu_ctx_free,
    .ctx_threads = sq_cpu_ctx_threads,
    .matmul = sq_cpu_matmul_ref,
    .embed = sq_cpu_embed_ref,
    .rmsnorm = sq_cpu_rmsnorm_ref,
    .rope = sq_cpu_rope_ref,
    .attention = sq_cpu_attention_ref,
    .swiglu = sq_cpu_swiglu_ref,
    .add = sq_cpu_add_ref,
    SQ_CPU_CALIB_OPS,
};

/* Without AVX2/FMA/F16C the fast kernels cannot run: "cpu" is then the reference table. */
const sq_backend_i *sq_backend_cpu(void) { return sq_cpu_has_avx2() ? &cpu_backend : &cpu_ref_backend; }
const sq_backend_i *sq_backend_cpu_ref(void) { return &cpu_ref_backend; }
