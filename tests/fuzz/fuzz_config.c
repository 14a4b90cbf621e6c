/* fuzz_config.c: libFuzzer target for config.json parsing and the expected-tensor walk. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_tensor(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user) {
    if (!name[0] || ndim < 1 || ndim > 2) abort();
    ++*(int64_t *)user;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    sq_config c;
    sq_err err;
    if (sq_config_parse(&c, text, size, "fuzz/config.json", &err) == SQ_OK) {
        int64_t work = (int64_t)c.n_layers * (c.n_experts + 2);
        int64_t n = 0;
        if (work < 20000) sq_ckpt_expected_tensors(&c, count_tensor, &n);
    } else if (strlen(err.msg) == 0 || strchr(err.msg, '\n')) abort(); /* every error is one non-empty line */
    free(text);
    return 0;
}
