/* tokenizer.h: Hugging Face tokenizer.json, encode and decode, for the two BPE families spotq
 * supports: SentencePiece-style (Replace/Prepend/Metaspace normalizers, byte fallback) and GPT-2
 * byte-level (ByteLevel / Split pre-tokenizers with their regex). Regexes through PCRE2. */
#ifndef SQ_TOKENIZER_H
#define SQ_TOKENIZER_H

#include "../base/base.h"

typedef struct sq_tok sq_tok;

/* Parses tokenizer.json text (path is for messages). */
sq_status sq_tok_parse(sq_tok **out /* OUT */, const char *json, size_t len, const char *path, sq_err *err);
sq_status sq_tok_load(sq_tok **out /* OUT */, const char *path, sq_err *err);
void sq_tok_free(sq_tok *t); /* NULL is fine */

int sq_tok_vocab_size(const sq_tok *t);     /* largest id + 1, added tokens included */
const char *sq_tok_piece(const sq_tok *t, int id); /* the token's string, NULL when out of range */
int sq_tok_id(const sq_tok *t, const char *piece); /* -1 when absent */
/* The id the post-processor puts before a single sequence (BOS), or -1 when it adds none. */
int sq_tok_bos(const sq_tok *t);

/* Encodes text (n bytes) without BOS/EOS. Special added tokens in the text are matched only when
 * parse_special is true (the default for data files is false, as SentencePiece and llama.cpp do);
 * non-special added tokens are always matched. *ids is malloc'd (caller frees). */
sq_status sq_tok_encode(const sq_tok *t, const char *text, size_t n, bool parse_special,
                        int **ids /* OUT */, int64_t *n_ids /* OUT */, sq_err *err);

/* Decodes ids to text (NUL-terminated, malloc'd, caller frees), as the tokenizer.json decoder does;
 * skip_special drops special added tokens first (HF's skip_special_tokens). Ids out of range are an error. */
sq_status sq_tok_decode(const sq_tok *t, const int *ids, int64_t n_ids, bool skip_special, char **text /* OUT */,
                        size_t *len /* OUT */, sq_err *err);

#endif
