#!/bin/sh
# tokenize.sh: `spotq tokenize` gives sentencepiece's ids for the eval text (the golden in
# tests/golden/stories260K.json), --decode gives the text back, and the prompt matches the reference.
set -e
want=$(tr -d ' \n' < tests/golden/stories260K.json | sed 's/.*"eval_ids_with_bos":\[\([^]]*\)\].*/\1/' | tr ',' ' ')
got=$($SPOTQ tokenize models/stories260K data/tinystories/eval.txt)
[ "$got" = "$want" ] || { echo "tokenize: ids differ from the sentencepiece golden"; exit 1; }
tmp=$(mktemp)
echo "$got" > "$tmp"
$SPOTQ tokenize --decode models/stories260K "$tmp" | cmp - data/tinystories/eval.txt || { echo "tokenize --decode: not the text"; exit 1; }
rm -f "$tmp"
[ "$(printf 'Once upon a time' | $SPOTQ tokenize models/stories260K)" = "1 403 407 261 378" ] || { echo "tokenize: prompt ids"; exit 1; }
[ "$(printf 'Once upon a time' | $SPOTQ tokenize models/stories260K/tokenizer.json --json)" = '{"count": 5, "ids": [1, 403, 407, 261, 378]}' ] || { echo "tokenize --json"; exit 1; }
# special tokens in data are text unless asked (sentencepiece and llama.cpp treat them so)
[ "$(printf '<s>' | $SPOTQ tokenize models/stories260K)" != "1 1" ] || { echo "tokenize: <s> in text parsed as BOS"; exit 1; }
[ "$(printf '<s>' | $SPOTQ tokenize models/stories260K --parse-special)" = "1 1" ] || { echo "tokenize --parse-special"; exit 1; }
# .jsonl: one document per line, each with its BOS
printf '{"text": "Once upon a time"}\n{"text": "Once upon a time"}\n' > "$tmp.jsonl"
[ "$($SPOTQ tokenize models/stories260K "$tmp.jsonl")" = "1 403 407 261 378 1 403 407 261 378" ] || { echo "tokenize .jsonl"; exit 1; }
printf '{"txt": 1}\n' > "$tmp.jsonl"
err=$($SPOTQ tokenize models/stories260K "$tmp.jsonl" 2>&1) && { echo "bad jsonl accepted"; exit 1; }
echo "$err" | grep -q "$tmp.jsonl:1: no \"text\" string field" || { echo "jsonl error: $err"; exit 1; }
$SPOTQ tokenize --decode models/stories260K /dev/null >/dev/null
echo "99999" | $SPOTQ tokenize --decode models/stories260K 2>/dev/null && { echo "decode of an id out of range accepted"; exit 1; }
rm -f "$tmp.jsonl"
exit 0
