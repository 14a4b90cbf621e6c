#!/bin/sh
# cpu.sh: the CPU runtime against the machine, on the synthetic Llama of bench/make_model.py and on a
# synthetic model of a 135M Llama's shape (hidden 576, 30 layers, 9/3 heads, FFN 1536, vocab 49152,
# tied embeddings), random weights, at F32, INT8 per channel and INT4 g32 and g64 (RTN, data-free;
# lm_head stays F32): the kernels' rates next to memcpy and OpenBLAS sgemm (build/.../bench/kernels),
# then `spotq bench` at every precision with decode in GB/s of weights (the bytes a decode step reads:
# every linear in the runtime's layout, codes plus a float scale and zero a group, and the F32
# lm_head) and prefill in GFLOP/s (2 x the linears' weights x tokens; attention not counted), and
# speculative decoding of the F32 model with its INT4 g64 and INT8 copies as drafts (k 4).
# Prints numbers; not a test. Models go to build/bench (never committed).
# Usage: sh bench/cpu.sh [BIN]   Environment: BENCH_DIR (build/bench), THREADS (2), SHAPES ("default 135m"), REPS (3).
set -e
BIN=${1:-build/release/spotq}
DIR=${BENCH_DIR:-build/bench}
THREADS=${THREADS:-2}
SHAPES=${SHAPES:-default 135m}
REPS=${REPS:-3}
cd "$(dirname "$0")/.."
[ -x "$BIN" ] || { echo "cpu.sh: no binary at $BIN (make first)"; exit 1; }
KB=$(dirname "$BIN")/bench/kernels
[ -x "$KB" ] || make -s "$KB"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg); $THREADS threads"

# json KEY FILE: the number after "KEY": in FILE
json() { sed -n "s/.*\"$1\":[ \t]*\([0-9.e+-]*\).*/\1/p" "$2" | head -1; }

for shape in $SHAPES; do
    case $shape in
    default) name=synth-llama; H=1024; F=2816; Q=1024; KV=256; L=8; V=512; kshape=llama ;;
    135m) name=synth-135m; H=576; F=1536; Q=576; KV=192; L=30; V=49152; kshape=135m ;;
    *) echo "cpu.sh: unknown shape $shape"; exit 2 ;;
    esac
    python3 bench/make_model.py "$DIR/$name-f32" --dtype F32 --shape "$shape"
    for spec in "int8 8 -1" "int4g32 4 32" "int4g64 4 64"; do
        set -- $spec
        [ -f "$DIR/$name-$1/config.json" ] ||
            "$BIN" quantize "$DIR/$name-f32" -o "$DIR/$name-$1" --method rtn --bits "$2" --group-size "$3" --force 2>/dev/null
    done
    echo
    echo "== $name: $KB --shape $kshape --threads $THREADS"
    "$KB" --shape "$kshape" --threads "$THREADS"
    echo
    echo "== $name: $BIN bench MODEL --prompt-len 256 --gen 64 --reps $REPS --threads $THREADS"
    printf '%-10s %12s %10s %12s %10s\n' weights "prefill t/s" GFLOP/s "decode t/s" GB/s
    for q in f32 int8 int4g32 int4g64; do
        "$BIN" bench "$DIR/$name-$q" --prompt-len 256 --gen 64 --reps "$REPS" --threads "$THREADS" --json >"$DIR/$name-$q.bench.json"
        p=$(json prefill_tokens_per_second "$DIR/$name-$q.bench.json")
        d=$(json decode_tokens_per_second "$DIR/$name-$q.bench.json")
        awk -v q=$q -v p="$p" -v d="$d" -v H=$H -v F=$F -v Q=$Q -v KV=$KV -v L=$L -v V=$V 'BEGIN {
            per = Q * H + 2 * KV * H + H * Q + 3 * F * H; rows = Q + 2 * KV + H + 2 * F + H; w = L * per
            if (q == "f32") b = 4 * w; else if (q == "int8") b = w + 8 * L * rows; else if (q == "int4g32") b = w / 2 + 8 * w / 32; else b = w / 2 + 8 * w / 64
            b += 4 * V * H
            printf "%-10s %12.1f %10.1f %12.1f %10.1f\n", q, p, 2 * w * p / 1e9, d, b * d / 1e9 }'
    done
    for dq in int4g64 int8; do
        echo
        echo "== $name: $BIN bench $DIR/$name-f32 --draft $DIR/$name-$dq --spec-k 4 --reps $REPS --threads $THREADS"
        "$BIN" bench "$DIR/$name-f32" --draft "$DIR/$name-$dq" --spec-k 4 --reps "$REPS" --threads "$THREADS" | grep -E '^(decode|speculative)'
    done
done
