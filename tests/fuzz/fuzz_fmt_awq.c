/* fuzz_fmt_awq.c: libFuzzer target for the AWQ GEMM reader of the format table (harness: fuzz_fmt.h). */
#include "fuzz_fmt.h"

FUZZ_FMT_TARGET("awq", "qweight", "qzeros", "scales")
