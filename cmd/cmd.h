/* cmd.h: the spotq command table, option parsing, and the exit codes of SPEC.md. */
#ifndef SQ_CMD_H
#define SQ_CMD_H

#include <stdio.h>

#include "../base/base.h"

enum { SQ_EXIT_OK = 0, SQ_EXIT_FAIL = 1, SQ_EXIT_USAGE = 2, SQ_EXIT_GATE = 3 };

/* One option of a command. type: 'f' flag (bool), 's' string, 'i' int, 'd' double, 'l' a repeatable
 * string collected into an sq_optlist, 'n' a flag that sets a bool to false, 'o' a flag with an optional
 * number (sq_optnum: `--opt`, `--opt X` where X reads whole as a number, or `--opt=X`). */
typedef struct {
    const char *v[64];
    int n;
} sq_optlist;

typedef struct {
    bool given;         /* the option was given... */
    bool has_value;     /* ...with this value (else the library's default applies) */
    double v;
} sq_optnum;

typedef struct {
    const char *name;   /* "--json" */
    char type;
    void *dest;         /* bool *, const char **, int *, double *, sq_optnum * */
    const char *help;   /* one line; the default is stated here */
} sq_opt;

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} sq_cmd;

/* Parses argv[1..] of a command. Positional arguments go to pos (at most max_pos). Handles --help
 * (prints usage and the options, returns -1: the caller exits 0). On a usage error prints one line
 * and returns SQ_EXIT_USAGE. Returns 0 otherwise. */
int sq_args_parse(const char *cmd, const char *usage, int argc, char **argv, const sq_opt *opts, const char **pos, int max_pos,
                  int min_pos, int *npos);
void sq_args_print_help(FILE *f, const char *cmd, const char *usage, const sq_opt *opts);

/* Prints a JSON document (and a newline) to stdout and deletes it; SQ_EXIT_FAIL when it cannot be printed. */
struct cJSON;
int sq_cmd_print_json(struct cJSON *doc);

/* Prints "spotq: error: MSG" and returns SQ_EXIT_FAIL (or SQ_EXIT_USAGE for SQ_ERR_ARG). */
int sq_cmd_fail(const sq_err *err);

/* A library's progress callback for a terminal: "\rspotq: WHAT: block DONE/TOTAL, S s[, ETA m:ss]" on
 * stderr (quantize adds the ETA from the blocks so far); sq_cmd_progress_end ends that line, if any. */
void sq_cmd_progress(void *user, const char *what, int done, int total, double seconds);
void sq_cmd_progress_end(void);

/* "4G", "500M", "100k", "123": bytes (binary multiples; a trailing B or iB is allowed). 0 when malformed. */
int64_t sq_parse_size(const char *s);

/* generate and bench --draft: opens the draft model on ex with a state of room positions; a draft
 * whose vocabulary is not target's is an error naming it. */
struct sq_model;
struct sq_state;
struct sq_exec;
sq_status sq_cmd_open_draft(const char *path, struct sq_exec *ex, const struct sq_model *target, int room, struct sq_model **dm /* OUT */,
                            struct sq_state **ds /* OUT */, sq_err *err);

int cmd_inspect(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_calib(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
