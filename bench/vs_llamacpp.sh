#!/bin/sh
# vs_llamacpp.sh: spotq / llama.cpp speed at the same bits (issue 19), on the synthetic Llama of
# bench/make_model.py and on the 135M shape (hidden 576, 30 layers, vocab 49152, tied embeddings),
# random weights: F32, INT8 per channel vs Q8_0, INT4 g32 and g64 vs Q4_0 (RTN, symmetric), lm_head /
# token embedding F32 in both. The same F32 weights go to llama.cpp through bench/hf_to_gguf.py (its
# gguf-py writer), then llama-quantize. Prefill PP tokens and decode TG tokens (from an empty context
# in both, as llama-bench's tg test runs) at THREADS threads, `spotq bench` next to `llama-bench`,
# each the median of ROUNDS alternating rounds (the machine is shared: rounds alternate the two tools
# so that a burst of load hits both). Prints a table; not a test.
# llama.cpp is built outside the repo (LLAMACPP_SRC/build/bin, as bench/llamacpp.sh builds it).
# Usage: LLAMACPP_SRC=DIR sh bench/vs_llamacpp.sh [BIN]
#   SCRATCH (/tmp/spotq-vs-llamacpp), SHAPES ("default 135m"), THREADS (2), ROUNDS (3), PP (256), TG (64),
#   PY (python3 with numpy), SPOTQ_CPU_ISA (passed through: scalar|avx2|avx512).
set -e
BIN=$(realpath "${1:-build/release/spotq}")
cd "$(dirname "$0")/.."
: "${LLAMACPP_SRC:?LLAMACPP_SRC: a llama.cpp source tree with build/bin (see bench/llamacpp.sh)}"
LB=$LLAMACPP_SRC/build/bin
[ -x "$LB/llama-bench" ] && [ -x "$LB/llama-quantize" ] || { echo "vs_llamacpp.sh: no llama-bench/llama-quantize in $LB"; exit 1; }
S=${SCRATCH:-/tmp/spotq-vs-llamacpp}
PY=${PY:-python3}
T=${THREADS:-2}
R=${ROUNDS:-3}
PP=${PP:-256}
TG=${TG:-64}
mkdir -p "$S"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg); $T threads, median of $R rounds"

# OpenBLAS's kernels set spotq's F32 prefill rate (OPENBLAS_CORETYPE, when set, chooses them): say which ran.
echo "spotq: $("$BIN" bench models/stories260K --threads "$T" --prompt-len 4 --gen 1 --reps 1 | sed -n 's/^threads: *//p'); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# llama.cpp PP/TG tokens/s of GGUF: "pp tg"
llama_run() {
    "$LB/llama-bench" -m "$1" -t "$T" -p "$PP" -n "$TG" -r 1 -o csv 2>/dev/null | awk -F, -v pp="$PP" -v tg="$TG" '
        NR == 1 { for (i = 1; i <= NF; i++) { h = $i; gsub(/"/, "", h); c[h] = i } next }
        { gsub(/"/, ""); if ($c["n_prompt"] == pp && $c["n_gen"] == 0) p = $c["avg_ts"]; if ($c["n_prompt"] == 0 && $c["n_gen"] == tg) g = $c["avg_ts"] }
        END { print p, g }'
}
# spotq's prefill of PP tokens, then TG decode steps from a 1-token prompt: llama-bench's tg test decodes
# from an empty context, so decoding after the PP-token prompt would time attention over PP more
# positions than llama.cpp's does.
spotq_run() {
    p=$("$BIN" bench "$1" --threads "$T" --prompt-len "$PP" --gen 1 --reps 1 --json | tr ',{}' '\n\n\n' | awk -F: '
        /"prefill_tokens_per_second"/ { p = $2 } END { print p + 0 }')
    g=$("$BIN" bench "$1" --threads "$T" --prompt-len 1 --gen "$TG" --reps 1 --json | tr ',{}' '\n\n\n' | awk -F: '
        /"decode_tokens_per_second"/ { g = $2 } END { print g + 0 }')
    echo "$p $g"
}

for shape in ${SHAPES:-default 135m}; do
    case $shape in
    default) name=synth-llama ;;
    135m) name=synth-135m ;;
    *) echo "vs_llamacpp.sh: unknown shape $shape"; exit 2 ;;
    esac
    D=$S/$name
    "$PY" bench/make_model.py "$D-f32" --dtype F32 --shape "$shape" >/dev/null
    [ -f "$D-f32.gguf" ] || "$PY" bench/hf_to_gguf.py "$D-f32" "$D-f32.gguf" "$LLAMACPP_SRC"
    for q in Q8_0 Q4_0; do
        [ -f "$D-$q.gguf" ] || "$LB/llama-quantize" --token-embedding-type f32 --output-tensor-type f32 "$D-f32.gguf" "$D-$q.gguf" $q "$T" >"$D-$q.qlog" 2>&1
    done
    for spec in "int8 8 -1" "int4g32 4 32" "int4g64 4 64"; do
        set -- $spec
        [ -f "$D-$1/config.json" ] || "$BIN" quantize "$D-f32" -o "$D-$1" --method rtn --bits "$2" --group-size "$3" --force >/dev/null 2>&1
    done
    echo
    echo "== $name ($("$BIN" bench "$D-f32" --reps 1 --gen 1 --prompt-len 1 2>&1 | sed -n 's/^model: *[^ ]* (\(.*\))/\1/p'))"
    echo "| spotq vs llama.cpp | prefill $PP spotq / llama.cpp t/s | ratio | decode $TG spotq / llama.cpp t/s | ratio |"
    echo "|---|---|---|---|---|"
    for pair in "f32 f32" "int8 Q8_0" "int4g32 Q4_0" "int4g64 Q4_0"; do
        set -- $pair
        sp=; sg=; lp=; lg=
        i=0
        while [ $i -lt "$R" ]; do
            set -- $pair $(spotq_run "$D-$1")
            sp="$sp $3"; sg="$sg $4"
            set -- $pair $(llama_run "$D-$2.gguf")
            lp="$lp $3"; lg="$lg $4"
            i=$((i + 1))
        done
        set -- $pair
        mp=$(echo "$sp" | median); mg=$(echo "$sg" | median); np=$(echo "$lp" | median); ng=$(echo "$lg" | median)
        awk -v a="$1 vs $2" -v sp="$mp" -v lp="$np" -v sg="$mg" -v lg="$ng" \
            'BEGIN { printf "| %s | %.1f / %.1f | %.2f | %.1f / %.1f | %.2f |\n", a, sp, lp, (lp > 0 ? sp / lp : 0), sg, lg, (lg > 0 ? sg / lg : 0) }'
    done
done
