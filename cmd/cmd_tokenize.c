/* cmd_tokenize.c: `spotq tokenize MODEL [FILE]`: ids as eval and calibration see them, or --decode. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/checkpoint.h"
#include "../formats/text.h"
#include "../formats/tokenizer.h"
#include "cmd.h"

static const char *USAGE = "MODEL [FILE] [--json] [--decode] [--parse-special]\n\n"
                           "Prints the token ids of FILE (or standard input) as one stream with BOS, space-separated on one\n"
                           "line, exactly as eval and calibration see them. .jsonl files: one document per line (\"text\").\n"
                           "--decode reads ids (space- or comma-separated, or a JSON array) and prints the text.\n"
                           "MODEL is a model directory or its tokenizer.json.";

/* MODEL may be a directory, a .safetensors file or the tokenizer.json itself. */
static sq_status open_tokenizer(const char *model, sq_tok **tok, sq_err *err) {
    char path[SQ_PATH_MAX];
    size_t n = strlen(model);
    if (n >= 5 && strcmp(model + n - 5, ".json") == 0) snprintf(path, sizeof path, "%s", model);
    else if (sq_is_dir(model)) {
        sq_status s = sq_path_join(path, sizeof path, model, "tokenizer.json", err);
        if (s) return s;
    } else {
        const char *slash = strrchr(model, '/');
        snprintf(path, sizeof path, "%.*stokenizer.json", slash ? (int)(slash - model + 1) : 0, model);
    }
    return sq_tok_load(tok, path, err);
}

static int decode(const sq_tok *tok, const char *file, sq_err *err) {
    char *text;
    size_t len;
    if (sq_text_read(file, &text, &len, err)) return sq_cmd_fail(err);
    int64_t n = 0, cap = 256;
    int *ids = malloc((size_t)cap * sizeof *ids);
    char *p = text;
    int rc = 0;
    while (ids && *p) {
        if (strchr(" \t\r\n,[]", *p)) { p++; continue; }
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 2147483647L) {
            sq_fail(err, SQ_ERR_FORMAT, "%s: '%.20s' is not a token id", file, p);
            rc = sq_cmd_fail(err);
            goto done;
        }
        if (n == cap) {
            int *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g) break;
            ids = g;
        }
        ids[n++] = (int)v;
        p = end;
    }
    char *out;
    size_t olen;
    if (!ids) { sq_fail(err, SQ_ERR_NOMEM, "out of memory"); rc = sq_cmd_fail(err); goto done; }
    if (sq_tok_decode(tok, ids, n, true, &out, &olen, err)) { rc = sq_cmd_fail(err); goto done; }
    fwrite(out, 1, olen, stdout);
    free(out);
done:
    free(ids);
    free(text);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    bool json = false, dec = false, special = false;
    const sq_opt opts[] = {
        {"--json", 'f', &json, "print {\"count\": N, \"ids\": [...]}"},
        {"--decode", 'f', &dec, "read ids and print the decoded text (special tokens skipped)"},
        {"--parse-special", 'f', &special, "match special tokens written in the text (default: treat them as text)"},
        {0}};
    const char *pos[2];
    int npos;
    int r = sq_args_parse("tokenize", USAGE, argc, argv, opts, pos, 2, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    const char *file = npos > 1 ? pos[1] : "-";
    sq_err err = {0};
    sq_tok *tok;
    if (open_tokenizer(pos[0], &tok, &err)) return sq_cmd_fail(&err);
    if (dec) {
        r = decode(tok, file, &err);
        sq_tok_free(tok);
        return r;
    }
    int *ids;
    int64_t n;
    if (sq_text_tokens(tok, file, special, &ids, &n, &err)) {
        sq_tok_free(tok);
        return sq_cmd_fail(&err);
    }
    if (json) printf("{\"count\": %lld, \"ids\": [", (long long)n);
    for (int64_t i = 0; i < n; i++) printf(i ? (json ? ", %d" : " %d") : "%d", ids[i]);
    printf(json ? "]}\n" : "\n");
    free(ids);
    sq_tok_free(tok);
    return 0;
}
