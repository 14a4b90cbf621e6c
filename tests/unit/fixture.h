/* fixture.h: a checked view of a tensor of a test fixture (safetensors); a missing or mistyped tensor
 * stops the test, since every later check would read garbage. */
#ifndef SQ_TEST_FIXTURE_H
#define SQ_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "../../formats/safetensors.h"

static inline const void *fixture_get(const sq_st *st, const char *name, sq_dtype dt, int64_t numel) {
    const sq_tensor *t = sq_st_find(st, name);
    if (!t || t->dtype != dt || t->numel != numel) {
        fprintf(stderr, "fixture tensor %s missing or wrong\n", name);
        exit(1);
    }
    return t->data;
}

#endif
