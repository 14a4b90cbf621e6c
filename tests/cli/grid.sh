#!/bin/sh
# grid.sh: --grid on the bundled model. minmax writes the very bytes it wrote before mse existed (sha256
# of model.safetensors for RTN, GPTQ and AWQ, recorded from the build before the search was added), and
# mse beats minmax on KLD against the FP32 model for RTN and for GPTQ at every group size that fits
# (32, 64, and -1, which is 64 here: the attention matrices are 64 wide, the MLP's 172 packs at no
# size); spotq.json names the grid and RTN's error on both; bad values and the GPU path are one-line errors.
set -e
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} # the goldens' OpenBLAS kernels (see bytes.sh)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 16 --seqlen 256"
# minmax: unchanged bytes (the hashes were taken with the commit before --grid existed)
check() {
    want=$1; shift
    $SPOTQ quantize $M -o $T/h "$@" --force 2>/dev/null
    got=$(sha256sum <$T/h/model.safetensors | cut -c1-64)
    [ "$got" = "$want" ] || { echo "minmax output changed for: $*"; echo "  got $got"; echo "  want $want"; exit 1; }
}
# (GPTQ v1 asked for by name: without --format this 64-wide model now gets compressed-tensors; --group-size
# 128, which fits none of its linears, is now refused, tests/cli/summary.sh)
check 0a0f9e5e15076a92fbf0678ed144471ac238ec90ba5a0b770d690f93e6162266 --grid minmax --method rtn --bits 4 --group-size 32 --asym --format gptq
check 695daee3c8453b0274613dadb51746290b0d0d04478071d3dbfde25f0ff94dbe --grid minmax --method rtn --bits 8 --group-size -1 --format gptq $C
check 3f6c8d52e0aec9e422d1fa7e1c13859bc75919d4218f4e22c3fe3adac3c22b7f --grid minmax --method gptq --bits 4 --group-size 32 --asym --act-order --format gptq $C
check 0bc304c59e203a1578dcecef94accee321596b5da53e1aa98bc4c128a85c7b75 --grid minmax --method gptq --bits 4 --group-size 64 --act-order --static-groups --format compressed-tensors $C
check e5acaa97b85a0f52d1b460ecf04e65c7d5647b3c073db13bf07ec0c200245a05 --grid minmax --method gptq --bits 4 --group-size -1 --format gptq $C
check 794165a1df8be309bed64e935c17d11492ada8f98a054967c33bf330a2e5ddb6 --method awq --bits 4 --group-size 32 $C
check 5ea708f94768e853ebf66706207d88ca83793d5f88800026ca52721eb478beea --grid minmax --method awq+gptq --bits 4 --group-size 64 --asym $C

kld() { $SPOTQ eval "$1" --data data/tinystories/eval.txt --ctx 256 --ref $M --json | sed -n 's/.*"mean":[ \t]*\([0-9.e+-]*\).*/\1/p' | head -1; }
for m in "rtn --asym" "rtn --sym" "gptq --sym --act-order" "gptq --asym"; do
    case $m in *--sym*) groups="32 64 -1";; *) groups="32 64";; esac
    for g in $groups; do
        for grid in minmax mse; do $SPOTQ quantize $M -o $T/$grid --method $m --group-size $g --grid $grid $C --force 2>/dev/null; done
        a=$(kld $T/minmax); b=$(kld $T/mse)
        echo "$m g$g: KLD minmax $a mse $b"
        awk -v a=$a -v b=$b 'BEGIN { exit !(b < a) }' || { echo "$m --group-size $g: mse KLD $b not below minmax $a"; exit 1; }
    done
done
grep -q '"grid":	"mse"' $T/mse/spotq.json || { echo "spotq.json: grid"; exit 1; }
# every layer: RTN's error on both grids, the mse one (the run's) being error_rtn
awk '/"error_rtn":/ { r = $2 + 0 } /"error_rtn_minmax":/ { a = $2 + 0 } /"error_rtn_mse":/ { n++; if ($2 + 0 != r || !(a > 0)) bad++ }
     END { exit !(n == 20 && bad == 0) }' $T/mse/spotq.json || { echo "spotq.json: per-layer grid errors"; exit 1; }
# data-free RTN: the search runs unweighted, and still beats minmax
$SPOTQ quantize $M -o $T/df --method rtn --asym --group-size 32 --grid mse 2>/dev/null
$SPOTQ quantize $M -o $T/dfm --method rtn --asym --group-size 32 --grid minmax 2>/dev/null
a=$(kld $T/dfm); b=$(kld $T/df)
awk -v a=$a -v b=$b 'BEGIN { exit !(b < a) }' || { echo "data-free: mse KLD $b not below minmax $a"; exit 1; }
grep -q '"error_rtn_mse":	null' $T/df/spotq.json || { echo "data-free: errors not null"; exit 1; }
set +e
$SPOTQ quantize $M -o $T/x --method rtn --grid best 2>$T/err; rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <$T/err)" -eq 1 ] && grep -q "grid best: use minmax or mse" $T/err || { echo "bad --grid: rc $rc $(cat $T/err)"; exit 1; }
for m in awq "fp8 --act dynamic"; do
    $SPOTQ quantize $M -o $T/x --method $m --grid mse $C 2>$T/err; rc=$?
    [ $rc -eq 2 ] && [ "$(wc -l <$T/err)" -eq 1 ] && grep -q "grid mse applies to rtn, gptq and awq+gptq" $T/err || { echo "$m --grid mse: rc $rc $(cat $T/err)"; exit 1; }
done
exit 0
