/* cmd_generate.c: `spotq generate MODEL --prompt TEXT`: greedy or sampled text, streamed to stdout. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/tokenizer.h"
#include "../runtime/runtime.h"
#include "cmd.h"

static const char *USAGE =
    "MODEL (--prompt TEXT | --prompt-ids IDS) [-n N] [--temp T] [--top-p P] [--seed S] [--ignore-eos]\n"
    "                [--draft DRAFT [--spec-k K]] [--json]\n\n"
    "Continues the prompt (BOS first, special tokens in it recognised) token by token, greedy unless\n"
    "--temp > 0, until an EOS token of config.json or N new tokens. The text goes to stdout as it comes;\n"
    "a line of statistics to stderr. --prompt-ids takes ids (comma- or space-separated) as they are,\n"
    "so a model without tokenizer.json can run (the output is then ids).\n"
    "With --draft, speculative decoding: DRAFT (a smaller or quantised model with the same vocabulary)\n"
    "proposes K tokens a step and MODEL verifies them in one batched pass; greedy output is MODEL's own\n"
    "greedy output token for token, and sampling keeps MODEL's distribution (the rejection rule of\n"
    "Leviathan et al. and Chen et al.).";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static sq_status parse_ids(const char *s, int **out, int *n, sq_err *err) {
    int cap = 16, k = 0;
    int *ids = malloc((size_t)cap * sizeof *ids);
    while (ids && *s) {
        if (strchr(" ,\t\n[]", *s)) { s++; continue; }
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > 2147483647L) {
            free(ids);
            return sq_fail(err, SQ_ERR_ARG, "--prompt-ids: '%.20s' is not a token id", s);
        }
        if (k == cap) {
            int *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g) break;
            ids = g;
        }
        ids[k++] = (int)v;
        s = end;
    }
    if (!ids || *s) {
        free(ids);
        return sq_fail(err, SQ_ERR_NOMEM, "out of memory for the prompt ids");
    }
    if (!k) {
        free(ids);
        return sq_fail(err, SQ_ERR_ARG, "--prompt-ids: no ids given");
    }
    *out = ids;
    *n = k;
    return SQ_OK;
}

/* Streams text: decodes all ids so far and prints what is new, holding back a trailing U+FFFD (an
 * incomplete UTF-8 sequence of byte-fallback tokens that the next token may complete). */
typedef struct {
    const sq_tok *tok;
    size_t printed;
} streamer;

static void stream(streamer *st, const int *ids, int n, bool final) {
    char *text;
    size_t len;
    sq_err err = {0};
    if (sq_tok_decode(st->tok, ids, n, true, &text, &len, &err)) return;
    size_t upto = len;
    if (!final && upto >= 3 && memcmp(text + upto - 3, "\xEF\xBF\xBD", 3) == 0) upto -= 3;
    if (upto > st->printed) {
        fwrite(text + st->printed, 1, upto - st->printed, stdout);
        fflush(stdout);
        st->printed = upto;
    }
    free(text);
}

static bool is_eos(const sq_config *c, int t) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == t) return true;
    return false;
}

/* Where each new token goes: streamed (text, or ids without a tokenizer) unless --json. */
typedef struct {
    const sq_config *cfg;
    const int *ids;              /* the text so far: new tokens are at ids[n] when emit sees them */
    int n, n_prompt;
    bool ignore_eos, json, eos;
    const sq_tok *tok;
    streamer st;
} sink;

/* Takes ids[g->n] (= t); returns true at an EOS (which is not kept). */
static bool emit(void *user, int t) {
    sink *g = user;
    if (!g->ignore_eos && is_eos(g->cfg, t)) return g->eos = true;
    g->n++;
    if (g->json) return false;
    if (g->tok) stream(&g->st, g->ids, g->n, false);
    else {
        printf("%s%d", g->n == g->n_prompt + 1 ? "" : " ", t);
        fflush(stdout);
    }
    return false;
}

