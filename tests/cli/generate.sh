#!/bin/sh
# generate.sh: `spotq generate` continues the golden prompt greedily token for token as the reference
# does (64 new tokens, no stop at EOS), streams the same text, samples repeatably with a seed, runs a
# model without tokenizer.json from ids, gives the same greedy tokens with a draft model (speculative
# decoding; the same text whether EOS stops it or not), and refuses bad input with one line.
set -e
M=models/stories260K
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "generate: $*"; exit 1; }

want_ids="432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13, 438, 310, 439, 419, 357, 336"
out=$($SPOTQ generate $M --prompt "Once upon a time" -n 64 --ignore-eos --json 2>/dev/null)
echo "$out" | tr -d '\n\t' | grep -qF "\"prompt_ids\":[1, 403, 407, 261, 378]" || fail "prompt ids: $out"
echo "$out" | tr -d '\n\t' | grep -qF "\"new_ids\":[$want_ids]" || fail "greedy ids: $out"

# streamed text: the prompt and its continuation, then a newline
printf "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said\n" >"$tmp/want"
$SPOTQ generate $M --prompt "Once upon a time" -n 64 --ignore-eos >"$tmp/got" 2>"$tmp/err"
cmp -s "$tmp/want" "$tmp/got" || { diff "$tmp/want" "$tmp/got"; fail "streamed text"; }
grep -qE "^generate: 5 prompt tokens .* 64 new .* stopped at length$" "$tmp/err" || fail "stats line: $(cat "$tmp/err")"

# sampling: the same seed gives the same text, another seed (very likely) another
a=$($SPOTQ generate $M --prompt "Once upon a time" -n 40 --temp 0.9 --top-p 0.95 --seed 7 2>/dev/null)
b=$($SPOTQ generate $M --prompt "Once upon a time" -n 40 --temp 0.9 --top-p 0.95 --seed 7 2>/dev/null)
c=$($SPOTQ generate $M --prompt "Once upon a time" -n 40 --temp 0.9 --top-p 0.95 --seed 8 2>/dev/null)
[ "$a" = "$b" ] || fail "same seed, different text"
[ "$a" != "$c" ] || fail "seeds 7 and 8 gave the same 40 tokens"

# EOS stops generation. stories260K ends a story with BOS (id 1), not its config's EOS (2): a copy
# whose config names 1 as EOS stops within 400 tokens for some of these seeds, without printing it.
mkdir "$tmp/eos"
ln -s "$PWD/$M/model.safetensors" "$tmp/eos/model.safetensors"
cp $M/tokenizer.json "$tmp/eos/"
sed 's/"eos_token_id": 2/"eos_token_id": 1/' $M/config.json >"$tmp/eos/config.json"
stopped=0
for seed in 1 2 3 4 5 6; do
    out=$($SPOTQ generate "$tmp/eos" --prompt "Once upon a time" -n 400 --temp 0.8 --seed $seed --json 2>/dev/null | tr -d '\n\t')
    case $out in *'"stop":"eos"'*) stopped=$((stopped + 1));; esac
    echo "$out" | grep -qE '"new_ids":\[[^]]*[[ ]1[],]' && fail "EOS id printed: $out"
done
[ $stopped -gt 0 ] || fail "no stop at EOS in 6 samples"

# speculative decoding: greedy output is the model's own, whatever the draft (the upcycled MoE fixture
# drafts poorly) and k; the statistics line and the JSON say how many drafted tokens were kept
for k in 1 4 9; do
    out=$($SPOTQ generate $M --prompt "Once upon a time" -n 64 --ignore-eos --json --draft tests/fixtures/moe/mixtral --spec-k $k 2>"$tmp/err")
    echo "$out" | tr -d '\n\t' | grep -qF "\"new_ids\":[$want_ids]" || fail "speculative greedy ids, k $k: $out"
    echo "$out" | tr -d '\n\t' | grep -qE "\"speculative\":\{\"k\":$k,\"target_steps\":[0-9]+,\"drafted\":[0-9]+,\"accepted\":[0-9]+\}" ||
        fail "speculative JSON, k $k: $out"
    grep -qE "^generate: 5 prompt tokens, 64 new .* speculative: [0-9]+ target steps, [0-9]+ of [0-9]+ drafted tokens accepted" "$tmp/err" ||
        fail "speculative stats line: $(cat "$tmp/err")"
done
$SPOTQ generate $M --prompt "Once upon a time" -n 64 --ignore-eos --draft $M >"$tmp/got" 2>/dev/null
cmp -s "$tmp/want" "$tmp/got" || fail "speculative streamed text"
b=$($SPOTQ generate "$tmp/eos" --prompt "Once upon a time" -n 400 --temp 0.8 --seed 3 --json --draft $M 2>/dev/null | tr -d '\n\t' | sed 's/"decode.*//')
echo "$b" | grep -q '"stop":"eos"' || fail "sampled speculative output did not stop at EOS: $b"

# a model without tokenizer.json runs from ids and prints ids
out=$($SPOTQ generate tests/fixtures/runtime/qwen2_bias --prompt-ids "1,5,9,17" -n 6 2>/dev/null)
echo "$out" | grep -qE "^[0-9]+( [0-9]+){5}$" || fail "ids out: '$out'"

. tests/cli/lib/expect.sh
expect 2 "one of --prompt" -- generate $M
expect 2 "one of --prompt" -- generate $M --prompt hi --prompt-ids 1
expect 1 "outside the model's vocabulary of 96" -- generate tests/fixtures/runtime/qwen2_bias --prompt-ids "1,500"
expect 1 "the draft's vocabulary of 96 is not the model's 512" -- generate $M --prompt hi --draft tests/fixtures/runtime/qwen2_bias
expect 2 "--spec-k 0: give 1 to 64" -- generate $M --prompt hi --draft $M --spec-k 0
expect 1 "use --prompt-ids" -- generate tests/fixtures/runtime/qwen2_bias --prompt hello
expect 2 "top-p" -- generate $M --prompt hi --temp 1 --top-p 0
exit 0
