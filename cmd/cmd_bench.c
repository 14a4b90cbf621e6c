/* cmd_bench.c: `spotq bench MODEL`: prefill and decode tokens/s, and peak memory. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../kernels/backend.h"
#include "../runtime/runtime.h"
#include "cmd.h"

static const char *USAGE =
    "MODEL [--prompt-len N] [--gen N] [--reps N] [--threads N] [--draft DRAFT [--spec-k K]] [--json]\n\n"
    "Times a prefill of --prompt-len tokens (through the last position's logits) and then --gen decode\n"
    "steps (one token each, greedy), after one untimed warm-up; reports the median of --reps runs and\n"
    "the peak resident memory (the mmap'd weights included). The tokens are synthetic: no tokenizer\n"
    "is needed. With --draft, also the same prompt and --gen tokens decoded speculatively (DRAFT\n"
    "proposing K tokens a step, greedy): the share of drafted tokens accepted and the speed-up over\n"
    "plain decoding (prefill and decode together, the speculative run's prefill being its first step).";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One speculative run (greedy) of the prompt and gen tokens: seconds, and the statistics. */
static sq_status run_spec(sq_state *s, sq_state *ds, sq_sampler *g, sq_sampler *dg, int k, const int *prompt, int np, int gen, int *ids,
                          double *t, sq_spec_stats *st, sq_err *err) {
    sq_status e;
    if ((e = sq_state_rewind(s, 0, err)) || (e = sq_state_rewind(ds, 0, err))) return e;
    memcpy(ids, prompt, (size_t)np * sizeof *ids);
    int n;
    double t0 = now_s();
    e = sq_speculate(s, ds, g, dg, k, ids, np, gen, NULL, NULL, &n, st, err);
    *t = now_s() - t0;
    return e;
}

/* One run: seconds of the prefill and of the decode steps. */
static sq_status run_once(sq_state *s, const int *prompt, int np, int gen, float *logits, int vocab, double *tp, double *td, sq_err *err) {
    sq_status st;
    if ((st = sq_state_rewind(s, 0, err))) return st;
    double t0 = now_s();
    if ((st = sq_forward(s, prompt, np, err)) || (st = sq_logits(s, np - 1, 1, logits, err))) return st;
    double t1 = now_s();
    for (int i = 0; i < gen; i++) {
        int t = sq_argmax(logits, vocab);
        if ((st = sq_forward(s, &t, 1, err)) || (st = sq_logits(s, 0, 1, logits, err))) return st;
    }
    *tp = t1 - t0;
    *td = now_s() - t1;
    return SQ_OK;
}

