/* policy.c: the rules that tie quantize's options together (sq_quantize_resolve): one check of the
 * whole options struct with a one-line error naming the option, and the choices it makes said once. */
#include <math.h>
#include <stdio.h>

#include "../base/par.h"
#include "method.h"
#include "sens.h"
#include "smooth.h"

/* The budget's rules (issue 18): one of --target-bits and --max-kld, GPTQ (whose error the proxy is) into
 * compressed-tensors (one config group per scheme), the candidates from --schemes, calibration text for the
 * held-out windows. */
static sq_status resolve_budget(sq_quantize_opts *o, sq_err *err) {
    bool budget = o->target_bits != 0 || o->max_kld != 0;
    if (o->keep_dtype == SQ_KEEP_AUTO) o->keep_dtype = budget ? SQ_KEEP_BF16 : SQ_KEEP_SOURCE;
    if (!budget) {
        if (o->schemes) return sq_fail(err, SQ_ERR_ARG, "--schemes restricts the candidates of --target-bits or --max-kld: give one of them");
        return SQ_OK;
    }
    const char *opt = o->target_bits != 0 ? "--target-bits" : "--max-kld";
    if (o->target_bits != 0 && o->max_kld != 0)
        return sq_fail(err, SQ_ERR_ARG, "--target-bits and --max-kld are two budgets: give one");
    if (!(o->target_bits >= 0) || !(o->max_kld >= 0) || (o->target_bits > 0 && o->target_bits > 64))
        return sq_fail(err, SQ_ERR_ARG, "%s must be positive%s", opt, o->target_bits ? " bits per weight (at most 64)" : "");
    if (o->method != SQ_METHOD_GPTQ)
        return sq_fail(err, SQ_ERR_ARG, "%s chooses among GPTQ's schemes: use --method gptq (or leave it out)", opt);
    if (o->scheme_given)
        return sq_fail(err, SQ_ERR_ARG, "%s chooses the scheme per layer: drop --bits, --group-size, --sym and --asym (restrict with --schemes)", opt);
    if (o->format == SQ_FORMAT_AUTO) o->format = SQ_FORMAT_CT;
    if (o->format != SQ_FORMAT_CT)
        return sq_fail(err, SQ_ERR_ARG, "%s writes compressed-tensors (a config group per scheme): drop --format %s", opt, sq_format_name(o->format));
    if (o->q.static_groups && !o->q.act_order)
        return sq_fail(err, SQ_ERR_ARG, "%s: --static-groups goes with --act-order (which the budget measures with static groups)", opt);
    if (o->n_ignore) return sq_fail(err, SQ_ERR_ARG, "%s: --ignore is not supported with a budget (add keep to --schemes)", opt);
    if (o->backend) return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s runs on the CPU for now: drop --device", opt);
    if (!o->calib)
        return sq_fail(err, SQ_ERR_ARG, "%s needs --calib FILE: its held-out windows measure the KLD (--stats may give the statistics)", opt);
    sq_sens_scheme sc[32];
    int n = 0;
    if (o->schemes && sq_sens_schemes_parse(o->schemes, sc, 32, &n, err)) return err->code;
    if (o->schemes && n < 1) return sq_fail(err, SQ_ERR_ARG, "--schemes: name at least one scheme");
    o->q.bits = 4, o->q.group_size = 128, o->q.sym = true; /* the pipeline's base scheme; the plan overrides it per linear */
    if (o->grid_auto) o->q.grid = SQ_GRID_MSE, o->grid_auto = false;
    if (o->q.grid != SQ_GRID_MSE) return sq_fail(err, SQ_ERR_ARG, "%s measures GPTQ on the mse grid: drop --grid minmax", opt);
    return SQ_OK;
}

