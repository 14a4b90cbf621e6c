/* fuzz_fmt_fp8.c: libFuzzer target for the reader of vLLM's fp8 format in the format table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("fp8", "weight", "weight_scale", "input_scale", "weight_scale_inv")