int cmd_bench(int argc, char **argv) {
    int prompt_len = 256, gen = 64, reps = 3, threads = 0, spec_k = 4;
    bool json = false;
    const char *device = "cpu", *draft_path = NULL;
    const sq_opt opts[] = {
        {"--prompt-len", 'i', &prompt_len, "prompt tokens of the prefill (default 256)"},
        {"--gen", 'i', &gen, "decode steps after it (default 64)"},
        {"--reps", 'i', &reps, "timed runs; the median is reported (default 3)"},
        {"--threads", 'i', &threads, "threads (default: one per CPU)"},
        {"--device", 's', &device, "cpu (default) or cpu-ref"},
        {"--draft", 's', &draft_path, "also decode speculatively with this draft model (same vocabulary)"},
        {"--spec-k", 'i', &spec_k, "draft tokens proposed a step (default 4)"},
        {"--json", 'f', &json, "print JSON instead of text"},
        {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("bench", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    if (prompt_len < 1 || gen < 0 || reps < 1 || threads < 0) {
        fprintf(stderr, "spotq bench: --prompt-len and --reps must be positive, --gen and --threads not negative\n");
        return SQ_EXIT_USAGE;
    }
    if (spec_k < 1 || spec_k > 64) {
        fprintf(stderr, "spotq bench: --spec-k %d: give 1 to 64 draft tokens a step\n", spec_k);
        return SQ_EXIT_USAGE;
    }
    sq_err err = {0};
    sq_exec *ex = NULL;
    sq_model *m = NULL;
    sq_state *s = NULL, *ds = NULL;
    sq_model *dm = NULL;
    sq_sampler *g = NULL, *dg = NULL;
    int *prompt = NULL, *ids = NULL, rc = SQ_EXIT_FAIL;
    float *logits = NULL;
    double *tp = NULL, *td = NULL, *tsp = NULL;
    sq_spec_stats spec = {0};
    if (sq_exec_new(&ex, device, threads, &err)) goto fail;
    sq_exec_set_int_prefill(ex, true); /* the prompt through the integer kernels, as llama.cpp runs it */
    if (sq_model_open(&m, pos[0], ex, &err)) goto fail;
    const sq_config *cfg = sq_model_config(m);
    if (prompt_len + gen > cfg->max_pos)
        sq_log(SQ_LOG_WARN, "--prompt-len + --gen = %d is beyond the model's %d positions (timed anyway)", prompt_len + gen, cfg->max_pos);
    int room = prompt_len + gen + (draft_path ? spec_k : 0);
    if (sq_state_new(&s, m, room, 0, &err)) goto fail;
    if (draft_path && (sq_cmd_open_draft(draft_path, ex, m, room, &dm, &ds, &err) || sq_sampler_new(&g, cfg->vocab, 0, 1, 0, &err) ||
                       sq_sampler_new(&dg, cfg->vocab, 0, 1, 1, &err)))
        goto fail;
    prompt = malloc((size_t)prompt_len * sizeof *prompt);
    ids = malloc((size_t)room * sizeof *ids);
    logits = malloc((size_t)cfg->vocab * sizeof *logits);
    tp = calloc((size_t)reps, sizeof *tp);
    td = calloc((size_t)reps, sizeof *td);
    tsp = calloc((size_t)reps, sizeof *tsp);
    if (!prompt || !ids || !logits || !tp || !td || !tsp) {
        sq_fail(&err, SQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < prompt_len; i++) prompt[i] = (int)(((int64_t)i * 7919 + 11) % cfg->vocab);
    if (cfg->bos_id >= 0) prompt[0] = cfg->bos_id;
    double wp, wd;
    if (run_once(s, prompt, prompt_len, gen < 4 ? gen : 4, logits, cfg->vocab, &wp, &wd, &err)) goto fail; /* warm-up: pages in the weights */
    for (int i = 0; i < reps; i++)
        if (run_once(s, prompt, prompt_len, gen, logits, cfg->vocab, &tp[i], &td[i], &err)) goto fail;
    if (draft_path) {
        double w;
        if (run_spec(s, ds, g, dg, spec_k, prompt, prompt_len, gen < 4 ? gen : 4, ids, &w, &spec, &err)) goto fail; /* warm-up */
        for (int i = 0; i < reps; i++)
            if (run_spec(s, ds, g, dg, spec_k, prompt, prompt_len, gen, ids, &tsp[i], &spec, &err)) goto fail;
    }
    qsort(tp, (size_t)reps, sizeof *tp, cmp_double);
    qsort(td, (size_t)reps, sizeof *td, cmp_double);
    qsort(tsp, (size_t)reps, sizeof *tsp, cmp_double);
    double p = tp[reps / 2], d = td[reps / 2], ts = tsp[reps / 2];
    double accept = spec.drafted ? (double)spec.accepted / (double)spec.drafted : 0, speedup = ts > 0 ? (p + d) / ts : 0;
    double prefill_rate = p > 0 ? prompt_len / p : 0, decode_rate = d > 0 && gen ? gen / d : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mib = (double)ru.ru_maxrss / 1024.0;
    char dt[128];
    int64_t nparams, nbytes;
    sq_ckpt_describe(sq_model_ckpt(m), dt, sizeof dt, &nparams, &nbytes);
    double bpw = nparams ? 8.0 * (double)nbytes / (double)nparams : 0;
    int nthreads = sq_exec_threads(ex);
    /* The kernels the run used (the ISA variants, OpenBLAS's core): a rate means little without them. */
    char cpu[256] = "cpu";
    const sq_backend_i *be;
    sq_err qerr = {0};
    if (sq_backend_get("cpu", &be, &qerr) || be->query(cpu, sizeof cpu, &qerr)) snprintf(cpu, sizeof cpu, "cpu");
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", pos[0]);
        cJSON_AddStringToObject(o, "architecture", sq_arch_name(cfg->arch));
        cJSON_AddStringToObject(o, "weights_dtype", dt);
        cJSON_AddNumberToObject(o, "parameters", (double)nparams);
        cJSON_AddNumberToObject(o, "bits_per_weight", bpw);
        cJSON_AddNumberToObject(o, "threads", nthreads);
        cJSON_AddStringToObject(o, "cpu", cpu);
        cJSON_AddNumberToObject(o, "prompt_len", prompt_len);
        cJSON_AddNumberToObject(o, "gen", gen);
        cJSON_AddNumberToObject(o, "reps", reps);
        cJSON_AddNumberToObject(o, "prefill_tokens_per_second", prefill_rate);
        cJSON_AddNumberToObject(o, "decode_tokens_per_second", decode_rate);
        cJSON_AddNumberToObject(o, "prefill_seconds", p);
        cJSON_AddNumberToObject(o, "decode_seconds", d);
        cJSON_AddNumberToObject(o, "peak_rss_mib", rss_mib);
        if (draft_path) {
            cJSON *sp = cJSON_AddObjectToObject(o, "speculative");
            cJSON_AddStringToObject(sp, "draft", draft_path);
            cJSON_AddNumberToObject(sp, "k", spec_k);
            cJSON_AddNumberToObject(sp, "seconds", ts);
            cJSON_AddNumberToObject(sp, "target_steps", (double)spec.steps);
            cJSON_AddNumberToObject(sp, "acceptance", accept);
            cJSON_AddNumberToObject(sp, "speedup", speedup);
        }
        sq_cmd_print_json(o);
    } else {
        printf("model:     %s (%s, %d layers, hidden %d, %s weights, %.2f bits per weight)\n", pos[0], sq_arch_name(cfg->arch), cfg->n_layers,
               cfg->hidden, dt, bpw);
        printf("threads:   %d (%s)\n", nthreads, cpu);
        printf("prefill:   %8.1f tokens/s  (%d tokens in %.3f s, median of %d)\n", prefill_rate, prompt_len, p, reps);
        printf("decode:    %8.1f tokens/s  (%d tokens in %.3f s, after %d of prompt)\n", decode_rate, gen, d, prompt_len);
        if (draft_path)
            printf("speculative: %.3f s for the prompt and %d tokens with %s, k %d: %.0f%% of drafted tokens accepted, %lld target "
                   "steps, %.2fx plain decoding\n", ts, gen, draft_path, spec_k, 100 * accept, (long long)spec.steps, speedup);
        printf("peak RSS:  %.1f MiB\n", rss_mib);
    }
    rc = 0;
    goto done;
fail:
    rc = sq_cmd_fail(&err);
done:
    free(prompt);
    free(ids);
    free(logits);
    free(tp);
    free(td);
    free(tsp);
    sq_state_free(s);
    sq_state_free(ds);
    sq_sampler_free(g);
    sq_sampler_free(dg);
    sq_model_close(dm);
    sq_model_close(m);
    sq_exec_free(ex);
    return rc;
}
