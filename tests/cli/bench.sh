#!/bin/sh
# bench.sh: `spotq bench` reports positive prefill and decode rates and the peak RSS, as text and JSON,
# on a model without tokenizer.json too.
set -e
. tests/cli/lib/num.sh
fail() { echo "bench: $*"; exit 1; }
out=$($SPOTQ bench models/stories260K --prompt-len 32 --gen 8 --reps 1 --json)
for k in prefill_tokens_per_second decode_tokens_per_second peak_rss_mib; do
    v=$(echo "$out" | awk -F'[:,]' -v k="\"$k\"" '$1 ~ k { gsub(/[ \t]/, "", $2); print $2 }')
    isnum "$v" && awk -v v="$v" 'BEGIN { exit !(v > 0) }' || fail "$k = '$v': $out"
done
echo "$out" | grep -qF '"weights_dtype":	"F32"' || fail "dtype: $out"
# The kernels the rates came from: the ISA variants and OpenBLAS's core, which OPENBLAS_CORETYPE chooses.
OPENBLAS_CORETYPE=Haswell $SPOTQ bench models/stories260K --prompt-len 4 --gen 1 --reps 1 | grep -q '^threads: .*kernels (cpu has .*), OpenBLAS Haswell)$' ||
    fail "no OpenBLAS core on the threads line: $($SPOTQ bench models/stories260K --prompt-len 4 --gen 1 --reps 1)"
echo "$out" | grep -q '"cpu":.*OpenBLAS [A-Za-z]' || fail "no cpu field: $out"
out=$($SPOTQ bench tests/fixtures/runtime/llama_bf16 --prompt-len 16 --gen 4 --reps 1 --threads 1)
echo "$out" | grep -qE "^prefill: +[0-9.]+ tokens/s +\(16 tokens" || fail "text: $out"
echo "$out" | grep -qF "BF16 weights" || fail "text dtype: $out"
echo "$out" | grep -qE "^peak RSS: +[0-9.]+ MiB" || fail "text rss: $out"
# --draft: the model as its own draft keeps every drafted token
out=$($SPOTQ bench models/stories260K --prompt-len 16 --gen 24 --reps 1 --draft models/stories260K --spec-k 3 --json)
echo "$out" | tr -d '\n\t' | grep -qE '"speculative":\{"draft":"models/stories260K","k":3,"seconds":[0-9.e-]+,"target_steps":6,"acceptance":1,"speedup":[0-9.e-]+\}' ||
    fail "speculative JSON: $out"
out=$($SPOTQ bench models/stories260K --prompt-len 16 --gen 24 --reps 1 --draft tests/fixtures/moe/mixtral)
echo "$out" | grep -qE "^speculative: [0-9.]+ s for the prompt and 24 tokens with tests/fixtures/moe/mixtral, k 4: [0-9]+% of drafted tokens accepted" ||
    fail "speculative text: $out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/cli/lib/expect.sh
expect 1 "the draft's vocabulary of 96 is not the model's 512" -- bench models/stories260K --draft tests/fixtures/runtime/qwen2_bias
expect 2 "--prompt-len and --reps must be positive" -- bench models/stories260K --prompt-len 0
exit 0
