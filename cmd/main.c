/* main.c: spotq's entry point: the command table, `help`, `--version`; the ranks of an MPI job. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../base/par.h"

#include "cmd.h"

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv) { (void)argc; (void)argv; printf("spotq %s\n", SQ_VERSION); return 0; }

static const sq_cmd commands[] = {
    {"inspect", cmd_inspect, "describe a checkpoint: architecture, tensors, parameters, size at each precision"},
    {"check", cmd_check, "would vLLM load a checkpoint: the kernel that serves each linear, or the rule it breaks"},
    {"quantize", cmd_quantize, "calibrate and write an INT4/INT8 (GPTQ, AWQ, compressed-tensors) or FP8 checkpoint"},
    {"calib", cmd_calib, "run the calibration passes once and keep their statistics for quantize --stats"},
    {"tokenize", cmd_tokenize, "token ids of a text as eval and calibration see them (or --decode ids)"},
    {"eval", cmd_eval, "perplexity; with --ref, KL divergence, top-1 agreement, ppl ratio and quality gates"},
    {"generate", cmd_generate, "continue a prompt, greedy or sampled"},
    {"bench", cmd_bench, "prefill and decode tokens/s, peak memory"},
    {"help", cmd_help, "show help for spotq or a command"},
    {"version", cmd_version, "print the version"},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static void usage(FILE *f) {
    fprintf(f, "usage: spotq COMMAND [ARGS]   (spotq help COMMAND, spotq COMMAND --help)\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nexit codes: 0 ok, 1 failure, 2 usage error, 3 a quality gate failed\n");
}

static const sq_cmd *find(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static int cmd_help(int argc, char **argv) {
    if (argc < 2) { usage(stdout); return 0; }
    const sq_cmd *c = find(argv[1]);
    if (!c) { fprintf(stderr, "spotq: unknown command '%s'\n", argv[1]); return SQ_EXIT_USAGE; }
    char *args[] = {argv[1], "--help", NULL};
    return c->run(2, args);
}

static int run(int argc, char **argv);

/* Under mpirun every rank runs the command; rank 0 alone speaks (the others' stdout and stderr go to
 * /dev/null, but for the one line of an error that ends the job). */
int main(int argc, char **argv) {
    sq_err err = {0};
    if (sq_par_init(&argc, &argv, &err)) {
        fprintf(stderr, "spotq: error: %s\n", err.msg);
        return SQ_EXIT_FAIL;
    }
    if (sq_par_rank() > 0) {
        int keep = dup(2), nul = open("/dev/null", O_WRONLY);
        if (keep >= 0 && nul >= 0) {
            sq_par_set_error_fd(keep);
            dup2(nul, 1);
            dup2(nul, 2);
        }
        if (nul > 2) close(nul);
    }
    int rc;
    if (sq_par_size() > 1 && argc >= 2 && strcmp(argv[1], "quantize") && strcmp(argv[1], "calib") && strcmp(argv[1], "eval")) {
        fprintf(stderr, "spotq: %s runs in one process: under mpirun (%d ranks) spotq runs quantize, calib and eval\n", argv[1],
                sq_par_size());
        rc = SQ_EXIT_USAGE;
    } else rc = run(argc, argv);
    sq_par_finalize();
    return rc;
}

static int run(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return SQ_EXIT_USAGE; }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) return cmd_version(0, NULL);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) { usage(stdout); return 0; }
    const sq_cmd *c = find(argv[1]);
    if (!c) {
        fprintf(stderr, "spotq: unknown command '%s' (see spotq help)\n", argv[1]);
        return SQ_EXIT_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
