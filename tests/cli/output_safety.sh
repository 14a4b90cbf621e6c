#!/bin/sh
# output_safety.sh: a writer never destroys an input. quantize and calib refuse (exit 2, one line, nothing
# touched) an output that is the model, contains it or lies inside it, in every spelling of the path
# (the .safetensors-file form of MODEL, a symlink, `..`, a trailing slash), and one that is the
# calibration text or the statistics file; every input stays byte for byte as it was. A run killed with
# SIGKILL leaves OUT.spotq-tmp-PID behind: the next run writing OUT removes it (and says so), while the
# temporaries of live processes and of other outputs are left alone; an old output that a killed run had
# moved aside is put back. These are the path cases of the bad-input corpus (tests/bad holds the files
# that lie; these are arguments that would lose data), run on a copy so that a regression cannot harm the repo.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tmp=$T
. tests/cli/lib/expect.sh
fail() { echo "output_safety: $*"; exit 1; }
D="--calib data/tinystories/calib.txt --nsamples 4 --seqlen 64"
mkdir -p $T/w/models
cp -r models/stories260K $T/w/models/m
cp data/tinystories/calib.txt $T/w/calib.txt
ln -s models/m $T/w/link
(cd $T/w && find . -type f | sort | xargs sha256sum) >$T/before
intact() { (cd $T/w && find . -type f | sort | xargs sha256sum) >$T/after; cmp -s $T/before $T/after || fail "$1: the inputs changed: $(diff $T/before $T/after | head -5)"; }
W=$T/w
R="--method rtn --group-size 32 --force"
# the output is the model, in every spelling
for out in $W/models/m $W/models/m/ $W/link $W/models/../models/m $W/link/../m; do
    expect 2 "the output is the model's directory" -- quantize $W/models/m -o $out $R
    intact "-o $out"
done
expect 2 "the output is the model's directory" -- quantize $W/models/m/model.safetensors -o $W/models/m $R
expect 2 "the output is the model's directory" -- quantize $W/link/model.safetensors -o $W/models/m/. $R
# the output contains the model (its parent, a grandparent)
for out in $W/models $W $W/link/..; do
    expect 2 "the output contains the model's directory" -- quantize $W/models/m -o $out $R
    intact "-o $out"
done
expect 2 "the output contains the model's directory" -- quantize $W/models/m/model.safetensors -o $W/models $R
# the output lies inside the model (the weights file itself, a new subdirectory)
expect 2 "the output lies inside the model's directory" -- quantize $W/models/m -o $W/models/m/model.safetensors $R
expect 2 "the output lies inside the model's directory" -- quantize $W/models/m -o $W/link/q $R
[ ! -e $W/models/m/q ] || fail "a refused run made its output directory"
# the calibration text and the statistics file are inputs too
expect 2 "the output is the calibration text" -- quantize $W/models/m -o $W/calib.txt --method gptq --group-size 32 --calib $W/calib.txt --nsamples 4 --seqlen 64 --force
$SPOTQ calib $W/models/m $D -o $T/s.zst 2>/dev/null
cp $T/s.zst $T/s.orig
expect 2 "the output is the statistics file" -- quantize $W/models/m -o $T/s.zst --method gptq --group-size 32 --stats $T/s.zst --force
cmp -s $T/s.zst $T/s.orig || fail "quantize -o STATS changed the statistics file"
# calib -o: the same rule
expect 2 "the output lies inside the model's directory" -- calib $W/models/m $D -o $W/models/m/model.safetensors --force
expect 2 "the output is the model's directory" -- calib $W/models/m $D -o $W/link --force
expect 2 "the output contains the model's directory" -- calib $W/models/m $D -o $W/models --force
expect 2 "the output is the calibration text" -- calib $W/models/m --calib $W/calib.txt --nsamples 4 --seqlen 64 -o $W/calib.txt --force
intact "calib -o"
# a sibling output is fine, and is written
$SPOTQ quantize $W/models/m -o $W/models/m-q $R 2>/dev/null || fail "a sibling output was refused"
[ -f $W/models/m-q/model.safetensors ] || fail "no sibling output"
rm -r $W/models/m-q
intact "a sibling output"

# A run killed by SIGKILL: its temporary directory stays; the next run that writes OUT removes it, and only it.
$SPOTQ quantize models/stories260K -o $T/k --method gptq --group-size 32 --calib data/tinystories/calib.txt --nsamples 256 --seqlen 512 2>/dev/null &
pid=$!
i=0
while [ ! -d $T/k.spotq-tmp-$pid ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
[ -d $T/k.spotq-tmp-$pid ] || fail "no temporary directory appeared for the killed run"
kill -KILL $pid
wait $pid 2>/dev/null || true
[ -d $T/k.spotq-tmp-$pid ] || fail "SIGKILL removed the temporary directory (the test needs it left behind)"
sleep 300 & live=$!
mkdir $T/k.spotq-tmp-$live $T/other.spotq-tmp-$pid $T/k.spotq-tmp-x1
$SPOTQ quantize models/stories260K -o $T/k $R 2>$T/log || fail "the run after the killed one failed: $(cat $T/log)"
kill $live 2>/dev/null || true
grep -q "k.spotq-tmp-$pid: removed, left by process $pid which no longer runs" $T/log || fail "the sweep said nothing: $(cat $T/log)"
[ ! -e $T/k.spotq-tmp-$pid ] || fail "the killed run's temporary directory is still there"
[ -d $T/k.spotq-tmp-$live ] || fail "a live process's temporary directory was removed"
[ -d $T/other.spotq-tmp-$pid ] && [ -d $T/k.spotq-tmp-x1 ] || fail "another output's (or a foreign) directory was removed"
[ -f $T/k/model.safetensors ] || fail "no output after the sweep"
# the old output a killed run had moved aside (between its two renames) is put back, not deleted
mv $T/k $T/k.spotq-old-$pid
$SPOTQ quantize models/stories260K -o $T/k2 $R 2>/dev/null
[ -d $T/k.spotq-old-$pid ] || fail "a run for another output touched k's old copy"
set +e
$SPOTQ quantize models/stories260K -o $T/k --method rtn --group-size 32 2>$T/log; rc=$?
set -e
grep -q "put back the previous output" $T/log && [ -f $T/k/model.safetensors ] && [ ! -e $T/k.spotq-old-$pid ] || fail "old output not restored: $(cat $T/log)"
[ $rc -eq 2 ] && grep -q "already exists" $T/log || fail "the restored output was not protected without --force: rc $rc"
# calib's statistics file: a killed run's temporary is swept the same way
: >$T/s2.zst.spotq-tmp-$pid
$SPOTQ calib models/stories260K $D -o $T/s2.zst 2>$T/log
[ ! -e $T/s2.zst.spotq-tmp-$pid ] && grep -q "which no longer runs" $T/log || fail "calib did not sweep: $(cat $T/log)"
echo "output safety: ok"
