#!/bin/sh
# mpi.sh: `mpirun -np 2` and `-np 3` give the bytes of one process: gptq, awq, fp8 and int8+gptq with
# SmoothQuant on the bundled model, int8 with SmoothQuant, gptq (with expert groups), fp8+gptq and awq (its searches round the ranks) on the qwen2_moe fixture, spotq calib's statistics; eval the
# same ppl and KLD; a rank that fails or is killed mid-run ends the job non-zero with no OUT and no
# temporary directory, its error in one line naming the rank; ranks with different arguments refuse to
# start. Skips (saying why) where mpirun is absent or this spotq has no MPI.
set -e
SPOTQ=${SPOTQ:-./spotq}
# a CUDA build: the NCCL collectives (kernels/cuda/coll.cu) are in its library, linked with NCCL (compile-only here)
L=$(dirname "$(readlink -f "$SPOTQ")")/libspotq_cuda.so
if [ -f "$L" ]; then
    nm -D --defined-only "$L" | grep -q " sq_cuda_coll_impl$" || { echo "mpi: $L has no sq_cuda_coll_impl"; exit 1; }
    ldd "$L" | grep -q libnccl || { echo "mpi: $L is not linked with NCCL"; exit 1; }
fi
command -v mpirun >/dev/null 2>&1 || { echo "mpi: skipped: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 0; }
ldd "$SPOTQ" 2>/dev/null | grep -q libmpi || { echo "mpi: skipped: $SPOTQ is built without MPI (make MPI=1)"; exit 0; }
M=models/stories260K
Q=tests/fixtures/moe/qwen2_moe
D=data/tinystories/eval.txt
C="--calib data/tinystories/calib.txt --nsamples 7 --seqlen 64"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "mpi: $*"; exit 1; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Debug builds: OpenMPI's plugins leave allocations behind them at exit (unloaded, so no suppression can
# name them): leak checks off under mpirun (the one-process runs here and elsewhere keep them)
NOLEAK="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
mpi() { np=$1; shift; ASAN_OPTIONS=$NOLEAK mpirun --allow-run-as-root --oversubscribe -np "$np" "$SPOTQ" "$@"; }
sum() { sha256sum <"$1" | cut -c1-64; }

# one process, then 2 and 3 ranks: the same model.safetensors and config.json
same() {
    name=$1; model=$2; shift 2
    $SPOTQ quantize $model -o $T/one "$@" --threads 1 2>$T/err || fail "$name: one process failed: $(tail -n 1 $T/err)"
    for np in 2 3; do
        mpi $np quantize $model -o $T/par "$@" --threads 1 --force 2>$T/err >/dev/null || fail "$name: -np $np failed: $(tail -n 3 $T/err)"
        for f in model.safetensors config.json; do
            [ "$(sum $T/one/$f)" = "$(sum $T/par/$f)" ] || fail "$name: -np $np wrote another $f than one process"
        done
    done
    grep -q "MPI rank 1 of 3: sent" $T/err || fail "$name: no per-rank traffic line: $(cat $T/err)"
    rm -rf $T/one $T/par
}
same gptq $M --method gptq --group-size 32 --act-order $C
same awq $M --method awq --group-size 32 $C
same fp8-static $M --method fp8 --act static $C
same moe-gptq-groups $Q --method gptq --group-size 32 --max-hessian-memory 20k $C
same moe-fp8gptq $Q --method fp8+gptq --act static $C
same moe-awq $Q --method awq --group-size 32 $C
same int8gptq-smoothquant $M --method int8+gptq --smoothquant $C
same moe-int8-smoothquant $Q --method int8 --smoothquant 0.8 $C

# spotq calib on the MoE fixture: experts round the ranks, each Hessian sent to rank 0
$SPOTQ calib $Q $C -o $T/m1 --threads 1 2>/dev/null || fail "calib moe failed"
mpi 3 calib $Q $C -o $T/m3 --threads 1 2>$T/err || fail "calib moe -np 3 failed: $(tail -n 3 $T/err)"
cmp -s $T/m1 $T/m3 || fail "calib moe -np 3 wrote other statistics than one process"

# spotq calib: the same statistics file
$SPOTQ calib $M $C -o $T/s1 --threads 1 2>/dev/null || fail "calib failed"
mpi 3 calib $M $C -o $T/s3 --threads 1 2>$T/err || fail "calib -np 3 failed: $(tail -n 3 $T/err)"
cmp -s $T/s1 $T/s3 || fail "calib -np 3 wrote other statistics than one process"

# eval: ppl, KLD, top-1 the same numbers (the text output, but for its time and rate)
$SPOTQ quantize $M -o $T/q --method rtn --group-size 32 2>/dev/null
strip() { grep -v -E "seconds|tokens/s|threads" "$1"; }
$SPOTQ eval $T/q --data $D --ctx 128 --ref $M --threads 1 >$T/e1 2>/dev/null || fail "eval failed"
grep -q "kld" $T/e1 || grep -q "KL" $T/e1 || fail "eval printed no KLD: $(cat $T/e1)"
for np in 2 3; do
    mpi $np eval $T/q --data $D --ctx 128 --ref $M --threads 1 >$T/e$np 2>$T/err || fail "eval -np $np failed: $(tail -n 3 $T/err)"
    [ "$(strip $T/e1)" = "$(strip $T/e$np)" ] || fail "eval -np $np printed other numbers: $(diff $T/e1 $T/e$np)"
done

# faults: rank 1 fails at block 2, or is killed there: non-zero, no OUT, no temporary directory
for how in fail kill; do
    spec=1:2; [ $how = kill ] && spec=1:2:kill
    rc=0
    SPOTQ_TEST_FAULT=$spec mpi 2 quantize $M -o $T/f/out --method gptq --group-size 32 $C 2>$T/err >/dev/null || rc=$?
    [ $rc -ne 0 ] || fail "rank 1 $how at block 2: exit 0"
    [ ! -e $T/f/out ] || fail "rank 1 $how at block 2: OUT written"
    [ -z "$(ls -A $T/f 2>/dev/null)" ] || fail "rank 1 $how at block 2: left $(ls -A $T/f)"
    if [ $how = fail ]; then
        [ "$(grep -c '^spotq: error:' $T/err)" -eq 1 ] || fail "rank 1 failing: not one error line: $(cat $T/err)"
        grep -q "^spotq: error: rank 1: test fault at block 2" $T/err || fail "rank 1 failing: the line does not name it: $(cat $T/err)"
    fi
done
# ranks started with different arguments: an error before any work, one line
rc=0
ASAN_OPTIONS=$NOLEAK mpirun --allow-run-as-root --oversubscribe -np 1 "$SPOTQ" quantize $M -o $T/g/out --method gptq --group-size 32 $C : \
    -np 1 "$SPOTQ" quantize $M -o $T/g/out --method gptq --group-size 32 $C --seed 1 2>$T/err >/dev/null || rc=$?
[ $rc -ne 0 ] || fail "mismatched ranks: exit 0"
[ ! -e $T/g/out ] || fail "mismatched ranks: OUT written"
[ "$(grep -c '^spotq: error:' $T/err)" -eq 1 ] || fail "mismatched ranks: not one error line: $(cat $T/err)"
grep -q "rank 1: its binary or arguments differ from rank 0's" $T/err || fail "mismatched ranks: $(cat $T/err)"
echo "mpi: -np 2 and 3 the bytes of one process (8 cases, calib), eval the same numbers, faults end the job"
