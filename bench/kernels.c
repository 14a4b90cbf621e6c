/* kernels.c: the CPU kernels' rates next to the machine's: decode-step GEMVs (every linear of a model
 * shape, 1 and 5 rows of x) in GB/s of weights next to a memcpy and a streaming-read rate, and
 * prefill (256 rows of x) in GFLOP/s next to OpenBLAS sgemm on the same shapes. Random weights;
 * each figure is the fastest of --reps runs (the machine may be shared). Prints numbers; not a test.
 * Usage: build/release/bench/kernels [--shape llama|135m] [--threads N] [--reps N] [--layers N] [--cpu-time 1] [--sgemm M,N,K]
 * (--cpu-time 1 with --threads 1: the thread's CPU time instead of wall time, for comparing kernels
 * on a machine others are using; the memory rates then still depend on them). */
#include <cblas.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../kernels/cpu/cpu.h"

/* Wall time; with --cpu-time and one thread, the thread's CPU time (kernels compared on a busy machine). */
static clockid_t clock_id = CLOCK_MONOTONIC;
static double now_s(void) {
    struct timespec t;
    clock_gettime(clock_id, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ULL;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return (float)(next_u32() % 2000001) / 1e6f - 1.0f; }

typedef struct { const char *name; int64_t rows, cols; } shape;

/* ---------------------------------------------------------------- machine rates */

typedef struct {
    char *src, *dst;
    size_t bytes;
    double sink[256];
} bw_job;

static void copy_part(void *arg, int ith, int nth) {
    bw_job *j = arg;
    int64_t lo, hi;
    sq_split((int64_t)j->bytes, ith, nth, 4096, &lo, &hi);
    memcpy(j->dst + lo, j->src + lo, (size_t)(hi - lo));
}

SQ_AVX2 static void read_part(void *arg, int ith, int nth) {
    bw_job *j = arg;
    int64_t lo, hi;
    sq_split((int64_t)j->bytes, ith, nth, 4096, &lo, &hi);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = lo; i + 128 <= hi; i += 128) {
        const float *p = (const float *)(j->src + i);
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + 24));
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    j->sink[ith] = out[0];
}

/* ---------------------------------------------------------------- weights */

typedef enum { W_F32, W_BF16, W_INT8, W_INT4_G32, W_INT4_G64, W_COUNT } wkind;
static const char *const WNAMES[] = {"F32", "BF16", "INT8 per channel", "INT4 g32", "INT4 g64"};

static sq_wmat make_weight(wkind k, int64_t rows, int64_t cols) {
    sq_wmat w = {.dtype = SQ_DT_F32, .rows = rows, .cols = cols};
    int64_t n = rows * cols;
    if (k == W_F32 || k == W_BF16) {
        float *f = malloc((size_t)n * sizeof *f);
        for (int64_t i = 0; i < n; i++) f[i] = frand() * 0.02f;
        if (k == W_F32) {
            w.data = f;
            return w;
        }
        uint16_t *h = malloc((size_t)n * 2);
        sq_dtype_from_f32(SQ_DT_BF16, f, h, (size_t)n);
        free(f);
        w.dtype = SQ_DT_BF16;
        w.data = h;
        return w;
    }
    int bits = k == W_INT8 ? 8 : 4, gs = k == W_INT8 ? (int)cols : k == W_INT4_G32 ? 32 : 64;
    sq_qweight *q = calloc(1, sizeof *q);
    int64_t G = cols / gs, words = n * bits / 32;
    uint32_t *codes = malloc((size_t)words * sizeof *codes);
    float *scale = malloc((size_t)(rows * G) * sizeof *scale), *zero = malloc((size_t)(rows * G) * sizeof *zero);
    for (int64_t i = 0; i < words; i++) codes[i] = next_u32() ^ (next_u32() << 16);
    for (int64_t i = 0; i < rows * G; i++) {
        scale[i] = 0.002f * (1.0f + 0.1f * frand());
        zero[i] = (float)(1 << (bits - 1));
    }
    *q = (sq_qweight){.bits = bits, .group_size = gs, .n_groups = G, .codes = codes, .scale = scale, .zero = zero};
    w.q = q;
    return w;
}

/* Bytes a GEMV reads of w. */
static double weight_bytes(const sq_wmat *w) {
    if (!w->q) return (double)w->rows * (double)w->cols * (w->dtype == SQ_DT_F32 ? 4 : 2);
    return (double)w->rows * (double)w->cols * w->q->bits / 8 + (double)w->rows * (double)w->q->n_groups * 8;
}

static void free_weight(sq_wmat *w) {
    if (w->q) {
        free((void *)w->q->codes);
        free((void *)w->q->scale);
        free((void *)w->q->zero);
        free((void *)w->q);
    } else free((void *)w->data);
}

/* --sgemm M,N,K: OpenBLAS's sgemm C[M,N] = A[M,K] B[N,K]^T (a linear's shape: M tokens) and ssyrk of
 * K-wide rows over M (a Hessian update) on `threads` threads, GFLOP/s, the fastest of reps: the
 * machine's rate that bench/quant.sh puts next to each stage of spotq quantize. */