sq_status sq_quantize_resolve(sq_quantize_opts *o, sq_err *err) {
    sq_status bs = resolve_budget(o, err);
    if (bs) return bs;
    const sq_method_row *m = sq_method_row_of(o->method);
    if (!m) return sq_fail(err, SQ_ERR_ARG, "--method %d: use rtn, gptq, awq, awq+gptq, fp8, fp8+gptq, nvfp4, nvfp4+gptq, mxfp4, mxfp4+gptq, int8 or int8+gptq", (int)o->method);
    if (o->awq_search_tokens < 0 && o->awq_search_tokens != SQ_AWQ_SEARCH_AUTO)
        return sq_fail(err, SQ_ERR_ARG, "--awq-search-tokens %lld: give a number of tokens, 0 for all or auto", (long long)o->awq_search_tokens);
    if (o->awq_search_tokens > 0 && !m->report.awq)
        return sq_fail(err, SQ_ERR_ARG, "--awq-search-tokens applies to --method awq and awq+gptq, not %s", m->name);
    if (!m->report.awq) o->awq_search_tokens = 0;
    if (o->smoothquant) { /* SmoothQuant flattens the activations for a per-token INT8 grid: the W8A8 rows' block hooks */
        if (!m->smoothquant)
            return sq_fail(err, SQ_ERR_ARG, "--smoothquant applies to --method int8 and int8+gptq (W8A8), not %s", m->name);
        if (isnan(o->smooth_alpha)) o->smooth_alpha = SQ_SMOOTH_DEFAULT_ALPHA;
        if (!(o->smooth_alpha >= 0 && o->smooth_alpha <= 1))
            return sq_fail(err, SQ_ERR_ARG, "--smoothquant %g: the migration strength ALPHA is between 0 and 1", o->smooth_alpha);
        if (o->stats_in)
            return sq_fail(err, SQ_ERR_ARG, "--smoothquant needs --calib FILE: a statistics file holds no per-channel max |x| of the smoothed block inputs");
        if (!o->calib) return sq_fail(err, SQ_ERR_ARG, "--smoothquant needs --calib FILE (calibration text): its scales come from each channel's max |x|");
    }
    if (m->scheme == SQ_SCHEME_FP4) { /* compressed-tensors nvfp4/mxfp4-pack-quantized; activations none (W4A16) or dynamic (W4A4) */
        if (o->act_auto) o->act = SQ_ACT_NONE;
        o->act_auto = false;
        if (o->fp8_per_channel || o->fp8_block) return sq_fail(err, SQ_ERR_ARG, "--fp8-scheme applies to --method fp8 and fp8+gptq");
        if (o->format == SQ_FORMAT_AUTO) o->format = SQ_FORMAT_CT;
        if (o->format != SQ_FORMAT_CT) return sq_fail(err, SQ_ERR_ARG, "--method %s writes --format compressed-tensors", m->name);
        if (sq_par_size() > 1) /* the solved FP4 weights are not yet sent between ranks (pipeline.c ships F32 and E4M3 ones) */
            return sq_fail(err, SQ_ERR_UNSUPPORTED, "--method %s does not run under MPI yet (run it on one rank)", m->name);
    }
    if (m->scheme == SQ_SCHEME_W8A8) { /* INT8 W8A8: compressed-tensors int-quantized, activations dynamic per token by definition */
        if (o->fp8_per_channel || o->fp8_block || o->act != SQ_ACT_NONE)
            return sq_fail(err, SQ_ERR_ARG, "--fp8-scheme and --act apply to --method fp8 and fp8+gptq (--method %s runs its activations INT8 per token)", m->name);
        if (o->format == SQ_FORMAT_AUTO) o->format = SQ_FORMAT_CT;
        if (o->format != SQ_FORMAT_CT) return sq_fail(err, SQ_ERR_ARG, "--method %s writes --format compressed-tensors (int-quantized)", m->name);
        o->q.bits = 8, o->q.group_size = -1, o->q.sym = true;
    }
    if (m->scheme == SQ_SCHEME_FP8 && o->fp8_block) {
        /* Block-wise FP8 runs its activations dynamic per token and group of 128 (vLLM's W8A8BlockFp8LinearOp
         * asserts a dynamic input; compressed-tensors' FP8_BLOCK preset states dynamic groups) */
        if (o->act_auto) o->act = SQ_ACT_DYNAMIC;
        o->act_auto = false;
        if (o->act != SQ_ACT_DYNAMIC)
            return sq_fail(err, SQ_ERR_ARG, "--fp8-scheme block runs its activations dynamic per token and group of 128 (vLLM asserts "
                                            "a dynamic input for block-wise FP8): drop --act %s or use --act dynamic",
                           o->act == SQ_ACT_STATIC ? "static" : "none");
    }
    o->act_auto = false;
    if (m->scheme == SQ_SCHEME_FP4 || m->scheme == SQ_SCHEME_W8A8) {
    } else if (m->scheme != SQ_SCHEME_INT) { /* E4M3: vLLM's fp8 format has one weight scale per tensor (or per block) and always quantises activations */
        bool vllm_ok = !o->fp8_per_channel && o->act != SQ_ACT_NONE;
        if (o->format == SQ_FORMAT_AUTO) {
            o->format = vllm_ok ? SQ_FORMAT_FP8 : SQ_FORMAT_CT;
            if (!vllm_ok)
                sq_log(SQ_LOG_INFO, "writing compressed-tensors float-quantized: vLLM's fp8 format has no %s form",
                       o->fp8_per_channel ? "per-channel" : "weight-only (--act none)");
        } else if (o->format == SQ_FORMAT_FP8 && !vllm_ok)
            return sq_fail(err, SQ_ERR_ARG, "--format fp8 holds one weight scale per tensor and quantised activations (--act static or "
                                            "dynamic); use --format compressed-tensors for %s",
                           o->fp8_per_channel ? "per-channel scales" : "weight-only FP8");
        else if (o->format != SQ_FORMAT_FP8 && o->format != SQ_FORMAT_CT)
            return sq_fail(err, SQ_ERR_ARG, "--method fp8 writes --format fp8 or compressed-tensors");
    } else {
        if (o->format == SQ_FORMAT_FP8) return sq_fail(err, SQ_ERR_ARG, "--format fp8: use gptq, awq or compressed-tensors");
        if (o->fp8_per_channel || o->fp8_block || o->act != SQ_ACT_NONE)
            return sq_fail(err, SQ_ERR_ARG, "--fp8-scheme and --act apply to --method fp8 and fp8+gptq");
        if (o->format == SQ_FORMAT_AUTO && m->format_default != SQ_FORMAT_AUTO) o->format = m->format_default;
    }
    if (o->format == SQ_FORMAT_NONE || o->format == SQ_FORMAT_OTHER)
        return sq_fail(err, SQ_ERR_ARG, "--format %s: use gptq, awq or compressed-tensors", sq_format_name(o->format));
    if (o->format == SQ_FORMAT_AWQ && o->q.bits != 4) return sq_fail(err, SQ_ERR_ARG, "--format awq is 4-bit only");
    if (m->zero_point) o->q.sym = false; /* AWQ's grid has a zero point: it is asymmetric whatever --sym says */
    /* compressed-tensors' decompressor and AWQ GEMM have no g_idx: act-order there uses static groups */
    if (m->scheme == SQ_SCHEME_INT && (o->format == SQ_FORMAT_CT || o->format == SQ_FORMAT_AWQ) && o->q.act_order && !o->q.static_groups) {
        o->q.static_groups = true;
        sq_log(SQ_LOG_INFO, "--format %s with --act-order: using static groups (the format stores no g_idx)", sq_format_name(o->format));
    }
    /* Default grid: mse (below minmax on KLD at every 4-bit setting measured on the bundled model, the matrix
     * fixtures and SmolLM2-135M, bench/quality.sh and bench/real.sh) where it runs: not AWQ's own grid, FP8
     * or GPTQ on the GPU; and not 8-bit RTN without data, where the unweighted search came out slightly
     * worse (KLD 0.000543 vs 0.000531 per channel on the bundled model, 0.0766 vs 0.0723 at g32 on the
     * qwen3_moe matrix fixture) while the calibration-weighted one is better (0.000514). */
    if (o->grid_auto) {
        bool data_free_8 = o->q.bits == 8 && m->calib_optional && m->scheme == SQ_SCHEME_INT && !o->calib && !o->stats_in;
        o->q.grid = m->own_grid || o->backend || data_free_8 ? SQ_GRID_MINMAX : SQ_GRID_MSE;
        o->grid_auto = false;
    }
    if (o->q.bits != 4 && o->q.bits != 8) return sq_fail(err, SQ_ERR_ARG, "--bits %d: spotq writes 4 or 8 bits", o->q.bits);
    if (m->scheme == SQ_SCHEME_INT && (o->q.group_size == 0 || o->q.group_size < -1 || (o->q.group_size > 0 && o->q.group_size % (32 / o->q.bits))))
        return sq_fail(err, SQ_ERR_ARG, "--group-size %d: use -1 (one group per output channel) or a positive multiple of %d (the %d-bit packing)",
                       o->q.group_size, 32 / o->q.bits, o->q.bits);
    if (!(o->q.damp > 0)) return sq_fail(err, SQ_ERR_ARG, "--damp must be positive");
    if (o->q.grid == SQ_GRID_MSE && m->own_grid)
        return sq_fail(err, SQ_ERR_ARG, "--grid mse applies to rtn, gptq and awq+gptq (--method %s has a grid of its own)", m->name);
    const sq_backend_i *be = o->backend ? o->backend : sq_backend_cpu(); /* the backend of the Hessians and GPTQ solves (--device) */
    if (m->gpu && !be->supports(SQ_OP_GPTQ, o->q.grid == SQ_GRID_MSE ? SQ_QGRID_INT_MSE : SQ_QGRID_INT_MINMAX))
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "--grid %s: GPTQ on the %s backend lacks that grid (use --grid minmax or --device cpu)",
                       o->q.grid == SQ_GRID_MSE ? "mse" : "minmax", be->name);
    if (o->format != SQ_FORMAT_AUTO) { /* the output format holds the scheme */
        char why[256];
        sq_scheme sc = sq_pl_scheme(o);
        if (!sq_pl_format(o)->can_hold(&sc, 0, 0, why, sizeof why))
            return sq_fail(err, SQ_ERR_ARG, "--format %s cannot hold this scheme: %s", sq_format_name(o->format), why);
    }
    bool data_free = m->calib_optional && (m->scheme == SQ_SCHEME_INT || m->scheme == SQ_SCHEME_W8A8 || (m->scheme == SQ_SCHEME_FP8 && o->act != SQ_ACT_STATIC) ||
                                           (m->scheme == SQ_SCHEME_FP4 && o->act == SQ_ACT_NONE));
    if (o->stats_in && ((o->calib && !(o->target_bits > 0 || o->max_kld > 0)) || (m->needs & SQ_NEED_FEATURES)))
        return sq_fail(err, SQ_ERR_ARG, "--stats replaces --calib, for rtn, gptq, fp8 and fp8+gptq (awq needs the activations themselves)");
    if (!o->calib && !data_free && !o->stats_in)
        return sq_fail(err, SQ_ERR_ARG, "--method %s%s needs --calib FILE (calibration text) or --stats STATS", m->name,
                       m->calib_optional && m->scheme == SQ_SCHEME_FP8 ? " --act static" : m->calib_optional && m->scheme == SQ_SCHEME_FP4 ? " --act dynamic" : "");
    return SQ_OK;
}
