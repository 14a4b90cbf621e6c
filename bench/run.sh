#!/bin/sh
# run.sh: `make bench`: prefill, decode and eval tokens/s of spotq ($1, the binary) on a synthetic
# Llama of realistic shape (hidden 1024, 8 layers, FFN 2816, 16 heads over 4 KV heads, vocab 512,
# random weights from bench/make_model.py, written to build/bench, never committed), in F32 and BF16,
# at 1 thread and at one per CPU. Prints numbers; it is not a test.
# Environment: BENCH_DIR (default build/bench), BENCH_DTYPES (default "F32 BF16"), THREADS (default nproc).
set -e
BIN=${1:-build/release/spotq}
DIR=${BENCH_DIR:-build/bench}
DTYPES=${BENCH_DTYPES:-F32 BF16}
THREADS=${THREADS:-$(nproc)}
cd "$(dirname "$0")/.."
[ -x "$BIN" ] || { echo "bench: no binary at $BIN (make first)"; exit 1; }
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
for dt in $DTYPES; do
    model=$DIR/synth-llama-$(echo "$dt" | tr 'A-Z' 'a-z')
    python3 bench/make_model.py "$model" --dtype "$dt"
    for t in $(printf '1\n%s\n' "$THREADS" | sort -un); do
        echo
        echo "== $dt weights, $t thread(s): $BIN bench $model --prompt-len 256 --gen 64 --threads $t"
        "$BIN" bench "$model" --prompt-len 256 --gen 64 --reps 3 --threads "$t"
        echo "== $dt weights, $t thread(s): $BIN eval $model --data data/tinystories/eval.txt --ctx 256 --threads $t"
        "$BIN" eval "$model" --data data/tinystories/eval.txt --ctx 256 --threads "$t" | grep -E "^(ppl|speed):"
    done
done
