/* cmd_quantize.c: `spotq quantize MODEL -o OUT --method ...`: calibrate, quantise, write OUT. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/outdir.h"
#include "../kernels/backend.h"
#include "../quant/pipeline.h"
#include "cmd.h"

static const char *USAGE =
    "MODEL -o OUT --method rtn|gptq|awq|awq+gptq|fp8|fp8+gptq|nvfp4|nvfp4+gptq|mxfp4|mxfp4+gptq|int8|int8+gptq [--calib FILE] [options]\n"
    "MODEL -o OUT --target-bits B | --max-kld K --calib FILE [--schemes LIST] [options]\n\n"
    "Calibrates MODEL block by block on FILE (.txt or .jsonl) and writes OUT, a Hugging Face directory with\n"
    "packed weights (for rtn/gptq GPTQ v1 where vLLM's Marlin takes every linear, else compressed-tensors\n"
    "pack-quantized; AWQ GEMM for awq), its quantization_config, the tokenizer and generation files, and\n"
    "spotq.json (arguments, calibration hash, per-layer errors, timings, the serving check). Matrices that\n"
    "do not fit the packing stay in full precision, listed in the config.\n"
    "--method fp8 writes E4M3 weights in vLLM's fp8 format (per-tensor scales, --act static or dynamic)\n"
    "or compressed-tensors float-quantized (weight-only or per-channel too); --method fp8+gptq chooses the same\n"
    "E4M3 codes with GPTQ's error compensation (--act-order and --damp apply).\n"
    "--method int8 writes INT8 W8A8 (compressed-tensors int-quantized: per-channel symmetric INT8 weights,\n"
    "activations INT8 dynamic per token, as vLLM's CUTLASS scaled_mm runs them); int8+gptq chooses the codes with GPTQ;\n"
    "--smoothquant [ALPHA] first moves activation outliers into their weights (SmoothQuant, folded into the norms).\n"
    "--target-bits B (bits per weight of the whole checkpoint, every tensor counted) or --max-kld K (mean KLD on\n"
    "the calibration text's held-out windows) chooses one scheme per layer (q/k/v, o, gate/up, down; all experts\n"
    "of a layer together) from --schemes by GPTQ's Hessian-weighted error and one measured KLD per layer, and\n"
    "writes one compressed-tensors checkpoint with a config group per scheme; spotq.json's budget says what was\n"
    "chosen, predicted and measured.\n"
    "OUT is written into a temporary directory and renamed into place at the end.";

/* On Ctrl-C, remove the temporary output directory: an interrupted run leaves nothing half-written. */
static void on_signal(int sig) {
    const char *tmp = sq_outdir_pending();
    if (tmp) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (!strchr(tmp, '\'') && system(cmd) != 0) { /* best effort */ }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Whether --sym was given (its flag is on by default). */
static bool sym_given(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--sym")) return true;
    return false;
}

int cmd_quantize(int argc, char **argv) {
    const char *stats = NULL, *out = NULL, *method = NULL, *calib = NULL, *format = NULL, *device = "cpu", *duo = "on", *clip = "on", *awq_tokens = "auto", *shard_size = "4G", *hess_mem = "1G";
    const char *fp8_scheme = NULL, *act_mode = NULL, *grid = NULL;
    int bits = -1, group = -2, nsamples = 128, seqlen = 0, seed = 0, threads = 0;
    double damp = 0.01, target_bits = 0, max_kld = 0;
    const char *schemes = NULL, *keep_dtype = NULL;
    int budget_windows = 0, budget_ctx = 0;
    bool sym = true, asym = false, act = false, stat = false, force = false, strict = false;
    sq_optlist ignore = {0};
    sq_optnum smooth = {0};
    const sq_opt opts[] = {
        {"-o", 's', &out, "output directory (required)"},
        {"--out", 's', &out, "same as -o"},
        {"--method", 's', &method, "rtn, gptq, awq, awq+gptq (AWQ's scales and clipping, then GPTQ), fp8 (E4M3), fp8+gptq (E4M3 through GPTQ), int8 (INT8 W8A8) or int8+gptq (required)"},
        {"--stats", 's', &stats, "statistics from spotq calib, instead of --calib (rtn, gptq, fp8, fp8+gptq; not sequential)"},
        {"--calib", 's', &calib, "calibration text, .txt or .jsonl (required but for rtn and fp8 without --act static, which then run data-free and report no errors)"},
        {"--format", 's', &format, "gptq (v1), awq (GEMM; default for awq), compressed-tensors, fp8 (vLLM's; default for fp8 where it fits); rtn and gptq default to gptq where vLLM's Marlin takes every linear (symmetric, its group sizes and shapes), else compressed-tensors"},
        {"--target-bits", 'd', &target_bits, "bits per weight of the whole checkpoint: a scheme per layer from --schemes within it"},
        {"--max-kld", 'd', &max_kld, "the most mean KLD on the calibration text's held-out windows: the fewest bytes within it"},
        {"--schemes", 's', &schemes, "the budget's candidates, comma-separated (default int4-g128-sym,int4-g128-asym,int4-g64-sym,"
                                     "int4-g64-asym,int4-g32-sym,int4-g32-asym,int8-ch-sym,keep)"},
        {"--budget-windows", 'i', &budget_windows, "held-out windows the budget measures on (default 8)"},
        {"--budget-ctx", 'i', &budget_ctx, "tokens per budget measurement window (default 128)"},
        {"--keep-dtype", 's', &keep_dtype, "source or bf16: the dtype of the matrices written unquantised (embeddings, lm_head, kept "
                                           "linears) of an F32 source (default bf16 with --target-bits or --max-kld, else source)"},
        {"--bits", 'i', &bits, "4 or 8 (default 4)"},
        {"--group-size", 'i', &group, "columns per scale group, -1 for one per output channel (default 128)"},
        {"--strict-group-size", 'f', &strict, "rtn, gptq: a group size that does not divide some linear's in_features is an error naming the sizes that fit (default: lowered per linear to the largest servable one that divides it, 128, 64 or 32, written as compressed-tensors)"},
        {"--sym", 'f', &sym, "symmetric grid, zero fixed at 2^(bits-1) (default)"},
        {"--asym", 'f', &asym, "asymmetric grid with a zero point per group"},
        {"--act-order", 'f', &act, "GPTQ: columns in descending Hessian diagonal (desc_act)"},
        {"--static-groups", 'f', &stat, "GPTQ: group grids fixed before the updates (g_idx stays k/g)"},
        {"--grid", 's', &grid, "rtn, gptq, awq+gptq: minmax (each group's scale from its min and max) or mse (searched for the least error "
                               "weighted by the calibration's diag(H); unweighted data-free) (default mse; minmax for awq, fp8, --device cuda and 8-bit rtn without data)"},
        {"--awq-duo", 's', &duo, "AWQ: on (AutoAWQ's duo scaling, default) or off (llm-awq's x_mean^alpha)"},
        {"--awq-clip", 's', &clip, "AWQ: on (default; the clipping search, never on q and k) or off"},
        {"--awq-search-tokens", 's', &awq_tokens, "AWQ: score the scale search's 20 alphas on evenly spaced windows of at least N "
                                                  "tokens, then its 2 best on every token; 0: every alpha on every token, as AutoAWQ "
                                                  "(default auto: an eighth of the tokens, at least 1024)"},
        {"--fp8-scheme", 's', &fp8_scheme, "FP8: weight scales per tensor (default), per channel (compressed-tensors only) or per 128x128 block (activations dynamic per token and group of 128)"},
        {"--act", 's', &act_mode, "FP8: activations none (weight-only, default), static (scales from calibration) or dynamic (per token; the default and only choice for --fp8-scheme block)"},
        {"--smoothquant", 'o', &smooth, "int8, int8+gptq: SmoothQuant with migration strength ALPHA in [0, 1] (default 0.5): per input "
                                        "channel of q/k/v and gate/up, s = max|x|^ALPHA / max|W|^(1-ALPHA), the norm divided by s, the weights' columns multiplied"},
        {"--damp", 'd', &damp, "GPTQ: damping as a fraction of mean(diag H) (default 0.01)"},
        {"--nsamples", 'i', &nsamples, "calibration windows (default 128)"},
        {"--seqlen", 'i', &seqlen, "tokens per window (default 2048, or the model's maximum if smaller)"},
        {"--seed", 'i', &seed, "seed of the window offsets (default 0)"},
        {"--ignore", 'l', &ignore, "keep modules matching this pattern in full precision (repeatable; e.g. '*.down_proj')"},
        {"--device", 's', &device, "cpu (default) or cuda"},
        {"--threads", 'i', &threads, "threads (default: one per core)"},
        {"--max-hessian-memory", 's', &hess_mem, "Hessians collected in one calibration pass (default 1G): the experts of an MoE site go in groups that fit"},
        {"--max-shard-size", 's', &shard_size, "tensor data per output file, e.g. 4G (default), 500M, 100k: larger outputs are sharded with an index"},
        {"--force", 'f', &force, "replace OUT if it exists"},
        {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("quantize", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    sq_err err = {0};
    if (!out) { fprintf(stderr, "spotq quantize: -o OUT is required (see spotq quantize --help)\n"); return SQ_EXIT_USAGE; }
    bool budget = target_bits != 0 || max_kld != 0;
    if (!method && (budget || schemes)) method = "gptq"; /* the budget's schemes are GPTQ's (the library checks the rest) */
    if (!method) { fprintf(stderr, "spotq quantize: --method is required (see spotq quantize --help)\n"); return SQ_EXIT_USAGE; }
    int64_t max_shard = sq_parse_size(shard_size), max_hess = sq_parse_size(hess_mem);
    if (!max_shard || !max_hess) {
        fprintf(stderr, "spotq quantize: --max-%s %s: give a size such as 4G, 500M or 100k\n", max_shard ? "hessian-memory" : "shard-size",
                max_shard ? hess_mem : shard_size);
        return SQ_EXIT_USAGE;
    }
    sq_quantize_opts o = {.model = pos[0], .out = out, .calib = calib, .nsamples = nsamples, .seqlen = seqlen,
                          .seed = (uint64_t)(unsigned)seed, .threads = threads, .force = force, .ignore = ignore.v,
                          .n_ignore = ignore.n, .progress = isatty(2) ? sq_cmd_progress : NULL, .max_shard_bytes = max_shard, .stats_in = stats,
                          .max_hessian_bytes = max_hess, .target_bits = target_bits, .max_kld = max_kld, .schemes = schemes,
                          .scheme_given = bits != -1 || group != -2 || asym || sym_given(argc, argv), .budget_windows = budget_windows,
                          .budget_ctx = budget_ctx};
    if (!keep_dtype) o.keep_dtype = SQ_KEEP_AUTO;
    else if (!strcmp(keep_dtype, "source")) o.keep_dtype = SQ_KEEP_SOURCE;
    else if (!strcmp(keep_dtype, "bf16")) o.keep_dtype = SQ_KEEP_BF16;
    else {
        fprintf(stderr, "spotq quantize: --keep-dtype %s: use source or bf16\n", keep_dtype);
        return SQ_EXIT_USAGE;
    }
    if (bits == -1) bits = 4;
    if (group == -2) group = 128;
    if (!sq_method_parse(method, &o.method)) {
        fprintf(stderr, "spotq quantize: --method %s: use rtn, gptq, awq, awq+gptq, fp8, fp8+gptq, nvfp4, nvfp4+gptq, mxfp4, mxfp4+gptq, int8 or int8+gptq\n", method);
        return SQ_EXIT_USAGE;
    }
    if (!fp8_scheme || !strcmp(fp8_scheme, "tensor")) o.fp8_per_channel = false;
    else if (!strcmp(fp8_scheme, "channel")) o.fp8_per_channel = true;
    else if (!strcmp(fp8_scheme, "block")) o.fp8_block = true;
    else {
        fprintf(stderr, "spotq quantize: --fp8-scheme %s: use tensor, channel or block\n", fp8_scheme);
        return SQ_EXIT_USAGE;
    }
    if (!act_mode || !strcmp(act_mode, "none")) o.act = SQ_ACT_NONE;
    else if (!strcmp(act_mode, "static")) o.act = SQ_ACT_STATIC;
    else if (!strcmp(act_mode, "dynamic")) o.act = SQ_ACT_DYNAMIC;
    else {
        fprintf(stderr, "spotq quantize: --act %s: use none, static or dynamic\n", act_mode);
        return SQ_EXIT_USAGE;
    }
    sq_format f; /* the format table's names (formats/qscheme.h); which fits the method is the library's rule */
    if (!format) o.format = SQ_FORMAT_AUTO; /* the library picks: GPTQ v1 where vLLM's Marlin takes it, AWQ GEMM, vLLM's fp8 */
    else if (sq_format_parse(format, &f) && f != SQ_FORMAT_AUTO) o.format = f;
    else {
        fprintf(stderr, "spotq quantize: --format %s: use gptq, awq or compressed-tensors\n", format);
        return SQ_EXIT_USAGE;
    }
    if ((strcmp(duo, "on") && strcmp(duo, "off")) || (strcmp(clip, "on") && strcmp(clip, "off"))) {
        fprintf(stderr, "spotq quantize: --awq-duo and --awq-clip take on or off\n");
        return SQ_EXIT_USAGE;
    }
    o.awq_duo = !strcmp(duo, "on");
    o.awq_clip = !strcmp(clip, "on");
    if (!strcmp(awq_tokens, "auto")) o.awq_search_tokens = SQ_AWQ_SEARCH_AUTO;
    else {
        char *end;
        long long v = strtoll(awq_tokens, &end, 10);
        if (!*awq_tokens || *end || v < 0) {
            fprintf(stderr, "spotq quantize: --awq-search-tokens %s: give a number of tokens, 0 for all or auto\n", awq_tokens);
            return SQ_EXIT_USAGE;
        }
        o.awq_search_tokens = v;
    }
    if (strcmp(device, "cpu")) {
        /* No GPU (or no CUDA in this build) fails here, with one line and exit 1. */
        const sq_backend_i *be;
        if (sq_backend_get(device, &be, &err)) return sq_cmd_fail(&err);
        if (strcmp(device, "cuda")) sq_fail(&err, SQ_ERR_UNSUPPORTED, "--device %s: calibration runs on the CPU for now", device);
        else if (o.method != SQ_METHOD_GPTQ) sq_fail(&err, SQ_ERR_UNSUPPORTED, "--device cuda: only --method gptq runs on the GPU for now");
        if (err.code) return sq_cmd_fail(&err);
        char desc[256];
        if (be->query(desc, sizeof desc, &err)) return sq_cmd_fail(&err);
        sq_log(SQ_LOG_INFO, "GPTQ's Hessians and solves on %s", desc);
        o.backend = be;
    }
    o.q = (sq_qparams){.bits = bits, .group_size = group, .sym = sym && !asym, .act_order = act, .static_groups = stat,
                       .damp = damp, .block_size = 128};
    o.strict_group_size = strict;
    o.smoothquant = smooth.given;
    o.smooth_alpha = smooth.has_value ? smooth.v : NAN;
    o.grid_auto = !grid;
    o.act_auto = !act_mode;
    if (grid && !strcmp(grid, "mse")) o.q.grid = SQ_GRID_MSE;
    else if (grid && strcmp(grid, "minmax")) {
        fprintf(stderr, "spotq quantize: --grid %s: use minmax or mse\n", grid);
        return SQ_EXIT_USAGE;
    }
    /* the rules between the options are the library's: one line naming the option */
    if (sq_quantize_resolve(&o, &err)) {
        fprintf(stderr, "spotq quantize: %s\n", err.msg);
        return err.code == SQ_ERR_ARG ? SQ_EXIT_USAGE : SQ_EXIT_FAIL;
    }
    char cmdline[4096];
    int n = snprintf(cmdline, sizeof cmdline, "spotq");
    for (int i = 0; i < argc && n < (int)sizeof cmdline - 2; i++) n += snprintf(cmdline + n, sizeof cmdline - (size_t)n, " %s", argv[i]);
    o.cmdline = cmdline;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    sq_status st = sq_quantize_model(&o, &err);
    if (o.progress) sq_cmd_progress_end();
    if (st) return sq_cmd_fail(&err);
    fprintf(stderr, "spotq: wrote %s\n", out);
    return 0;
}
