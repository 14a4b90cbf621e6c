#!/bin/sh
# fp8.sh: `spotq quantize --method fp8` on the bundled model: every scheme x activation variant writes
# the tensors and config its format describes (the 172-wide FFN matrices included), runs close to the
# source model, the same settings give the same model in vLLM's fp8 and compressed-tensors forms, the
# output does not depend on --threads, and settings a format cannot hold are usage errors. Block-wise FP8
# (--fp8-scheme block) in both forms, with its serving check, on the bundled, a 128-wide and the Mixtral model. fp8+gptq
# lowers every linear's output error below plain rounding's and, with the default calibration, meets
# the FP8 quality bars (per-tensor weight-only within 1% of FP32 perplexity, static activations 1.5%).
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 8 --seqlen 128"
q() { out=$1; shift; $SPOTQ quantize $M -o $T/$out --method fp8 $C "$@" 2>$T/$out.log; }
. tests/cli/lib/num.sh
fail() { echo "fp8: $*"; exit 1; }
field() { jnum "$@" || { echo "fp8: no number \"$2\" in $1" >&2; exit 1; }; }
ev() { evalj $T/$1.json $T/$1 --data data/tinystories/eval.txt --ctx 256 --ref $M; }

# the default: weight-only per tensor, which vLLM's fp8 format cannot hold: compressed-tensors, said so
q tn
grep -q "no weight-only (--act none) form" $T/tn.log || { echo "no note on the format"; cat $T/tn.log; exit 1; }
grep -q '"format":	"float-quantized"' $T/tn/config.json && grep -q '"input_activations":	null' $T/tn/config.json ||
    { echo "weight-only config"; cat $T/tn/config.json; exit 1; }
q ts --act static
q td --act dynamic
q cn --fp8-scheme channel
q cs --fp8-scheme channel --act static
q cd --fp8-scheme channel --act dynamic
q ts_ct --act static --format compressed-tensors
q td_ct --act dynamic --format compressed-tensors --threads 1

# vLLM's fp8: its config, scalar F32 scales, every linear in E4M3 whatever its shape
grep -q '"quant_method":	"fp8"' $T/ts/config.json && grep -q '"activation_scheme":	"static"' $T/ts/config.json &&
    grep -q '"ignored_layers":	\["lm_head"\]' $T/ts/config.json || { echo "fp8 config"; cat $T/ts/config.json; exit 1; }
grep -q '"activation_scheme":	"dynamic"' $T/td/config.json || { echo "fp8 dynamic config"; exit 1; }
$SPOTQ inspect $T/ts >$T/ts.txt
grep -q "quantization:     fp8, FP8 E4M3 weights, activations static" $T/ts.txt || { echo "inspect"; head -20 $T/ts.txt; exit 1; }
[ "$(grep -c 'F8_E4M3  \[' $T/ts.txt)" -eq 35 ] || { echo "want 35 E4M3 weights"; exit 1; }
grep -q 'layers.4.mlp.down_proj.weight  *F8_E4M3  \[64, 172\]' $T/ts.txt || { echo "down_proj [64, 172] not in E4M3"; exit 1; }
grep -q 'layers.0.self_attn.q_proj.weight_scale  *F32  *\[\]' $T/ts.txt &&
    grep -q 'layers.0.self_attn.q_proj.input_scale  *F32  *\[\]' $T/ts.txt || { echo "fp8 scales are not F32 scalars"; exit 1; }
! grep -q input_scale $T/td/model.safetensors || { echo "dynamic stores an input_scale"; exit 1; }
# compressed-tensors: [N, 1] weight scales per channel, [1] input scales
$SPOTQ inspect $T/cs >$T/cs.txt
grep -q 'layers.0.mlp.gate_proj.weight_scale  *F32  *\[172, 1\]' $T/cs.txt &&
    grep -q 'layers.0.mlp.gate_proj.input_scale  *F32  *\[1\]' $T/cs.txt || { echo "compressed-tensors scale shapes"; exit 1; }
