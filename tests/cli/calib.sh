#!/bin/sh
# calib.sh: `spotq calib` keeps the calibration statistics once and `quantize --stats` reuses them:
# RTN from statistics is RTN from text (on the minmax grid the same weights; on the mse grid, weighted
# by each block's Hessians, which are the full-precision model's in the statistics, the same first
# block; and the same error on the first block's q/k/v, whose inputs are the same embeddings), GPTQ from statistics beats RTN on every matrix and stays close to
# FP32, a sweep of settings runs from one file, MoE experts and FP8 static scales come along, and a
# broken, foreign or misused statistics file is refused with one line.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
D="--calib data/tinystories/calib.txt --nsamples 16 --seqlen 256"
G="--bits 4 --group-size 32 --asym"
. tests/cli/lib/num.sh
field() { jnum "$@" || { echo "calib: no number \"$2\" in $1" >&2; exit 1; }; }

$SPOTQ calib $M $D -o $T/s.zst 2>$T/log
grep -q "kept 20 statistics" $T/log || { echo "calib: $(cat $T/log)"; exit 1; }
$SPOTQ quantize $M -o $T/rs --method rtn $G --grid minmax --stats $T/s.zst 2>/dev/null
$SPOTQ quantize $M -o $T/rc --method rtn $G --grid minmax $D 2>/dev/null
cmp $T/rs/model.safetensors $T/rc/model.safetensors || { echo "rtn from statistics differs"; exit 1; }
e1=$(field $T/rs/spotq.json error_rtn); e2=$(field $T/rc/spotq.json error_rtn)
num "first block's error" "$e1" "$e2"
[ "$e1" = "$e2" ] || { echo "first block's error differs"; exit 1; }
$SPOTQ quantize $M -o $T/rs --method rtn $G --stats $T/s.zst --force 2>/dev/null
$SPOTQ quantize $M -o $T/rc --method rtn $G $D --force 2>/dev/null
grep -q '"grid":	"mse"' $T/rs/spotq.json || { echo "the default grid is not mse"; exit 1; }
e1=$(field $T/rs/spotq.json error_rtn); e2=$(field $T/rc/spotq.json error_rtn)
num "mse: first block's error" "$e1" "$e2"
[ "$e1" = "$e2" ] || { echo "mse: first block's error differs"; exit 1; }
grep -q '"stats":	"'"$T"'/s.zst"' $T/rs/spotq.json && grep -q '"sequential":	false' $T/rs/spotq.json &&
    grep -q '"nsamples":	16' $T/rs/spotq.json || { echo "spotq.json calibration"; exit 1; }

# GPTQ from statistics, and a sweep: 8-bit per-channel from the same file
$SPOTQ quantize $M -o $T/gs --method gptq $G --act-order --stats $T/s.zst 2>/dev/null
below_rtn $T/gs/spotq.json ||
    { echo "GPTQ from statistics not below RTN on some matrix"; exit 1; }
$SPOTQ eval $T/gs --data data/tinystories/eval.txt --ctx 256 --ref $M --max-ppl-ratio 1.03 >/dev/null ||
    { echo "GPTQ from statistics: ppl ratio over 1.03"; exit 1; }
$SPOTQ quantize $M -o $T/g8 --method gptq --bits 8 --group-size -1 --stats $T/s.zst 2>/dev/null
$SPOTQ quantize $M -o $T/f8 --method fp8 --act static --stats $T/s.zst 2>/dev/null
grep -q '"input_scale"' $T/f8/spotq.json || { echo "fp8 static from statistics: no input scales"; exit 1; }

# MoE: every expert's statistics, routed as quantize routes them
Q=tests/fixtures/moe/qwen2_moe
$SPOTQ calib $Q $D -o $T/q.zst 2>/dev/null
$SPOTQ quantize $Q -o $T/qg --method gptq --group-size 32 --stats $T/q.zst 2>/dev/null
[ "$(grep -c '"error_rtn"' $T/qg/spotq.json)" -eq 95 ] || { echo "MoE from statistics: want 95 quantised linears"; exit 1; }

. tests/cli/lib/expect.sh
tmp=$T
fail() { echo "calib: $*"; exit 1; }
head -c 2000 $T/s.zst >$T/cut.zst
expect 1 "cut.zst: truncated" -- quantize $M -o $T/x --method rtn $G --stats $T/cut.zst
expect 1 "tokenizer.json: not a spotq statistics file" -- quantize $M -o $T/x --method rtn $G --stats $M/tokenizer.json
expect 1 "q.zst: statistics of another model \(qwen2_moe, 5 layers, hidden 64\)" -- quantize $M -o $T/x --method rtn $G --stats $T/q.zst
expect 2 "--stats replaces --calib" -- quantize $M -o $T/x --method gptq --stats $T/s.zst $D
expect 2 "awq needs the activations" -- quantize $M -o $T/x --method awq --stats $T/s.zst
expect 2 "already exists" -- calib $M $D -o $T/s.zst
expect 2 "--calib FILE and -o STATS are required" -- calib $M -o $T/y.zst
exit 0
