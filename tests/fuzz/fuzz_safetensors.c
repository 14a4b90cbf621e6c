/* fuzz_safetensors.c: libFuzzer target for the safetensors header: the input is a whole file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > size - 8) return 0;
    /* A copy, so a read past the header is a heap overflow ASan sees. */
    char *hdr = malloc(n ? n : 1);
    if (!hdr) return 0;
    memcpy(hdr, data + 8, n);
    sq_st_header h;
    sq_err err;
    if (sq_st_parse_header(hdr, n, (int64_t)(size - 8 - n), "fuzz.safetensors", &h, &err) == SQ_OK) {
        for (int64_t i = 0; i < h.count; i++) /* every accepted tensor must lie inside the data */
            if (h.begin[i] < 0 || h.begin[i] + h.tensors[i].nbytes > (int64_t)(size - 8 - n)) abort();
        sq_st_header_free(&h);
    }
    free(hdr);
    return 0;
}