int cmd_generate(int argc, char **argv) {
    const char *prompt = NULL, *prompt_ids = NULL, *device = "cpu", *draft_path = NULL;
    int n_new = 128, threads = 0, seed = 0, spec_k = 4;
    double temp = 0, top_p = 1;
    bool json = false, ignore_eos = false;
    const sq_opt opts[] = {
        {"--prompt", 's', &prompt, "the text to continue"},
        {"--prompt-ids", 's', &prompt_ids, "the prompt as token ids, used as given (no BOS added)"},
        {"-n", 'i', &n_new, "new tokens at most (default 128)"},
        {"--temp", 'd', &temp, "sampling temperature (default 0: greedy)"},
        {"--top-p", 'd', &top_p, "nucleus sampling: keep the most likely tokens up to this mass (default 1: off)"},
        {"--seed", 'i', &seed, "seed of the sampler (default 0)"},
        {"--ignore-eos", 'f', &ignore_eos, "do not stop at EOS"},
        {"--threads", 'i', &threads, "threads (default: one per CPU)"},
        {"--device", 's', &device, "cpu (default) or cpu-ref"},
        {"--draft", 's', &draft_path, "speculative decoding with this draft model (same vocabulary)"},
        {"--spec-k", 'i', &spec_k, "draft tokens proposed a step (default 4)"},
        {"--json", 'f', &json, "print JSON (ids, text, speed) at the end instead of streaming text"},
        {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("generate", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    if (!prompt == !prompt_ids) {
        fprintf(stderr, "spotq generate: give one of --prompt TEXT or --prompt-ids IDS (see spotq generate --help)\n");
        return SQ_EXIT_USAGE;
    }
    if (n_new < 0 || threads < 0) {
        fprintf(stderr, "spotq generate: -n and --threads must not be negative\n");
        return SQ_EXIT_USAGE;
    }
    if (spec_k < 1 || spec_k > 64) {
        fprintf(stderr, "spotq generate: --spec-k %d: give 1 to 64 draft tokens a step\n", spec_k);
        return SQ_EXIT_USAGE;
    }
    sq_err err = {0};
    sq_exec *ex = NULL;
    sq_model *m = NULL;
    sq_state *s = NULL;
    sq_sampler *smp = NULL, *dsmp = NULL;
    sq_model *dm = NULL;
    sq_state *ds = NULL;
    sq_spec_stats spec = {0};
    sq_tok *tok = NULL;
    int *ids = NULL, n_prompt = 0, rc = SQ_EXIT_FAIL;
    float *logits = NULL;
    if (sq_exec_new(&ex, device, threads, &err)) goto fail;
    sq_exec_set_int_prefill(ex, true); /* the prompt through the integer kernels, as llama.cpp runs it */
    if (sq_model_open(&m, pos[0], ex, &err)) goto fail;
    const sq_config *cfg = sq_model_config(m);
    const sq_ckpt *ck = sq_model_ckpt(m);
    if (ck->tokenizer_path[0] && sq_tok_load(&tok, ck->tokenizer_path, &err)) goto fail;
    if (prompt_ids) {
        if (parse_ids(prompt_ids, &ids, &n_prompt, &err)) goto fail;
    } else {
        if (!tok) {
            sq_fail(&err, SQ_ERR_IO, "%s: no tokenizer.json beside the model: use --prompt-ids", pos[0]);
            goto fail;
        }
        int *enc;
        int64_t ne;
        if (sq_tok_encode(tok, prompt, strlen(prompt), true, &enc, &ne, &err)) goto fail;
        int bos = sq_tok_bos(tok);
        if (ne + 1 > cfg->max_pos) {
            free(enc);
            sq_fail(&err, SQ_ERR_ARG, "the prompt has %lld tokens, more than the model's %d positions", (long long)ne, cfg->max_pos);
            goto fail;
        }
        ids = malloc((size_t)(ne + 1) * sizeof *ids);
        if (!ids) {
            free(enc);
            sq_fail(&err, SQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (bos >= 0) ids[n_prompt++] = bos;
        memcpy(ids + n_prompt, enc, (size_t)ne * sizeof *enc);
        n_prompt += (int)ne;
        free(enc);
        if (!n_prompt) {
            sq_fail(&err, SQ_ERR_ARG, "the prompt is empty and the tokenizer adds no BOS: nothing to continue");
            goto fail;
        }
    }
    for (int i = 0; i < n_prompt; i++)
        if (ids[i] >= cfg->vocab) {
            sq_fail(&err, SQ_ERR_FORMAT, "prompt token id %d (at %d) is outside the model's vocabulary of %d", ids[i], i, cfg->vocab);
            goto fail;
        }
    if (n_prompt > cfg->max_pos) {
        sq_fail(&err, SQ_ERR_ARG, "the prompt has %d tokens, more than the model's %d positions", n_prompt, cfg->max_pos);
        goto fail;
    }
    if (n_prompt + n_new > cfg->max_pos) {
        sq_log(SQ_LOG_WARN, "-n %d: the model has %d positions; generating %d tokens", n_new, cfg->max_pos, cfg->max_pos - n_prompt);
        n_new = cfg->max_pos - n_prompt;
    }
    int *all = realloc(ids, (size_t)(n_prompt + n_new + 1) * sizeof *ids);
    if (!all) {
        sq_fail(&err, SQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    ids = all;
    int room = n_prompt + n_new + (draft_path ? spec_k : 0);
    if (sq_state_new(&s, m, room, 0, &err) || sq_sampler_new(&smp, cfg->vocab, (float)temp, (float)top_p, (uint64_t)seed, &err))
        goto fail;
    if (draft_path) {
        if (sq_cmd_open_draft(draft_path, ex, m, room, &dm, &ds, &err) ||
            sq_sampler_new(&dsmp, cfg->vocab, (float)temp, (float)top_p, (uint64_t)seed ^ 0x5bd1e995u, &err))
            goto fail;
    }
    logits = malloc((size_t)cfg->vocab * sizeof *logits);
    if (!logits) {
        sq_fail(&err, SQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    sink g = {.cfg = cfg, .ids = ids, .n = n_prompt, .n_prompt = n_prompt, .ignore_eos = ignore_eos, .json = json, .tok = tok,
              .st = {tok, 0}};
    if (tok && !json) stream(&g.st, ids, n_prompt, false);
    double t0 = now_s(), t1;
    if (draft_path) { /* the prompt is run inside the first step: no separate prefill time */
        int n_out;
        sq_status st = sq_speculate(s, ds, smp, dsmp, spec_k, ids, n_prompt, n_new, emit, &g, &n_out, &spec, &err);
        t1 = t0;
        if (st) goto fail;
    } else {
        if (sq_forward(s, ids, n_prompt, &err) || sq_logits(s, n_prompt - 1, 1, logits, &err)) goto fail;
        t1 = now_s();
        for (int i = 0; i < n_new; i++) {
            int t = ids[g.n] = sq_sample(smp, logits);
            if (emit(&g, t)) break;
            if (i + 1 < n_new && (sq_forward(s, &t, 1, &err) || sq_logits(s, 0, 1, logits, &err))) goto fail;
        }
    }
    double t2 = now_s();
    int n = g.n, gen = n - n_prompt;
    const char *stop = g.eos ? "eos" : "length";
    double decode_rate = draft_path ? (t2 > t0 ? gen / (t2 - t0) : 0) : gen > 1 && t2 > t1 ? (gen - 1) / (t2 - t1) : 0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "prompt_ids", cJSON_CreateIntArray(ids, n_prompt));
        cJSON_AddItemToObject(o, "new_ids", cJSON_CreateIntArray(ids + n_prompt, gen));
        if (tok) {
            char *text;
            size_t len;
            if (sq_tok_decode(tok, ids, n, true, &text, &len, &err)) {
                cJSON_Delete(o);
                goto fail;
            }
            cJSON_AddStringToObject(o, "text", text);
            free(text);
        }
        cJSON_AddStringToObject(o, "stop", stop);
        cJSON_AddNumberToObject(o, "prefill_tokens_per_second", t1 > t0 ? n_prompt / (t1 - t0) : 0);
        cJSON_AddNumberToObject(o, "decode_tokens_per_second", decode_rate);
        if (draft_path) {
            cJSON *sp = cJSON_AddObjectToObject(o, "speculative");
            cJSON_AddNumberToObject(sp, "k", spec_k);
            cJSON_AddNumberToObject(sp, "target_steps", (double)spec.steps);
            cJSON_AddNumberToObject(sp, "drafted", (double)spec.drafted);
            cJSON_AddNumberToObject(sp, "accepted", (double)spec.accepted);
        }
        sq_cmd_print_json(o);
    } else {
        if (tok) stream(&g.st, ids, n, true);
        printf("\n");
    }
    if (draft_path)
        fprintf(stderr, "generate: %d prompt tokens, %d new (%.1f tokens/s with the prompt), stopped at %s; speculative: %lld target "
                        "steps, %lld of %lld drafted tokens accepted (%.0f%%)\n", n_prompt, gen, decode_rate, stop, (long long)spec.steps,
                (long long)spec.accepted, (long long)spec.drafted, spec.drafted ? 100.0 * (double)spec.accepted / (double)spec.drafted : 0.0);
    else
        fprintf(stderr, "generate: %d prompt tokens (%.1f tokens/s), %d new (%.1f tokens/s), stopped at %s\n", n_prompt,
                t1 > t0 ? n_prompt / (t1 - t0) : 0, gen, decode_rate, stop);
    rc = 0;
    goto done;
fail:
    rc = sq_cmd_fail(&err);
done:
    free(logits);
    free(ids);
    sq_sampler_free(smp);
    sq_sampler_free(dsmp);
    sq_state_free(s);
    sq_state_free(ds);
    sq_model_close(dm);
    sq_tok_free(tok);
    sq_model_close(m);
    sq_exec_free(ex);
    return rc;
}
