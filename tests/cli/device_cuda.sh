#!/bin/sh
# device_cuda.sh: `spotq quantize --device cuda`. Without a GPU (or without CUDA in the build) it fails
# with exit 1 and one clear line, writing nothing; with one, GPTQ runs there and lands within 1% of the
# CPU's perplexity. An unknown device is a usage error (exit 2).
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 8 --seqlen 128 --bits 4 --group-size 32 --asym --act-order"
. tests/cli/lib/num.sh
tmp=$T
fail() { echo "device_cuda: $*"; exit 1; }
. tests/cli/lib/expect.sh
$SPOTQ quantize $M -o $T/g --method gptq $C --device cuda 2>$T/err; rc=$?
if [ $rc -ne 0 ]; then
    [ $rc -eq 1 ] || { echo "--device cuda without a GPU: exit $rc, want 1"; cat $T/err; exit 1; }
    [ "$(wc -l < $T/err)" -eq 1 ] || { echo "want one line:"; cat $T/err; exit 1; }
    grep -Eq "^spotq: error: --device cuda: (no CUDA GPU found|this spotq was built without CUDA)" $T/err ||
        { echo "unclear message: $(cat $T/err)"; exit 1; }
    [ ! -e $T/g ] && [ -z "$(ls $T | grep spotq-tmp)" ] || { echo "--device cuda failure left files: $(ls $T)"; exit 1; }
else
    # a GPU: quantize names it (a quiet CPU run would not), and the same model quantised on the CPU must
    # evaluate the same to within 1%
    grep -q "on cuda: " $T/err || { echo "--device cuda succeeded without naming the GPU it ran on: $(cat $T/err)"; exit 1; }
    $SPOTQ quantize $M -o $T/c --method gptq $C 2>/dev/null || { echo "CPU quantize failed"; exit 1; }
    evalj $T/g.json $T/g --data data/tinystories/eval.txt --ctx 256
    evalj $T/c.json $T/c --data data/tinystories/eval.txt --ctx 256
    g=$(jnum $T/g.json ppl) && c=$(jnum $T/c.json ppl) || { echo "no ppl in eval's JSON"; exit 1; }
    echo "ppl cuda $g cpu $c"
    bound "cuda and cpu GPTQ differ by more than 1%" 'g - c <= 0.01 * c && c - g <= 0.01 * c' g=$g c=$c
    expect 1 "only --method gptq runs on the GPU" -- quantize $M -o $T/r --method rtn $C --device cuda
fi
expect 2 "--device tpu: unknown device" -- quantize $M -o $T/x --method gptq $C --device tpu
exit 0
