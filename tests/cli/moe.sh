#!/bin/sh
# moe.sh: `spotq quantize` on the mixtures of experts of tests/fixtures/moe (stories260K upcycled to
# qwen2_moe with a shared expert, and to mixtral): every expert quantised under its Hub name, GPTQ
# below RTN on every matrix and in perplexity, 8 bits close to lossless, the routed tokens of each
# layer adding up to top-2 of every calibration token, rarely chosen experts calibrated on every
# token, FP8 static input scales shared by a layer's experts (vLLM runs them fused with the largest),
# the output the same whatever --threads and whether the experts' Hessians are collected all at once or
# one expert a pass (--max-hessian-memory). AWQ on these fixtures: moe_awq.sh.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
Q=tests/fixtures/moe/qwen2_moe
X=tests/fixtures/moe/mixtral
C="--calib data/tinystories/calib.txt --nsamples 16 --seqlen 256 --group-size 32"
. tests/cli/lib/num.sh
fail() { echo "moe: $*"; exit 1; }
field() { jnum "$@" || { echo "moe: no number \"$2\" in $1" >&2; exit 1; }; }
ev() { evalj "$1.json" "$1" --data data/tinystories/eval.txt --ctx 256 --ref "$2"; }

$SPOTQ quantize $Q -o $T/g --method gptq $C --format gptq --threads 2 2>/dev/null
$SPOTQ quantize $Q -o $T/g1 --method gptq $C --format gptq --threads 1 2>/dev/null
cmp $T/g/model.safetensors $T/g1/model.safetensors || { echo "output depends on --threads"; exit 1; }
$SPOTQ quantize $Q -o $T/g20 --method gptq $C --format gptq --max-hessian-memory 20k 2>/dev/null # one unit's Hessian a pass
cmp $T/g/model.safetensors $T/g20/model.safetensors || { echo "output depends on --max-hessian-memory"; exit 1; }
$SPOTQ quantize $Q -o $T/r --method rtn $C 2>/dev/null
$SPOTQ quantize $Q -o $T/r8 --method rtn $C --bits 8 2>/dev/null

# 5 layers x (4 attention + 5 units x 3) linears, every one quantised, GPTQ below RTN on each
n=$(grep -c '"error_rtn"' $T/g/spotq.json)
[ "$n" -eq 95 ] || { echo "$n quantised matrices, want 95"; exit 1; }
below_rtn $T/g/spotq.json ||
    { echo "GPTQ error not below RTN on some matrix"; exit 1; }
$SPOTQ inspect $T/g >$T/g.txt
for t in mlp.experts.3.down_proj.qweight mlp.experts.0.gate_proj.g_idx mlp.shared_expert.up_proj.scales; do
    grep -q "model.layers.4.$t " $T/g.txt || { echo "no $t"; exit 1; }
done
grep -q "model.layers.0.mlp.gate.weight  *BF16  *\[4, 64\]" $T/g.txt &&
    grep -q "model.layers.0.mlp.shared_expert_gate.weight  *BF16  *\[1, 64\]" $T/g.txt || { echo "routers not kept as they were"; exit 1; }
# each layer's experts were routed top-2 of the 16 x 256 calibration tokens
# (cJSON writes each list on one line: "tokens_per_expert":	[1609, 1337, 2545, 2701],)
list() { awk -v k="\"$2\":" '$1 == k { sub(/^[^[]*\[/, ""); sub(/\].*$/, ""); gsub(/,/, " "); print }' "$1"; }
list $T/g/spotq.json tokens_per_expert | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (s != 8192) bad++ } END { exit bad > 0 || NR != 5 }' ||
    { echo "tokens per expert do not add up to 2 x 4096 in every layer"; sed -n '/"moe"/,$p' $T/g/spotq.json; exit 1; }

for v in g r r8; do ev $T/$v $Q; done
for v in g r r8; do
    rt=$(field $T/$v.json ppl_ratio); k=$(field $T/$v.json mean)
    echo "$v: ppl ratio $rt, kld $k"
done
g=$(field $T/g.json ppl); r=$(field $T/r.json ppl); k8=$(field $T/r8.json mean)
bound "GPTQ perplexity not below RTN's" 'g < r' g=$g r=$r
bound "8-bit RTN not close to lossless" 'k > 0 && k < 0.005' k=$k8

# Mixtral on 2 x 64 tokens: experts routed fewer than 64 (the hidden size) are calibrated on all
$SPOTQ quantize $X -o $T/x --method gptq --calib data/tinystories/calib.txt --nsamples 2 --seqlen 64 --group-size 32 --format gptq 2>$T/x.log
grep -q "experts were routed fewer than 64 calibration tokens: calibrating them on every token" $T/x.log ||
    { echo "no note on rare experts"; cat $T/x.log; exit 1; }
rare=$(list $T/x/spotq.json tokens_per_expert | awk '{ for (i = 1; i <= NF; i++) n += $i < 64 } END { print n + 0 }')
listed=$(list $T/x/spotq.json calibrated_on_all_tokens | awk '{ n += NF } END { print n + 0 }')
[ "$rare" -gt 0 ] && [ "$rare" -eq "$listed" ] || { echo "$rare rare experts, $listed calibrated on all tokens"; exit 1; }
$SPOTQ inspect $T/x | grep -q "model.layers.2.block_sparse_moe.experts.3.w2.qweight " || { echo "mixtral expert names"; exit 1; }
# 4-bit g32 experts from 128 calibration tokens: measured ppl ratio 1.259, KLD 0.364, top-1 62.0% (RTN:
# 1.293, 0.353, 62.6%); bars with a margin over those, far under what broken experts give
ev $T/x $X
xr=$(field $T/x.json ppl_ratio); xk=$(field $T/x.json mean); xt=$(field $T/x.json top1_agreement)
echo "mixtral gptq: ppl ratio $xr, kld $xk, top-1 $xt"
bound "mixtral: quality" 'r > 1 && r < 1.32 && k > 0 && k < 0.45 && t > 0.55' r=$xr k=$xk t=$xt

# FP8 with static activations: one input scale for all the experts of a layer, the shared expert its own
$SPOTQ quantize $Q -o $T/f --method fp8 --act static --calib data/tinystories/calib.txt --nsamples 16 --seqlen 256 2>/dev/null
$SPOTQ quantize $Q -o $T/f20 --method fp8 --act static --calib data/tinystories/calib.txt --nsamples 16 --seqlen 256 --max-hessian-memory 20k 2>/dev/null
cmp $T/f/model.safetensors $T/f20/model.safetensors || { echo "fp8 static scales depend on --max-hessian-memory"; exit 1; }
for p in gate_proj down_proj; do
    s=$(awk -v p="layers.1.mlp.experts.[0-9].$p\"" '$0 ~ p { on = 1 } on && /"input_scale"/ { print $2; on = 0 }' $T/f/spotq.json | sort -u)
    [ "$(echo "$s" | wc -l)" -eq 1 ] && [ -n "$s" ] || { echo "layer 1 experts' $p input scales differ: $s"; exit 1; }
    bound "layer 1 experts' $p input scale" 's > 0 && s < 1' s=${s%,}
done
ev $T/f $Q
fr=$(field $T/f.json ppl_ratio); fk=$(field $T/f.json mean)
echo "fp8 static: ppl ratio $fr, kld $fk"
bound "fp8 static: quality (measured ratio 1.0073, KLD 0.0316)" 'r > 1 && r < 1.03 && k > 0 && k < 0.045' r=$fr k=$fk
exit 0
