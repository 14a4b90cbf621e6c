/* cmd_calib.c: `spotq calib MODEL --calib FILE -o STATS`: the calibration passes once, their
 * statistics kept for `spotq quantize --stats STATS`. */
#include <stdio.h>
#include <unistd.h> /* isatty */

#include "../calib/driver.h"
#include "cmd.h"

static const char *USAGE =
    "MODEL --calib FILE -o STATS [--nsamples N] [--seqlen N] [--seed N] [--max-hessian-memory SIZE] [--threads N] [--force]\n\n"
    "Runs the full-precision MODEL block by block over --nsamples windows of --seqlen tokens of FILE and\n"
    "keeps, for every linear layer's input (each expert's too), its Hessian 2/T sum x x^T, token count and\n"
    "max |x| in STATS (zstd-compressed). `spotq quantize MODEL --stats STATS` then quantises with rtn,\n"
    "gptq, fp8 or fp8+gptq without calibrating again, so a sweep of settings calibrates once. The\n"
    "statistics are the full-precision model's: quantising with them is not sequential (a block does not\n"
    "see the quantised blocks before it), which --calib is.";

int cmd_calib(int argc, char **argv) {
    const char *calib = NULL, *out = NULL, *hess_mem = "1G";
    int nsamples = 128, seqlen = 0, seed = 0, threads = 0;
    bool force = false;
    const sq_opt opts[] = {
        {"--calib", 's', &calib, "calibration text, .txt or .jsonl (required)"},
        {"-o", 's', &out, "the statistics file to write (required)"},
        {"--out", 's', &out, "same as -o"},
        {"--nsamples", 'i', &nsamples, "calibration windows (default 128)"},
        {"--seqlen", 'i', &seqlen, "tokens per window (default 2048, or the model's maximum if smaller)"},
        {"--seed", 'i', &seed, "seed of the window offsets (default 0)"},
        {"--max-hessian-memory", 's', &hess_mem, "Hessians collected in one pass (default 1G): the experts of an MoE site go in groups that fit"},
        {"--threads", 'i', &threads, "threads (default: one per core)"},
        {"--force", 'f', &force, "replace STATS if it exists"},
        {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("calib", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    if (!calib || !out) {
        fprintf(stderr, "spotq calib: --calib FILE and -o STATS are required (see spotq calib --help)\n");
        return SQ_EXIT_USAGE;
    }
    int64_t max_hess = sq_parse_size(hess_mem);
    if (!max_hess) {
        fprintf(stderr, "spotq calib: --max-hessian-memory %s: give a size such as 1G, 500M or 100k\n", hess_mem);
        return SQ_EXIT_USAGE;
    }
    sq_calib_opts o = {.calib = calib, .nsamples = nsamples, .seqlen = seqlen, .seed = (uint64_t)(unsigned)seed,
                       .max_hessian_bytes = max_hess};
    sq_err err = {0};
    bool tty = isatty(2);
    sq_status s = sq_calib_model(pos[0], out, force, &o, threads, tty ? sq_cmd_progress : NULL, NULL, &err);
    if (tty) sq_cmd_progress_end();
    if (s) return sq_cmd_fail(&err);
    fprintf(stderr, "spotq: wrote %s\n", out);
    return 0;
}
