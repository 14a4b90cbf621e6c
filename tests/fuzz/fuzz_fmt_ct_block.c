/* fuzz_fmt_ct_block.c: libFuzzer target for the block-wise reader of compressed-tensors float-quantized
 * (strategy "block", block_structure [128, 128], weight_scale [ceil(N/128), ceil(K/128)]) in the format
 * table (harness: fuzz_fmt.h). */
#define FUZZ_FMT_BLOCK 128
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("ct-float", "weight", "weight_scale", "input_scale", "weight_scale_inv")
