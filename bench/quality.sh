#!/bin/sh
# quality.sh: quantisation quality on the bundled stories260K (or MODEL=DIR, e.g. the MoE fixtures
# tests/fixtures/moe/qwen2_moe, mixtral and qwen3_moe): each integer method at 4 bits, group 32; RTN and GPTQ on
# both grids (--grid minmax and mse) at g32 and g64, sym and asym (the spotq rows of issue 17's table);
# and every FP8 variant (per tensor or channel x activations none, static, dynamic; per 128x128 block with
# dynamic per-group activations; rounded or through GPTQ); INT8 W8A8 (int8, int8+gptq, each with and without --smoothquant 0.5 and 0.8). Calibrated on CALIB (data/tinystories/calib.txt, NSAMPLES x 512 tokens, 128), evaluated on
# DATA (data/tinystories/eval.txt, ctx CTX=512, PROTOCOL=gptq) against the full-precision model.
# Prints a markdown table (perplexity, ratio, KL divergence, top-1 agreement, bits per quantised weight,
# quantisation time). ROWS=grid prints only the grid rows; ROWS=new only issue 14's schemes (FP8 128x128 block,
# NVFP4, MXFP4, INT8 W8A8: the rows whose method is fp4 or int8 or whose scheme is block), as README's table of them.
# Usage: sh bench/quality.sh [BIN] [extra quantize args, split on spaces].
set -e
BIN=${1:-build/release/spotq}
if [ $# -gt 0 ]; then shift; fi
EXTRA="$*"
cd "$(dirname "$0")/.."
OUT=${BENCH_DIR:-build/bench}/quality
mkdir -p "$OUT"
M=${MODEL:-models/stories260K}
CALIB=${CALIB:-data/tinystories/calib.txt}
DATA=${DATA:-data/tinystories/eval.txt}
EV="--data $DATA --ctx ${CTX:-512} --protocol ${PROTOCOL:-gptq}"
QA="--calib $CALIB --nsamples ${NSAMPLES:-128} --seqlen 512"
field() { sed -n "s/.*\"$1\":[ \t]*\([0-9.e+-]*\).*/\1/p" "$2" | head -1; }
echo "| method | bits/weight | quantize s | ppl | ppl ratio | KLD mean | KLD p99 | top-1 |"
echo "|---|---|---|---|---|---|---|---|"
"$BIN" eval $M $EV --json > "$OUT/fp.json"
printf '| full precision | 16/32 | - | %.4f | 1 | 0 | 0 | 100%% |\n' "$(field ppl "$OUT/fp.json")"
INT4="--bits 4 --group-size 32"
set --
[ "$ROWS" = grid ] || set -- "rtn --asym $INT4" "gptq --asym --act-order $INT4" "awq $INT4" "awq+gptq --asym --act-order $INT4"
for m in rtn "gptq --act-order"; do
    for g in 32 64; do
        for sy in sym asym; do
            for grid in minmax mse; do set -- "$@" "$m --$sy --bits 4 --group-size $g --grid $grid"; done
        done
    done
done
[ "$ROWS" = grid ] || for fp8 in fp8 fp8+gptq; do
    for scheme in tensor channel; do
        for act in none static dynamic; do set -- "$@" "$fp8 --fp8-scheme $scheme --act $act"; done
    done
    set -- "$@" "$fp8 --fp8-scheme block" # 128x128 weight blocks, activations dynamic per token and group of 128
done
# FP4: NVFP4 W4A16 and W4A4 (activations FP4 per group of 16 at run time), MXFP4 W4A16; RTN and GPTQ on the FP4 grid
[ "$ROWS" = grid ] || set -- "$@" nvfp4 nvfp4+gptq "nvfp4 --act dynamic" "nvfp4+gptq --act dynamic" mxfp4 mxfp4+gptq
[ "$ROWS" = grid ] || set -- "$@" int8 int8+gptq # INT8 W8A8: per-channel weights, activations INT8 dynamic per token
# ...with SmoothQuant folded into the norms first, at the default strength and at 0.8
[ "$ROWS" = grid ] || set -- "$@" "int8 --smoothquant 0.5" "int8+gptq --smoothquant 0.5" "int8 --smoothquant 0.8" "int8+gptq --smoothquant 0.8"
if [ "$ROWS" = new ]; then
    for m in "$@"; do
        shift
        case "$m" in *"--fp8-scheme block"*|nvfp4*|mxfp4*|int8*) set -- "$@" "$m" ;; esac
    done
fi
for m in "$@"; do
    dir="$OUT/$(echo "$m" | tr -c 'a-z0-9\n' _)"
    "$BIN" quantize $M -o "$dir" --method $m $QA --force $EXTRA 2>/dev/null
    "$BIN" eval "$dir" $EV --ref $M --json > "$dir.json"
    bpw=$(field bits_per_quantized_weight "$dir/spotq.json"); t=$(field total "$dir/spotq.json")
    printf '| %s | %.2f | %.1f | %.4f | %.4f | %.4f | %.3f | %.2f%% |\n' "$m" "$bpw" "$t" "$(field ppl "$dir.json")" \
        "$(field ppl_ratio "$dir.json")" "$(field mean "$dir.json")" "$(field p99 "$dir.json")" \
        "$(echo "$(field top1_agreement "$dir.json")" | awk '{ print 100 * $1 }')"
done
