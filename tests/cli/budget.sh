#!/bin/sh
# budget.sh: `spotq quantize --target-bits B | --max-kld K` (issue 18) on the bundled model: the
# checkpoint's bits per weight (every tensor counted, as written) within the target, no more than one grid
# step of the solver below it; --max-kld met on the calibration text's held-out windows (spotq.json's
# heldout_kld, and spotq eval on those windows' text), one scheme per fused set, the serving check passes,
# spotq.json names the scheme of every unit; combinations that do not fit together are one-line usage errors.
set -e
NAME=budget
. tests/cli/lib/quant.sh

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
usage "use source or bf16" --target-bits 12 --keep-dtype f8 $C
usage "keeps every linear" --target-bits 20 $C
usage "goes with --act-order" --target-bits 12 --static-groups $C

# --target-bits: within the target, at most one solver grid step (and the candidates' granularity) below
C16="--calib data/tinystories/calib.txt --nsamples 16 --seqlen 512"
$SPOTQ quantize $M -o $T/tb $C16 --target-bits 11.3 2>$T/tb.log || fail "--target-bits 11.3: $(cat $T/tb.log)"
bpw=$(jnum $T/tb/spotq.json bits_per_weight) || fail "no bits_per_weight"
pred=$(jnum $T/tb/spotq.json predicted_bits_per_weight) || fail "no predicted_bits_per_weight"
bound "--target-bits 11.3: the written checkpoint" 'b <= 11.3 && b > 10.8' b=$bpw
bound "the predicted size is the written one" 'p - b < 0.01 && b - p < 0.01' p=$pred b=$bpw
$SPOTQ check $T/tb >$T/tb.check 2>&1 || fail "spotq check: $(tail -3 $T/tb.check)"
# every unit named with its scheme; q/k/v and gate/up share one config group (fused sets)
[ "$(grep -c '"unit":' $T/tb/spotq.json)" -eq 20 ] || fail "want 20 units in spotq.json's budget"
grep -q '"log_log_r":' $T/tb/spotq.json || fail "no proxy validation"
grep -q '"quant_method":	"compressed-tensors"' $T/tb/config.json || fail "not compressed-tensors: $(head -c 400 $T/tb/config.json)"
# the budget writes the F32 source's unquantised matrices (the tied embedding) as BF16, and counts them so (above)
head -c 8192 $T/tb/model.safetensors | grep -aq '"model.embed_tokens.weight":{"dtype":"BF16"' || fail "embeddings not BF16 under a budget"
grep -q '"unquantized_matrices_dtype":	"BF16"' $T/tb/spotq.json || fail "spotq.json does not say the kept matrices' dtype"
# --keep-dtype source: F32 as the source, still within the target and as predicted; --act-order: measured and written with it
$SPOTQ quantize $M -o $T/ts $C --target-bits 11.3 --keep-dtype source --act-order 2>$T/ts.log || fail "--keep-dtype source: $(cat $T/ts.log)"
head -c 8192 $T/ts/model.safetensors | grep -aq '"model.embed_tokens.weight":{"dtype":"F32"' || fail "--keep-dtype source: embeddings not F32"
bpw=$(jnum $T/ts/spotq.json bits_per_weight) && pred=$(jnum $T/ts/spotq.json predicted_bits_per_weight) || fail "no bits_per_weight"
bound "--keep-dtype source --target-bits 11.3" 'b <= 11.3 && p - b < 0.01 && b - p < 0.01' p=$pred b=$bpw
grep -q '"actorder":	"static"' $T/ts/config.json || fail "--act-order not in the config groups"

# --max-kld: met on the held-out windows, as spotq.json and eval say
$SPOTQ quantize $M -o $T/mk $C16 --max-kld 0.005 2>$T/mk.log || fail "--max-kld 0.005: $(cat $T/mk.log)"
hk=$(jnum $T/mk/spotq.json heldout_kld) || fail "no heldout_kld"
hw=$(jnum $T/mk/spotq.json heldout_windows) || fail "no heldout_windows"
bound "--max-kld 0.005 on the held-out windows" 'k <= 0.005 && k > 0 && w >= 4' k=$hk w=$hw
grep -q '"max_kld_met":	true' $T/mk/spotq.json || fail "max_kld_met"
$SPOTQ eval $T/mk --data data/tinystories/eval.txt --ctx 256 --ref $M >$T/mk.eval 2>&1 || fail "eval: $(cat $T/mk.eval)"
grep -q "^budget: *--max-kld 0.005: KLD .* held-out windows .*, met$" $T/mk.eval || fail "eval does not report the budget: $(cat $T/mk.eval)"
$SPOTQ check $T/mk >$T/mk.check 2>&1 || fail "spotq check: $(tail -3 $T/mk.check)"
# a tighter limit costs bytes
b1=$(jnum $T/mk/spotq.json bits_per_weight)
$SPOTQ quantize $M -o $T/mk2 $C16 --max-kld 0.0005 2>$T/mk2.log || fail "--max-kld 0.0005: $(cat $T/mk2.log)"
b2=$(jnum $T/mk2/spotq.json bits_per_weight)
bound "a tighter --max-kld takes more bytes" 'b2 > b1' b1=$b1 b2=$b2
echo "budget: ok"
