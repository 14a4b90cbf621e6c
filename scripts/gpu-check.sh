#!/bin/sh
# gpu-check.sh: the one script to run on a machine with an NVIDIA GPU: builds spotq with CUDA, runs every
# backend op against the CPU reference (tests/unit/test_backend_ops.c, the CUDA ops included: a missing
# GPU fails it here), quantize --device cuda on the bundled model, then benchmarks GPTQ of a Llama-7B- and
# a Llama-70B-shaped block (bench/gptq_cuda.c) and prints its table. Every step is time-limited; any failure prints
# "gpu-check: FAIL: <step>" with the tail of its log and exits 1. Expected: a few minutes in all
# (build ~1-2 min, tests ~10 s, benchmark well under a minute on an H100).
# Usage: sh scripts/gpu-check.sh [--quick]   (--quick: 16 calibration samples instead of 128)
# SKIP_BUILD=1: use the binaries already in $BUILD (built elsewhere with make CUDA=1 and carried over).
cd "$(dirname "$0")/.." || exit 1
# Libraries carried from the build machine (scripts/gpu-bundle.sh), and the image's CUDA.
if [ -d build/gpu-libs ]; then
    export LD_LIBRARY_PATH="$PWD/build/gpu-libs:${CUDA_HOME:-/usr/local/cuda}/lib64:${LD_LIBRARY_PATH:-}"
fi
BUILD=${BUILD:-build/release}
LOG=${LOG:-$BUILD/gpu-check}
NSAMPLES=128
[ "$1" = "--quick" ] && NSAMPLES=16
mkdir -p "$LOG"
start=$(date +%s)

fail() {
    echo "gpu-check: FAIL: $1 (after $(( $(date +%s) - start )) s; log $2)"
    [ -f "$2" ] && tail -n 40 "$2"
    exit 1
}
step() { echo "gpu-check: $1 ($(( $(date +%s) - start )) s)"; }

command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || fail "nvcc not found (install the CUDA toolkit or put nvcc on PATH)" /dev/null

if [ "${SKIP_BUILD:-0}" = 1 ]; then
    step "SKIP_BUILD=1: using the binaries in $BUILD"
    for f in spotq libspotq_cuda.so tests/test_gptq tests/test_backend_ops bench/gptq_cuda; do
        [ -x "$BUILD/$f" ] || fail "SKIP_BUILD=1 but $BUILD/$f is missing" /dev/null
    done
else
    step "building with CUDA=1"
    timeout 300 make -j"$(nproc)" CUDA=1 NVCC="$NVCC" all "$BUILD/tests/test_gptq" "$BUILD/tests/test_backend_ops" >"$LOG/build.log" 2>&1 ||
        fail "make CUDA=1" "$LOG/build.log"
    grep -i "warning" "$LOG/build.log" && echo "gpu-check: (the build printed warnings, above)"
fi

step "CPU reference GPTQ tests"
timeout 120 "$BUILD/tests/test_gptq" >"$LOG/unit.log" 2>&1 || fail "CPU GPTQ tests" "$LOG/unit.log"
tail -n 1 "$LOG/unit.log"

step "test_backend_ops: every op of cpu and cuda against the CPU reference (a missing GPU fails)"
SPOTQ_NEED_DEVICE=cuda timeout 180 "$BUILD/tests/test_backend_ops" >"$LOG/backend-ops.log" 2>&1 ||
    fail "tests/unit/test_backend_ops (SPOTQ_NEED_DEVICE=cuda)" "$LOG/backend-ops.log"
grep -E "^(device|cuda:)|^  cuda |^test_backend_ops" "$LOG/backend-ops.log"

step "quantize --device cuda on the bundled model (CLI test)"
SPOTQ="$PWD/$BUILD/spotq" timeout 180 sh tests/cli/device_cuda.sh >"$LOG/cli.log" 2>&1 || fail "tests/cli/device_cuda.sh" "$LOG/cli.log"
cat "$LOG/cli.log"

step "benchmark: GPTQ of a 7B and a 70B block, $NSAMPLES x 2048 tokens"
timeout 360 "$BUILD/bench/gptq_cuda" --nsamples "$NSAMPLES" >"$LOG/bench.txt" 2>"$LOG/bench.log"
rc=$?
cat "$LOG/bench.log"
echo
cat "$LOG/bench.txt"
[ $rc -eq 0 ] || fail "bench/gptq_cuda (exit $rc$( [ $rc -eq 124 ] && echo ', timed out after 360 s'))" "$LOG/bench.log"

step "done: all GPU checks passed"
