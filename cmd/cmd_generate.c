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
    "MODEL (--prompt TEXT | --prompt-ids IDS) [-n N] [--temp T] [--top-p P] [--seed S] [--ignore-eos] [--json]\n\n"
    "Continues the prompt (BOS first, special tokens in it recognised) token by token, greedy unless\n"
    "--temp > 0, until an EOS token of config.json or N new tokens. The text goes to stdout as it comes;\n"
    "a line of statistics to stderr. --prompt-ids takes ids (comma- or space-separated) as they are,\n"
    "so a model without tokenizer.json can run (the output is then ids).";

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

int cmd_generate(int argc, char **argv) {
    const char *prompt = NULL, *prompt_ids = NULL, *device = "cpu";
    int n_new = 128, threads = 0, seed = 0;
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
    sq_err err = {0};
    sq_exec *ex = NULL;
    sq_model *m = NULL;
    sq_state *s = NULL;
    sq_sampler *smp = NULL;
    sq_tok *tok = NULL;
    int *ids = NULL, n_prompt = 0, rc = SQ_EXIT_FAIL;
    float *logits = NULL;
    if (sq_exec_new(&ex, device, threads, &err) || sq_model_open(&m, pos[0], ex, &err)) goto fail;
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
    if (sq_state_new(&s, m, n_prompt + n_new, 0, &err) || sq_sampler_new(&smp, cfg->vocab, (float)temp, (float)top_p, (uint64_t)seed, &err))
        goto fail;
    logits = malloc((size_t)cfg->vocab * sizeof *logits);
    if (!logits) {
        sq_fail(&err, SQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    streamer st = {tok, 0};
    if (tok && !json) stream(&st, ids, n_prompt, false);
    double t0 = now_s();
    if (sq_forward(s, ids, n_prompt, &err) || sq_logits(s, n_prompt - 1, 1, logits, &err)) goto fail;
    double t1 = now_s();
    int n = n_prompt;
    const char *stop = "length";
    for (int i = 0; i < n_new; i++) {
        int t = sq_sample(smp, logits);
        if (!ignore_eos && is_eos(cfg, t)) {
            stop = "eos";
            break;
        }
        ids[n++] = t;
        if (!json) {
            if (tok) stream(&st, ids, n, false);
            else {
                printf("%s%d", n == n_prompt + 1 ? "" : " ", t);
                fflush(stdout);
            }
        }
        if (i + 1 < n_new && (sq_forward(s, &t, 1, &err) || sq_logits(s, 0, 1, logits, &err))) goto fail;
    }
    double t2 = now_s();
    int gen = n - n_prompt;
    double decode_rate = gen > 1 && t2 > t1 ? (gen - 1) / (t2 - t1) : 0;
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
        sq_cmd_print_json(o);
    } else {
        if (tok) stream(&st, ids, n, true);
        printf("\n");
    }
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
    sq_state_free(s);
    sq_tok_free(tok);
    sq_model_close(m);
    sq_exec_free(ex);
    return rc;
}
