/* main.c: spotq's entry point: the command table, `help`, `--version`. */
#include <stdio.h>
#include <string.h>

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

int main(int argc, char **argv) {
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
