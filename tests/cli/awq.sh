#!/bin/sh
# awq.sh: `spotq quantize --method awq` on the bundled model: beats RTN at the same group size,
# folding leaves the full-precision block unchanged, writes AWQ GEMM with its config, the same scaled
# and clipped weights run identically from the gptq and compressed-tensors formats, awq+gptq runs.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 16 --seqlen 256 --group-size 32"
ppl() { $SPOTQ eval "$1" --data data/tinystories/eval.txt --ctx 256 --json | sed -n 's/.*"ppl":[ \t]*\([0-9.e+-]*\).*/\1/p' | head -1; }
$SPOTQ quantize $M -o $T/awq --method awq $C 2>/dev/null
$SPOTQ quantize $M -o $T/rtn --method rtn --asym $C 2>/dev/null
grep -q '"quant_method":	"awq"' $T/awq/config.json && grep -q '"version":	"gemm"' $T/awq/config.json &&
    grep -q '"zero_point":	true' $T/awq/config.json || { echo "awq config"; exit 1; }
grep -A3 modules_to_not_convert $T/awq/config.json | grep -q 'model.layers.0.mlp.' || { echo "awq config: kept modules"; exit 1; }
fold=$(sed -n 's/.*"awq_fold_max_relative_change":[ \t]*\([0-9.e+-]*\).*/\1/p' $T/awq/spotq.json)
awk -v f="$fold" 'BEGIN { exit !(f != "" && f < 1e-5) }' || { echo "folding changed the block by $fold"; exit 1; }
grep -q '"awq_alpha":	0.[0-9]' $T/awq/spotq.json || { echo "no scale set was scaled"; exit 1; }
a=$(ppl $T/awq); r=$(ppl $T/rtn)
echo "awq $a rtn $r"
awk -v a=$a -v r=$r 'BEGIN { exit !(a < r) }' || { echo "AWQ does not beat RTN"; exit 1; }
$SPOTQ quantize $M -o $T/g --method awq --format gptq $C 2>/dev/null
$SPOTQ quantize $M -o $T/ct --method awq --format compressed-tensors $C 2>/dev/null
# compressed-tensors stores AWQ's grid as it is; GPTQ v1 moves a zero of 0 to 1 (loaders disagree on 0)
[ "$(ppl $T/ct)" = "$a" ] || { echo "awq weights differ between the awq and compressed-tensors formats"; exit 1; }
awk -v g=$(ppl $T/g) -v a=$a 'BEGIN { exit !(g < a * 1.005 && g > a * 0.995) }' || { echo "awq in gptq format far from awq"; exit 1; }
$SPOTQ quantize $M -o $T/ag --method awq+gptq --act-order $C 2>/dev/null
ag=$(ppl $T/ag)
awk -v g=$ag -v r=$r 'BEGIN { exit !(g < r) }' || { echo "awq+gptq $ag not below rtn $r"; exit 1; }
$SPOTQ quantize $M -o $T/x --method awq --bits 8 $C 2>/dev/null && { echo "8-bit AWQ GEMM accepted"; exit 1; }
exit 0
