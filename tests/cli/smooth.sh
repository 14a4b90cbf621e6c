#!/bin/sh
# smooth.sh: `spotq quantize --method int8|int8+gptq --smoothquant [ALPHA]` (SmoothQuant, issue 14) on the
# bundled model and the MoE fixtures: the norms (and a mixture's routers) written changed, in their source
# dtypes, every other full-precision tensor as the source has it; spotq.json's alpha and per-site figures
# (the fold left each block's output unchanged); the serving check; quality within the KLD gate and not
# worse than INT8 without it; --smoothquant alone is alpha 0.5; bad combinations one usage line each.
set -e
NAME=smooth
. tests/cli/lib/quant.sh
# tbytes FILE NAME: the raw bytes of tensor NAME of a safetensors FILE (its header's data_offsets)
tbytes() {
    _h=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    _o=$(head -c $((8 + _h)) "$1" | tail -c "$_h" | tr -d '\n\t ' |
        sed -n "s/.*\"$2\":{[^}]*\"data_offsets\":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p")
    [ -n "$_o" ] || { echo "smooth: no tensor $2 in $1" >&2; return 1; }
    set -- "$1" $_o
    tail -c +$((8 + _h + $2 + 1)) "$1" | head -c $(($3 - $2))
}
same_tensor() { tbytes "$1" "$3" >$T/a && tbytes "$2" "$3" >$T/b && cmp -s $T/a $T/b; }

$SPOTQ quantize $M -o $T/s --method int8 --smoothquant 0.5 $C 2>$T/s.log || { cat $T/s.log; fail "int8 --smoothquant 0.5"; }
$SPOTQ quantize $M -o $T/d --method int8 --smoothquant $C 2>/dev/null || fail "int8 --smoothquant (the default alpha)"
$SPOTQ quantize $M -o $T/e --method int8 --smoothquant=0.8 $C 2>/dev/null || fail "int8 --smoothquant=0.8"
$SPOTQ quantize $M -o $T/n --method int8 $C 2>/dev/null || fail "int8"
$SPOTQ quantize $M -o $T/g --method int8+gptq --smoothquant 0.5 $C 2>$T/g.log || { cat $T/g.log; fail "int8+gptq --smoothquant"; }
$SPOTQ quantize $M -o $T/gn --method int8+gptq $C 2>/dev/null || fail "int8+gptq"
cmp -s $T/s/model.safetensors $T/d/model.safetensors || fail "--smoothquant alone is not alpha 0.5"
! cmp -s $T/s/model.safetensors $T/e/model.safetensors || fail "alpha 0.8 wrote alpha 0.5's bytes"
! cmp -s $T/s/model.safetensors $T/n/model.safetensors || fail "--smoothquant changed nothing"

# the norms changed, in F32 as the source; the embeddings and the final norm as they were
for l in 0 4; do
    for n in input_layernorm post_attention_layernorm; do
        ! same_tensor $M/model.safetensors $T/s/model.safetensors model.layers.$l.$n.weight || fail "layer $l's $n not smoothed"
        same_tensor $M/model.safetensors $T/n/model.safetensors model.layers.$l.$n.weight || fail "int8 without --smoothquant changed layer $l's $n"
    done
done
same_tensor $M/model.safetensors $T/s/model.safetensors model.embed_tokens.weight || fail "the embeddings changed"
same_tensor $M/model.safetensors $T/s/model.safetensors model.norm.weight || fail "the final norm changed"
$SPOTQ inspect $T/s >$T/s.txt
grep -q 'layers.2.post_attention_layernorm.weight  *F32  *\[64\]' $T/s.txt || fail "the norm is not F32 [64]: $(grep layers.2.post $T/s.txt)"

# spotq.json: alpha, every block smoothed at both sites, the fold checked
tr -d '\n\t ' <$T/s/spotq.json >$T/s.j
grep -q '"smoothquant":{"alpha":0.5,' $T/s.j || fail "no smoothquant alpha in spotq.json"
grep -q '"site":"q_k_v","norm":"input_layernorm","blocks_smoothed":5,' $T/s.j || fail "q/k/v not smoothed in 5 blocks"
grep -q '"site":"gate_up","norm":"post_attention_layernorm","blocks_smoothed":5,' $T/s.j || fail "gate/up not smoothed in 5 blocks"
fm=$(field $T/s/spotq.json fold_max_relative_change); sb=$(field $T/s/spotq.json act_channel_spread_before); sa=$(field $T/s/spotq.json act_channel_spread_after)
bound "the fold changed a block" 'f < 1e-5' f=$fm
bound "the activations are not flatter" 'a < b' a=$sa b=$sb
tr -d '\n\t ' <$T/e/spotq.json | grep -q '"smoothquant":{"alpha":0.8,' || fail "alpha 0.8 not recorded"
grep -q '"smoothquant"' $T/n/spotq.json && fail "int8 without --smoothquant reports it"

