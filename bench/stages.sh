#!/bin/sh
# stages.sh: the stages of `spotq quantize` in GFLOP/s next to OpenBLAS's rate on the same shapes.
# For MODEL (default: the synthetic Llama of bench/make_model.py, F32), GPTQ and AWQ, 4-bit g128 on
# the bundled TinyStories text; each stage's operations come from spotq.json ("gflop": the forward's
# linears and attention, the Hessian updates, the solves' and output errors' GEMM-shaped work) and its
# time from "seconds". Beside them: sgemm at seqlen x intermediate x hidden (the calibration
# forward's largest linear), ssyrk of hidden-wide rows over seqlen (a Hessian update), and sgemm at
# hidden x hidden x hidden (the output error's D H), all on THREADS threads (bench/kernels --sgemm).
# Then AWQ's time over GPTQ's. Prints numbers; not a test.
# Usage: sh bench/stages.sh [MODEL]; environment: NSAMPLES (16), SEQLEN (512), THREADS (nproc), BIN.
set -e
cd "$(dirname "$0")/.."
BIN=${BIN:-build/release/spotq}
KB=build/release/bench/kernels
NS=${NSAMPLES:-16}
SL=${SEQLEN:-512}
THREADS=${THREADS:-$(nproc)}
DIR=${BENCH_DIR:-build/bench}
[ -x "$BIN" ] && [ -x "$KB" ] || { echo "stages: build first (make; $KB)"; exit 1; }
MODEL=${1:-}
if [ -z "$MODEL" ]; then
    MODEL=$DIR/synth-llama-f32
    python3 bench/make_model.py "$MODEL" --dtype F32 >/dev/null
fi
dims=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1]+'/config.json')); print(c['hidden_size'], c['intermediate_size'])" "$MODEL")
H=${dims% *}
F=${dims#* }
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: $MODEL (hidden $H, intermediate $F); $NS x $SL calibration tokens, $THREADS threads"
echo "spotq: $("$BIN" bench models/stories260K --threads "$THREADS" --prompt-len 4 --gen 1 --reps 1 | sed -n 's/^threads: *//p'); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
fwd=$($KB --sgemm "$SL,$F,$H" --threads "$THREADS" --reps 5)
sq=$($KB --sgemm "$H,$H,$H" --threads "$THREADS" --reps 5)
r_fwd=$(echo "$fwd" | sed -n 's/^sgemm.*: \([0-9.]*\) GFLOP.*/\1/p')
r_hess=$(echo "$fwd" | sed -n 's/^ssyrk.*: \([0-9.]*\) GFLOP.*/\1/p')
r_sq=$(echo "$sq" | sed -n 's/^sgemm.*: \([0-9.]*\) GFLOP.*/\1/p')
echo "OpenBLAS: sgemm $SL x $F x $H $r_fwd GFLOP/s, ssyrk $H over $SL rows $r_hess, sgemm $H x $H x $H $r_sq"
printf '%-6s %-9s %9s %9s %9s %9s %7s\n' method stage seconds GFLOP GFLOP/s OpenBLAS ratio
for method in gptq awq; do
    out=$DIR/stages-$method
    "$BIN" quantize "$MODEL" -o "$out" --method $method --bits 4 --group-size 128 --calib data/tinystories/calib.txt \
        --nsamples "$NS" --seqlen "$SL" --threads "$THREADS" --force 2>/dev/null
    python3 - "$out/spotq.json" "$method" "$r_fwd" "$r_hess" "$r_sq" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); m = sys.argv[2]
rates = {"forward": float(sys.argv[3]), "hessian": float(sys.argv[4]), "quantize": float(sys.argv[5])}
for st in ("forward", "hessian", "quantize"):
    t, g = j["seconds"][st], j["gflop"][st]
    r = g / t if t > 0 else 0
    print("%-6s %-9s %9.2f %9.1f %9.1f %9.1f %7.2f" % (m, st, t, g, r, rates[st], r / rates[st]))
print("%-6s %-9s %9.2f" % (m, "total", j["seconds"]["total"]))
EOF
done
tg=$(python3 -c "import json; print(json.load(open('$DIR/stages-gptq/spotq.json'))['seconds']['total'])")
ta=$(python3 -c "import json; print(json.load(open('$DIR/stages-awq/spotq.json'))['seconds']['total'])")
echo "AWQ / GPTQ time: $(python3 -c "print('%.2f' % ($ta / $tg))")"
