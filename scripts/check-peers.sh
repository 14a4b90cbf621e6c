#!/bin/sh
# check-peers.sh: the checks that need Python, torch and the peers from PyPI (not part of `make test`,
# which uses the golden files these write). Installs what it needs with pip, at pinned versions (the
# ones tests/fixtures/PROVENANCE.md names; AutoGPTQ 0.7.1 and AutoAWQ 0.2.9 are pinned in check_peers.py),
# so that a regenerated golden differs only when spotq or a deliberate version bump changed it.
set -e
cd "$(dirname "$0")/.."
PINS="numpy==2.4.6 safetensors==0.8.0 ml_dtypes==0.7.0 tokenizers==0.23.3 sentencepiece==0.2.3 transformers==5.24.0
      torch==2.15.0 compressed-tensors==0.20.0"
python3 -m pip install -q $PINS
BUILD=${BUILD:-build/release}
make -s "$BUILD/tests/test_qpack" "$BUILD/tests/test_fp8" "$BUILD/spotq"
tmp=$(mktemp -d)
"$BUILD/tests/test_qpack" --write "$tmp/spotq_packed.safetensors"
cmp "$tmp/spotq_packed.safetensors" tests/fixtures/peers/spotq_packed.safetensors || {
    echo "check-peers: spotq's packed tensors changed; review, then copy $tmp/spotq_packed.safetensors into tests/fixtures/peers"; exit 1; }
"$BUILD/tests/test_fp8" --write "$tmp/spotq_fp8.safetensors"
cmp "$tmp/spotq_fp8.safetensors" tests/fixtures/peers/spotq_fp8.safetensors || {
    echo "check-peers: spotq's FP8 fixture changed; review, then copy $tmp/spotq_fp8.safetensors into tests/fixtures/peers"; exit 1; }
"$BUILD/tests/test_fp8" --write-block "$tmp/spotq_fp8_block.safetensors"
cmp "$tmp/spotq_fp8_block.safetensors" tests/fixtures/peers/spotq_fp8_block.safetensors || {
    echo "check-peers: spotq's block FP8 fixture changed; review, then copy $tmp/spotq_fp8_block.safetensors into tests/fixtures/peers"; exit 1; }
rm -rf "$tmp"
python3 scripts/check_peers.py
for g in tests/fixtures/gen_*.py; do python3 "$g"; done
git diff --stat --exit-code tests/fixtures || { echo "check-peers: regenerated fixtures differ from the committed ones"; exit 1; }
# llm-compressor pins torch and transformers below the pins above: it runs in an environment of its own.
# A fresh llm-compressor checkpoint (tests/fixtures/make_llmc.py) must evaluate in spotq to transformers'
# perplexity on it within 1e-3 (tests/cli/llmc.sh, which make test runs on the committed ones).
LLMC_PINS="llmcompressor==0.14.0.1 torch==2.14.0 transformers==5.17.0"
[ -x build/venv-llmc/bin/python ] || python3 -m venv build/venv-llmc
build/venv-llmc/bin/python -m pip install -q $LLMC_PINS
tmp=$(mktemp -d)
build/venv-llmc/bin/python tests/fixtures/make_llmc.py "$BUILD/spotq" "$tmp" 2>/dev/null | grep "transformers ppl"
SPOTQ="$PWD/$BUILD/spotq" LLMC="$tmp" sh tests/cli/llmc.sh
rm -rf "$tmp"
echo "check-peers: all peer checks passed"
