/* fuzz_stats.c: libFuzzer target for calibration statistics files (their decompressed content). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../calib/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sq_stats st;
    sq_err err;
    if (sq_stats_parse(&st, (const char *)data, size, "fuzz/stats", &err) == SQ_OK) {
        for (int64_t i = 0; i < st.n; i++) { /* every entry's triangle lies in the data */
            const sq_stat_entry *e = &st.entries[i];
            if (e->offset + e->k * (e->k + 1) / 2 > st.data_len) abort();
            if (e->k <= 64) {
                float *h = malloc((size_t)(e->k * e->k) * sizeof *h);
                if (h) sq_stats_hessian(&st, e, h);
                free(h);
            }
        }
        sq_stats_free(&st);
    } else if (strlen(err.msg) == 0 || strchr(err.msg, '\n')) abort(); /* every error is one non-empty line */
    return 0;
}
