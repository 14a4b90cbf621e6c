/* test_gptq_cuda_plan.c: the host side of the CUDA GPTQ path, which needs no GPU: argument checks and
 * the device-memory plan; and, on a machine without a GPU (or a build without CUDA), a clean one-line
 * SQ_ERR_DEVICE from every entry point, never a crash, a leak or a success. With a GPU (as the backend's
 * device query finds it) every call must succeed and give the CPU's results: GPTQ codes (all but 2 of
 * 2048) and g_idx, RTN bit for bit, the device Hessian within 1e-5 of the CPU's. */
#include <math.h>
#include <string.h>

#include "../../kernels/backend.h"
#include "../../quant/gptq_cuda.h"
#include "check.h"

static const double GiB = 1073741824.0;

static void test_plan(void) {
    sq_qparams p = {.bits = 4, .group_size = 128, .sym = true, .act_order = true, .damp = 0.01, .block_size = 128};
    sq_gptq_cuda_plan a, b;
    sq_err err = {0};
    /* A 7B q_proj: at most two K x K buffers at once (H and its permuted copy, then that and U: 2 x 64 MiB),
     * W twice (128 MiB), codes, grids: well under 1 GiB. */
    CHECK_OK(sq_quant_gptq_cuda_plan(4096, 4096, &p, false, &a, &err), &err);
    CHECK(a.block_size == 128 && a.n_groups == 32, "plan: block %lld groups %lld", (long long)a.block_size, (long long)a.n_groups);
    CHECK(a.bytes > 2 * 64.0 * 1048576 && a.bytes < 1.0 * GiB, "7B q_proj plan %.3f GiB", a.bytes / GiB);
    /* H already on the device: one K x K buffer less at the high point. */
    CHECK_OK(sq_quant_gptq_cuda_plan(4096, 4096, &p, true, &b, &err), &err);
    CHECK(b.bytes < a.bytes, "device H plans less memory (%.0f vs %.0f)", b.bytes, a.bytes);
    /* A 70B down_proj: K = 28672, two K x K float buffers (6.1 GiB) and W twice (1.75 GiB): about 8 GiB. */
    CHECK_OK(sq_quant_gptq_cuda_plan(8192, 28672, &p, false, &a, &err), &err);
    CHECK(a.bytes > 7.5 * GiB && a.bytes < 9.0 * GiB, "70B down_proj plan %.2f GiB", a.bytes / GiB);
    /* Defaults and partial groups, as the CPU path takes them. */
    p.block_size = 0;
    p.group_size = -1;
    CHECK_OK(sq_quant_gptq_cuda_plan(96, 100, &p, false, &a, &err), &err);
    CHECK(a.block_size == 128 && a.n_groups == 1, "defaults: block %lld groups %lld", (long long)a.block_size, (long long)a.n_groups);
    p.group_size = 64;
    CHECK_OK(sq_quant_gptq_cuda_plan(96, 100, &p, false, &a, &err), &err);
    CHECK(a.n_groups == 2, "partial last group: %lld groups", (long long)a.n_groups);
    /* Static groups keep a second set of grids. */
    p.static_groups = true;
    CHECK_OK(sq_quant_gptq_cuda_plan(96, 100, &p, false, &b, &err), &err);
    CHECK(b.bytes > a.bytes, "static groups plan their grids");
}

static void test_bad_args(void) {
    sq_qparams p = {.bits = 4, .group_size = 128, .sym = true, .damp = 0.01, .block_size = 128};
    sq_gptq_cuda_plan a;
    sq_err err = {0};
    CHECK(sq_quant_gptq_cuda_plan(0, 128, &p, false, &a, &err) == SQ_ERR_ARG && strstr(err.msg, "empty"), "empty: %s", err.msg);
    p.bits = 3;
    CHECK(sq_quant_gptq_cuda_plan(64, 128, &p, false, &a, &err) == SQ_ERR_ARG && strstr(err.msg, "3 bits"), "bits: %s", err.msg);
    p.bits = 8;
    p.block_size = 4096;
    CHECK(sq_quant_gptq_cuda_plan(64, 128, &p, false, &a, &err) == SQ_ERR_ARG && strstr(err.msg, "block size"), "block: %s", err.msg);
    p.block_size = 128;
    CHECK(sq_quant_gptq_cuda_plan(64, 53248, &p, false, &a, &err) == SQ_ERR_UNSUPPORTED && strstr(err.msg, "--device cpu"),
          "K past cuSOLVER's limit: %s", err.msg);
    /* A bad argument is reported before any device is looked for. */
    sq_qmatrix m;
    float w[4] = {0}, h[4] = {0};
    p.bits = 5;
    CHECK(sq_quant_gptq_cuda(w, h, 2, 2, &p, &m, &err) == SQ_ERR_ARG, "bad bits before the device: %s", err.msg);
    CHECK(m.q == NULL, "nothing allocated on a bad argument");
}

/* Whether this machine has a usable GPU, asked of the backend's device query (not of the GPTQ path). */
static bool have_gpu;

