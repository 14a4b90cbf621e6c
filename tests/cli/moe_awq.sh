#!/bin/sh
# moe_awq.sh: AWQ and awq+gptq on the mixtures of experts of tests/fixtures/moe (mixtral; qwen2_moe with a
# shared expert and its gate; qwen3_moe with per-head q/k norms): every expert quantised, each layer's
# experts' (and shared expert's) gate and up one scale set (one alpha for all of them) folded into
# post_attention_layernorm, each down its own set; the folding leaves each block's output and each
# router's logits unchanged (spotq.json's fold figures, bounded);
# tokens per expert reported (top-2 of every calibration token); perplexity and KLD below RTN's on each;
# at 8 bits close to lossless (the routers written compensated).
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/cli/lib/num.sh
C="--calib data/tinystories/calib.txt --nsamples 8 --seqlen 128 --group-size 32"
head -c 20000 data/tinystories/eval.txt >$T/eval.txt # about 10,000 tokens: 40 windows of 256
field() { jnum "$@" || { echo "moe_awq: no number \"$2\" in $1" >&2; exit 1; }; }
# the values of KEY in spotq.json FILE for the layers whose name matches RE (cJSON: one key a line)
alphas() { awk -v re="$2" '/"name":/ { n = $2 } /"awq_alpha":/ { a = $2; sub(/,$/, "", a); if (n ~ re) print a }' "$1"; }
list() { awk -v k="\"$2\":" '$1 == k { sub(/^[^[]*\[/, ""); sub(/\].*$/, ""); gsub(/,/, " "); print }' "$1"; }
M=$T/m.txt
# Under ASan and UBSan (make test-debug, five times slower) only qwen2_moe's rtn and awq run, and the
# 8-bit check (the same code paths: the shared expert and its gate are qwen2_moe's alone).
fixtures="mixtral qwen2_moe qwen3_moe" debug=0
case $SPOTQ in */debug/*) fixtures=qwen2_moe debug=1;; esac
for f in $fixtures; do
    src=tests/fixtures/moe/$f
    case $f in
    mixtral) nq=80 gu='experts\.[0-9]+\.w[13]"';;
    qwen2_moe) nq=95 gu='(experts\.[0-9]+|shared_expert)\.(gate|up)_proj"';;
    qwen3_moe) nq=140 gu='experts\.[0-9]+\.(gate|up)_proj"';;
    esac
    methods="rtn awq awq+gptq"
    [ $debug -eq 1 ] && methods="rtn awq"
    for m in $methods; do
        $SPOTQ quantize $src -o $T/$f-$m --method $m $C 2>$T/$f-$m.log || { echo "$f $m: $(tail -n 1 $T/$f-$m.log)"; exit 1; }
        n=$(grep -c '"quantized":[[:space:]]*true' $T/$f-$m/spotq.json) || true
        [ "$n" -eq $nq ] || { echo "$f $m: $n matrices quantised, want $nq"; exit 1; }
        evalj $T/$f-$m.json $T/$f-$m --data $T/eval.txt --ctx 256 --ref $src
        p=$(field $T/$f-$m.json ppl); k=$(field $T/$f-$m.json mean)
        echo "$f $m: ppl $p, kld $k" | tee -a $M
        [ $m = rtn ] && { rp=$p; rk=$k; continue; }
        bound "$f $m: perplexity not below RTN's" 'p < r' p=$p r=$rp
        bound "$f $m: KLD not below RTN's" 'k > 0 && k < r' k=$k r=$rk
        # the folding: the full-precision block and the routers compute what they did (measured ~5e-7, ~5e-8)
        fb=$(field $T/$f-$m/spotq.json awq_fold_max_relative_change); fr=$(field $T/$f-$m/spotq.json awq_router_fold_max_relative_change)
        bound "$f $m: folding changed a block's output" 'b < 1e-4' b=$fb
        bound "$f $m: folding changed a router's logits" 'r < 1e-5' r=$fr
        # layer 2: one alpha for every expert's gate and up, a scaled one
        a=$(alphas $T/$f-$m/spotq.json "layers\\.2\\..*$gu" | sort -u)
        [ "$(echo "$a" | wc -l)" -eq 1 ] && [ -n "$a" ] || { echo "$f $m: layer 2's gate/up alphas differ: $a"; exit 1; }
        bound "$f $m: layer 2's gate/up set not scaled" 'a >= 0' a=$a
        # each layer's experts were routed top-2 of the 8 x 128 calibration tokens
        list $T/$f-$m/spotq.json tokens_per_expert | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (s != 2048) bad++ } END { exit bad > 0 || NR != 5 }' ||
            { echo "$f $m: tokens per expert do not add up to 2 x 1024 in every layer"; exit 1; }
    done
done
# 8 bits (awq+gptq, compressed-tensors): the scales' folding the only change of note, so the routers
# written as they were (not compensated for the norm's scales) show: measured KLD 0.00069, 0.0084 so
f=qwen2_moe
$SPOTQ quantize tests/fixtures/moe/$f -o $T/$f-8 --method awq+gptq --bits 8 --format compressed-tensors $C 2>$T/$f-8.log ||
    { echo "$f 8-bit: $(tail -n 1 $T/$f-8.log)"; exit 1; }
evalj $T/$f-8.json $T/$f-8 --data $T/eval.txt --ctx 256 --ref tests/fixtures/moe/$f
k=$(field $T/$f-8.json mean)
echo "$f awq+gptq 8-bit: kld $k"
bound "$f awq+gptq 8-bit: not close to lossless (the routers?)" 'k > 0 && k < 0.002' k=$k
exit 0
