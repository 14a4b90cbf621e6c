/* backend.h: the compute backend interface. The CPU backend is the reference; CUDA is optional and
 * linked in only by `make CUDA=1` (its constructor then replaces the weak NULL below). */
#ifndef SQ_BACKEND_H
#define SQ_BACKEND_H

#include "../base/base.h"

typedef struct sq_backend_i {
    const char *name;                  /* "cpu", "cuda" */
    /* Describes the device in one line (model, memory); fails when none is usable. */
    sq_status (*query)(char *desc /* OUT */, size_t cap, sq_err *err);
} sq_backend_i;

const sq_backend_i *sq_backend_cpu(void);
/* NULL when spotq was built without CUDA. */
const sq_backend_i *sq_backend_cuda(void);
/* By name: "cpu" or "cuda". Fails with a clear message when unknown, not built, or no device. */
sq_status sq_backend_get(const char *name, const sq_backend_i **out /* OUT */, sq_err *err);

#endif
