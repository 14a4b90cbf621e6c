/* gptq_cuda.c: GPTQ of one Llama-7B-shaped and one Llama-70B-shaped transformer block on the GPU, with
 * random weights and random calibration activations generated on the device (128 x 2048 tokens by
 * default): time per stage (Hessian, factorisation, update), achieved TFLOP/s against the card's
 * measured FP32 SGEMM rate (and TF32 GEMM rate, for reference), peak GPU memory. Exit 1 on any failure.
 * Usage: gptq_cuda [--nsamples N] [--seqlen N] [--only 7b|70b] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../kernels/cuda/extras.h"
#include "../quant/quant.h"

typedef struct {
    const char *name;
    int64_t hidden, ffn, kv;     /* kv: rows of k_proj and v_proj (GQA) */
} block_shape;

typedef struct {
    const char *name;
    int64_t n;                   /* rows (out features) */
} mat;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(const char *what, const sq_err *err) {
    fprintf(stderr, "gptq_cuda: FAIL: %s: %s\n", what, err->msg);
    return 1;
}

static void fill_weights(float *w, int64_t count, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < count; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = 0.02f * ((float)(s >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f);
    }
}

typedef struct { double t_hess, t_factor, t_update, t_other, f_hess, f_factor, f_update, wall; size_t peak; int matrices, fallbacks; } totals;

/* Calibrates and quantises one block: per input site, the Hessian from nsamples x seqlen random tokens
 * (generated on the device, sample by sample, as a calibration pass would hand them over), then GPTQ of
 * every matrix reading that site. */
static int run_block(const sq_backend_i *be, const sq_cuda_extras_i *gpu, const block_shape *b, int nsamples, int seqlen, totals *tot) {
    const struct { int64_t k; int nm; mat m[3]; } sites[] = {
        {b->hidden, 3, {{"q", b->hidden}, {"k", b->kv}, {"v", b->kv}}},
        {b->hidden, 1, {{"o", b->hidden}}},
        {b->hidden, 2, {{"gate", b->ffn}, {"up", b->ffn}}},
        {b->ffn, 1, {{"down", b->hidden}}},
    };
    sq_qparams p = {.bits = 4, .group_size = 128, .sym = true, .act_order = true, .static_groups = false, .damp = 0.01, .block_size = 128};
    sq_err err = {0};
    memset(tot, 0, sizeof *tot);
    gpu->mem_reset_peak();
    double t0 = now();
    for (size_t si = 0; si < sizeof sites / sizeof *sites; si++) {
        int64_t k = sites[si].k;
        sq_hess *hs = NULL;
        float *x = NULL;
        double th = now();
        if (be->hess_new(&hs, k, NULL, &err) || gpu->dev_alloc((void **)&x, (size_t)(seqlen * k) * sizeof *x, &err)) {
            be->hess_free(hs);
            return fail("Hessian buffers", &err);
        }
        for (int s = 0; s < nsamples; s++) {
            if (gpu->fill_random(x, seqlen, k, (uint64_t)(si * 100003 + (size_t)s), 1.0f, &err) ||
                gpu->hess_add_device(hs, x, seqlen, &err)) {
                gpu->dev_free(x);
                be->hess_free(hs);
                return fail("Hessian accumulation", &err);
            }
        }
        if (be->hess_finish(hs, &err)) { gpu->dev_free(x); be->hess_free(hs); return fail("Hessian finish", &err); }
        gpu->dev_free(x);
        tot->t_hess += now() - th;
        tot->f_hess += (double)nsamples * seqlen * (double)k * (double)(k + 1);
        for (int j = 0; j < sites[si].nm; j++) {
            int64_t n = sites[si].m[j].n;
            float *w = malloc((size_t)(n * k) * sizeof *w);
            if (!w) { be->hess_free(hs); fprintf(stderr, "gptq_cuda: FAIL: out of host memory\n"); return 1; }
            fill_weights(w, n * k, (uint64_t)(si * 7 + (size_t)j + 1));
            sq_qmatrix q;
            sq_cuda_gptq_stats st;
            sq_hessian hh = {.k = k, .be = be, .acc = hs};
            double tq = now();
            sq_status s = sq_quant_gptq_on(be, w, &hh, n, k, &p, &q, &err);
            gpu->last_gptq_stats(&st);
            double wall = now() - tq;
            free(w);
            if (s) { be->hess_free(hs); return fail(sites[si].m[j].name, &err); }
            int bad = 0;
            for (int64_t i = 0; i < n * k; i++) bad += q.q[i] > 15;
            tot->fallbacks += q.fallback;
            sq_qmatrix_free(&q);
            if (bad) { be->hess_free(hs); fprintf(stderr, "gptq_cuda: FAIL: %s: %d codes out of range\n", sites[si].m[j].name, bad); return 1; }
            tot->t_factor += st.t_factor;
            tot->t_update += st.t_update;
            tot->t_other += wall - st.t_factor - st.t_update; /* W upload, dead columns, permutation, copies back, host side */
            tot->f_factor += st.flop_factor;
            tot->f_update += st.flop_update;
            tot->matrices++;
            fprintf(stderr, "  %s %-4s [%lld x %lld]: factor %.3f s (%d attempt%s), update %.3f s, total %.3f s\n", b->name,
                    sites[si].m[j].name, (long long)n, (long long)k, st.t_factor, st.attempts, st.attempts == 1 ? "" : "s", st.t_update, wall);
        }
        be->hess_free(hs);
    }
    tot->wall = now() - t0;
    tot->peak = gpu->mem_peak();
    return 0;
}

