/* base.c: status names, error filling, the log callback, small file helpers. */
#include "base.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <limits.h>

const char *sq_status_name(sq_status s) {
    switch (s) {
    case SQ_OK: return "ok";
    case SQ_ERR_IO: return "I/O error";
    case SQ_ERR_FORMAT: return "format error";
    case SQ_ERR_NOMEM: return "out of memory";
    case SQ_ERR_ARG: return "bad argument";
    case SQ_ERR_UNSUPPORTED: return "unsupported";
    case SQ_ERR_NUMERIC: return "numeric error";
    case SQ_ERR_DEVICE: return "device unavailable";
    case SQ_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

sq_status sq_fail(sq_err *err, sq_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
        /* one line: newlines in a message (from a file name, say) become spaces */
        for (char *p = err->msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return code;
}

static void log_stderr(sq_log_level level, const char *msg, void *user) {
    (void)user;
    static const char *tag[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "spotq: %s: %s\n", tag[level], msg);
}

static sq_log_fn g_log_fn = log_stderr;
static void *g_log_user;
static sq_log_level g_log_min = SQ_LOG_INFO;

void sq_log_set(sq_log_fn fn, void *user, sq_log_level min_level) {
    g_log_fn = fn ? fn : log_stderr;
    g_log_user = user;
    g_log_min = min_level;
}

void sq_log(sq_log_level level, const char *fmt, ...) {
    if (level < g_log_min) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}

void *sq_malloc(size_t n, sq_err *err) {
    void *p = malloc(n ? n : 1);
    if (!p) sq_fail(err, SQ_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *sq_calloc(size_t count, size_t size, sq_err *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) sq_fail(err, SQ_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

char *sq_strdup(const char *s, sq_err *err) {
    size_t n = strlen(s) + 1;
    char *p = sq_malloc(n, err);
    if (p) memcpy(p, s, n);
    return p;
}

sq_status sq_read_file(const char *path, char **out, size_t *len, sq_err *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return sq_fail(err, SQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || S_ISDIR(st.st_mode)) {
        fclose(f);
        return sq_fail(err, SQ_ERR_IO, "%s: is a directory, not a file", path);
    }
    /* Regular files are read in one go; pipes and devices until EOF. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 1 << 16, n = 0;
    char *buf = sq_malloc(cap, err);
    if (!buf) { fclose(f); return SQ_ERR_NOMEM; }
    for (;;) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *g = realloc(buf, cap * 2);
        if (!g) { free(buf); fclose(f); return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory reading it", path); }
        buf = g;
        cap *= 2;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return sq_fail(err, SQ_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return SQ_OK;
}

sq_status sq_path_join(char *out, size_t cap, const char *dir, const char *name, sq_err *err) {
    size_t dl = strlen(dir);
    int need_slash = dl > 0 && dir[dl - 1] != '/';
    int n = snprintf(out, cap, "%s%s%s", dir, need_slash ? "/" : "", name);
    if (n < 0 || (size_t)n >= cap) return sq_fail(err, SQ_ERR_ARG, "%s: path too long", dir);
    return SQ_OK;
}

bool sq_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool sq_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i < (size_t)len) return false;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += (size_t)len;
    }
    return true;
}

void sq_human_bytes(int64_t bytes, char *buf, size_t cap) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, u++;
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", v, unit[u]);
}

sq_status sq_path_resolve(const char *path, char *out, size_t cap, sq_err *err) {
    char cur[8192];
    if (path[0] == '/') snprintf(cur, sizeof cur, "/");
    else if (!getcwd(cur, sizeof cur)) return sq_fail(err, SQ_ERR_IO, "%s: cannot read the working directory", path);
    bool exists = true; /* cur names an existing, canonical directory (or file) */
    const char *p = path;
    while (*p) {
        while (*p == '/') p++;
        if (!*p) break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 1 && p[0] == '.') { /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            char *slash = strrchr(cur, '/');
            if (slash && slash != cur) *slash = 0;
            else snprintf(cur, sizeof cur, "/");
            struct stat st; /* back in an existing (canonical) directory: resolve below it again */
            exists = lstat(cur, &st) == 0;
        } else {
            size_t cl = strlen(cur);
            if (cl + len + 2 >= sizeof cur) return sq_fail(err, SQ_ERR_ARG, "%s: path too long", path);
            if (cl > 1) cur[cl++] = '/';
            memcpy(cur + cl, p, len);
            cur[cl + len] = 0;
            struct stat st;
            if (exists && lstat(cur, &st) == 0) {
                char real[PATH_MAX];
                if (realpath(cur, real)) snprintf(cur, sizeof cur, "%s", real);
            } else exists = false; /* a missing component: nothing below it can be a symlink */
        }
        p += len;
    }
    if (strlen(cur) >= cap) return sq_fail(err, SQ_ERR_ARG, "%s: path too long", path);
    snprintf(out, cap, "%s", cur);
    return SQ_OK;
}

/* True when a lies under dir b ("/x/y" under "/x"; everything under "/"). */
static bool path_under(const char *a, const char *b) {
    size_t n = strlen(b);
    if (n == 1 && b[0] == '/') return a[1] != 0;
    return strncmp(a, b, n) == 0 && a[n] == '/';
}

sq_path_rel sq_path_relation(const char *out, const char *in) {
    if (!strcmp(out, in)) return SQ_PATH_SAME;
    if (path_under(in, out)) return SQ_PATH_CONTAINS;
    if (path_under(out, in)) return SQ_PATH_INSIDE;
    return SQ_PATH_APART;
}

sq_status sq_path_check_output(const char *out, const char *const *inputs, const char *const *what, int n, sq_err *err) {
    char ro[4096], ri[4096];
    sq_status s = sq_path_resolve(out, ro, sizeof ro, err);
    if (s) return s;
    for (int i = 0; i < n; i++) {
        if (!inputs[i] || !inputs[i][0]) continue;
        if ((s = sq_path_resolve(inputs[i], ri, sizeof ri, err))) return s;
        switch (sq_path_relation(ro, ri)) {
        case SQ_PATH_SAME:
            return sq_fail(err, SQ_ERR_ARG, "%s: the output is %s (%s): refusing to overwrite an input", out, what[i], ri);
        case SQ_PATH_CONTAINS:
            return sq_fail(err, SQ_ERR_ARG, "%s: the output contains %s (%s): refusing to replace an input", out, what[i], ri);
        case SQ_PATH_INSIDE:
            return sq_fail(err, SQ_ERR_ARG, "%s: the output lies inside %s (%s): write it elsewhere", out, what[i], ri);
        default: break;
        }
    }
    return SQ_OK;
}

void sq_mirror_upper(float *h, int64_t k) {
    /* 64 x 64 tiles: the column reads of a tile stay in cache (a plain loop reads one cache line per
     * element of a row, which for k in the thousands costs as much as the ssyrk of a 256-token window) */
    enum { TILE = 64 };
    for (int64_t i0 = 0; i0 < k; i0 += TILE)
        for (int64_t j0 = 0; j0 <= i0; j0 += TILE) {
            int64_t i1 = i0 + TILE < k ? i0 + TILE : k, j1 = j0 + TILE < k ? j0 + TILE : k;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1 && j < i; j++) h[i * k + j] = h[j * k + i];
        }
}

void sq_pack_upper(float *h, int64_t k) { /* row i moves down from i k + i to its packed place, never past it */
    for (int64_t i = 0, at = 0; i < k; at += k - i, i++) memmove(h + at, h + i * k + i, (size_t)(k - i) * sizeof *h);
}

void sq_unpack_upper(float *h, int64_t k) { /* the last row first: each moves up, over nothing not yet moved */
    for (int64_t i = k - 1, at = k * (k + 1) / 2; i >= 0; i--) {
        at -= k - i;
        memmove(h + i * k + i, h + at, (size_t)(k - i) * sizeof *h);
    }
    sq_mirror_upper(h, k);
}
