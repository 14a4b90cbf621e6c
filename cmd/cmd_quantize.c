/* cmd_quantize.c: `spotq quantize MODEL -o OUT --method rtn|gptq`: calibrate, quantise, write OUT. */
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
    "MODEL -o OUT --method rtn|gptq --calib FILE [options]\n\n"
    "Calibrates MODEL block by block on FILE (.txt or .jsonl) and writes OUT, a Hugging Face directory with\n"
    "packed weights (GPTQ v1 by default, or compressed-tensors pack-quantized), its quantization_config,\n"
    "the tokenizer and generation files, and spotq.json (arguments, calibration hash, per-layer errors,\n"
    "timings). Matrices that do not fit the packing stay in full precision, listed in the config.\n"
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

int cmd_quantize(int argc, char **argv) {
    const char *out = NULL, *method = NULL, *calib = NULL, *format = "gptq", *device = "cpu";
    int bits = 4, group = 128, nsamples = 128, seqlen = 0, seed = 0, threads = 0;
    double damp = 0.01;
    bool sym = true, asym = false, act = false, stat = false, force = false;
    sq_optlist ignore = {0};
    const sq_opt opts[] = {
        {"-o", 's', &out, "output directory (required)"},
        {"--out", 's', &out, "same as -o"},
        {"--method", 's', &method, "rtn or gptq (required)"},
        {"--calib", 's', &calib, "calibration text, .txt or .jsonl (required)"},
        {"--format", 's', &format, "gptq (v1, default) or compressed-tensors (pack-quantized)"},
        {"--bits", 'i', &bits, "4 or 8 (default 4)"},
        {"--group-size", 'i', &group, "columns per scale group, -1 for one per output channel (default 128)"},
        {"--sym", 'f', &sym, "symmetric grid, zero fixed at 2^(bits-1) (default)"},
        {"--asym", 'f', &asym, "asymmetric grid with a zero point per group"},
        {"--act-order", 'f', &act, "GPTQ: columns in descending Hessian diagonal (desc_act)"},
        {"--static-groups", 'f', &stat, "GPTQ: group grids fixed before the updates (g_idx stays k/g)"},
        {"--damp", 'd', &damp, "GPTQ: damping as a fraction of mean(diag H) (default 0.01)"},
        {"--nsamples", 'i', &nsamples, "calibration windows (default 128)"},
        {"--seqlen", 'i', &seqlen, "tokens per window (default 2048, or the model's maximum if smaller)"},
        {"--seed", 'i', &seed, "seed of the window offsets (default 0)"},
        {"--ignore", 'l', &ignore, "keep modules matching this pattern in full precision (repeatable; e.g. '*.down_proj')"},
        {"--device", 's', &device, "cpu (default) or cuda"},
        {"--threads", 'i', &threads, "threads (default: one per core)"},
        {"--force", 'f', &force, "replace OUT if it exists"},
        {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("quantize", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    sq_err err = {0};
    if (!out) { fprintf(stderr, "spotq quantize: -o OUT is required (see spotq quantize --help)\n"); return SQ_EXIT_USAGE; }
    if (!method) { fprintf(stderr, "spotq quantize: --method is required (see spotq quantize --help)\n"); return SQ_EXIT_USAGE; }
    sq_quantize_opts o = {.model = pos[0], .out = out, .calib = calib, .nsamples = nsamples, .seqlen = seqlen,
                          .seed = (uint64_t)(unsigned)seed, .threads = threads, .force = force, .ignore = ignore.v,
                          .n_ignore = ignore.n, .progress = isatty(2)};
    if (!strcmp(method, "gptq")) o.method = SQ_METHOD_GPTQ;
    else if (!strcmp(method, "rtn")) o.method = SQ_METHOD_RTN;
    else if (!strcmp(method, "awq") || !strcmp(method, "fp8")) {
        sq_fail(&err, SQ_ERR_UNSUPPORTED, "--method %s is not implemented yet (rtn, gptq)", method);
        return sq_cmd_fail(&err);
    } else {
        fprintf(stderr, "spotq quantize: --method %s: use rtn or gptq\n", method);
        return SQ_EXIT_USAGE;
    }
    if (!strcmp(format, "gptq")) o.format = SQ_FORMAT_GPTQ;
    else if (!strcmp(format, "compressed-tensors")) o.format = SQ_FORMAT_CT;
    else {
        fprintf(stderr, "spotq quantize: --format %s: use gptq or compressed-tensors\n", format);
        return SQ_EXIT_USAGE;
    }
    if (strcmp(device, "cpu")) {
        const sq_backend_i *be;
        if (sq_backend_get(device, &be, &err)) return sq_cmd_fail(&err);
        sq_fail(&err, SQ_ERR_UNSUPPORTED, "--device %s: calibration runs on the CPU for now", device);
        return sq_cmd_fail(&err);
    }
    /* compressed-tensors' decompressor has no g_idx: act-order there uses static groups */
    if (o.format == SQ_FORMAT_CT && act && !stat) {
        stat = true;
        sq_log(SQ_LOG_INFO, "--format compressed-tensors with --act-order: using static groups (the format's decompressor reads no g_idx)");
    }
    o.q = (sq_qparams){.bits = bits, .group_size = group, .sym = sym && !asym, .act_order = act, .static_groups = stat,
                       .damp = damp, .block_size = 128};
    char cmdline[4096];
    int n = snprintf(cmdline, sizeof cmdline, "spotq");
    for (int i = 0; i < argc && n < (int)sizeof cmdline - 2; i++) n += snprintf(cmdline + n, sizeof cmdline - (size_t)n, " %s", argv[i]);
    o.cmdline = cmdline;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (sq_quantize_model(&o, &err)) return sq_cmd_fail(&err);
    fprintf(stderr, "spotq: wrote %s\n", out);
    return 0;
}