static int sgemm_rates(const char *spec, int threads, int reps) {
    long m, n, k;
    if (sscanf(spec, "%ld,%ld,%ld", &m, &n, &k) != 3 || m < 1 || n < 1 || k < 1) {
        fprintf(stderr, "kernels: --sgemm %s: want M,N,K\n", spec);
        return 2;
    }
    float *a = malloc((size_t)(m * k) * sizeof *a), *b = malloc((size_t)(n * k) * sizeof *b), *c = malloc((size_t)(m * n) * sizeof *c);
    float *h = malloc((size_t)(k * k) * sizeof *h);
    if (!a || !b || !c || !h) return 1;
    for (long i = 0; i < m * k; i++) a[i] = frand();
    for (long i = 0; i < n * k; i++) b[i] = frand();
    memset(h, 0, (size_t)(k * k) * sizeof *h);
    openblas_set_num_threads(threads);
    double bg = 1e9, bs = 1e9;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, a, (int)k, b, (int)k, 0.0f, c, (int)n);
        double t1 = now_s();
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)m, 1.0f, a, (int)k, 1.0f, h, (int)k);
        double t2 = now_s();
        if (r > 0 && t1 - t0 < bg) bg = t1 - t0;
        if (r > 0 && t2 - t1 < bs) bs = t2 - t1;
    }
    printf("sgemm %ldx%ldx%ld threads %d: %.1f GFLOP/s\n", m, n, k, threads, 2.0 * m * n * k / bg / 1e9);
    printf("ssyrk k %ld over %ld rows threads %d: %.1f GFLOP/s\n", k, m, threads, (double)k * (k + 1) * m / bs / 1e9);
    free(a), free(b), free(c), free(h);
    return 0;
}

