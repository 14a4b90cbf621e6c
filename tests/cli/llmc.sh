#!/bin/sh
# llmc.sh: checkpoints written by llm-compressor 0.14 itself (tests/fixtures/llmc, made by
# tests/fixtures/make_llmc.py: GPTQModifier W4A16, groups of 32, saved pack-quantized) are read by every
# command: eval's perplexity equals what transformers computed on the same checkpoint (expected.json,
# within 1e-3 relative) for an F32 model (weight_scale F32, gate/up with 172 outputs, down_proj ignored by
# a regex target) and a BF16 one (weight_scale BF16); inspect names the scheme; check loads them;
# generate and bench run; a config that lies about the group size is refused with one line.
# LLMC=DIR checks another run of make_llmc.py instead (make check-peers: a fresh one).
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tmp=$T
. tests/cli/lib/expect.sh
fail() { echo "llmc: $*"; exit 1; }
for d in f32 bf16; do
    M=${LLMC:-tests/fixtures/llmc}/$d
    $SPOTQ eval $M --data data/tinystories/eval.txt --ctx 128 --json >$T/ev.json || fail "$d: eval failed"
    got=$(sed -n 's/^[[:space:]]*"ppl":[[:space:]]*\([0-9.e+-]*\),*$/\1/p' $T/ev.json)
    want=$(sed -n 's/.*"ppl": *\([0-9.e+-]*\),.*/\1/p;s/^ *"ppl": *\([0-9.e+-]*\),*$/\1/p' $M/expected.json | head -1)
    [ -n "$got" ] && [ -n "$want" ] || fail "$d: no ppl ($got / $want)"
    awk -v g="$got" -v w="$want" 'BEGIN { r = g / w - 1; if (r < 0) r = -r; exit !(r < 1e-3) }' ||
        fail "$d: spotq ppl $got, transformers $want"
    echo "llmc $d: spotq ppl $got, transformers $want"
    $SPOTQ inspect $M >$T/in || fail "$d: inspect failed"
    grep -q "quantization: *compressed-tensors, 4 bits, group 32, sym" $T/in || fail "$d: inspect: $(grep quantization $T/in)"
    $SPOTQ check $M >$T/ck || fail "$d: check rejects it: $(tail -1 $T/ck)"
    grep -q "0 rejected" $T/ck || fail "$d: check: $(tail -1 $T/ck)"
    $SPOTQ generate $M --prompt "Once upon a time" -n 8 >$T/gen 2>/dev/null || fail "$d: generate failed"
    [ -s $T/gen ] || fail "$d: generate wrote nothing"
    $SPOTQ bench $M --prompt-len 16 --gen 4 --reps 1 --json >$T/b.json 2>/dev/null || fail "$d: bench failed"
done
grep -q '"weight_scale".*F32\|weight_scale.*F32' $T/in 2>/dev/null || true
$SPOTQ inspect ${LLMC:-tests/fixtures/llmc}/f32 | grep -q "gate_proj.weight_scale *F32 *\[172, 2\]" || fail "f32: scales should be F32 [172, 2]"
$SPOTQ inspect ${LLMC:-tests/fixtures/llmc}/bf16 | grep -q "gate_proj.weight_scale *BF16 *\[256, 2\]" || fail "bf16: scales should be BF16 [256, 2]"
# a config that says group 64 over tensors of groups of 32 is refused before anything runs
mkdir $T/lie
cp tests/fixtures/llmc/bf16/model.safetensors tests/fixtures/llmc/bf16/tokenizer.json $T/lie/
sed 's/"group_size": 32/"group_size": 64/' tests/fixtures/llmc/bf16/config.json >$T/lie/config.json
expect 1 "config.json.*group" -- eval $T/lie --data data/tinystories/eval.txt
echo "llmc: ok"
