#!/bin/sh
# quant.sh: quantisation time and peak RSS of spotq ($1, the binary) on the synthetic Llama of
# bench/make_model.py (hidden 1024, 8 layers, FFN 2816, 16/4 heads, F32), RTN and GPTQ, 4-bit g128,
# calibrated on the bundled TinyStories text; then the same calibration kept once by `spotq calib` and a
# sweep (RTN, GPTQ g128, GPTQ 8-bit per channel) quantised from it with --stats, and RTN data-free.
# Prints spotq's own summary lines (stage times, peak RSS) and the wall time of each command.
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

# calibrate once, quantise a sweep from the statistics
t() { s=$(date +%s.%N); "$@" 2>&1 | grep -E "quantized|kept|error"; echo "   wall $(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"; }
echo
echo "== $BIN calib $model --nsamples $NS --seqlen $SL --threads $THREADS"
t "$BIN" calib "$model" -o "$DIR/synth.stats" --calib data/tinystories/calib.txt --nsamples "$NS" --seqlen "$SL" --threads "$THREADS" --force
for args in "rtn --bits 4 --group-size 128" "gptq --bits 4 --group-size 128" "gptq --bits 8 --group-size -1"; do
    echo "== $BIN quantize $model --method $args --stats $DIR/synth.stats"
    t "$BIN" quantize "$model" -o "$DIR/synth-stats" --method $args --stats "$DIR/synth.stats" --threads "$THREADS" --force
done
echo "== $BIN quantize $model --method rtn --bits 4 --group-size 128 (data-free, no --calib)"
t "$BIN" quantize "$model" -o "$DIR/synth-df" --method rtn --bits 4 --group-size 128 --threads "$THREADS" --force
