/* tokenizer.h: Hugging Face tokenizer.json, encode and decode, for the two BPE families spotq
 * supports: SentencePiece-style (Replace/Prepend/Metaspace normalizers, byte fallback) and GPT-2
 * byte-level (ByteLevel / Split pre-tokenizers with their regex). Regexes through PCRE2.
 *
 * The ids and text are those of the `tokenizers` library (held to it by tests/unit/test_tokenizer.c):
 *   normalizers     Sequence, Replace (String or Regex), Prepend, Strip, NFC (see below)
 *   pre-tokenizers  Sequence, Metaspace, ByteLevel, Split (all five behaviors, invert), Digits,
 *                   Whitespace, WhitespaceSplit
 *   model           BPE: merges as "a b" or [a, b], byte_fallback, unk_token, fuse_unk, ignore_merges,
 *                   continuing_subword_prefix, end_of_word_suffix (no dropout)
 *   decoders        Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel; none: the
 *                   tokens joined with spaces
 *   post-processor  only read for the BOS: TemplateProcessing, Sequence, ByteLevel, Roberta/Bert
 * Anything else is refused at load with SQ_ERR_UNSUPPORTED naming the type; a malformed file (bad
 * JSON, no model, a bad regex, ids out of range, a merge of unknown tokens) with SQ_ERR_FORMAT.
 * Added tokens get the ids HF gives them: the id their text already has, else the next one after the
 * vocabulary (what the file says, for files HF wrote).
 * NFC: spotq has no composition tables; text that UAX #15's quick check cannot prove NFC-stable makes
 * encode fail with SQ_ERR_UNSUPPORTED. Precomposed Latin, Greek, Cyrillic, CJK, Devanagari and emoji
 * pass; decomposed accents, Hangul jamo and some Indic vowel signs (Bengali, Tamil...) do not.
 *
 * A tokenizer is read-only once loaded: threads may encode and decode with one at the same time. */
#ifndef SQ_TOKENIZER_H
#define SQ_TOKENIZER_H

#include "../base/base.h"

typedef struct sq_tok sq_tok;

/* Parses tokenizer.json text (len bytes, need not be NUL-terminated; path is for messages). The
 * tokenizer keeps its own copies: json may be freed afterwards. */
sq_status sq_tok_parse(sq_tok **out /* OUT */, const char *json, size_t len, const char *path, sq_err *err);
sq_status sq_tok_load(sq_tok **out /* OUT */, const char *path, sq_err *err);
void sq_tok_free(sq_tok *t); /* NULL is fine */

int sq_tok_vocab_size(const sq_tok *t);     /* largest id + 1, added tokens included */
/* The token's string (owned by t, valid until sq_tok_free), NULL when out of range or an unused id.
 * As in HF, a normalized added token is named by its normalised text. */
const char *sq_tok_piece(const sq_tok *t, int id);
int sq_tok_id(const sq_tok *t, const char *piece); /* -1 when absent; added tokens first, as HF */
/* The BOS put before each document, or -1 when none: as transformers and llama.cpp decide it, the
 * add_bos_token of tokenizer_config.json beside tokenizer.json when it says (sq_tok_load reads it), else
 * the id tokenizer.json's post-processor puts before a single sequence. */
int sq_tok_bos(const sq_tok *t);
/* Which rule gave sq_tok_bos, in words ("tokenizer_config.json add_bos_token false", ...). */
const char *sq_tok_bos_rule(const sq_tok *t);

/* Encodes text (n bytes) without BOS/EOS. Special added tokens in the text are matched only when
 * parse_special is true (the default for data files is false, as SentencePiece and llama.cpp do);
 * non-special added tokens are always matched. Bytes that are not UTF-8 are read as U+FFFD (Python's
 * errors="replace"). *ids is malloc'd, even when empty (caller frees); on failure it is NULL. */
sq_status sq_tok_encode(const sq_tok *t, const char *text, size_t n, bool parse_special,
                        int **ids /* OUT */, int64_t *n_ids /* OUT */, sq_err *err);

/* Decodes ids to text (NUL-terminated, malloc'd, caller frees), as the tokenizer.json decoder does;
 * skip_special drops special added tokens first (HF's skip_special_tokens). Bytes that do not form
 * UTF-8 become U+FFFD as HF has it. Ids out of range (or unused) are an error (SQ_ERR_ARG). */
sq_status sq_tok_decode(const sq_tok *t, const int *ids, int64_t n_ids, bool skip_special, char **text /* OUT */,
                        size_t *len /* OUT */, sq_err *err);

#endif
