/* fuzz_fmt_gptq.c: libFuzzer target for the GPTQ v1 reader of the format table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("gptq", "qweight", "qzeros", "scales", "g_idx")
