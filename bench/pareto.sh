#!/bin/sh
# pareto.sh: issue 18's Pareto table: whole-checkpoint bits per weight (every tensor counted, as
# spotq.json's bits_per_weight and the GGUF file's size), mean KLD and ppl ratio against the
# full-precision model, for every uniform scheme spotq writes (rtn and gptq INT4 g32/g64/g128 sym/asym,
# INT8 per channel, FP8 per channel; compressed-tensors, the budget's layout), the budgeted checkpoints
# (--target-bits at each of TARGETS: by default the sizes of the uniform and llama.cpp rows), and llama.cpp's K-quant mixes on the same weights when LLAMACPP
# (a folder with llama-quantize) and LLAMACPP_SRC (its convert_hf_to_gguf.py) are given: converted from
# the same HF weights, quantised with llama.cpp's own mix, dequantised back to HF by bench/gguf_to_hf.py
# and scored by the same spotq eval; their bits per weight count the GGUF's tensor data, as spotq's count
# the safetensors' (PY needs numpy and PyPI's gguf). Statistics once (spotq calib), every quantisation from them.
# Usage: sh bench/pareto.sh [BIN]; MODEL (models/stories260K), CALIB, DATA, CTX (512), PROTOCOL (gptq),
#   NSAMPLES (16: the bundled calibration text is about 4.6k tokens, and 16 x 512 leave the budget's
#   measurement windows held out), SEQLEN (512), TARGETS (bits per weight, default: those of the uniform rows, rounded down),
#   UNIFORM (0: skip the uniform rows), UNIFORM_METHODS (rtn gptq gptq+act: gptq --act-order), UNIFORM_LIST (a file of
#   --method argument lines instead), BUDGET (0: skip the budgeted rows), BUDGET_ARGS (--act-order; e.g. --budget-windows 4), KEEP_DTYPES (source bf16: the uniform rows with each --keep-dtype), KQUANTS (Q4_K_M Q5_K_M Q6_K and each +e16: token embeddings F16), SCRATCH (build/bench/pareto), PY.
set -e
BIN=$(realpath "${1:-build/release/spotq}")
cd "$(dirname "$0")/.."
M=${MODEL:-models/stories260K}
CALIB=${CALIB:-data/tinystories/calib.txt}
DATA=${DATA:-data/tinystories/eval.txt}
S=${SCRATCH:-build/bench/pareto}/$(basename "$M")
mkdir -p "$S"
PY=${PY:-python3}
EV="--data $DATA --ctx ${CTX:-512} --protocol ${PROTOCOL:-gptq}"
field() { sed -n "s/.*\"$1\":[ \t]*\([0-9.e+-]*\).*/\1/p" "$2" | head -1; }
[ -f "$S/stats.sqs" ] || "$BIN" calib "$M" --calib "$CALIB" --nsamples "${NSAMPLES:-16}" --seqlen "${SEQLEN:-512}" -o "$S/stats.sqs" --force 2>&1 | tail -1 >&2
row() { # NAME DIR [BPW]
    "$BIN" eval "$2" $EV --ref "$M" --json >"$2.json" 2>/dev/null
    printf '| %s | %.3f | %.5f | %.4f |\n' "$1" "${3:-$(field bits_per_weight "$2/spotq.json")}" "$(field mean "$2.json")" "$(field ppl_ratio "$2.json")"
}
echo "| $(basename "$M"): scheme | bits/weight (whole checkpoint) | KLD mean | ppl ratio |"
echo "|---|---|---|---|"
ubpw=
if [ "${UNIFORM:-1}" != 0 ]; then
    set --
    for m in ${UNIFORM_METHODS:-rtn gptq gptq+act}; do
        [ "$m" = gptq+act ] && m="gptq --act-order"
        for g in 32 64 128; do for sy in sym asym; do set -- "$@" "$m --bits 4 --group-size $g --$sy"; done; done
        set -- "$@" "$m --bits 8 --group-size -1 --sym"
    done
    set -- "$@" "fp8 --fp8-scheme channel --act none" "fp8+gptq --fp8-scheme channel --act none"
    if [ -n "$UNIFORM_LIST" ]; then set --; while IFS= read -r l; do [ -n "$l" ] && set -- "$@" "$l"; done <"$UNIFORM_LIST"; fi
    for kd in ${KEEP_DTYPES:-source bf16}; do
        for a in "$@"; do
            d="$S/u_$(echo "$a" | tr -c 'a-z0-9\n' _)"
            [ "$kd" = source ] || d="${d}_$kd"
            "$BIN" quantize "$M" -o "$d" --method $a --keep-dtype "$kd" --format compressed-tensors --stats "$S/stats.sqs" --force 2>"$d.log" ||
                { echo "| uniform $a | not written: $(tail -1 "$d.log") | | |"; continue; }
            row "uniform $a$([ "$kd" = source ] || echo " --keep-dtype $kd")" "$d"
            ubpw="$ubpw $(awk -v b="$(field bits_per_weight "$d/spotq.json")" 'BEGIN { printf "%.3f", int(b * 1000) / 1000 }')"
        done
    done
