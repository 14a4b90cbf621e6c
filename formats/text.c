/* text.c: reading .txt and .jsonl text and turning it into one token stream. */
#include "text.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sq_status sq_text_read(const char *path, char **text, size_t *len, sq_err *err) {
    return sq_read_file(strcmp(path, "-") == 0 ? "/dev/stdin" : path, text, len, err);
}

/* Appends BOS (if any) and the encoding of one document to the stream. */
static sq_status append_doc(const sq_tok *tok, const char *s, size_t n, bool parse_special, int **ids, int64_t *count,
                            int64_t *cap, sq_err *err) {
    int *doc = NULL;
    int64_t m = 0;
    sq_status st = sq_tok_encode(tok, s, n, parse_special, &doc, &m, err);
    if (st) return st;
    int bos = sq_tok_bos(tok);
    int64_t need = *count + m + 1;
    if (need > *cap) {
        int64_t c = need * 2;
        int *g = realloc(*ids, (size_t)c * sizeof *g);
        if (!g) { free(doc); return sq_fail(err, SQ_ERR_NOMEM, "out of memory for the token stream"); }
        *ids = g;
        *cap = c;
    }
    if (bos >= 0) (*ids)[(*count)++] = bos;
    memcpy(*ids + *count, doc, (size_t)m * sizeof *doc);
    *count += m;
    free(doc);
    return SQ_OK;
}

static int is_jsonl(const char *path) {
    size_t n = strlen(path);
    return n >= 6 && strcmp(path + n - 6, ".jsonl") == 0;
}

sq_status sq_text_tokens(const sq_tok *tok, const char *path, bool parse_special, int **ids, int64_t *n, sq_err *err) {
    *ids = NULL;
    *n = 0;
    char *text;
    size_t len;
    sq_status s = sq_text_read(path, &text, &len, err);
    if (s) return s;
    if (!sq_utf8_valid(text, len)) {
        free(text);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid UTF-8 text", path);
    }
    int64_t cap = 0;
    if (!is_jsonl(path)) {
        s = append_doc(tok, text, len, parse_special, ids, n, &cap, err);
    } else {
        int64_t line = 0;
        for (char *p = text; *p && !s;) {
            char *nl = strchr(p, '\n');
            size_t l = nl ? (size_t)(nl - p) : strlen(p);
            line++;
            size_t k = 0;
            while (k < l && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
            if (k < l) {
                cJSON *doc = cJSON_ParseWithLength(p, l);
                const cJSON *t = doc ? cJSON_GetObjectItemCaseSensitive(doc, "text") : NULL;
                if (!doc) s = sq_fail(err, SQ_ERR_FORMAT, "%s:%lld: not valid JSON", path, (long long)line);
                else if (!cJSON_IsString(t)) s = sq_fail(err, SQ_ERR_FORMAT, "%s:%lld: no \"text\" string field", path, (long long)line);
                else s = append_doc(tok, t->valuestring, strlen(t->valuestring), parse_special, ids, n, &cap, err);
                cJSON_Delete(doc);
            }
            p += l + (nl ? 1 : 0);
        }
        if (!s && *n == 0) s = sq_fail(err, SQ_ERR_FORMAT, "%s: no documents", path);
    }
    free(text);
    if (s) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return s;
}
