#!/bin/sh
# groups.sh: group sizes that do not divide in_features (issue 14), on tests/fixtures/groups/llama576
# (hidden 576: q/k/v/o/gate/up read 576 inputs, which 128 does not divide; down_proj reads 256).
# - Default settings quantise every linear: the plan lowers the 576-wide ones to g64 (one info line
#   says how many), down_proj stays g128; --format auto writes compressed-tensors with one config group
#   per group size, its targets the modules it holds; spotq.json gives each linear's group size;
#   spotq check passes; eval runs it against the source within a KLD gate.
# - --strict-group-size refuses, naming the group sizes that fit every linear; --format gptq refuses
#   several group sizes with the reason; --strict-group-size --group-size 64 writes one group.
# - A g128 checkpoint of the model (tests/fixtures/groups/llama576_g128, short last groups) is rejected by
#   spotq check with the rule named.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tmp=$T
. tests/cli/lib/expect.sh
fail() { echo "groups: $*"; exit 1; }
M=tests/fixtures/groups/llama576

$SPOTQ quantize $M -o $T/q --method rtn 2>$T/log || fail "default rtn: $(cat $T/log)"
grep -q "group size 128 does not divide in_features of 12 linears: 12 at g64" $T/log || fail "no plan note: $(cat $T/log)"
grep -q "quantized 14 of 14 linear layers" $T/log || fail "not every linear quantised: $(cat $T/log)"
grep -q '"quant_method":	"compressed-tensors"' $T/q/config.json || fail "auto did not pick compressed-tensors"
awk '/"group_0":/ { g = 0 } /"group_1":/ { g = 1 } /"group_2":/ { g = 2 }
     /"group_size":/ { gs[g] = $2 + 0 }
     /"model.layers.1.mlp.down_proj"/ && !/down_proj\./ { down[g] = 1 }
     /"model.layers.0.self_attn.q_proj"/ { q[g] = 1 }
     END { exit !(gs[0] == 64 && gs[1] == 128 && !(2 in gs) && q[0] && down[1] && !q[1] && !down[0]) }' $T/q/config.json ||
    fail "config groups: $(grep -E 'group_|group_size' $T/q/config.json)"
n64=$(grep -c '"group_size":	64' $T/q/spotq.json)
n128=$(grep -c '"group_size":	128' $T/q/spotq.json) # the arguments' too
[ "$n64" -eq 12 ] && [ "$n128" -eq 3 ] || fail "spotq.json group sizes: $n64 at 64, $n128 at 128"
$SPOTQ check $T/q >$T/check 2>&1 || fail "check: $(tail -2 $T/check)"
grep -q "14 linears at tp 1: .* 0 rejected" $T/check || fail "check: $(tail -1 $T/check)"
head -c 20000 data/tinystories/eval.txt >$T/ev.txt
$SPOTQ eval $T/q --data $T/ev.txt --ctx 128 --ref $M --max-kld 0.05 >$T/eval 2>&1 || fail "eval: $(cat $T/eval)"
grep -q "top-1 agree" $T/eval || fail "eval: $(cat $T/eval)"

expect 2 "--strict-group-size: --group-size 128 does not divide in_features 576 of layer 0; group sizes that fit every linear: -1, 32, 64" -- \
    quantize $M -o $T/s --method rtn --strict-group-size
expect 2 "--format gptq states one group size, but in_features of some linears is no multiple of 128, so the plan writes 2 \(64, 128\)" -- \
    quantize $M -o $T/g --method rtn --format gptq
[ ! -e $T/s ] && [ ! -e $T/g ] || fail "a refused run wrote"

$SPOTQ quantize $M -o $T/q64 --method rtn --group-size 64 --strict-group-size --format gptq 2>$T/log || fail "g64 strict: $(cat $T/log)"
grep -q '"group_size":	64' $T/q64/config.json && ! grep -q "group size .* does not divide" $T/log || fail "g64: $(cat $T/log)"

$SPOTQ check tests/fixtures/groups/llama576_g128 >$T/bad 2>&1 && fail "a g128 checkpoint of a 576-wide model passes check"
grep -q "q_proj.*rejected.*in_features 576 is not a multiple of the group size 128" $T/bad || fail "check g128: $(cat $T/bad)"
grep -q "5 rejected" $T/bad || fail "check g128: $(tail -1 $T/bad)"
echo "groups: ok"
