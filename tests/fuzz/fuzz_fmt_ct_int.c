/* fuzz_fmt_ct_int.c: libFuzzer target for the compressed-tensors int-quantized (INT8 W8A8) reader of the format
 * table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("ct-int", "weight", "weight_scale", "weight_zero_point")
