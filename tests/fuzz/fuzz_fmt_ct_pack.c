/* fuzz_fmt_ct_pack.c: libFuzzer target for the compressed-tensors pack-quantized reader of the format table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("ct-pack", "weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx")
