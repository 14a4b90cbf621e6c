/* backend_cpu.c: the CPU backend (OpenBLAS + LAPACK), the reference for every other backend. */
#include "../backend.h"

#include <stdio.h>
#include <unistd.h>

static sq_status cpu_query(char *desc, size_t cap, sq_err *err) {
    (void)err;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(desc, cap, "cpu: %ld cores", n);
    return SQ_OK;
}

static const sq_backend_i cpu_backend = {
    .name = "cpu",
    .query = cpu_query,
};

const sq_backend_i *sq_backend_cpu(void) { return &cpu_backend; }
