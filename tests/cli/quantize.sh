#!/bin/sh
# quantize.sh: `spotq quantize` on the bundled model: GPTQ beats RTN (perplexity and every matrix's
# output error), the output is the same whatever --threads, both formats load and give the same
# model, odd matrices stay in full precision with a warning, OUT is kept unless --force, an
# interrupted run leaves nothing behind, --max-shard-size shards the weights with an index that
# the runtime reads back as the same model, and RTN (or FP8 without static scales) runs without
# calibration text to the same weights (minmax grid), only the error report left empty.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M=models/stories260K
C="--calib data/tinystories/calib.txt --nsamples 16 --seqlen 256 --bits 4 --group-size 32 --asym"
. tests/cli/lib/num.sh
$SPOTQ quantize $M -o $T/gptq --method gptq --act-order $C --format gptq --threads 2 2>$T/log
grep -q "stay in full precision" $T/log || { echo "no warning about the kept matrices"; cat $T/log; exit 1; }
$SPOTQ quantize $M -o $T/gptq1 --method gptq --act-order $C --format gptq --threads 1 2>/dev/null
cmp $T/gptq/model.safetensors $T/gptq1/model.safetensors || { echo "output depends on --threads"; exit 1; }
$SPOTQ quantize $M -o $T/rtn --method rtn $C 2>/dev/null
for f in config.json spotq.json tokenizer.json tokenizer_config.json generation_config.json model.safetensors; do
    [ -f $T/gptq/$f ] || { echo "missing $f"; exit 1; }
done
grep -q '"quant_method":	"gptq"' $T/gptq/config.json || { echo "config: quant_method"; exit 1; }
grep -q '"desc_act":	true' $T/gptq/config.json || { echo "config: desc_act"; exit 1; }
grep -q '"-:model\\\\.layers\\\\.0\\\\.mlp\\\\.down_proj"' $T/gptq/config.json || { echo "config: kept modules"; grep -n dynamic -A3 $T/gptq/config.json; exit 1; }
# every quantised matrix: GPTQ's output error below RTN's (spotq.json holds both)
n=$(grep -c '"error_rtn"' $T/gptq/spotq.json)
[ "$n" -eq 20 ] || { echo "$n quantised matrices, want 20 (q, k, v, o of 5 layers)"; exit 1; }
below_rtn $T/gptq/spotq.json ||
    { echo "GPTQ error not below RTN on some matrix"; exit 1; }