grep -q '"strategy":	"channel"' $T/cs/config.json && grep -q '"strategy":	"token"' $T/cd/config.json ||
    { echo "compressed-tensors strategies"; exit 1; }
$SPOTQ inspect $T/ts --json | grep -q '"quant_method":	"fp8"' || { echo "inspect --json"; exit 1; }

# static input scales, by value: layer 0's q/k/v input is rmsnorm(embed(x)) whatever the quantisation,
# so its scale is max |rmsnorm(embed(t)) * g| / 448 over the calibration tokens t, computed here from the
# source weights (od reads the F32 bytes, awk does the arithmetic in double). Calibration on one short
# document repeated: every 64-token window holds all its tokens, so the max over the windows is the max
# over those five ids. Fused q/k/v and gate/up share their input and weight scales in every layer.
. tests/cli/lib/st.sh
i=0; while [ $i -lt 100 ]; do echo '{"text": "Once upon a time"}'; i=$((i + 1)); done >$T/once.jsonl
ids=$($SPOTQ tokenize $M $T/once.jsonl | tr ' ' '\n' | sort -un | tr '\n' ' ')
[ "$ids" = "1 261 378 403 407 " ] || fail "the repeated document's ids: $ids"
$SPOTQ quantize $M -o $T/sc --method fp8 --act static --calib $T/once.jsonl --nsamples 4 --seqlen 64 2>/dev/null
st_bytes $M/model.safetensors model.embed_tokens.weight >$T/emb || fail "no embeddings"
st_bytes $M/model.safetensors model.layers.0.input_layernorm.weight | od -An -tf4 -v >$T/g.txt || fail "no norm"
for t in 1 261 378 403 407; do echo $(od -An -tf4 -v -j $((t * 256)) -N 256 $T/emb); done >$T/rows.txt
ref=$(awk 'NR == FNR { for (i = 1; i <= NF; i++) g[n++] = $i; next }
           { rows++; ss = 0; for (i = 1; i <= NF; i++) ss += $i * $i; r = 1 / sqrt(ss / NF + 1e-5)
             for (i = 1; i <= NF; i++) { v = $i * r * g[i - 1]; if (v < 0) v = -v; if (v > m) m = v } }
           END { if (n == 64 && rows == 5) printf "%.9g\n", m / 448 }' $T/g.txt $T/rows.txt)
sc() { st_bytes $T/$1/model.safetensors model.layers.$2.$3.$4 || fail "$1: no model.layers.$2.$3.$4"; }
got=$(sc sc 0 self_attn.q_proj input_scale | od -An -tf4 | tr -d ' ')
echo "layer 0 q/k/v input scale $got, reference $ref"
bound "layer 0 q/k/v input scale" 'g / r - 1 < 1e-6 && r / g - 1 < 1e-6' g=$got r=$ref
for v in sc ts; do
    for l in 0 1 2 3 4; do
        for t in input_scale weight_scale; do
            sc $v $l self_attn.q_proj $t >$T/a; sc $v $l self_attn.k_proj $t >$T/b; sc $v $l self_attn.v_proj $t >$T/c
            cmp -s $T/a $T/b && cmp -s $T/a $T/c || fail "$v layer $l: q/k/v do not share their $t"
            sc $v $l mlp.gate_proj $t >$T/a; sc $v $l mlp.up_proj $t >$T/b
            cmp -s $T/a $T/b || fail "$v layer $l: gate/up do not share their $t"
        done
    done
done

# quality: every variant close to the source; the two formats of one setting are the same model
for v in tn ts td cn cs cd ts_ct td_ct; do
    ev $v
    r=$(field $T/$v.json ppl_ratio); k=$(field $T/$v.json mean)
    echo "$v: ppl ratio $r, kld $k"
    bound "$v: out of bounds" 'r > 1 && r < 1.03 && k > 0 && k < 0.03' r=$r k=$k
done
p_ts=$(field $T/ts.json ppl); p_ts_ct=$(field $T/ts_ct.json ppl); p_td=$(field $T/td.json ppl); p_td_ct=$(field $T/td_ct.json ppl)
num "ppl" "$p_ts" "$p_ts_ct" "$p_td" "$p_td_ct"
[ "$p_ts" = "$p_ts_ct" ] || { echo "static: fp8 and compressed-tensors differ"; exit 1; }
[ "$p_td" = "$p_td_ct" ] || { echo "dynamic: fp8 and compressed-tensors differ"; exit 1; }
# the same weights whatever --threads (td_ct ran on one thread)
q td_ct2 --act dynamic --format compressed-tensors --threads 2
cmp $T/td_ct/model.safetensors $T/td_ct2/model.safetensors || { echo "output depends on --threads"; exit 1; }
# static input scales come from the calibration forward through the FP8 linears: the same too
q ts_1 --act static --threads 1
q ts_2 --act static --threads 2
cmp $T/ts_1/model.safetensors $T/ts_2/model.safetensors || { echo "static input scales depend on --threads"; exit 1; }

# fp8+gptq: the same scales, codes chosen by GPTQ: every linear's output error below plain rounding's
# (both in spotq.json); with the default calibration, within the quality bars at the default context
$SPOTQ quantize $M -o $T/g --method fp8+gptq $C --act static 2>$T/g.log
[ "$(grep -c '"error_rtn"' $T/g/spotq.json)" -eq 35 ] || { echo "fp8+gptq: want 35 quantised linears"; exit 1; }
below_rtn $T/g/spotq.json ||
    { echo "fp8+gptq: a layer's error is not below RTN's"; exit 1; }
grep -q '"method":	"fp8+gptq"' $T/g/spotq.json && grep -q '"act_order":	false' $T/g/spotq.json || { echo "fp8+gptq arguments"; exit 1; }
cmp -s $T/g/config.json $T/ts/config.json || { echo "fp8+gptq: config differs from fp8's"; exit 1; }
for v in "none 1.01" "static 1.015"; do
    set -- $v
    $SPOTQ quantize $M -o $T/gq_$1 --method fp8+gptq --calib data/tinystories/calib.txt --act $1 2>/dev/null
    $SPOTQ eval $T/gq_$1 --data data/tinystories/eval.txt --ref $M --max-ppl-ratio $2 >$T/gq_$1.txt 2>&1 ||
        { echo "fp8+gptq --act $1 over ppl ratio $2"; cat $T/gq_$1.txt; exit 1; }
    echo "fp8+gptq --act $1: $(grep 'ppl ratio' $T/gq_$1.txt)"
done

# block-wise FP8 (--fp8-scheme block): vLLM's fp8 form by default (weight_block_size [128, 128], an F32
# weight_scale_inv [ceil(N/128), ceil(K/128)]), compressed-tensors' FP8_BLOCK config on request; activations
# dynamic per token and group of 128 (the default). The bundled model is 64 wide: it quantises and evaluates,
# and quantize warns that vLLM would not load it (K % 128, block_n), which spotq check rejects with the rule.
tmp=$T
. tests/cli/lib/expect.sh
q bk --fp8-scheme block
q bk_ct --fp8-scheme block --format compressed-tensors
grep -q '"quant_method":	"fp8"' $T/bk/config.json && grep -q '"activation_scheme":	"dynamic"' $T/bk/config.json &&
    grep -q '"weight_block_size":	\[128, 128\]' $T/bk/config.json || fail "block fp8 config: $(cat $T/bk/config.json)"
grep -q '"strategy":	"block"' $T/bk_ct/config.json && grep -q '"block_structure":	\[128, 128\]' $T/bk_ct/config.json &&
    grep -q '"strategy":	"group"' $T/bk_ct/config.json && grep -q '"group_size":	128' $T/bk_ct/config.json ||
    fail "block compressed-tensors config: $(cat $T/bk_ct/config.json)"
$SPOTQ inspect $T/bk >$T/bk.txt
$SPOTQ inspect $T/bk_ct >$T/bk_ct.txt
grep -q "FP8 E4M3 weights in blocks, activations dynamic per token group" $T/bk.txt || fail "inspect block: $(grep quantization $T/bk.txt)"
grep -q 'layers.0.mlp.gate_proj.weight_scale_inv  *F32  *\[2, 1\]' $T/bk.txt && grep -q 'layers.0.mlp.down_proj.weight_scale_inv  *F32  *\[1, 2\]' $T/bk.txt ||
    fail "vLLM fp8 block scale shapes"
grep -q 'layers.0.mlp.gate_proj.weight_scale  *F32  *\[2, 1\]' $T/bk_ct.txt && ! grep -q weight_scale_inv $T/bk_ct.txt || fail "compressed-tensors block scale shapes"
! grep -q input_scale $T/bk/model.safetensors || fail "block fp8 stores an input_scale"
grep -q '"fp8_scheme":	"block"' $T/bk/spotq.json || fail "spotq.json: fp8_scheme"
grep -q "warning: vLLM would not load $T/bk: 35 of 35 linears" $T/bk.log || fail "no serving warning: $(cat $T/bk.log)"
expect 1 "vLLM would not load it: 35 linears break its kernel rules, e.g. model.layers.0.self_attn.q_proj: an output partition of a merged linear \(not its last\) 64 is not a multiple of block_n 128" -- check $T/bk
$SPOTQ check $T/bk >$T/bk_check.txt 2>/dev/null || true
grep -q "down_proj .* rejected .*in_features 172 is not a multiple of 128: per_token_group_quant_fp8" $T/bk_check.txt || fail "K rule: $(cat $T/bk_check.txt)"
for v in bk bk_ct; do
    ev $v
    r=$(field $T/$v.json ppl_ratio); k=$(field $T/$v.json mean)
    echo "$v: ppl ratio $r, kld $k"
    bound "$v: out of bounds" 'r > 1 && r < 1.03 && k > 0 && k < 0.03' r=$r k=$k
done
[ "$(field $T/bk.json ppl)" = "$(field $T/bk_ct.json ppl)" ] || fail "block: fp8 and compressed-tensors differ"
# per-token dynamic on the same weights is a different model: the group scales must matter
[ "$(field $T/bk.json ppl)" != "$(field $T/td.json ppl)" ] || fail "block and per-tensor dynamic evaluate the same"
q bk1 --fp8-scheme block --threads 1
cmp $T/bk/model.safetensors $T/bk1/model.safetensors || fail "block: output depends on --threads"
# GPTQ on the FP8, FP4 and INT8 grids sweeps rows in fixed chunks on the threads: the same bytes for 1 and 3
for m in "fp8+gptq" "fp8+gptq --fp8-scheme channel" "fp8+gptq --fp8-scheme block" "nvfp4+gptq" "int8+gptq"; do
    for n in 1 3; do
        $SPOTQ quantize $M -o $T/gt$n --method $m $C --threads $n --force 2>/dev/null || fail "--method $m --threads $n failed"
    done
    cmp -s $T/gt1/model.safetensors $T/gt3/model.safetensors || fail "--method $m: output depends on --threads"
done
# fp8+gptq on the block grid: every linear below plain rounding's error, the same config and scales
$SPOTQ quantize $M -o $T/bg --method fp8+gptq --fp8-scheme block $C 2>/dev/null
below_rtn $T/bg/spotq.json || fail "block fp8+gptq: a layer's error is not below RTN's"
cmp -s $T/bg/config.json $T/bk/config.json || fail "block fp8+gptq: config differs from fp8's"
# a 128-wide model (zeros) is servable: every linear on CUTLASS's block kernel
. tests/cli/lib/mkmodel.sh
mkmodel $T/w128 128 256 2 2
$SPOTQ quantize $T/w128 -o $T/w128b --method fp8 --fp8-scheme block 2>$T/w128b.log || fail "w128 block: $(cat $T/w128b.log)"
! grep -q "would not load" $T/w128b.log || fail "w128 block: $(cat $T/w128b.log)"
$SPOTQ check $T/w128b >$T/w128b.txt || fail "w128 block rejected: $(cat $T/w128b.txt)"
[ "$(grep -c "CUTLASS block FP8" $T/w128b.txt)" -eq 7 ] || fail "w128 block kernels: $(cat $T/w128b.txt)"
$SPOTQ quantize $T/w128 -o $T/w128bc --method fp8 --fp8-scheme block --format compressed-tensors 2>/dev/null
$SPOTQ check $T/w128bc >/dev/null || fail "w128 block compressed-tensors rejected"
expect 1 "4 linears break .*q_proj: out_features per shard 64 is not a multiple of block_n 128 \(validate_fp8_block_shape\)" -- check $T/w128b --tp 2
$SPOTQ check $T/w128b --tp 2 >$T/tp2.txt 2>/dev/null || true
grep -q "o_proj .* rejected .*in_features per shard 64 is not a multiple of block_k 128" $T/tp2.txt && grep -q "down_proj .* CUTLASS block FP8" $T/tp2.txt ||
    fail "--tp 2: $(cat $T/tp2.txt)"
# the MoE fixture (Mixtral, 4 experts): quantises and evaluates close to the source
X=tests/fixtures/moe/mixtral
$SPOTQ quantize $X -o $T/mx --method fp8 --fp8-scheme block 2>/dev/null
$SPOTQ quantize $X -o $T/mxg --method fp8+gptq --fp8-scheme block --format compressed-tensors $C 2>/dev/null
grep -q 'experts.0.w1.weight_scale_inv' $T/mx/model.safetensors || fail "mixtral: no block scales on the experts"
for v in mx mxg; do
    evalj $T/$v.json $T/$v --data data/tinystories/eval.txt --ctx 256 --ref $X
    r=$(field $T/$v.json ppl_ratio); k=$(field $T/$v.json mean)
    echo "mixtral $v: ppl ratio $r, kld $k"
    bound "mixtral $v: out of bounds" 'r > 0.97 && r < 1.05 && k > 0 && k < 0.08' r=$r k=$k # per-tensor and per-channel dynamic: KLD 0.044, 0.047
done

# settings a format cannot hold, and bad values: usage errors, each with its one line
tmp=$T
. tests/cli/lib/expect.sh
expect 2 "--format fp8 holds one weight scale per tensor .* use --format compressed-tensors for weight-only FP8" -- \
    quantize $M -o $T/x --method fp8 $C --format fp8
expect 2 "--format fp8 holds one weight scale per tensor .* use --format compressed-tensors for per-channel scales" -- \
    quantize $M -o $T/x --method fp8 $C --format fp8 --fp8-scheme channel --act static
expect 2 "--act sometimes: use none, static or dynamic" -- quantize $M -o $T/x --method fp8 $C --act sometimes
expect 2 "--fp8-scheme row: use tensor, channel or block" -- quantize $M -o $T/x --method fp8 $C --fp8-scheme row
expect 2 "--method fp8 writes --format fp8 or compressed-tensors" -- quantize $M -o $T/x --method fp8 $C --format gptq --act static
expect 2 "--fp8-scheme and --act apply to --method fp8 and fp8\+gptq" -- quantize $M -o $T/x --method rtn $C --act static
expect 2 "use --format compressed-tensors for weight-only FP8" -- quantize $M -o $T/x --method fp8+gptq $C --format fp8
expect 2 "--fp8-scheme block runs its activations dynamic per token and group of 128 .*drop --act static" -- \
    quantize $M -o $T/x --method fp8 $C --fp8-scheme block --act static
expect 2 "--fp8-scheme block runs its activations dynamic .*drop --act none" -- quantize $M -o $T/x --method fp8+gptq $C --fp8-scheme block --act none
expect 2 "--fp8-scheme and --act apply to --method fp8 and fp8\+gptq" -- quantize $M -o $T/x --method gptq $C --fp8-scheme block
[ ! -e $T/x ] || fail "a refused quantize wrote $T/x"
exit 0
