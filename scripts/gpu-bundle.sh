#!/bin/sh
# gpu-bundle.sh: prepares, on this (CPU) machine, what scripts/gpu-check.sh needs on a lent GPU machine
# whose image has CUDA but not Debian's OpenBLAS, LAPACKE, cJSON or PCRE2: builds everything with CUDA=1
# and copies the non-CUDA shared libraries the binaries need into build/gpu-libs. Then run there:
#   SKIP_BUILD=1 sh scripts/gpu-check.sh      with carry: build/release, build/gpu-libs   (< 64 MiB)
set -e
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
make -j"$(nproc)" CUDA=1 all "$BUILD/tests/test_gptq" "$BUILD/tests/test_backend_ops" "$BUILD/bench/gptq_cuda"
rm -rf build/gpu-libs
mkdir -p build/gpu-libs
for bin in "$BUILD/spotq" "$BUILD/libspotq_cuda.so" "$BUILD/tests/test_backend_ops" "$BUILD/bench/gptq_cuda"; do
    ldd "$bin" | awk '/=> \// { print $3 }'
done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+)\.so|/ld-linux|libcu|libnvJitLink' |
    while read -r lib; do cp -L "$lib" build/gpu-libs/; done
du -sh "$BUILD" build/gpu-libs
