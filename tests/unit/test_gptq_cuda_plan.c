/* test_gptq_cuda_plan.c: the host side of the CUDA GPTQ path, which needs no GPU: argument checks and
 * the device-memory plan; and, on a machine without a GPU (or a build without CUDA), a clean one-line
 * SQ_ERR_DEVICE from every entry point, never a crash or a leak. With a GPU the calls must succeed. */
#include <math.h>
#include <string.h>

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

/* Without a GPU: SQ_ERR_DEVICE, one line naming CUDA. With one: success. */
static void check_device_result(const char *what, sq_status s, const sq_err *err) {
    if (s == SQ_OK) return;
    CHECK(s == SQ_ERR_DEVICE, "%s: status %d: %s", what, s, err->msg);
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
    sq_qmatrix m;
    sq_status s = sq_quant_gptq_cuda(w, hs.h, N, K, &p, &m, &err);
    check_device_result("sq_quant_gptq_cuda", s, &err);
    if (s == SQ_OK) CHECK(m.q && m.fallback == 0, "GPTQ on the GPU gave codes");
    else CHECK(m.q == NULL, "nothing left allocated after a device failure");
    sq_qmatrix_free(&m);
    s = sq_quant_rtn_cuda(w, N, K, &p, &m, &err);
    check_device_result("sq_quant_rtn_cuda", s, &err);
    sq_qmatrix_free(&m);
    sq_hessian_free(&hs);
    sq_hessian hg;
    s = sq_hessian_init_cuda(&hg, K, &err);
    check_device_result("sq_hessian_init_cuda", s, &err);
    if (s == SQ_OK) {
        sq_hessian_add(&hg, x, 8);
        sq_hessian_finish(&hg);
        CHECK(sq_hessian_check(&hg, &err) == SQ_OK && hg.tokens == 8, "device Hessian: %s", err.msg);
        sq_hessian_free(&hg);
    } else CHECK(hg.h == NULL && hg.dev == NULL, "nothing left allocated after a device failure");
}

int main(void) {
    test_plan();
    test_bad_args();
    test_entry_points();
    return check_report("test_gptq_cuda_plan");
}
