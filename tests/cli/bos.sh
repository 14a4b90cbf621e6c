#!/bin/sh
# bos.sh: BOS follows the tokenizer's own rule (tokenizer_config.json's add_bos_token, else tokenizer.json's
# post-processor) in eval's two protocols, in tokenize and in calibration, as transformers and llama.cpp
# decide it; eval says which rule applied. The fixture tests/fixtures/nobos is a byte-level BPE
# tokenizer that adds no BOS (tests/fixtures/gen_nobos.py, HF tokenizers), paired here with the bundled
# model's weights and a config.json whose bos_token_id is 1: llama-perplexity puts no BOS into such a
# model's windows, and neither may eval --protocol llamacpp.
set -e
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tmp=$T
fail() { echo "bos: $*"; exit 1; }
M=models/stories260K
E=data/tinystories/eval.txt
mk() { mkdir -p $T/$1; cp $M/model.safetensors $M/config.json $T/$1/; }
mk nobos; cp tests/fixtures/nobos/tokenizer.json tests/fixtures/nobos/tokenizer_config.json $T/nobos/
grep -q '"bos_token_id": 1' $T/nobos/config.json || fail "the fixture's config should name a BOS (1) for the test to mean anything"
# the same tokenizer, config.json naming no BOS at all: the reference for "no BOS in any window"
mk nocfg; cp tests/fixtures/nobos/tokenizer.json tests/fixtures/nobos/tokenizer_config.json $T/nocfg/
sed -i '/"bos_token_id"/d' $T/nocfg/config.json
# without tokenizer_config.json the post-processor (ByteLevel) decides: still none
mk post; cp tests/fixtures/nobos/tokenizer.json $T/post/
# the same tokenizer told to add <|endoftext|> (id 0) as BOS
mk withbos; cp tests/fixtures/nobos/tokenizer.json $T/withbos/
printf '{"add_bos_token": true, "bos_token": "<|endoftext|>"}\n' >$T/withbos/tokenizer_config.json
# stories260K's own SentencePiece tokenizer with add_bos_token false: transformers then adds none either
mk spnobos; cp $M/tokenizer.json $T/spnobos/
printf '{"add_bos_token": false, "bos_token": "<s>"}\n' >$T/spnobos/tokenizer_config.json

# tokenize: HF tokenizers' ids exactly (no BOS first)
$SPOTQ tokenize $T/nobos $E >$T/ids
cmp -s $T/ids tests/fixtures/nobos/eval.ids || fail "tokenize differs from HF's ids"
[ "$($SPOTQ tokenize $T/withbos $E | cut -d' ' -f1-3)" = "0 $(cut -d' ' -f1-2 tests/fixtures/nobos/eval.ids)" ] || fail "add_bos_token true: no BOS 0 first"
[ "$($SPOTQ tokenize $T/spnobos $E | cut -d' ' -f1-3)" = "$($SPOTQ tokenize $M $E | cut -d' ' -f2-4)" ] || fail "SentencePiece with add_bos_token false still adds BOS"
[ "$($SPOTQ tokenize $M $E | cut -d' ' -f1)" = 1 ] || fail "stories260K lost its BOS"

nll() { $SPOTQ eval $1 --data $E --ctx 128 --protocol $2 --json >$T/e.json 2>$T/err || fail "eval $1 $2: $(cat $T/err)"; sed -n 's/.*"mean_nll":[ \t]*\([-0-9.e+]*\),*$/\1/p' $T/e.json; }
for proto in llamacpp gptq; do
    a=$(nll $T/nobos $proto)
    grep -q '"id":	null' $T/e.json && grep -q '"rule":	"tokenizer_config.json.s add_bos_token false"' $T/e.json || fail "$proto: eval does not say no BOS: $(grep -A3 '"bos"' $T/e.json)"
    b=$(nll $T/nocfg $proto)
    c=$(nll $T/post $proto)
    grep -q '"rule":	"tokenizer.json.s post_processor adds none"' $T/e.json || fail "$proto: post-processor rule not named"
    d=$(nll $T/withbos $proto)
    grep -q '"id":	0,' $T/e.json || fail "$proto: withbos: BOS id 0 not reported"
    echo "$a" | grep -qE '^[0-9]+\.[0-9]+' || fail "$proto: no mean nll ('$a')"
    [ "$a" = "$b" ] && [ "$a" = "$c" ] || fail "$proto: a BOS went into the windows of a tokenizer that adds none: $a vs $b / $c"
    [ "$a" != "$d" ] || fail "$proto: adding BOS changed nothing ($a), so the comparison above proves nothing"
    echo "$proto: no BOS $a, config without BOS $b, post-processor $c, BOS 0 $d"
done
$SPOTQ eval $T/nobos --data $E --ctx 128 --protocol llamacpp | grep -qF "bos:            none, from tokenizer_config.json's add_bos_token false" || fail "text output"
$SPOTQ eval $M --data $E --ctx 128 --protocol llamacpp | grep -qF "bos:            <s> (id 1), from tokenizer_config.json's add_bos_token true" || fail "stories260K's BOS"

# calibration: the documents start with the tokenizer's BOS or with none, and spotq.json says which
$SPOTQ quantize $T/spnobos -o $T/q1 --method rtn --group-size 32 --calib $E --nsamples 2 --seqlen 64 2>/dev/null
$SPOTQ quantize $M -o $T/q2 --method rtn --group-size 32 --calib $E --nsamples 2 --seqlen 64 2>/dev/null
n1=$(sed -n 's/.*"text_tokens":[ \t]*\([0-9]*\),*$/\1/p' $T/q1/spotq.json)
n2=$(sed -n 's/.*"text_tokens":[ \t]*\([0-9]*\),*$/\1/p' $T/q2/spotq.json)
[ -n "$n1" ] && [ "$n2" -eq 8891 ] && [ "$n1" -eq $((n2 - 1)) ] || fail "calibration tokens: $n1 without BOS, $n2 with"
grep -q '"bos":	null' $T/q1/spotq.json && grep -q '"bos":	1,' $T/q2/spotq.json || fail "spotq.json's calibration BOS"
# a tokenizer_config.json that lies is a one-line error naming it
printf '{"add_bos_token": "yes"}\n' >$T/spnobos/tokenizer_config.json
$SPOTQ tokenize $T/spnobos $E >/dev/null 2>$T/err && fail "a bad add_bos_token was accepted"
grep -q "tokenizer_config.json: add_bos_token is not true or false" $T/err || fail "bad add_bos_token: $(cat $T/err)"
printf '{"add_bos_token": true, "bos_token": "<nope>"}\n' >$T/spnobos/tokenizer_config.json
cp tests/fixtures/nobos/tokenizer.json $T/spnobos/
$SPOTQ tokenize $T/spnobos $E >/dev/null 2>$T/err && fail "a BOS not in the vocabulary was accepted"
grep -q 'bos_token "<nope>" is not in' $T/err || fail "unknown bos_token: $(cat $T/err)"
echo "bos: ok"
