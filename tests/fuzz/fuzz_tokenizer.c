/* fuzz_tokenizer.c: libFuzzer target for tokenizer.json: the input is a whole file; when it parses, a few
 * fixed texts (and whatever follows a NUL byte in the input) are encoded and decoded again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const texts[] = {
    "Hello world",
    "  two  spaces\tand\ttabs\n\nnew lines ",
    "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 e\xcc\x81 1234567 it's",
    "<s>x</s><unk><|endoftext|><mask> <|begin_of_text|>",
    "\xe2\x96\x81 <0x41> \xff\xfe broken \xe4\xb8",
    "",
};

/* Every id in range and named; decoding it back must work. */
static void round_trip(const sq_tok *t, const char *s, size_t n, bool special) {
    int *ids = NULL;
    int64_t n_ids = 0;
    sq_err err;
    if (sq_tok_encode(t, s, n, special, &ids, &n_ids, &err) != SQ_OK) {
        if (!err.msg[0] || strchr(err.msg, '\n') || ids) abort();
        return;
    }
    for (int64_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= sq_tok_vocab_size(t) || !sq_tok_piece(t, ids[i])) abort();
    for (int skip = 0; skip < 2; skip++) {
        char *text = NULL;
        size_t len = 0;
        if (sq_tok_decode(t, ids, n_ids, skip, &text, &len, &err) == SQ_OK) {
            if (!text || strlen(text) > len) abort(); /* NUL-terminated, len bytes (a NUL byte may be inside) */
            free(text);
        } else if (!err.msg[0] || text) {
            abort();
        }
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* the JSON is what comes before the first NUL; the rest is one more text to encode */
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    char *json = malloc(json_len ? json_len : 1); /* a copy: a read past it is an overflow ASan sees */
    if (!json) return 0;
    memcpy(json, data, json_len);
    sq_tok *t = NULL;
    sq_err err;
    if (sq_tok_parse(&t, json, json_len, "fuzz/tokenizer.json", &err) == SQ_OK) {
        if (sq_tok_vocab_size(t) <= 0 || sq_tok_bos(t) >= sq_tok_vocab_size(t)) abort();
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
            for (int special = 0; special < 2; special++) round_trip(t, texts[i], strlen(texts[i]), special);
        if (nul) {
            size_t n = size - json_len - 1;
            char *extra = malloc(n ? n : 1);
            if (extra) {
                memcpy(extra, nul + 1, n);
                round_trip(t, extra, n, true);
                free(extra);
            }
        }
        int few[8];
        for (int i = 0; i < 8; i++) few[i] = i % sq_tok_vocab_size(t);
        char *text = NULL;
        size_t len;
        if (sq_tok_decode(t, few, 8, false, &text, &len, &err) == SQ_OK) free(text);
        sq_tok_free(t);
    } else if (!err.msg[0] || strchr(err.msg, '\n') || t) {
        abort(); /* every error is one non-empty line, and nothing is handed out */
    }
    free(json);
    return 0;
}
