#!/bin/sh
# check.sh: `spotq check` applies vLLM's kernel rules (formats/serving.h names the source read) to every
# linear: Marlin takes a 128-wide Llama's GPTQ v1 sym 4/8-bit at the Marlin group sizes; GPTQ v1
# asymmetric, a 576-wide model's g128 linears, a 64-wide one's (min_thread_k) and o_proj at --tp 2 are
# rejected with the rule named and exit 1; AWQ and compressed-tensors outside Marlin's rules are
# fallbacks (exit 0); experts of a 64-wide MoE go to the MoE WNA16 kernels. quantize runs the check on
# what it writes: a warning and spotq.json's "serving"; its default format for rtn/gptq is GPTQ v1 only where
# Marlin takes every linear, else compressed-tensors. The 128- and 576-wide models are zeros written by
# tests/cli/lib/mkmodel.sh (shapes are what the rules read).
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tmp=$T
. tests/cli/lib/expect.sh
. tests/cli/lib/mkmodel.sh
fail() { echo "check: $*"; exit 1; }
mkmodel $T/w128 128 256 2 2
ok() { # DIR: loads, every linear on its named kernel
    $SPOTQ check "$1" >$T/out 2>$T/err || fail "$1 rejected: $(cat $T/err)"
    grep -q ": 7 linears at tp 1: 7 on their kernel, 0 on a fallback, 0 in full precision, 0 rejected" $T/out || fail "$1: $(cat $T/out)"
}
for g in 32 64 128 -1; do
    $SPOTQ quantize $T/w128 -o $T/g$g --method rtn --group-size $g 2>/dev/null
    ok $T/g$g
    grep -q "Marlin (gptq_marlin)" $T/out || fail "g$g: not Marlin"
done
$SPOTQ quantize $T/w128 -o $T/b8 --method rtn --bits 8 --group-size 128 2>/dev/null
ok $T/b8
$SPOTQ quantize $T/w128 -o $T/awq --method rtn --asym --format awq --group-size 64 2>/dev/null
ok $T/awq; grep -q "Marlin (awq_marlin)" $T/out || fail "awq: not awq_marlin"
$SPOTQ quantize $T/w128 -o $T/ct --method rtn --asym --format compressed-tensors --group-size 64 2>/dev/null
ok $T/ct; grep -q "Marlin (wNa16)" $T/out || fail "ct: not Marlin"
grep -q '"vllm_loads":	true' $T/ct/spotq.json || fail "spotq.json: ct should load"
# rejected, with the rule
# the default format is chosen to load: asymmetric goes to compressed-tensors, GPTQ v1 only where Marlin takes it
$SPOTQ quantize $T/w128 -o $T/auto --method rtn --asym --group-size 64 2>$T/log
grep -q "wrote compressed-tensors pack-quantized: asymmetric weights" $T/log && grep -q '"format":	"pack-quantized"' $T/auto/config.json || fail "asym default: $(cat $T/log)"
ok $T/auto
grep -q '"quant_method":	"gptq"' $T/g64/config.json || fail "a sym g64 128-wide model should default to GPTQ v1"
$SPOTQ quantize models/stories260K -o $T/sauto --method rtn --group-size 32 2>$T/log
grep -q "wrote compressed-tensors pack-quantized: vLLM serves GPTQ v1 only through Marlin, which cannot take model.layers.0.self_attn.q_proj (in_features per shard 64 is not a multiple of 128" $T/log ||
    fail "64-wide default: $(cat $T/log)"
$SPOTQ check $T/sauto >/dev/null || fail "the default output of the bundled model does not load"
# --format gptq forces GPTQ v1: the check then names the rule
$SPOTQ quantize $T/w128 -o $T/asym --method rtn --asym --group-size 64 --format gptq 2>$T/log
grep -q "warning: vLLM would not load $T/asym: 7 of 7 linears" $T/log || fail "quantize did not warn: $(cat $T/log)"
grep -q '"vllm_loads":	false' $T/asym/spotq.json || fail "spotq.json: asym gptq should not load"
expect 1 "asym: vLLM would not load it: 7 linears break its kernel rules, e.g. model.layers.0.self_attn.q_proj: GPTQ v1 loads only through Marlin, which takes symmetric weights" -- check $T/asym
expect 1 "o_proj: in_features per shard 64 is not a multiple of 128 \(Marlin's min_thread_k\)" -- check $T/g128 --tp 2
grep -q "self_attn.q_proj .* kernel " $T/out && grep -q "mlp.down_proj .* kernel " $T/out && [ "$(grep -c " rejected " $T/out)" -eq 1 ] || fail "--tp 2: only o_proj (in 64 per shard) breaks a rule: $(cat $T/out)"
expect 1 "does not split into 3 shards" -- check $T/g128 --tp 3
mkmodel $T/q576 576 128 9 3 "gptq 4 128 true"
expect 1 "q576: vLLM would not load it: 6 linears .* in_features per shard 576 is not a multiple of 128" -- check $T/q576
grep -q "mlp.down_proj .*576 x 128 .* kernel " $T/out || fail "576: down_proj (in 128) should pass: $(cat $T/out)"
mkmodel $T/q8g 128 256 2 2 "gptq 8 16 true"
expect 1 "Marlin takes group sizes -1, 32, 64, 128, not 16" -- check $T/q8g
mkmodel $T/q3 128 256 2 2 "gptq 2 128 true"
expect 1 "Marlin takes 4- or 8-bit symmetric weights .*not 2-bit" -- check $T/q3
# fallbacks load (exit 0) and say so
$SPOTQ quantize $T/w128 -o $T/ct8 --method rtn --bits 8 --asym --format compressed-tensors --group-size 64 2>/dev/null
$SPOTQ check $T/ct8 >$T/out || fail "ct 8-bit asym should load on a fallback"
grep -q "7 on a fallback" $T/out && grep -q "Marlin takes 4-bit weights with zero points (uint4), not 8-bit with zero points" $T/out || fail "ct8: $(cat $T/out)"
$SPOTQ quantize tests/fixtures/moe/mixtral -o $T/mx --method rtn --group-size 32 --format compressed-tensors 2>/dev/null
$SPOTQ check $T/mx --json >$T/mx.json || fail "mixtral ct: $(cat $T/mx.json)"
grep -q '"kernel":	"MoE WNA16"' $T/mx.json && grep -q '"rule":	"Marlin MoE needs hidden 64 to be a multiple of 128"' $T/mx.json || fail "mixtral experts"
grep -q '"loads":	true' $T/mx.json || fail "mixtral json"
# the bundled 64-wide model: no Marlin shape fits, GPTQ v1 rejected; full precision passes
$SPOTQ quantize models/stories260K -o $T/s --method rtn --group-size 32 --format gptq 2>/dev/null
expect 1 "min_thread_k" -- check $T/s --quiet
[ "$(grep -c rejected $T/out)" -eq 21 ] || fail "--quiet should list the 20 rejected and the summary: $(cat $T/out)"
$SPOTQ check models/stories260K >$T/out || fail "a full-precision model is rejected"
grep -q "35 in full precision, 0 rejected" $T/out || fail "full precision: $(tail -1 $T/out)"
$SPOTQ quantize $T/w128 -o $T/f8 --method fp8 --act dynamic 2>/dev/null
$SPOTQ check $T/f8 | grep -q "FP8 scaled_mm" || fail "fp8"
expect 2 "--tp" -- check $T/s --tp 0
expect 1 "nothere" -- check $T/nothere
echo "check: ok"
