/* backend.c: picks a backend by name. */
#include "backend.h"

#include <string.h>

/* Defined in kernels/cuda when built with CUDA=1; otherwise this weak reference stays NULL. */
extern const sq_backend_i *sq_backend_cuda_impl(void) __attribute__((weak));

const sq_backend_i *sq_backend_cuda(void) {
    return sq_backend_cuda_impl ? sq_backend_cuda_impl() : NULL;
}

sq_status sq_backend_get(const char *name, const sq_backend_i **out, sq_err *err) {
    *out = NULL;
    const sq_backend_i *b = NULL;
    if (strcmp(name, "cpu") == 0) b = sq_backend_cpu();
    else if (strcmp(name, "cpu-ref") == 0) b = sq_backend_cpu_ref();
    else if (strcmp(name, "cuda") == 0) {
        b = sq_backend_cuda();
        if (!b) return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: this spotq was built without CUDA (rebuild with make CUDA=1)");
    } else return sq_fail(err, SQ_ERR_ARG, "--device %s: unknown device (use cpu, cpu-ref or cuda)", name);
    char desc[256];
    sq_status s = b->query(desc, sizeof desc, err);
    if (s) return s;
    *out = b;
    return SQ_OK;
}
