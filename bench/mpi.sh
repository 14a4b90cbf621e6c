#!/bin/sh
# mpi.sh: 2 MPI ranks x 1 thread against 1 rank x 1 thread on the synthetic Llama of bench/make_model.py
# (hidden 1024, 8 layers, FFN 2816, F32): the wall time of `spotq calib` (the calibration: every block's
# forward passes and Hessians) and of `spotq quantize --method gptq` (calibration and solves), each run
# REPS times, the medians and the speed-up; the load average around each run; the bytes each rank
# sent per block (spotq's own "MPI rank R of N: sent" line). Checks that both wrote the same bytes.
# Environment: BENCH_DIR (default build/bench), NSAMPLES (default 16), SEQLEN (default 256), REPS (3),
# QUANT (1: also time quantize gptq, once per setting, with --grid minmax), PYTHON (with numpy: python3).
set -e
BIN=${1:-build/release/spotq}
DIR=${BENCH_DIR:-build/bench}
NS=${NSAMPLES:-16}
SL=${SEQLEN:-256}
REPS=${REPS:-3}
QUANT=${QUANT:-1}
cd "$(dirname "$0")/.."
[ -x "$BIN" ] || { echo "bench: no binary at $BIN (make first)"; exit 1; }
command -v mpirun >/dev/null || { echo "bench: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 1; }
model=$DIR/synth-llama-f32
${PYTHON:-python3} bench/make_model.py "$model" --dtype F32
[ -f "$model/tokenizer.json" ] || cp models/stories260K/tokenizer.json "$model/"
C="--calib data/tinystories/calib.txt --nsamples $NS --seqlen $SL --threads 1 --force"
echo "machine: $(nproc) CPUs (autogroup $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $NS windows x $SL tokens"
load() { cut -d' ' -f1 /proc/loadavg; }
# run NAME CMD...: the wall seconds on stdout, the log in $DIR/mpi-NAME.log
run() {
    name=$1; shift
    l0=$(load); s=$(date +%s.%N)
    "$@" >"$DIR/mpi-$name.log" 2>&1 || { echo "bench: $name failed: $(tail -n 3 "$DIR/mpi-$name.log")" >&2; exit 1; }
    w=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    echo "  $name: $w s (load average $l0 -> $(load))" >&2
    echo "$w"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Each rank (and the one-process baseline) in a session of its own: with the kernel's autogroup
# scheduling (on here) the processes of one session share one session's CPU slice, so that under load
# from other sessions two ranks in one session would get no more CPU than one process.
MPI="mpirun --allow-run-as-root -np 2 --bind-to none --mca mpi_yield_when_idle 1 setsid"
ONE="setsid"
t1=""; t2=""
for i in $(seq "$REPS"); do
    t1="$t1 $(run calib1 $ONE "$BIN" calib "$model" -o "$DIR/mpi1.stats" $C)"
    t2="$t2 $(run calib2 $MPI "$BIN" calib "$model" -o "$DIR/mpi2.stats" $C)"
    cmp -s "$DIR/mpi1.stats" "$DIR/mpi2.stats" || { echo "bench: 2 ranks wrote other statistics than 1"; exit 1; }
done
m1=$(echo $t1 | tr ' ' '\n' | median); m2=$(echo $t2 | tr ' ' '\n' | median)
echo "calib, 1 rank x 1 thread: median $m1 s of ($t1 )"
echo "calib, 2 ranks x 1 thread: median $m2 s of ($t2 ); speed-up $(awk -v a="$m1" -v b="$m2" 'BEGIN { printf "%.2f", a / b }')x"
grep "MPI rank" "$DIR/mpi-calib2.log" | sed 's/^spotq: info: /  calib: /'
if [ "$QUANT" = 1 ]; then
    q1=$(run gptq1 $ONE "$BIN" quantize "$model" -o "$DIR/mpi-q1" --method gptq --grid minmax $C)
    q2=$(run gptq2 $MPI "$BIN" quantize "$model" -o "$DIR/mpi-q2" --method gptq --grid minmax $C)
    cmp -s "$DIR/mpi-q1/model.safetensors" "$DIR/mpi-q2/model.safetensors" || { echo "bench: 2 ranks wrote other weights than 1"; exit 1; }
    echo "quantize gptq (minmax grid): 1 rank $q1 s, 2 ranks $q2 s; speed-up $(awk -v a="$q1" -v b="$q2" 'BEGIN { printf "%.2f", a / b }')x"
    grep -E "quantized [0-9]+ of" "$DIR/mpi-gptq1.log" | sed 's/^spotq: info: /  1 rank: /'
    grep -E "quantized [0-9]+ of" "$DIR/mpi-gptq2.log" | sed 's/^spotq: info: /  2 ranks (rank 0): /'
    grep "MPI rank" "$DIR/mpi-gptq2.log" | sed 's/^spotq: info: /  quantize: /'
fi
