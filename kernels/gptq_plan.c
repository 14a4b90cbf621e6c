/* gptq_plan.c: the device GPTQ plan (see gptq_plan.h). */
#include "gptq_plan.h"

#include <limits.h>
#include <string.h>

/* cuSOLVER's potrf/potri take 32-bit sizes and index K x K with them. */
enum { MAX_K = 46340 };

sq_status sq_gptq_plan_device(int64_t n, int64_t k, const sq_qgrid *g, int block_size, bool h_on_device, sq_gptq_plan *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    bool integer = g->kind == SQ_QGRID_INT_MINMAX || g->kind == SQ_QGRID_INT_MSE;
    if (n <= 0 || k <= 0) return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: empty matrix [%lld x %lld]", (long long)n, (long long)k);
    if ((int)g->kind < 0 || g->kind >= SQ_QGRID_COUNT) return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: unknown grid kind %d", (int)g->kind);
    if (integer && g->bits != 4 && g->bits != 8) return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: %d bits (use 4 or 8)", g->bits);
    if (block_size < 0 || block_size > 1024) return sq_fail(err, SQ_ERR_ARG, "GPTQ on the GPU: block size %d (use 1 .. 1024)", block_size);
    if (k > MAX_K)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "GPTQ on the GPU: K = %lld is past cuSOLVER's 32-bit limit (%d); use --device cpu",
                       (long long)k, MAX_K);
    if (n > INT_MAX / 2) return sq_fail(err, SQ_ERR_UNSUPPORTED, "GPTQ on the GPU: N = %lld is too large", (long long)n);
    int64_t gs = integer && g->group_size > 0 ? g->group_size : k;
    out->block_size = block_size > 0 ? block_size : 128;
    out->n_groups = (k + gs - 1) / gs;
    double kk = (double)k * (double)k * 4, nk = (double)n * (double)k, grids = integer ? (double)out->n_groups * (double)n * 8 : 0;
    double stat = integer && g->static_groups && g->group_size > 0 ? grids : 0, small = 13.0 * (double)k;
    if (g->kind == SQ_QGRID_INT_MSE) small += 8.0 * (double)k;    /* the importances, both orders */
    if (g->kind == SQ_QGRID_FP8_CHANNEL) small += 4.0 * (double)n; /* the scales */
    if (g->kind == SQ_QGRID_FP8_BLOCK) small += 4.0 * (double)((n + 127) / 128) * (double)((k + 127) / 128);
    if (g->kind == SQ_QGRID_FP4 && g->group_size > 0) small += 4.0 * (double)n * (double)(k / g->group_size);
    /* The three high points of the sweep: permuting H (upload, hp), factoring (hp, u, workspace), the blocks. */
    double prep = (h_on_device ? 0 : kk) + kk + 8 * nk + grids + stat + small;
    double factor = 2 * kk + 4.0 * (double)k * 256 + 4 * nk + grids + stat + small;
    double update = kk + 4 * nk + 8.0 * (double)out->block_size * (double)n + nk + grids + stat + small;
    double peak = prep > factor ? prep : factor;
    out->bytes = (peak > update ? peak : update) + 64.0 * 1048576; /* cuSOLVER/cuBLAS slack */
    return SQ_OK;
}
