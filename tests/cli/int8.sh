#!/bin/sh
# int8.sh: `spotq quantize --method int8|int8+gptq` (INT8 W8A8) on the bundled model and the MoE fixtures:
# the compressed-tensors int-quantized config and tensors (I8 weights, F32 [N, 1] scales), inspect and the
# serving check (CUTLASS scaled_mm int8 where K and N are multiples of 16, vLLM's Triton fallback elsewhere,
# nothing rejected), quality close to the source with GPTQ below RTN on KLD and on every linear's output
# error, outputs that do not depend on --threads, and bad combinations refused with one line each.
set -e
NAME=int8
. tests/cli/lib/quant.sh

$SPOTQ quantize $M -o $T/r --method int8 2>$T/r.log || { cat $T/r.log; fail "int8"; }
$SPOTQ quantize $M -o $T/r1 --method int8 --threads 1 2>/dev/null
$SPOTQ quantize $M -o $T/g --method int8+gptq $C 2>$T/g.log || { cat $T/g.log; fail "int8+gptq"; }
$SPOTQ quantize $M -o $T/g1 --method int8+gptq $C --threads 1 2>/dev/null
cmp $T/r/model.safetensors $T/r1/model.safetensors || fail "int8 depends on --threads"
cmp $T/g/model.safetensors $T/g1/model.safetensors || fail "int8+gptq depends on --threads"
! cmp -s $T/r/model.safetensors $T/g/model.safetensors || fail "int8+gptq wrote the RTN codes"

# the config: compressed-tensors int-quantized, channel weights, dynamic per-token activations
tr -d '\n\t ' <$T/r/config.json >$T/r.cfg
grep -q '"quant_method":"compressed-tensors","format":"int-quantized"' $T/r.cfg || fail "format: $(cat $T/r.cfg)"
grep -q '"weights":{"num_bits":8,"type":"int","strategy":"channel","symmetric":true' $T/r.cfg || fail "weights: $(cat $T/r.cfg)"
grep -q '"input_activations":{"num_bits":8,"type":"int","strategy":"token","symmetric":true,"dynamic":true}' $T/r.cfg || fail "activations"
$SPOTQ inspect $T/r >$T/r.txt
grep -q "quantization:     compressed-tensors int-quantized, INT8 W8A8 weights per channel, activations INT8 dynamic per token" $T/r.txt ||
    fail "inspect: $(grep quantization $T/r.txt)"
[ "$(grep -c ' I8  *\[' $T/r.txt)" -eq 35 ] || fail "want 35 I8 weights"
grep -q 'layers.4.mlp.down_proj.weight_scale  *F32  *\[64, 1\]' $T/r.txt || fail "down_proj scale not F32 [64, 1]"
grep -q 'weight_zero_point' $T/r.txt && fail "a symmetric checkpoint with zero points"

# the serving check: q/k/v and o on CUTLASS, the 172-wide FFN on the Triton fallback, none rejected
$SPOTQ check $T/r >$T/check.txt || { cat $T/check.txt; fail "check rejected the int8 output"; }
grep -q 'self_attn.q_proj .*kernel  *CUTLASS scaled_mm int8' $T/check.txt || fail "q_proj not on CUTLASS"
grep -q 'mlp.down_proj .*fallback  *Triton scaled_mm int8: .*cutlass_compatible_b' $T/check.txt || fail "down_proj not on the fallback"
grep -q '20 on their kernel, 15 on a fallback, 0 in full precision, 0 rejected' $T/check.txt || fail "$(tail -1 $T/check.txt)"

# quality: close to the source; GPTQ below RTN on KLD and on every linear's output error
ev r $M
ev g $M
rr=$(field $T/r.json ppl_ratio); kr=$(field $T/r.json mean); rg=$(field $T/g.json ppl_ratio); kg=$(field $T/g.json mean)
echo "int8: ppl ratio $rr, kld $kr; int8+gptq: ppl ratio $rg, kld $kg"
bound "int8 out of bounds" 'r > 0.99 && r < 1.01 && k > 0 && k < 0.004' r=$rr k=$kr
bound "int8+gptq out of bounds" 'r > 0.99 && r < 1.01 && k > 0 && k < 0.004' r=$rg k=$kg
bound "int8+gptq not below int8 on KLD" 'g < r' g=$kg r=$kr
below_rtn $T/g/spotq.json || fail "a linear's GPTQ error is not below its RTN error"

# the MoE fixtures: experts in INT8, on the fused MoE kernel
for f in mixtral qwen2_moe; do
    $SPOTQ quantize tests/fixtures/moe/$f -o $T/$f --method int8+gptq $C 2>/dev/null || fail "$f"
    $SPOTQ check $T/$f >$T/$f.check || fail "$f: check rejected it"
    grep -q 'experts.*fused MoE INT8 W8A8' $T/$f.check || fail "$f: experts not on the fused MoE kernel"
    ev $f tests/fixtures/moe/$f
    r=$(field $T/$f.json ppl_ratio); k=$(field $T/$f.json mean)
    echo "$f int8+gptq: ppl ratio $r, kld $k"
    bound "$f out of bounds" 'r > 0.99 && r < 1.02 && k > 0 && k < 0.02' r=$r k=$k
done

# bad combinations: usage errors, one line each, nothing written
tmp=$T
. tests/cli/lib/expect.sh
expect 2 "--fp8-scheme and --act apply to --method fp8 and fp8\+gptq \(--method int8 runs its activations INT8 per token\)" -- \
    quantize $M -o $T/x --method int8 --act dynamic
expect 2 "--fp8-scheme and --act apply to --method fp8 and fp8\+gptq \(--method int8\+gptq" -- quantize $M -o $T/x --method int8+gptq $C --fp8-scheme channel
expect 2 "--method int8 writes --format compressed-tensors \(int-quantized\)" -- quantize $M -o $T/x --method int8 --format gptq
expect 2 "--method int8\+gptq writes --format compressed-tensors" -- quantize $M -o $T/x --method int8+gptq $C --format fp8
expect 2 "--method int8\+gptq needs --calib FILE" -- quantize $M -o $T/x --method int8+gptq
expect 2 "--grid mse applies to rtn, gptq and awq\+gptq \(--method int8 has a grid of its own\)" -- quantize $M -o $T/x --method int8 --grid mse
[ ! -e $T/x ] || fail "a refused quantize wrote $T/x"
exit 0
