/* fuzz_fmt_fp8.c: libFuzzer target for the vLLM's fp8 reader of the format table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("fp8", "weight", "weight_scale", "input_scale", "weight_scale_inv")
