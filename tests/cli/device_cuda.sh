#!/bin/sh
# device_cuda.sh: `spotq quantize --device cuda`. Without a GPU (or without CUDA in the build) it fails
# with exit 1 and one clear line, writing nothing; with one, GPTQ runs there and lands within 1% of the
# CPU's perplexity. An unknown device is a usage error (exit 2).
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 8 --seqlen 128 --bits 4 --group-size 32 --asym --act-order"
$SPOTQ quantize $M -o $T/g --method gptq $C --device cuda 2>$T/err; rc=$?
if [ $rc -ne 0 ]; then
    [ $rc -eq 1 ] || { echo "--device cuda without a GPU: exit $rc, want 1"; cat $T/err; exit 1; }
    [ "$(wc -l < $T/err)" -eq 1 ] || { echo "want one line:"; cat $T/err; exit 1; }
    grep -Eq "^spotq: error: --device cuda: (no CUDA GPU found|this spotq was built without CUDA)" $T/err ||
        { echo "unclear message: $(cat $T/err)"; exit 1; }
    [ ! -e $T/g ] && [ -z "$(ls $T | grep spotq-tmp)" ] || { echo "--device cuda failure left files: $(ls $T)"; exit 1; }
else
    # a GPU: the same model quantised on the CPU must evaluate the same to within 1%
    $SPOTQ quantize $M -o $T/c --method gptq $C 2>/dev/null || { echo "CPU quantize failed"; exit 1; }
    ppl() { $SPOTQ eval "$1" --data data/tinystories/eval.txt --ctx 256 --json | sed -n 's/.*"ppl":[ \t]*\([0-9.e+-]*\).*/\1/p' | head -1; }
    g=$(ppl $T/g); c=$(ppl $T/c)
    echo "ppl cuda $g cpu $c"
    awk -v g=$g -v c=$c 'BEGIN { d = g - c; if (d < 0) d = -d; exit !(d <= 0.01 * c) }' || { echo "cuda and cpu GPTQ differ by more than 1%"; exit 1; }
    $SPOTQ quantize $M -o $T/r --method rtn $C --device cuda 2>$T/err; rc=$?
    [ $rc -eq 1 ] && grep -q "only --method gptq runs on the GPU" $T/err || { echo "--method rtn --device cuda: rc $rc $(cat $T/err)"; exit 1; }
fi
$SPOTQ quantize $M -o $T/x --method gptq $C --device tpu 2>$T/err; rc=$?
[ $rc -eq 2 ] && grep -q "unknown device" $T/err || { echo "--device tpu: rc $rc $(cat $T/err)"; exit 1; }
exit 0
