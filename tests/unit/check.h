/* check.h: the tiny assertion harness of spotq's unit tests. Each CHECK counts one pass or one
 * failure; a test binary prints "N passed, N failed" and exits non-zero on any failure. */
#ifndef SQ_CHECK_H
#define SQ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_pass, check_fail;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) check_pass++;                                                                    \
        else {                                                                                     \
            check_fail++;                                                                          \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* A status call that must succeed; prints the error message otherwise. */
#define CHECK_OK(call, errp)                                                                       \
    do {                                                                                           \
        sq_status s_ = (call);                                                                     \
        CHECK(s_ == SQ_OK, "%s", (errp)->msg);                                                     \
    } while (0)

static inline int check_report(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_pass, check_fail);
    return check_fail ? 1 : 0;
}

#endif
