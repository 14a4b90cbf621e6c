#!/bin/sh
# quant.sh: quantisation time and peak RSS of spotq ($1, the binary) on the synthetic Llama of
# bench/make_model.py (hidden 1024, 8 layers, FFN 2816, 16/4 heads, F32), RTN and GPTQ, 4-bit g128,
# calibrated on the bundled TinyStories text. Prints spotq's own summary line (stage times, peak RSS).
# Environment: BENCH_DIR (default build/bench), NSAMPLES (default 16), SEQLEN (default 512), THREADS.
set -e
BIN=${1:-build/release/spotq}
DIR=${BENCH_DIR:-build/bench}
NS=${NSAMPLES:-16}
SL=${SEQLEN:-512}
THREADS=${THREADS:-$(nproc)}
cd "$(dirname "$0")/.."
[ -x "$BIN" ] || { echo "bench: no binary at $BIN (make first)"; exit 1; }
model=$DIR/synth-llama-f32
python3 bench/make_model.py "$model" --dtype F32
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for method in rtn gptq; do
    echo
    echo "== $BIN quantize $model --method $method --bits 4 --group-size 128 --nsamples $NS --seqlen $SL --threads $THREADS"
    "$BIN" quantize "$model" -o "$DIR/synth-$method" --method $method --bits 4 --group-size 128 --calib data/tinystories/calib.txt \
        --nsamples "$NS" --seqlen "$SL" --threads "$THREADS" --force 2>&1 | grep -E "quantized|error"
done
