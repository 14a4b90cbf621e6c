/* text.h: calibration and eval text files -> one token stream, exactly as eval and calibration see it.
 * .txt: the whole file is one document; .jsonl: one JSON object per line with a "text" field, each
 * line a document. Each document is encoded on its own, with BOS (when the tokenizer adds one)
 * before it, and the documents are concatenated. "-" reads standard input as .txt. */
#ifndef SQ_TEXT_H
#define SQ_TEXT_H

#include "tokenizer.h"

sq_status sq_text_tokens(const sq_tok *tok, const char *path, bool parse_special, int **ids /* OUT, malloc'd */,
                         int64_t *n /* OUT */, sq_err *err);

/* Reads a file (or "-" for stdin) whole; NUL-terminated, caller frees. */
sq_status sq_text_read(const char *path, char **text /* OUT */, size_t *len /* OUT */, sq_err *err);

#endif
