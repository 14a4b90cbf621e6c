/* args.c: long-option parsing shared by every command; --help is handled here, once. */
#include "../base/par.h"
#include "../runtime/runtime.h"
#include "cmd.h"

#include <cJSON.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sq_args_print_help(FILE *f, const char *cmd, const char *usage, const sq_opt *opts) {
    fprintf(f, "usage: spotq %s %s\n", cmd, usage);
    if (!opts || !opts[0].name) return;
    fprintf(f, "\noptions:\n");
    for (const sq_opt *o = opts; o->name; o++) {
        const char *arg = o->type == 's' || o->type == 'l' ? " ARG" : o->type == 'i' ? " N" : o->type == 'd' ? " X" : o->type == 'o' ? " [X]" : "";
        char left[64];
        snprintf(left, sizeof left, "%s%s", o->name, arg);
        fprintf(f, "  %-22s %s\n", left, o->help);
    }
    fprintf(f, "  %-22s %s\n", "--help", "show this help");
}

static int usage_error(const char *cmd, const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "spotq %s: ", cmd);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see spotq %s --help)\n", cmd);
    return SQ_EXIT_USAGE;
}

static int set_value(const char *cmd, const sq_opt *o, const char *v) {
    char *end;
    errno = 0;
    switch (o->type) {
    case 's': *(const char **)o->dest = v; return 0;
    case 'l': {
        sq_optlist *l = o->dest;
        if (l->n == (int)(sizeof l->v / sizeof *l->v)) return usage_error(cmd, "%s given too many times%s", o->name, "");
        l->v[l->n++] = v;
        return 0;
    }
    case 'i': {
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < -2147483647L || x > 2147483647L)
            return usage_error(cmd, "%s expects an integer, got '%s'", o->name, v);
        *(int *)o->dest = (int)x;
        return 0;
    }
    case 'd': {
        double x = strtod(v, &end);
        if (errno || *end || end == v) return usage_error(cmd, "%s expects a number, got '%s'", o->name, v);
        *(double *)o->dest = x;
        return 0;
    }
    }
    return usage_error(cmd, "%s%s: internal option type error", o->name, "");
}

int sq_args_parse(const char *cmd, const char *usage, int argc, char **argv, const sq_opt *opts, const char **pos, int max_pos,
                  int min_pos, int *npos) {
    *npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == 0) {
            if (*npos >= max_pos) return usage_error(cmd, "unexpected argument '%s'%s", a, "");
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) { only_pos = 1; continue; }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            sq_args_print_help(stdout, cmd, usage, opts);
            return -1;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const sq_opt *o = NULL;
        for (const sq_opt *p = opts; p && p->name; p++)
            if (strlen(p->name) == nlen && strncmp(p->name, a, nlen) == 0) { o = p; break; }
        if (!o) return usage_error(cmd, "unknown option '%s'%s", a, "");
        if (o->type == 'f' || o->type == 'n') {
            if (eq) return usage_error(cmd, "%s takes no value%s", o->name, "");
            *(bool *)o->dest = o->type == 'f';
            continue;
        }
        if (o->type == 'o') { /* the number is optional: the next argument only when it reads whole as one */
            sq_optnum *on = o->dest;
            const char *v = eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : NULL;
            char *end = NULL;
            errno = 0;
            double x = v ? strtod(v, &end) : 0;
            bool num = v && end != v && !*end && !errno;
            if (eq && !num) return usage_error(cmd, "%s expects a number, got '%s'", o->name, v);
            on->given = true, on->has_value = num;
            if (num) on->v = x, i += !eq;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return usage_error(cmd, "%s needs a value%s", o->name, "");
        int r = set_value(cmd, o, v);
        if (r) return r;
    }
    if (*npos < min_pos) return usage_error(cmd, "missing argument: usage: spotq %s %s", cmd, usage);
    return 0;
}

static bool progress_shown;

void sq_cmd_progress(void *user, const char *what, int done, int total, double seconds) {
    (void)user;
    progress_shown = true;
    if (strcmp(what, "quantize")) {
        fprintf(stderr, "\rspotq: %s: block %d/%d, %.1f s   ", what, done, total, seconds);
        return;
    }
    double eta = seconds / done * (total - done); /* each block costs about the same */
    fprintf(stderr, "\rspotq: %s: block %d/%d, %.1f s, ETA %d:%02d   ", what, done, total, seconds, (int)eta / 60, (int)eta % 60);
}

void sq_cmd_progress_end(void) {
    if (progress_shown) fputc('\n', stderr);
    progress_shown = false;
}

int sq_cmd_fail(const sq_err *err) {
    sq_err e = *err;
    if (sq_par_size() > 1) { /* under mpirun: one line for the job (base/par.h) */
        if (!e.code) e.code = SQ_ERR_INTERNAL;
        if (sq_par_started() && !sq_par_failed_together()) sq_par_abort(&e); /* this rank alone failed, mid-run */
        if (!sq_par_started()) sq_par_start(e.code, 0, &e); /* failed before the start: the others wait there */
        err = &e;
    }
    fprintf(stderr, "spotq: error: %s\n", err->msg);
    return err->code == SQ_ERR_ARG ? SQ_EXIT_USAGE : SQ_EXIT_FAIL;
}

int sq_cmd_print_json(cJSON *doc) {
    char *txt = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!txt) return SQ_EXIT_FAIL;
    printf("%s\n", txt);
    free(txt);
    return 0;
}

sq_status sq_cmd_open_draft(const char *path, sq_exec *ex, const sq_model *target, int room, sq_model **dm, sq_state **ds, sq_err *err) {
    sq_status s = sq_model_open(dm, path, ex, err);
    if (!s && sq_model_config(*dm)->vocab != sq_model_config(target)->vocab)
        s = sq_fail(err, SQ_ERR_FORMAT, "%s: the draft's vocabulary of %d is not the model's %d", path, sq_model_config(*dm)->vocab,
                    sq_model_config(target)->vocab);
    bool head8 = false; /* a draft whose F32 head outweighs its layers runs the head in 8 bits */
    if (!s) s = sq_model_draft_head(*dm, &head8, err);
    if (!s) s = sq_state_new(ds, *dm, room, 0, err);
    return s;
}

/* "4G", "500M", "100k", "123": bytes (binary multiples; a trailing B or iB is allowed). 0 when malformed. */
int64_t sq_parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    int64_t mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ll << 10; end++; break;
    case 'm': case 'M': mul = 1ll << 20; end++; break;
    case 'g': case 'G': mul = 1ll << 30; end++; break;
    case 't': case 'T': mul = 1ll << 40; end++; break;
    default: break;
    }
    if (*end == 'i' && mul > 1) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (end == s || *end || !(v >= 1) || v * (double)mul > 9e18) return 0;
    return (int64_t)(v * (double)mul);
}
