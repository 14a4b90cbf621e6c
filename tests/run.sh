#!/bin/sh
# run.sh: runs every unit test binary, the fuzz corpus replays and the CLI scripts; prints the total.
BUILD=${BUILD:-build/release}
# Golden bytes of calibrated outputs (cli/bytes, cli/grid) were recorded with OpenBLAS's Haswell kernels,
# which every x86-64-v3 CPU has; on an AVX-512 machine OpenBLAS would pick others that sum in another
# order (see tests/cli/bytes.sh).
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
cd "$(dirname "$0")/.." || exit 1
pass=0; fail=0
for t in "$BUILD"/tests/test_* "$BUILD"/tests/replay_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    case $name in replay_*) args="tests/fuzz/corpus/${name#replay_}";; *) args="";; esac
    if out=$("$t" $args 2>&1); then
        pass=$((pass + 1)); echo "ok   $name  $(echo "$out" | tail -n 1)"
    else
        fail=$((fail + 1)); echo "FAIL $name"; echo "$out" | tail -n 30
    fi
done
for t in tests/cli/*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    if out=$(SPOTQ="$PWD/$BUILD/spotq" sh "$t" 2>&1); then
        pass=$((pass + 1)); echo "ok   cli/$name"
    else
        fail=$((fail + 1)); echo "FAIL cli/$name"; echo "$out" | tail -n 30
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