int main(int argc, char **argv) {
    const char *shape_name = "135m", *sgemm = NULL;
    int threads = 2, reps = 5, layers = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--shape")) shape_name = argv[i + 1];
        else if (!strcmp(argv[i], "--sgemm")) sgemm = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cpu-time")) clock_id = atoi(argv[i + 1]) ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
        else {
            fprintf(stderr, "usage: %s [--shape llama|135m] [--threads N] [--reps N] [--layers N] [--cpu-time 1] [--sgemm M,N,K]\n", argv[0]);
            return 2;
        }
    }
    if (sgemm) return sgemm_rates(sgemm, threads, reps);
    int64_t H, F, Q, KV, V, L;
    if (!strcmp(shape_name, "135m")) H = 576, F = 1536, Q = 576, KV = 192, V = 49152, L = 30;
    else if (!strcmp(shape_name, "llama")) H = 1024, F = 2816, Q = 1024, KV = 256, V = 512, L = 8;
    else {
        fprintf(stderr, "kernels: --shape %s: llama or 135m\n", shape_name);
        return 2;
    }
    if (layers > 0) L = layers; /* fewer layers: the weights may fit the caches (compute rate, not memory) */
    const shape per_layer[] = {{"q", Q, H}, {"k", KV, H}, {"v", KV, H}, {"o", H, Q}, {"gate", F, H}, {"up", F, H}, {"down", H, F}};
    const int NS = 7;
    if (threads != 1) clock_id = CLOCK_MONOTONIC;
    sq_err err = {0};
    sq_kctx *c = NULL;
    if (sq_cpu_ctx_new(&c, threads, &err)) {
        fprintf(stderr, "kernels: %s\n", err.msg);
        return 1;
    }
    printf("shape %s: hidden %lld, ffn %lld, q %lld, kv %lld, vocab %lld, %lld layers; %d threads, fastest of %d\n", shape_name,
           (long long)H, (long long)F, (long long)Q, (long long)KV, (long long)V, (long long)L, threads, reps);

    /* machine: memcpy and read over 512 MiB */
    bw_job bj = {.bytes = (size_t)512 << 20};
    bj.src = aligned_alloc(4096, bj.bytes);
    bj.dst = aligned_alloc(4096, bj.bytes);
    memset(bj.src, 1, bj.bytes);
    memset(bj.dst, 2, bj.bytes);
    double best_cp = 1e9, best_rd = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        sq_pool_run(c->pool, copy_part, &bj);
        double t1 = now_s();
        sq_pool_run(c->pool, read_part, &bj);
        double t2 = now_s();
        if (t1 - t0 < best_cp) best_cp = t1 - t0;
        if (t2 - t1 < best_rd) best_rd = t2 - t1;
    }
    double cp_rate = bj.bytes / best_cp / 1e9, rd_rate = bj.bytes / best_rd / 1e9;
    printf("machine: memcpy %.1f GB/s (bytes copied), streaming read %.1f GB/s\n", cp_rate, rd_rate);
    free(bj.src);
    free(bj.dst);

    /* decode: every linear of every layer (distinct weights, so memory-bound), plus the F32 lm_head */
    int64_t maxk = F > H ? F : H, maxr = V > F ? V : F;
    float *x = malloc((size_t)(256 * maxk) * sizeof *x), *y = malloc((size_t)(256 * maxr) * sizeof *y);
    for (int64_t i = 0; i < 256 * maxk; i++) x[i] = frand();
    sq_wmat head = make_weight(W_F32, V, H);
    printf("\ndecode step (all %lld layers' linears; lm_head F32 apart), GB/s of weights read:\n", (long long)L);
    printf("%-18s %10s %10s %12s %12s\n", "weights", "n=1 ms", "n=1 GB/s", "n=5 ms", "n=5 / n=1");
    for (int k = 0; k < W_COUNT; k++) {
        sq_wmat *ws = malloc((size_t)(L * NS) * sizeof *ws);
        double bytes = 0;
        for (int64_t i = 0; i < L * NS; i++) {
            ws[i] = make_weight((wkind)k, per_layer[i % NS].rows, per_layer[i % NS].cols);
            bytes += weight_bytes(&ws[i]);
        }
        double best[2] = {1e9, 1e9};
        const int ns[2] = {1, 5};
        for (int r = 0; r < reps + 1; r++)
            for (int ni = 0; ni < 2; ni++) {
                double t0 = now_s();
                for (int64_t i = 0; i < L * NS; i++) sq_cpu_matmul(c, &ws[i], NULL, x, y, ns[ni], &err);
                double t = now_s() - t0;
                if (r > 0 && t < best[ni]) best[ni] = t;
            }
        printf("%-18s %10.2f %10.1f %12.2f %12.2f\n", WNAMES[k], best[0] * 1e3, bytes / best[0] / 1e9, best[1] * 1e3, best[1] / best[0]);
        for (int64_t i = 0; i < L * NS; i++) free_weight(&ws[i]);
        free(ws);
    }
    {
        double best[2] = {1e9, 1e9};
        for (int r = 0; r < reps + 1; r++)
            for (int ni = 0; ni < 2; ni++) {
                double t0 = now_s();
                sq_cpu_matmul(c, &head, NULL, x, y, ni ? 5 : 1, &err);
                double t = now_s() - t0;
                if (r > 0 && t < best[ni]) best[ni] = t;
            }
        printf("%-18s %10.2f %10.1f %12.2f %12.2f\n", "lm_head F32", best[0] * 1e3, weight_bytes(&head) / best[0] / 1e9, best[1] * 1e3,
               best[1] / best[0]);
    }

    /* prefill: one layer's linears at 256 rows of x, and sgemm (OpenBLAS on `threads` threads) on the same shapes */
    printf("\nprefill (256 tokens, one layer's linears), GFLOP/s:\n");
    double flops = 0;
    for (int i = 0; i < NS; i++) flops += 2.0 * 256 * per_layer[i].rows * per_layer[i].cols;
    {
        sq_wmat ws[7];
        for (int i = 0; i < NS; i++) ws[i] = make_weight(W_F32, per_layer[i].rows, per_layer[i].cols);
        openblas_set_num_threads(threads);
        double best = 1e9;
        for (int r = 0; r < reps + 1; r++) {
            double t0 = now_s();
            for (int i = 0; i < NS; i++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 256, (int)ws[i].rows, (int)ws[i].cols, 1.0f, x, (int)ws[i].cols,
                            ws[i].data, (int)ws[i].cols, 0.0f, y, (int)ws[i].rows);
            double t = now_s() - t0;
            if (r > 0 && t < best) best = t;
        }
        openblas_set_num_threads(1);
        printf("%-18s %10.1f\n", "OpenBLAS sgemm", flops / best / 1e9);
        for (int i = 0; i < NS; i++) free_weight(&ws[i]);
    }
    /* eval's path (sgemm on float or dequantised tiles), then generate/bench's (the decode kernels: integer
     * for INT4/INT8, the decode step's order for dense weights on AVX-512) */
    printf("%-18s %10s %12s\n", "weights", "eval path", "decode path");
    for (int k = 0; k < W_COUNT; k++) {
        sq_wmat ws[7];
        for (int i = 0; i < NS; i++) ws[i] = make_weight((wkind)k, per_layer[i].rows, per_layer[i].cols);
        double best[2] = {1e9, 1e9};
        for (int mode = 0; mode < 2; mode++) {
            sq_cpu_ctx_set_int_rows(c, mode ? 1 << 20 : 0);
            for (int r = 0; r < reps + 1; r++) {
                double t0 = now_s();
                for (int i = 0; i < NS; i++) sq_cpu_matmul(c, &ws[i], NULL, x, y, 256, &err);
                double t = now_s() - t0;
                if (r > 0 && t < best[mode]) best[mode] = t;
            }
        }
        sq_cpu_ctx_set_int_rows(c, 0);
        printf("%-18s %10.1f %12.1f\n", WNAMES[k], flops / best[0] / 1e9, flops / best[1] / 1e9);
        for (int i = 0; i < NS; i++) free_weight(&ws[i]);
    }
    free_weight(&head);
    free(x);
    free(y);
    sq_cpu_ctx_free(c);
    return 0;
}
