/* cmd_check.c: `spotq check MODEL`: would vLLM load this checkpoint, and which kernel serves each linear. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/serving.h"
#include "cmd.h"

static const char *USAGE =
    "MODEL [--tp N] [--json] [--quiet]\n\n"
    "For every linear of MODEL (a checkpoint spotq or another tool wrote), the vLLM kernel that will serve\n"
    "it under vLLM's rules (Marlin's types, group sizes and shapes; GPTQ v1 only through Marlin; AWQ and\n"
    "compressed-tensors fallbacks), per tensor-parallel shard with --tp N, or the rule it breaks.\n"
    "Exits 1 when vLLM would refuse to load the checkpoint; a fallback kernel is a note, not a failure.";

typedef struct {
    bool json, quiet;
    cJSON *arr;
} out_ctx;

static void on_linear(const sq_serve_linear *l, void *user) {
    out_ctx *o = user;
    if (o->json) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", l->name);
        cJSON_AddNumberToObject(e, "out_features", (double)l->n);
        cJSON_AddNumberToObject(e, "in_features", (double)l->k);
        cJSON_AddStringToObject(e, "verdict", sq_serve_verdict_name(l->verdict));
        cJSON_AddStringToObject(e, "kernel", l->kernel);
        if (l->rule[0]) cJSON_AddStringToObject(e, "rule", l->rule);
        cJSON_AddItemToArray(o->arr, e);
    } else if (!o->quiet || l->verdict == SQ_SERVE_REJECT) {
        printf("%-48s %6lld x %-6lld %-15s %s%s%s\n", l->name, (long long)l->n, (long long)l->k, sq_serve_verdict_name(l->verdict), l->kernel,
               l->rule[0] ? ": " : "", l->rule);
    }
}

int cmd_check(int argc, char **argv) {
    int tp = 1;
    bool json = false, quiet = false;
    const sq_opt opts[] = {{"--tp", 'i', &tp, "tensor-parallel shards to check for (default 1)"},
                           {"--json", 'f', &json, "one JSON object: every linear and the verdict"},
                           {"--quiet", 'f', &quiet, "print only the linears vLLM would reject, and the summary"},
                           {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("check", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    sq_err err = {0};
    sq_ckpt *ck = NULL;
    if (sq_ckpt_open(&ck, pos[0], &err)) return sq_cmd_fail(&err);
    out_ctx o = {json, quiet, json ? cJSON_CreateArray() : NULL};
    sq_serve_summary s;
    if (sq_serve_check(ck, tp, on_linear, &o, &s, &err)) {
        cJSON_Delete(o.arr);
        sq_ckpt_close(ck);
        return sq_cmd_fail(&err);
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", pos[0]);
        cJSON_AddNumberToObject(j, "tp", tp);
        cJSON_AddBoolToObject(j, "loads", s.n_reject == 0);
        cJSON_AddNumberToObject(j, "linears", s.n_linear);
        cJSON_AddNumberToObject(j, "kernel", s.n_kernel);
        cJSON_AddNumberToObject(j, "fallback", s.n_fallback);
        cJSON_AddNumberToObject(j, "full_precision", s.n_full);
        cJSON_AddNumberToObject(j, "rejected", s.n_reject);
        cJSON_AddItemToObject(j, "layers", o.arr);
        sq_cmd_print_json(j);
    } else {
        printf("%s: %d linears at tp %d: %d on their kernel, %d on a fallback, %d in full precision, %d rejected\n", pos[0], s.n_linear, tp,
               s.n_kernel, s.n_fallback, s.n_full, s.n_reject);
    }
    fflush(stdout);
    sq_ckpt_close(ck);
    if (s.n_reject) {
        fprintf(stderr, "spotq: error: %s: vLLM would not load it: %d linears break its kernel rules, e.g. %s: %s\n", pos[0], s.n_reject,
                s.first_reject.name, s.first_reject.rule);
        return SQ_EXIT_FAIL;
    }
    return 0;
}
