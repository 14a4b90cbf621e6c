/* cmd_eval.c: `spotq eval MODEL --data FILE`: perplexity by SPEC.md's protocol; with --ref, the KL
 * divergence to a reference model, top-1 agreement and the ppl ratio; quality gates exit 3. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/text.h"
#include "../runtime/runtime.h"
#include "cmd.h"

static const char *USAGE =
    "MODEL --data FILE [--ctx N] [--protocol gptq|llamacpp] [--ref FPMODEL] [--max-ppl-ratio R] [--max-kld K] [--json]\n\n"
    "Perplexity of MODEL on FILE (.txt: one stream with BOS at the start; .jsonl: a \"text\" field per line,\n"
    "each document with its BOS). The stream is cut into non-overlapping windows of --ctx tokens (the tail\n"
    "dropped), each evaluated from position 0. gptq scores every token but a window's first; llamacpp puts\n"
    "BOS first in each window and scores its second half, as llama-perplexity does. BOS follows the\n"
    "tokenizer's rule (tokenizer_config.json's add_bos_token, else tokenizer.json's post-processor): none\n"
    "where it adds none. The output says which rule applied.\n"
    "With --ref FPMODEL (same vocabulary): KL(ref || model) per scored token (mean, median, p99, max),\n"
    "top-1 agreement and ppl/ref_ppl. A gate that is exceeded makes eval exit 3.";

typedef struct {
    bool tty;
    int64_t total_tokens;
} progress_ctx;

static void progress(void *user, int window, int n_windows, int64_t tokens_done, double seconds) {
    progress_ctx *p = user;
    if (!p->tty) return;
    double rate = seconds > 0 ? (double)tokens_done / seconds : 0;
    double eta = rate > 0 ? (double)(p->total_tokens - tokens_done) / rate : 0;
    fprintf(stderr, "\reval: window %d/%d, %lld tokens, %.0f tokens/s, ETA %d:%02d   ", window, n_windows, (long long)tokens_done, rate,
            (int)eta / 60, (int)eta % 60);
    if (window == n_windows) fprintf(stderr, "\r%*s\r", 72, "");
    fflush(stderr);
}

/* One gate: prints a line on stderr when value exceeds limit. Returns 1 if it failed. */
static int gate(const char *what, double value, const char *opt, double limit) {
    if (!(value > limit)) return 0;
    fprintf(stderr, "spotq eval: quality gate failed: %s %.6g exceeds %s %.6g by %.6g\n", what, value, opt, limit, value - limit);
    return 1;
}

/* The BOS each document gets (and, with llamacpp, each window), and the tokenizer's rule that chose it. */
typedef struct {
    int id; /* -1: none */
    const char *piece, *rule;
} bos_info;

/* A checkpoint quantised to a budget (spotq.json's budget, issue 18): its target and the KLD measured on the
 * calibration text's held-out windows when it was written. NULL: none. Owned by the caller (cJSON_Delete). */
