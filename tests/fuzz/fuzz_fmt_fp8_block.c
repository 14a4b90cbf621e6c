/* fuzz_fmt_fp8_block.c: libFuzzer target for the block-wise reader of vLLM's fp8 format (weight_block_size
 * [128, 128], weight_scale_inv [ceil(N/128), ceil(K/128)]) in the format table (harness: fuzz_fmt.h). */
#define FUZZ_FMT_BLOCK 128
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("fp8", "weight", "weight_scale_inv", "weight_scale", "input_scale")
