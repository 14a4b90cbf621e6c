/* backend.c: picks a backend by name; names its ops and grid kinds. */
#include "backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *g_cuda;             /* the handle of libspotq_cuda.so, or NULL */
static char g_cuda_why[4400];     /* why it could not be loaded */
static pthread_once_t g_cuda_once = PTHREAD_ONCE_INIT;

static void cuda_load(void) {
    const char *env = getenv("SPOTQ_CUDA_LIB");
    if (env && env[0]) {
        if (!(g_cuda = dlopen(env, RTLD_NOW | RTLD_LOCAL)))
            snprintf(g_cuda_why, sizeof g_cuda_why, "cannot load %s: %s", env, dlerror());
        return;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) { snprintf(g_cuda_why, sizeof g_cuda_why, "cannot find the spotq binary's folder"); return; }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    static const char *up[] = {"", "/..", "/../.."}; /* the binary, and tests or bench binaries below it */
    for (size_t i = 0; i < sizeof up / sizeof *up; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s%s/libspotq_cuda.so", exe, up[i]);
        if (access(path, F_OK) != 0) continue;
        if (!(g_cuda = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
            snprintf(g_cuda_why, sizeof g_cuda_why, "cannot load %s: %s", path, dlerror());
        return;
    }
    snprintf(g_cuda_why, sizeof g_cuda_why, "this spotq was built without CUDA (rebuild with make CUDA=1)");
}

void *sq_cuda_symbol(const char *name, char *why, size_t cap) {
    pthread_once(&g_cuda_once, cuda_load);
    void *p = g_cuda ? dlsym(g_cuda, name) : NULL;
    if (!p && why) snprintf(why, cap, "%s", g_cuda ? "libspotq_cuda.so lacks a symbol" : g_cuda_why);
    return p;
}

const sq_backend_i *sq_backend_cuda(void) {
    const sq_backend_i *(*impl)(void) = (const sq_backend_i *(*)(void))sq_cuda_symbol("sq_backend_cuda_impl", NULL, 0);
    return impl ? impl() : NULL;
}

sq_status sq_backend_get(const char *name, const sq_backend_i **out, sq_err *err) {
    *out = NULL;
    const sq_backend_i *b = NULL;
    if (strcmp(name, "cpu") == 0) b = sq_backend_cpu();
    else if (strcmp(name, "cpu-ref") == 0) b = sq_backend_cpu_ref();
    else if (strcmp(name, "cuda") == 0) {
        char why[4400];
        const sq_backend_i *(*impl)(void) = (const sq_backend_i *(*)(void))sq_cuda_symbol("sq_backend_cuda_impl", why, sizeof why);
        if (!impl) return sq_fail(err, SQ_ERR_DEVICE, "--device cuda: %s", why);
        b = impl();
    } else return sq_fail(err, SQ_ERR_ARG, "--device %s: unknown device (use cpu, cpu-ref or cuda)", name);
    char desc[256];
    sq_status s = b->query(desc, sizeof desc, err);
    if (s) return s;
    *out = b;
    return SQ_OK;
}

const char *sq_op_name(sq_op op) {
    static const char *names[SQ_OP_COUNT] = {"matmul", "embed", "rmsnorm", "rope", "attention", "swiglu", "add", "hessian",
                                             "factor", "gptq", "rtn", "output_error", "absmax", "awq_clip", "gram", "awq_candidate"};
    return op >= 0 && op < SQ_OP_COUNT ? names[op] : "?";
}

const char *sq_qgrid_name(sq_qgrid_kind kind) {
    static const char *names[SQ_QGRID_COUNT] = {"int-minmax", "int-mse", "fp8-tensor", "fp8-channel", "fp8-block", "fp4", "int8-channel"};
    return kind >= 0 && kind < SQ_QGRID_COUNT ? names[kind] : "?";
}