# the serving check, and quality: the gate, and not worse than INT8 without SmoothQuant
for d in s g; do $SPOTQ check $T/$d >$T/$d.check || { cat $T/$d.check; fail "check rejected $d"; }; done
grep -q '0 rejected' $T/s.check || fail "$(tail -1 $T/s.check)"
ev s $M
ev n $M
ev g $M
ev gn $M
rs=$(field $T/s.json ppl_ratio); ks=$(field $T/s.json mean); kn=$(field $T/n.json mean)
rg=$(field $T/g.json ppl_ratio); kg=$(field $T/g.json mean); kgn=$(field $T/gn.json mean)
echo "smooth: int8 kld $kn, +smoothquant ppl ratio $rs kld $ks; int8+gptq kld $kgn, +smoothquant ppl ratio $rg kld $kg"
bound "int8 --smoothquant out of bounds" 'r > 0.99 && r < 1.01 && k > 0 && k < 0.004' r=$rs k=$ks
bound "int8+gptq --smoothquant out of bounds" 'r > 0.99 && r < 1.01 && k > 0 && k < 0.004' r=$rg k=$kg
bound "--smoothquant worse than int8" 's < 1.1 * n' s=$ks n=$kn
bound "--smoothquant worse than int8+gptq" 's < 1.1 * n' s=$kg n=$kgn

# the MoE fixtures (BF16): every expert's gate/up with one scale, the router compensated and written changed
for f in mixtral qwen2_moe; do
    F=tests/fixtures/moe/$f
    $SPOTQ quantize $F -o $T/$f --method int8+gptq --smoothquant $C 2>$T/$f.log || { cat $T/$f.log; fail "$f"; }
    $SPOTQ check $T/$f >$T/$f.check || fail "$f: check rejected it"
    router=model.layers.1.mlp.gate.weight
    [ $f = mixtral ] && router=model.layers.1.block_sparse_moe.gate.weight
    ! same_tensor $F/model.safetensors $T/$f/model.safetensors $router || fail "$f: the router was not compensated"
    ! same_tensor $F/model.safetensors $T/$f/model.safetensors model.layers.1.post_attention_layernorm.weight || fail "$f: the norm not smoothed"
    $SPOTQ inspect $T/$f | grep -q 'layers.1.input_layernorm.weight  *BF16' || fail "$f: the norm is no longer BF16"
    rf=$(field $T/$f/spotq.json router_fold_max_relative_change)
    bound "$f: the router's logits moved" 'x < 1e-4' x=$rf
    ev $f $F
    r=$(field $T/$f.json ppl_ratio); k=$(field $T/$f.json mean)
    echo "$f int8+gptq --smoothquant: ppl ratio $r, kld $k"
    bound "$f out of bounds" 'r > 0.99 && r < 1.02 && k > 0 && k < 0.02' r=$r k=$k
done

# bad combinations: usage errors, one line each, nothing written
tmp=$T
. tests/cli/lib/expect.sh
expect 2 "--smoothquant applies to --method int8 and int8\+gptq \(W8A8\), not gptq" -- quantize $M -o $T/x --method gptq $C --smoothquant 0.5
expect 2 "--smoothquant applies to --method int8 and int8\+gptq \(W8A8\), not fp8" -- quantize $M -o $T/x --method fp8 --smoothquant
expect 2 "--smoothquant 1.5: the migration strength ALPHA is between 0 and 1" -- quantize $M -o $T/x --method int8 $C --smoothquant 1.5
expect 2 "--smoothquant needs --calib FILE" -- quantize $M -o $T/x --method int8 --smoothquant
expect 2 "--smoothquant expects a number, got 'half'" -- quantize $M -o $T/x --method int8 $C --smoothquant=half
$SPOTQ calib $M $C -o $T/st 2>/dev/null || fail "calib"
expect 2 "--smoothquant needs --calib FILE: a statistics file holds no per-channel" -- quantize $M -o $T/x --method int8 --stats $T/st --smoothquant
[ ! -e $T/x ] || fail "a refused quantize wrote $T/x"
exit 0