static void row(const char *stage, double t, double f, double sgemm) {
    if (f > 0)
        printf("  %-28s %9.3f s %10.1f %10.1f %9.0f%%\n", stage, t, f / 1e12, f / 1e12 / t, 100 * (f / 1e12 / t) / sgemm);
    else
        printf("  %-28s %9.3f s %10s %10s %10s\n", stage, t, "-", "-", "-");
}

int main(int argc, char **argv) {
    int nsamples = 128, seqlen = 2048;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--nsamples") && i + 1 < argc) nsamples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seqlen") && i + 1 < argc) seqlen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else { fprintf(stderr, "usage: gptq_cuda [--nsamples N] [--seqlen N] [--only 7b|70b]\n"); return 2; }
    }
    if (nsamples < 1 || seqlen < 1) { fprintf(stderr, "gptq_cuda: --nsamples and --seqlen must be positive\n"); return 2; }
    sq_err err = {0};
    const sq_backend_i *be;
    const sq_cuda_extras_i *(*extras)(void) = (const sq_cuda_extras_i *(*)(void))sq_cuda_symbol("sq_cuda_extras_impl", NULL, 0);
    const sq_cuda_extras_i *gpu = extras ? extras() : NULL;
    char desc[256];
    if (sq_backend_get("cuda", &be, &err) || be->query(desc, sizeof desc, &err)) return fail("device", &err);
    if (!gpu) { fprintf(stderr, "gptq_cuda: FAIL: libspotq_cuda.so lacks sq_cuda_extras_impl\n"); return 1; }
    double sgemm, tf32;
    if (gpu->gemm_rate(8192, 8192, 8192, false, &sgemm, &err)) return fail("SGEMM rate", &err);
    if (gpu->gemm_rate(8192, 8192, 8192, true, &tf32, &err)) return fail("TF32 GEMM rate", &err);
    printf("GPTQ on the GPU: %s\n", desc);
    printf("measured GEMM 8192^3: FP32 cublasSgemm %.1f TFLOP/s, TF32 cublasGemmEx %.1f TFLOP/s (the path below is FP32)\n", sgemm, tf32);
    printf("settings: 4-bit, group 128, sym, act-order, damp 0.01, block 128; %d x %d calibration tokens, random\n\n", nsamples, seqlen);
    const block_shape shapes[] = {{"7B", 4096, 11008, 4096}, {"70B", 8192, 28672, 1024}};
    int rc = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const block_shape *b = &shapes[i];
        if (only && strcasecmp(only, b->name)) continue;
        totals t;
        fprintf(stderr, "%s block (hidden %lld, FFN %lld, k/v rows %lld)...\n", b->name, (long long)b->hidden, (long long)b->ffn, (long long)b->kv);
        if (run_block(be, gpu, b, nsamples, seqlen, &t)) { rc = 1; break; }
        printf("%s block: hidden %lld, FFN %lld, k/v rows %lld, %d matrices%s\n", b->name, (long long)b->hidden, (long long)b->ffn,
               (long long)b->kv, t.matrices, t.fallbacks ? " (SOME FELL BACK TO RTN)" : "");
        printf("  %-28s %11s %10s %10s %10s\n", "stage", "time", "TFLOP", "TFLOP/s", "of SGEMM");
        row("Hessian (syrk, 4 sites)", t.t_hess, t.f_hess, sgemm);
        row("factorisation (potrf/potri)", t.t_factor, t.f_factor, sgemm);
        row("update (blocks + GEMM)", t.t_update, t.f_update, sgemm);
        row("other (W upload, perm, copy)", t.t_other, 0, sgemm);
        row("total", t.wall, t.f_hess + t.f_factor + t.f_update, sgemm);
        printf("  peak GPU memory (spotq's buffers): %.2f GiB\n\n", (double)t.peak / 1073741824.0);
        if (t.fallbacks) rc = 1;
    }
    if (rc) fprintf(stderr, "gptq_cuda: FAIL\n");
    return rc;
}
