/* fuzz_fmt_ct_float.c: libFuzzer target for the compressed-tensors float-quantized reader of the format table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("ct-float", "weight", "weight_scale", "input_scale", "weight_scale_inv")