# ppl NAME DIR: evaluates DIR into $T/NAME.json (eval's exit code checked) and sets p_NAME to its perplexity
ppl() { evalj $T/$1.json $2 --data data/tinystories/eval.txt --ctx 256; v=$(jnum $T/$1.json ppl) || { echo "$2: no ppl"; exit 1; }; eval "p_$1=$v"; }
ppl fp $M; ppl gptq $T/gptq; ppl rtn $T/rtn
echo "fp $p_fp gptq $p_gptq rtn $p_rtn"
bound "want fp < gptq < rtn (gptq within 5%)" 'g < r && g > f && g < f * 1.05' g=$p_gptq r=$p_rtn f=$p_fp
# the same quantised weights in both formats run identically
$SPOTQ quantize $M -o $T/g2 --method gptq $C --format gptq 2>/dev/null
$SPOTQ quantize $M -o $T/ct --method gptq $C --format compressed-tensors 2>/dev/null
grep -q '"format":	"pack-quantized"' $T/ct/config.json || { echo "ct config"; exit 1; }
ppl g2 $T/g2; ppl ct $T/ct
[ "$p_g2" = "$p_ct" ] || { echo "gptq and compressed-tensors outputs differ"; exit 1; }
# sharded output: several files, every one and every tensor in the index, the same model
$SPOTQ quantize $M -o $T/sh --method gptq --act-order $C --format gptq --max-shard-size 100k 2>$T/sh.log
grep -q "weights written as [0-9]* shards of at most 102400 bytes" $T/sh.log || { echo "no shard note"; cat $T/sh.log; exit 1; }
[ ! -e $T/sh/model.safetensors ] && [ -f $T/sh/model.safetensors.index.json ] || { echo "sharded layout"; ls $T/sh; exit 1; }
nfiles=$(ls $T/sh/model-*-of-*.safetensors | wc -l)
[ "$nfiles" -gt 3 ] || { echo "$nfiles shards"; exit 1; }
for f in $T/sh/model-*-of-*.safetensors; do grep -q "\"$(basename $f)\"" $T/sh/model.safetensors.index.json || { echo "$f not in the index"; exit 1; }; done
n1=$($SPOTQ inspect $T/gptq | sed -n 's/^tensors: *//p'); n2=$($SPOTQ inspect $T/sh | sed -n 's/^tensors: *//p')
[ "$n1" = "$n2" ] && [ "$(grep -c '"model\.' $T/sh/model.safetensors.index.json)" -eq "$n1" ] || { echo "tensors $n1 vs $n2"; exit 1; }
ppl sh $T/sh
[ "$p_sh" = "$p_gptq" ] || { echo "sharded output is another model"; exit 1; }

# eval gates on the quantised output
$SPOTQ eval $T/gptq --data data/tinystories/eval.txt --ctx 256 --ref $M --max-ppl-ratio 1.05 >/dev/null 2>&1 || { echo "gate 1.05 failed"; exit 1; }
set +e
$SPOTQ eval $T/rtn --data data/tinystories/eval.txt --ctx 256 --ref $M --max-ppl-ratio 1.001 >/dev/null 2>$T/err
rc=$?
[ $rc -eq 3 ] && [ "$(wc -l <$T/err)" -eq 1 ] && grep -q "quality gate failed: ppl ratio [0-9.]* exceeds --max-ppl-ratio 1.001" $T/err ||
    { echo "gate 1.001: exit $rc, want 3: $(cat $T/err)"; exit 1; }
# OUT is kept without --force
$SPOTQ quantize $M -o $T/rtn --method rtn $C 2>$T/err; rc=$?
[ $rc -eq 2 ] && grep -q "already exists (use --force" $T/err || { echo "existing OUT: rc $rc"; cat $T/err; exit 1; }
# an interrupted run leaves no OUT and no temporary directory
$SPOTQ quantize $M -o $T/int --method gptq --group-size 32 --calib data/tinystories/calib.txt --nsamples 256 --seqlen 512 2>/dev/null &
pid=$!
sleep 1
kill -INT $pid
wait $pid
[ ! -e $T/int ] && [ -z "$(ls $T | grep spotq-tmp)" ] || { echo "interrupted run left files: $(ls $T)"; exit 1; }
# data-free: RTN without --calib writes the same weights (on the minmax grid: the mse one weights by the
# calibration), with null errors; GPTQ and static FP8 need text
$SPOTQ quantize $M -o $T/df --method rtn --bits 4 --group-size 32 --asym --grid minmax 2>/dev/null
$SPOTQ quantize $M -o $T/rtnm --method rtn $C --grid minmax 2>/dev/null
cmp $T/df/model.safetensors $T/rtnm/model.safetensors || { echo "data-free RTN differs from calibrated RTN"; exit 1; }
grep -q '"error_rtn":	null' $T/df/spotq.json && ! grep -q '"error_rtn":	[0-9]' $T/df/spotq.json || { echo "data-free errors"; exit 1; }
for m in "gptq" "fp8 --act static" "awq"; do
    $SPOTQ quantize $M -o $T/x --method $m 2>$T/err; rc=$?
    [ $rc -eq 2 ] && [ "$(wc -l <$T/err)" -eq 1 ] && grep -q "needs --calib FILE" $T/err || { echo "$m without --calib: rc $rc $(cat $T/err)"; exit 1; }
done
$SPOTQ quantize $M -o $T/x --method rtn $C --max-shard-size lots 2>$T/err; rc=$?
[ $rc -eq 2 ] && grep -q "give a size such as 4G" $T/err || { echo "bad --max-shard-size: rc $rc"; exit 1; }
# too little calibration text is a clear error
$SPOTQ quantize $M -o $T/x --method gptq --group-size 32 --calib data/tinystories/calib.txt --seqlen 100000 2>$T/err; rc=$?
[ $rc -eq 2 ] && grep -q "too short for --seqlen 100000" $T/err || { echo "short calib: $(cat $T/err)"; exit 1; }
exit 0