static cJSON *budget_of(const char *model) {
    char path[4200], *buf = NULL;
    size_t len = 0;
    sq_err e = {0};
    snprintf(path, sizeof path, "%s/spotq.json", model);
    if (access(path, R_OK) || sq_read_file(path, &buf, &len, &e)) return NULL;
    cJSON *j = cJSON_ParseWithLength(buf, len), *b = cJSON_DetachItemFromObjectCaseSensitive(j, "budget");
    free(buf);
    cJSON_Delete(j);
    if (b) cJSON_DeleteItemFromObjectCaseSensitive(b, "units"), cJSON_DeleteItemFromObjectCaseSensitive(b, "candidates"),
        cJSON_DeleteItemFromObjectCaseSensitive(b, "sensitivity");
    return b;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void print_budget(const cJSON *b) {
    if (!b) return;
    double mk = jnum(b, "max_kld"), tb = jnum(b, "target_bits");
    char lim[64];
    if (isfinite(mk)) snprintf(lim, sizeof lim, "--max-kld %g", mk);
    else snprintf(lim, sizeof lim, "--target-bits %g", tb);
    printf("budget:         %s: KLD %.6g on %g held-out windows of %g tokens of the calibration text (measured when quantised)%s\n", lim,
           jnum(b, "heldout_kld"), jnum(b, "heldout_windows"), jnum(b, "measure_ctx"),
           isfinite(mk) ? (jnum(b, "heldout_kld") <= mk ? ", met" : ", NOT met") : "");
}

static void print_text(const char *model, const char *data, int64_t n_tokens, const char *protocol, int ctx, const char *ref,
                       const sq_eval_result *r, int threads, const bos_info *b) {
    printf("model:          %s\n", model);
    printf("data:           %s (%lld tokens)\n", data, (long long)n_tokens);
    printf("protocol:       %s, ctx %d: %lld windows, %lld tokens scored\n", protocol, ctx, (long long)r->windows, (long long)r->scored);
    if (b->id >= 0) printf("bos:            %s (id %d), from %s\n", b->piece ? b->piece : "?", b->id, b->rule);
    else printf("bos:            none, from %s\n", b->rule);
    printf("mean nll:       %.8f\n", r->mean_nll);
    printf("ppl:            %.6f\n", r->ppl);
    if (r->has_ref) {
        printf("ref:            %s\n", ref);
        printf("ref ppl:        %.6f\n", r->ref_ppl);
        printf("ppl ratio:      %.6f\n", r->ppl_ratio);
        printf("kld:            mean %.6g, median %.6g, p99 %.6g, max %.6g\n", r->kld_mean, r->kld_median, r->kld_p99, r->kld_max);
        printf("top-1 agree:    %.4f%%\n", 100 * r->top1);
    }
    cJSON *bud = budget_of(model);
    print_budget(bud);
    cJSON_Delete(bud);
    printf("speed:          %.1f tokens/s (%lld tokens in %.2f s, %d threads%s)\n", r->seconds > 0 ? (double)r->tokens / r->seconds : 0,
           (long long)r->tokens * (r->has_ref ? 2 : 1), r->seconds, threads, r->has_ref ? ", model and ref" : "");
}

static int print_json(const char *model, const char *data, int64_t n_tokens, const char *protocol, int ctx, const char *ref,
                      const sq_eval_result *r, int threads, double max_ratio, double max_kld, const bos_info *b) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "data", data);
    cJSON_AddNumberToObject(o, "data_tokens", (double)n_tokens);
    cJSON_AddStringToObject(o, "protocol", protocol);
    cJSON_AddNumberToObject(o, "ctx", ctx);
    cJSON_AddNumberToObject(o, "windows", (double)r->windows);
    cJSON_AddNumberToObject(o, "tokens_scored", (double)r->scored);
    cJSON *bj = cJSON_AddObjectToObject(o, "bos");
    if (b->id >= 0) cJSON_AddNumberToObject(bj, "id", b->id);
    else cJSON_AddNullToObject(bj, "id");
    cJSON_AddStringToObject(bj, "rule", b->rule);
    cJSON_AddNumberToObject(o, "mean_nll", r->mean_nll);
    cJSON_AddNumberToObject(o, "ppl", r->ppl);
    if (r->has_ref) {
        cJSON_AddStringToObject(o, "ref", ref);
        cJSON_AddNumberToObject(o, "ref_mean_nll", r->ref_mean_nll);
        cJSON_AddNumberToObject(o, "ref_ppl", r->ref_ppl);
        cJSON_AddNumberToObject(o, "ppl_ratio", r->ppl_ratio);
        cJSON *k = cJSON_AddObjectToObject(o, "kld");
        cJSON_AddNumberToObject(k, "mean", r->kld_mean);
        cJSON_AddNumberToObject(k, "median", r->kld_median);
        cJSON_AddNumberToObject(k, "p99", r->kld_p99);
        cJSON_AddNumberToObject(k, "max", r->kld_max);
        cJSON_AddNumberToObject(o, "top1_agreement", r->top1);
        cJSON *g = cJSON_AddObjectToObject(o, "gates");
        if (max_ratio > 0) {
            cJSON *x = cJSON_AddObjectToObject(g, "max_ppl_ratio");
            cJSON_AddNumberToObject(x, "limit", max_ratio);
            cJSON_AddBoolToObject(x, "passed", !(r->ppl_ratio > max_ratio));
        }
        if (max_kld >= 0) {
            cJSON *x = cJSON_AddObjectToObject(g, "max_kld");
            cJSON_AddNumberToObject(x, "limit", max_kld);
            cJSON_AddBoolToObject(x, "passed", !(r->kld_mean > max_kld));
        }
    }
    cJSON *bud = budget_of(model);
    if (bud) cJSON_AddItemToObject(o, "budget", bud);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    cJSON_AddNumberToObject(o, "tokens_per_second", r->seconds > 0 ? (double)r->tokens / r->seconds : 0);
    cJSON_AddNumberToObject(o, "threads", threads);
    return sq_cmd_print_json(o);
}

