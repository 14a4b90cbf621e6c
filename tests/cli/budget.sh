#!/bin/sh
# budget.sh: `spotq quantize --target-bits B | --max-kld K` (issue 18) on the bundled model: the
# checkpoint's bits per weight (every tensor counted, as written) within the target, no more than one grid
# step of the solver below it; --max-kld met on the calibration text's held-out windows (spotq.json's
# heldout_kld, and spotq eval on those windows' text), one scheme per fused set, the serving check passes,
# spotq.json names the scheme of every unit; combinations that do not fit together are one-line usage errors.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 8 --seqlen 128"
. tests/cli/lib/num.sh
fail() { echo "budget: $*"; exit 1; }

# usage errors: one line each, exit 2, nothing written
usage() { # usage WANT ARGS...
    want=$1
    shift
    rc=0
    $SPOTQ quantize $M -o $T/bad "$@" 2>$T/bad.log || rc=$?
    [ $rc -eq 2 ] || fail "$*: exit $rc, want 2: $(cat $T/bad.log)"
    [ "$(grep -vc ": info: " $T/bad.log)" -eq 1 ] || fail "$*: not one line: $(cat $T/bad.log)"
    grep -q -- "$want" $T/bad.log || fail "$*: want '$want': $(cat $T/bad.log)"
    [ ! -e $T/bad ] || fail "$*: wrote output"
}
usage "two budgets" --target-bits 12 --max-kld 0.1 $C
usage "give one of them" --schemes int4-g32-sym $C --method gptq
usage "drop --bits" --target-bits 12 --bits 8 $C
usage "drop --bits" --target-bits 12 --group-size 32 $C
usage "drop --bits" --target-bits 12 --asym $C
usage "use --method gptq" --target-bits 12 --method rtn $C
usage "needs --calib" --target-bits 12
usage "drop --format gptq" --target-bits 12 --format gptq $C
usage "unknown" --target-bits 12 --schemes int4-g32-sym,int5-g64-sym $C
usage "twice" --target-bits 12 --schemes int8-ch-sym,int8-ch-sym $C
usage "must be positive" --max-kld -0.5 $C
usage "--ignore" --target-bits 12 --ignore '*.down_proj' $C
usage "drop --grid minmax" --target-bits 12 --grid minmax $C
usage "below the" --target-bits 4 $C