fi
if [ -n "$LLAMACPP" ] && [ -x "$LLAMACPP/llama-quantize" ]; then
    G=$S/f32.gguf
    if [ ! -f "$G" ]; then
        rm -rf "$S/hf" && mkdir -p "$S/hf"
        for f in "$M"/*; do ln -s "$(realpath "$f")" "$S/hf/"; done
        rm -f "$S/hf/tokenizer_config.json" # see bench/llamacpp.sh: the converter's add_bos_token twice
        [ -f "$M/tokenizer_config.json" ] && "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); c.pop("add_bos_token", None); json.dump(c, open(sys.argv[2], "w"))' \
            "$M/tokenizer_config.json" "$S/hf/tokenizer_config.json"
        "$PY" "$LLAMACPP_SRC/convert_hf_to_gguf.py" "$S/hf" --outtype f32 --outfile "$G" >"$S/convert.log" 2>&1
    fi
    params=$("$BIN" inspect "$M" --json 2>/dev/null | sed -n 's/.*"parameters":[ \t]*\([0-9]*\).*/\1/p' | head -1)
    # each mix as llama.cpp makes it, and (q+e16) with the token embeddings in F16, as 16 bits as spotq's budget keeps them
    for q in ${KQUANTS:-Q4_K_M Q5_K_M Q6_K Q4_K_M+e16 Q5_K_M+e16 Q6_K+e16}; do
        case $q in *+e16) qa="--token-embedding-type f16" ;; *) qa= ;; esac
        [ -f "$S/$q.gguf" ] || "$LLAMACPP/llama-quantize" $qa "$G" "$S/$q.gguf" ${q%+e16} 2 >"$S/$q.qlog" 2>&1
        [ -f "$S/$q/model.safetensors" ] || "$PY" bench/gguf_to_hf.py "$S/$q.gguf" "$S/$q" >"$S/$q.clog" 2>&1
        for f in tokenizer.json tokenizer_config.json tokenizer.model; do [ -f "$M/$f" ] && cp "$M/$f" "$S/$q/"; done
        # tensor data only, as spotq.json's bits_per_weight counts it (the GGUF's header and vocabulary left out)
        tb=$("$PY" -c 'import sys, gguf; print(sum(int(t.n_bytes) for t in gguf.GGUFReader(sys.argv[1]).tensors))' "$S/$q.gguf")
        bpw=$(awk -v b="$tb" -v p="$params" 'BEGIN { print 8 * b / p }')
        row "llama.cpp $q" "$S/$q" "$bpw"
        ubpw="$ubpw $(awk -v b="$bpw" 'BEGIN { printf "%.3f", int(b * 1000) / 1000 }')"
    done
fi
[ "${BUDGET:-1}" = 0 ] || for t in ${TARGETS:-$(echo $ubpw | tr ' ' '\n' | sort -un)}; do
    d="$S/b_$t"
    "$BIN" quantize "$M" -o "$d" --target-bits "$t" --calib "$CALIB" --stats "$S/stats.sqs" ${BUDGET_ARGS---act-order} --force 2>"$d.log" || { echo "| budget $t | failed: $(tail -1 "$d.log") | | |"; continue; }
    row "budget --target-bits $t ${BUDGET_ARGS---act-order}" "$d"
done