int cmd_eval(int argc, char **argv) {
    const char *data = NULL, *ref_path = NULL, *protocol = "gptq", *device = "cpu";
    int ctx = 0, threads = 0;
    double max_ratio = -1, max_kld = -1;
    bool json = false;
    const sq_opt opts[] = {
        {"--data", 's', &data, "the text to evaluate: .txt or .jsonl (required)"},
        {"--ctx", 'i', &ctx, "window length in tokens (default 2048, or the model's maximum if smaller)"},
        {"--protocol", 's', &protocol, "gptq (default) or llamacpp"},
        {"--ref", 's', &ref_path, "reference model (full precision) for KL divergence, top-1 agreement, ppl ratio"},
        {"--max-ppl-ratio", 'd', &max_ratio, "gate: exit 3 when ppl / ref ppl is above X (needs --ref)"},
        {"--max-kld", 'd', &max_kld, "gate: exit 3 when the mean KL divergence is above X nats (needs --ref)"},
        {"--threads", 'i', &threads, "threads (default: one per CPU)"},
        {"--device", 's', &device, "cpu (default) or cpu-ref (the scalar reference kernels, slow)"},
        {"--json", 'f', &json, "print JSON instead of text"},
        {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("eval", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    if (!data) {
        fprintf(stderr, "spotq eval: --data FILE is required (see spotq eval --help)\n");
        return SQ_EXIT_USAGE;
    }
    sq_ppl_protocol proto;
    if (strcmp(protocol, "gptq") == 0) proto = SQ_PPL_GPTQ;
    else if (strcmp(protocol, "llamacpp") == 0) proto = SQ_PPL_LLAMACPP;
    else {
        fprintf(stderr, "spotq eval: --protocol '%s': use gptq or llamacpp\n", protocol);
        return SQ_EXIT_USAGE;
    }
    bool gates = max_ratio != -1 || max_kld != -1;
    if (gates && !ref_path) {
        fprintf(stderr, "spotq eval: --max-ppl-ratio and --max-kld need --ref FPMODEL\n");
        return SQ_EXIT_USAGE;
    }
    if ((max_ratio != -1 && !(max_ratio > 0)) || (max_kld != -1 && !(max_kld >= 0))) {
        fprintf(stderr, "spotq eval: --max-ppl-ratio must be positive and --max-kld not negative\n");
        return SQ_EXIT_USAGE;
    }
    if (ctx < 0 || ctx == 1 || threads < 0) {
        fprintf(stderr, "spotq eval: --ctx must be at least 2 and --threads not negative\n");
        return SQ_EXIT_USAGE;
    }

    sq_err err = {0};
    sq_exec *ex = NULL;
    sq_model *m = NULL, *ref = NULL;
    sq_tok *tok = NULL;
    int *ids = NULL;
    int64_t n = 0;
    int rc = SQ_EXIT_FAIL;
    if (sq_exec_new(&ex, device, threads, &err) || sq_model_open(&m, pos[0], ex, &err)) goto fail;
    if (ref_path && sq_model_open(&ref, ref_path, ex, &err)) goto fail;
    const sq_ckpt *ck = sq_model_ckpt(m);
    if (!ck->tokenizer_path[0]) {
        sq_fail(&err, SQ_ERR_IO, "%s: no tokenizer.json beside the model: eval needs it to tokenize %s", pos[0], data);
        goto fail;
    }
    if (sq_tok_load(&tok, ck->tokenizer_path, &err) || sq_text_tokens(tok, data, false, &ids, &n, &err)) goto fail;
    const sq_config *cfg = sq_model_config(m);
    if (!ctx) ctx = cfg->max_pos < 2048 ? cfg->max_pos : 2048;
    else if (ctx > cfg->max_pos) sq_log(SQ_LOG_WARN, "--ctx %d is beyond the model's max_position_embeddings %d", ctx, cfg->max_pos);
    /* the tokenizer's own rule, in both protocols (llama-perplexity adds no BOS where the tokenizer adds none) */
    int bos = sq_tok_bos(tok);
    bos_info bi = {bos, bos >= 0 ? sq_tok_piece(tok, bos) : NULL, sq_tok_bos_rule(tok)};
    progress_ctx pc = {isatty(2) == 1, (n / ctx) * ctx};
    sq_eval_opts o = {.ctx = ctx, .protocol = proto, .bos_id = bos, .progress = progress, .progress_user = &pc};
    sq_eval_result res;
    if (sq_eval_ppl(m, ref, ids, n, &o, &res, &err)) goto fail;
    int nthreads = sq_exec_threads(ex);
    if (json) rc = print_json(pos[0], data, n, protocol, ctx, ref_path, &res, nthreads, max_ratio, max_kld, &bi);
    else {
        print_text(pos[0], data, n, protocol, ctx, ref_path, &res, nthreads, &bi);
        rc = 0;
    }
    fflush(stdout);
    if (rc == 0 && ref) {
        int failed = 0;
        if (max_ratio != -1) failed += gate("ppl ratio", res.ppl_ratio, "--max-ppl-ratio", max_ratio);
        if (max_kld != -1) failed += gate("mean KLD", res.kld_mean, "--max-kld", max_kld);
        if (failed) rc = SQ_EXIT_GATE;
    }
    goto done;
fail:
    rc = sq_cmd_fail(&err);
done:
    free(ids);
    sq_tok_free(tok);
    sq_model_close(ref);
    sq_model_close(m);
    sq_exec_free(ex);
    return rc;
}
