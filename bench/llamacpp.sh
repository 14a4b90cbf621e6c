#!/bin/sh
# llamacpp.sh: spotq against llama.cpp on the same weights, in quality (issue 17) and speed (issue 19).
# llama.cpp is built in a scratch folder outside the repo from a source tree you fetched (nothing of it
# enters the repo); the HF model (F32) is converted with llama.cpp's own convert_hf_to_gguf.py, so both
# tools read the same F32 weights. Quality: llama-imatrix on CALIB (-c 512, NCHUNKS chunks), Q4_0 and
# Q4_K_M with and without that imatrix and Q8_0 (token embeddings and output kept F32, as spotq keeps
# them), each scored by llama-perplexity against the F32 logits on EVAL (ctx 512), next to spotq's
# eval --protocol llamacpp of the checkpoints named in SPOTQ_DIRS on the same text. Speed: llama-bench
# prefill 256 / decode 64 at 2 threads for F32, Q8_0, Q4_0, next to `spotq bench` where SPOTQ_BENCH names
# spotq checkpoints (F32, INT8, INT4). Prints a table; not a test.
# Usage: LLAMACPP_SRC=DIR MODEL=HFDIR EVAL=eval.txt CALIB=calib.txt sh bench/llamacpp.sh [BIN]
#   SCRATCH (default /tmp/spotq-llamacpp), NCHUNKS (64), PY (a python with numpy, torch, transformers,
#   sentencepiece for the converter; default python3), SPOTQ_DIRS, SPOTQ_BENCH, THREADS (2), SKIP_SPEED.
set -e
BIN=$(realpath "${1:-build/release/spotq}")
cd "$(dirname "$0")/.."
: "${LLAMACPP_SRC:?LLAMACPP_SRC: a llama.cpp source tree (fetched, outside the repo)}"
: "${MODEL:?MODEL: the HF checkpoint (F32)}" "${EVAL:?EVAL: the eval text}" "${CALIB:?CALIB: the calibration text}"
S=${SCRATCH:-/tmp/spotq-llamacpp}
PY=${PY:-python3}
T=${THREADS:-2}
mkdir -p "$S"
B=$LLAMACPP_SRC/build/bin
if [ ! -x "$B/llama-perplexity" ]; then
    cmake -S "$LLAMACPP_SRC" -B "$LLAMACPP_SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$LLAMACPP_SRC/build" --target llama-quantize llama-perplexity llama-imatrix llama-bench -j2 >&2
fi
G=$S/f32.gguf
# The converter (a February 2025 snapshot) writes tokenizer.ggml.add_bos_token twice when tokenizer_config.json
# names it, and stops; it gets a copy without that key, and writes add_bos_token = false itself for a BPE
# vocabulary such as SmolLM2's, which is spotq's rule for that model too (eval prints its bos: line).
if [ ! -f "$G" ]; then
    rm -rf "$S/hf" && mkdir -p "$S/hf"
    for f in "$MODEL"/*; do ln -s "$(realpath "$f")" "$S/hf/"; done
    rm -f "$S/hf/tokenizer_config.json"
    [ -f "$MODEL/tokenizer_config.json" ] && "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); c.pop("add_bos_token", None); json.dump(c, open(sys.argv[2], "w"))' \
        "$MODEL/tokenizer_config.json" "$S/hf/tokenizer_config.json"
    "$PY" "$LLAMACPP_SRC/convert_hf_to_gguf.py" "$S/hf" --outtype f32 --outfile "$G" >&2
fi
[ -f "$S/base.kld" ] || "$B/llama-perplexity" -m "$G" -f "$EVAL" -c 512 -t $T --kl-divergence-base "$S/base.kld" >"$S/base.log" 2>&1
[ -f "$S/imatrix.dat" ] || "$B/llama-imatrix" -m "$G" -f "$CALIB" -c 512 --chunks "${NCHUNKS:-64}" -t $T -o "$S/imatrix.dat" >"$S/imatrix.log" 2>&1
# kld NAME GGUF: ppl ratio and mean KLD against the F32 logits
kld() {
    "$B/llama-perplexity" -m "$2" -t $T --kl-divergence-base "$S/base.kld" --kl-divergence >"$S/$1.log" 2>&1
    ratio=$(sed -n 's/^Mean ln(PPL(Q)\/PPL(base)) *: *\([-0-9.e]*\).*/\1/p' "$S/$1.log" | head -1)
    mean=$(sed -n 's/^Mean *KLD: *\([-0-9.e]*\).*/\1/p' "$S/$1.log" | head -1)
    bpw=$(sed -n 's/.*file size *= *[0-9.]* [MG]iB (\([0-9.]*\) BPW).*/\1/p' "$S/$1.log" | head -1)
    printf '| llama.cpp %s | %s | %.4f | %.4f |\n' "$1" "${bpw:-?}" "$(awk -v r="$ratio" 'BEGIN { print exp(r) }')" "$mean"
}
echo "| tool, scheme | bits/weight (file) | ppl ratio | mean KLD |"
echo "|---|---|---|---|"
for spec in ${LLAMACPP_QUANTS:-Q4_0:Q4_0:- Q4_0+imatrix:Q4_0:imatrix Q4_K_M+imatrix:Q4_K_M:imatrix Q8_0:Q8_0:-}; do
    spec=$(echo "$spec" | tr : " ")
    set -- $spec
    q=$S/$1.gguf
    if [ ! -f "$q" ]; then
        im=; [ "$3" = imatrix ] && im="--imatrix $S/imatrix.dat"
        "$B/llama-quantize" $im --token-embedding-type f32 --output-tensor-type f32 "$G" "$q" "$2" $T >"$S/$1.qlog" 2>&1
    fi
    kld "$1" "$q"
done
field() { sed -n "s/.*\"$1\":[ \t]*\([0-9.e+-]*\).*/\1/p" "$2" | head -1; }
for d in $SPOTQ_DIRS; do
    "$BIN" eval "$d" --data "$EVAL" --ctx 512 --protocol llamacpp --ref "$MODEL" --json >"$S/spotq_$(basename "$d").json"
    j=$S/spotq_$(basename "$d").json
    printf '| spotq %s | %s | %.4f | %.4f |\n' "$(basename "$d")" "$(field bits_per_weight "$d/spotq.json")" "$(field ppl_ratio "$j")" "$(field mean "$j")"
done
[ -n "$SKIP_SPEED" ] && exit 0
echo
echo "| weights | llama.cpp pp256 t/s | llama.cpp tg64 t/s |"
echo "|---|---|---|"
for q in "$G" "$S/Q8_0.gguf" "$S/Q4_0.gguf"; do
    "$B/llama-bench" -m "$q" -t $T -p 256 -n 64 -r 3 -o csv >"$S/bench.csv" 2>/dev/null
    pp=$(awk -F, 'NR > 1 && $0 ~ /"256","0"/ { gsub(/"/, "", $(NF-1)); print $(NF-1) }' "$S/bench.csv" | head -1)
    tg=$(awk -F, 'NR > 1 && $0 ~ /"0","64"/ { gsub(/"/, "", $(NF-1)); print $(NF-1) }' "$S/bench.csv" | head -1)
    echo "| $(basename "$q" .gguf) | $pp | $tg |"
done
for d in $SPOTQ_BENCH; do echo "spotq $(basename "$d"): $("$BIN" bench "$d" --threads $T --prompt-len 256 --gen 64 2>&1 | tail -2 | tr '\n' ' ')"; done
