#!/bin/sh
# matrix.sh: every method x format x scheme cell of `spotq quantize`, end to end, on the fixtures of
# tests/fixtures/matrix (stories260K with a 256-wide FFN, so every MLP matrix is INT-quantised): each
# cell either quantises, evaluates (the config held to the tensors on the way in) with a perplexity
# ratio under its bar and the expected number of matrices quantised, the formats that hold the same
# weights giving the same perplexity, or is refused with its exit code and one-line message. Then
# --static-groups, --act-order, group sizes 128 and -1, --ignore, --awq-duo off, --awq-clip off, --force
# over an existing OUT, .jsonl calibration, mistral, qwen2 and qwen3_moe.
set -e
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. tests/cli/lib/expect.sh
fail() { echo "matrix: $*"; exit 1; }
L=tests/fixtures/matrix/llama
NS="--nsamples 4 --seqlen 64"
head -c 5000 data/tinystories/eval.txt >"$tmp/eval.txt" # 2,600 tokens: 20 windows of 128
field() { sed -n "s/^[[:space:]]*\"$2\":[[:space:]]*\([0-9.e+-]*\),*$/\1/p" "$1" | head -1; }
isnum() { case $1 in '' | *[!0-9.e+-]*) fail "$2: '$1' is not a number";; esac; }
cells=0
# Under ASan and UBSan (make test-debug) the loop is five times slower: there the INT cells run at 4 bits
# and the FP8 ones per tensor only (the same code paths as the 8-bit and per-channel cells, which the
# release run covers), the refusals and everything after the two loops in full. (Calibrating on fewer
# than 4 windows of 64 tokens is no cheaper way: GPTQ's 4-bit ratio goes from 1.08 to 1.22 on 2 of 32.)
BITS="4 8" SCHEMES="tensor channel"
case $SPOTQ in */debug/*) BITS=4 SCHEMES=tensor;; esac
C="--calib data/tinystories/calib.txt $NS"

# cell NAME BAR NQ SRC ARGS...: quantise SRC into $tmp/NAME, require NQ matrices quantised, evaluate
# against SRC with a perplexity ratio in (0.99, BAR); the perplexity is left in $tmp/NAME.ppl.
cell() {
    _c=$1 _bar=$2 _nq=$3 _src=$4
    shift 4
    $SPOTQ quantize "$_src" -o "$tmp/$_c" "$@" 2>"$tmp/$_c.log" || fail "$_c: quantize exits $?: $(tail -n 1 "$tmp/$_c.log")"
    _n=$(grep -c '"quantized":[[:space:]]*true' "$tmp/$_c/spotq.json") || true
    [ "$_n" -eq "$_nq" ] || fail "$_c: $_n matrices quantised, want $_nq"
    $SPOTQ eval "$tmp/$_c" --data "$tmp/eval.txt" --ctx 128 --ref "$_src" --json >"$tmp/$_c.json" 2>"$tmp/$_c.elog" ||
        fail "$_c: eval exits $?: $(tail -n 1 "$tmp/$_c.elog")"
    _p=$(field "$tmp/$_c.json" ppl) _r=$(field "$tmp/$_c.json" ppl_ratio)
    isnum "$_p" "$_c ppl"
    isnum "$_r" "$_c ppl_ratio"
    awk -v r="$_r" -v b="$_bar" 'BEGIN { exit !(r > 0.99 && r < b) }' || fail "$_c: ppl ratio $_r, bar $_bar"
    echo "$_p" >"$tmp/$_c.ppl"
    echo "$_c: ppl $_p, ratio $_r (bar $_bar)"
    cells=$((cells + 1))
}
# same A B [TOL]: the two cells' perplexities equal (to TOL relative when given)
same() {
    _a=$(cat "$tmp/$1.ppl") _b=$(cat "$tmp/$2.ppl")
    if [ -z "$3" ]; then [ "$_a" = "$_b" ] || fail "$1 and $2 hold the same weights but give ppl $_a and $_b"
    else awk -v a="$_a" -v b="$_b" -v t="$3" 'BEGIN { d = a / b - 1; exit !(d < t && d > -t) }' || fail "$1 ppl $_a, $2 ppl $_b: not within $3"
    fi
}
refused() { # refused RC PATTERN ARGS...: quantize ARGS is refused so, and writes nothing
    _rc=$1 _pat=$2
    shift 2
    expect "$_rc" "$_pat" -- quantize "$@"
    cells=$((cells + 1))
}

# ---- INT: rtn, gptq, awq, awq+gptq x gptq, compressed-tensors, awq x 4, 8 bits x sym, asym (g32: all 35 linears)
for m in rtn gptq awq awq+gptq; do
    c=$C
    [ $m = rtn ] && c=
    for b in $BITS; do
        case $m-$b in rtn-4) bar=1.18;; *-4) bar=1.13;; *) bar=1.005;; esac
        for s in sym asym; do
            for f in gptq compressed-tensors awq; do
                n=$m-$f-$b-$s
                if [ $f = awq ] && [ $b = 8 ]; then
                    refused 2 '^spotq quantize: --format awq is 4-bit only$' $L -o "$tmp/$n" --method $m --format awq --bits 8 --$s --group-size 32 $c
                    continue
                fi
                cell $n $bar 35 $L --method $m --format $f --bits $b --$s --group-size 32 $c
            done
            # the same codes, scales and zeros in every format; GPTQ v1 moves an asymmetric zero of 0 to 1
            if [ $s = sym ]; then same $m-gptq-$b-sym $m-compressed-tensors-$b-sym
            else same $m-gptq-$b-asym $m-compressed-tensors-$b-asym 0.01
            fi
            [ $b = 4 ] && same $m-compressed-tensors-4-$s $m-awq-4-$s
        done
        # AWQ's grid has a zero point whatever --sym says (cmd_quantize.c); awq+gptq's GPTQ honours it
        [ $m = awq ] && same awq-gptq-$b-sym awq-gptq-$b-asym
    done
done

# ---- FP8: fp8, fp8+gptq x fp8, compressed-tensors x tensor, channel x none, static, dynamic
for m in fp8 fp8+gptq; do
    for sc in $SCHEMES; do
        for a in none static dynamic; do
            c=$C
            [ $m-$a = fp8-none ] || [ $m-$a = fp8-dynamic ] && c=
            for f in fp8 compressed-tensors; do
                n=$m-$f-$sc-$a
                if [ $f = fp8 ] && { [ $sc = channel ] || [ $a = none ]; }; then
                    refused 2 "^spotq quantize: --format fp8 holds one weight scale per tensor and quantised activations \(--act static or dynamic\); use --format compressed-tensors for" \
                        $L -o "$tmp/$n" --method $m --format fp8 --fp8-scheme $sc --act $a $c
                    continue
                fi
                cell $n 1.025 35 $L --method $m --format $f --fp8-scheme $sc --act $a $c
            done
            [ $sc = tensor ] && [ $a != none ] && same $m-fp8-$sc-$a $m-compressed-tensors-$sc-$a
        done
    done
done
for f in gptq awq; do refused 2 '^spotq quantize: --method fp8 writes --format fp8 or compressed-tensors$' $L -o "$tmp/x" --method fp8 --format $f; done
refused 2 '^spotq quantize: --format fp8: use gptq, awq or compressed-tensors$' $L -o "$tmp/x" --method rtn --format fp8
for m in gptq awq awq+gptq fp8+gptq; do
    x=
    [ $m = fp8+gptq ] && x="--act dynamic" # weight-only FP8 would first say that it writes compressed-tensors
    refused 2 "^spotq quantize: --method $(echo $m | sed 's/+/[+]/') needs --calib FILE \(calibration text\) or --stats STATS$" $L -o "$tmp/x" --method $m $x
done
refused 2 '^spotq quantize: --method fp8 --act static needs --calib FILE' $L -o "$tmp/x" --method fp8 --act static
[ ! -e "$tmp/x" ] || fail "a refused run wrote $tmp/x"

# ---- GPTQ's options: act-order (g_idx), static groups (the same weights in both formats), g128, per channel
cell ao 1.15 35 $L --method gptq --act-order --group-size 32 --format gptq $C
grep -q '"desc_act":[[:space:]]*true' "$tmp/ao/config.json" || fail "act-order: desc_act not true"
cell sg 1.15 35 $L --method gptq --act-order --static-groups --group-size 32 --format gptq $C
cell sg-ct 1.15 35 $L --method gptq --act-order --static-groups --group-size 32 --format compressed-tensors $C
same sg sg-ct
grep -q '"desc_act":[[:space:]]*false' "$tmp/sg/config.json" && grep -q '"static_groups":[[:space:]]*true' "$tmp/sg/config.json" ||
    fail "static groups: config"
cell g128 1.10 35 $L --method gptq --group-size 128 $C # only down_proj has 128k inputs: the 64-wide linears go at g64 (issue 14), two config groups
cell pc 1.30 35 $L --method gptq --group-size -1 $C

# ---- --ignore: the matched matrices stay in full precision, listed where the formats list them
cell ign 1.15 30 $L --method gptq --group-size 32 --ignore 'model.layers.*.mlp.down_proj' $C
cell ign-ct 1.15 30 $L --method gptq --group-size 32 --ignore 'model.layers.*.mlp.down_proj' --format compressed-tensors $C
same ign ign-ct
grep -q '"model.layers.4.mlp.down_proj"' "$tmp/ign-ct/config.json" || fail "--ignore: not in the compressed-tensors ignore list"
$SPOTQ inspect "$tmp/ign" | grep -q 'model.layers.2.mlp.down_proj.weight  *BF16  *\[64, 256\]' || fail "--ignore: down_proj not kept"

# ---- AWQ's options
cell duo 1.15 35 $L --method awq --group-size 32 --awq-duo off $C
cell noclip 1.15 35 $L --method awq --group-size 32 --awq-clip off $C
cmp -s "$tmp/duo/model.safetensors" "$tmp/awq-awq-4-asym/model.safetensors" && fail "--awq-duo off changed nothing"
cmp -s "$tmp/noclip/model.safetensors" "$tmp/awq-awq-4-asym/model.safetensors" && fail "--awq-clip off changed nothing"

# ---- --force over an existing OUT (refused without it, the old output kept)
refused 2 "^spotq: error: $tmp/rtn-gptq-4-sym: already exists \(use --force to replace it\)$" $L -o "$tmp/rtn-gptq-4-sym" --method rtn --bits 8 --group-size 32
grep -q '"bits":[[:space:]]*4,' "$tmp/rtn-gptq-4-sym/config.json" || fail "a refused run changed the existing OUT"
cell rtn-gptq-4-sym 1.01 35 $L --method rtn --bits 8 --group-size 32 --format gptq --force
grep -q '"bits":[[:space:]]*8,' "$tmp/rtn-gptq-4-sym/config.json" || fail "--force did not replace OUT"
[ "$BITS" = 4 ] || same rtn-gptq-4-sym rtn-gptq-8-sym

# ---- .jsonl calibration: calib.txt as one {"text": ...} document is the same token stream, so the same output
awk 'BEGIN { ORS = ""; print "{\"text\": \"" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); print $0 "\\n" }
     END { print "\"}\n" }' data/tinystories/calib.txt >"$tmp/calib.jsonl"
cell jsonl 1.15 35 $L --method gptq --group-size 32 --format gptq --calib "$tmp/calib.jsonl" $NS
cmp "$tmp/jsonl/model.safetensors" "$tmp/gptq-gptq-4-sym/model.safetensors" || fail ".jsonl calibration differs from the same text as .txt"

# ---- the other dense architectures (mistral: sliding window 48; qwen2: q/k/v biases), and qwen3_moe
for a in mistral qwen2; do
    cell $a-gptq 1.15 35 tests/fixtures/matrix/$a --method gptq --group-size 32 $C
    cell $a-awq 1.15 35 tests/fixtures/matrix/$a --method awq --group-size 32 $C
    cell $a-fp8 1.025 35 tests/fixtures/matrix/$a --method fp8 --act static $C
done
Q=tests/fixtures/matrix/qwen3_moe # 5 x (4 attention + 4 experts x 3)
# (its q/k norms of weight 6 make it touchier than the dense ones: symmetric 4-bit RTN gives 1.58)
cell moe-rtn 1.30 80 $Q --method rtn --asym --group-size 32
cell moe-rtn8 1.01 80 $Q --method rtn --bits 8 --group-size 32
cell moe-gptq 1.15 80 $Q --method gptq --asym --group-size 32 $C
cell moe-gptq-ct 1.15 80 $Q --method gptq --asym --group-size 32 --format compressed-tensors $C
same moe-gptq moe-gptq-ct
cell moe-fp8 1.025 80 $Q --method fp8 --act static $C
cell moe-fp8-gptq 1.03 80 $Q --method fp8+gptq --act dynamic $C
# AWQ: every expert's gate and up one scale set after post_attention_layernorm (measured ratio 1.131; awq+gptq 1.065)
cell moe-awq 1.20 80 $Q --method awq --group-size 32 $C
cell moe-awq-gptq 1.12 80 $Q --method awq+gptq --group-size 32 $C
echo "matrix: $cells cells"