/* Without a GPU: SQ_ERR_DEVICE, one line naming CUDA, never success. With one: success. */
static void check_device_result(const char *what, sq_status s, const sq_err *err) {
    if (have_gpu) {
        CHECK(s == SQ_OK, "%s with a GPU present: status %d: %s", what, s, err->msg);
        return;
    }
    CHECK(s == SQ_ERR_DEVICE, "%s without a GPU: status %d: %s", what, s, err->msg);
    CHECK(strstr(err->msg, "cuda") || strstr(err->msg, "CUDA"), "%s: message names CUDA: %s", what, err->msg);
    CHECK(!strchr(err->msg, '\n'), "%s: one line: %s", what, err->msg);
}

static void test_entry_points(void) {
    enum { N = 32, K = 64 };
    static float w[N * K], x[8 * K];
    for (int i = 0; i < N * K; i++) w[i] = sinf((float)i);
    for (int i = 0; i < 8 * K; i++) x[i] = cosf((float)i * 0.37f);
    sq_qparams p = {.bits = 4, .group_size = 32, .sym = false, .act_order = true, .damp = 0.01, .block_size = 128};
    sq_err err = {0};
    sq_hessian hs;
    /* The CPU accumulator never reports a device failure. */
    CHECK_OK(sq_hessian_init(&hs, K, &err), &err);
    sq_hessian_add(&hs, x, 8);
    sq_hessian_finish(&hs);
    CHECK(sq_hessian_check(&hs, &err) == SQ_OK, "CPU Hessian check");
    /* the CPU reference the GPU must reproduce */
    sq_qmatrix cg, cr;
    CHECK_OK(sq_quant_gptq(w, hs.h, N, K, &p, &cg, &err), &err);
    CHECK_OK(sq_quant_rtn(w, N, K, &p, &cr, &err), &err);
    sq_qmatrix m;
    sq_status s = sq_quant_gptq_cuda(w, hs.h, N, K, &p, &m, &err);
    check_device_result("sq_quant_gptq_cuda", s, &err);
    if (s == SQ_OK) {
        CHECK(m.q && m.fallback == 0, "GPTQ on the GPU gave codes");
        /* as make test-cuda holds it: >= 99.9% of the codes (here all but 2 of 2048) and g_idx identical */
        int64_t agree = 0;
        for (int64_t i = 0; m.q && cg.q && i < N * K; i++) agree += m.q[i] == cg.q[i];
        CHECK(agree >= N * K - 2, "GPU GPTQ codes equal the CPU's on %lld of %d", (long long)agree, N * K);
        CHECK(m.q && cg.q && memcmp(m.g_idx, cg.g_idx, (size_t)K * 4) == 0, "GPU GPTQ g_idx differs from the CPU's");
    } else CHECK(m.q == NULL, "nothing left allocated after a device failure");
    sq_qmatrix_free(&m);
    s = sq_quant_rtn_cuda(w, N, K, &p, &m, &err);
    check_device_result("sq_quant_rtn_cuda", s, &err);
    if (s == SQ_OK) /* RTN: bit-identical codes, scales and zeros */
        CHECK(m.q && m.n_groups == cr.n_groups && memcmp(m.q, cr.q, (size_t)(N * K)) == 0 &&
                  memcmp(m.scale, cr.scale, (size_t)(cr.n_groups * N) * 4) == 0 && memcmp(m.zero, cr.zero, (size_t)(cr.n_groups * N) * 4) == 0,
              "GPU RTN differs from the CPU's");
    else CHECK(m.q == NULL, "nothing left allocated after a device failure");
    sq_qmatrix_free(&m);
    sq_hessian hg;
    s = sq_hessian_init_cuda(&hg, K, &err);
    check_device_result("sq_hessian_init_cuda", s, &err);
    if (s == SQ_OK) {
        sq_hessian_add(&hg, x, 8);
        sq_hessian_finish(&hg);
        CHECK(sq_hessian_check(&hg, &err) == SQ_OK && hg.tokens == 8, "device Hessian: %s", err.msg);
        /* within 1e-5 of the CPU's, relative to its largest entry */
        double big = 0, d = 0;
        for (int64_t i = 0; hg.h && i < (int64_t)K * K; i++) {
            if (fabs(hs.h[i]) > big) big = fabs(hs.h[i]);
            if (fabs(hg.h[i] - hs.h[i]) > d) d = fabs(hg.h[i] - hs.h[i]);
        }
        CHECK(hg.h && d <= 1e-5 * big, "device Hessian off the CPU's by %.3g (largest entry %.3g)", d, big);
        sq_hessian_free(&hg);
    } else CHECK(hg.h == NULL && hg.dev == NULL, "nothing left allocated after a device failure");
    sq_qmatrix_free(&cg);
    sq_qmatrix_free(&cr);
    sq_hessian_free(&hs);
}

int main(void) {
    const sq_backend_i *b;
    sq_err err = {0};
    have_gpu = sq_backend_get("cuda", &b, &err) == SQ_OK;
    printf("%s\n", have_gpu ? "a CUDA GPU is present: every entry point must succeed and match the CPU" : err.msg);
    test_plan();
    test_bad_args();
    test_entry_points();
    return check_report("test_gptq_cuda_plan");
}
