/* outdir.c: atomic output directories (temporary directory, then rename). */
#include "outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sq_outdir {
    char path[4096];
    char tmp[4200];
    bool force;
};

static char g_pending[4200];

const char *sq_outdir_pending(void) { return g_pending[0] ? g_pending : NULL; }

/* rm -rf of a directory spotq made (regular files and directories only; no symlinks followed). */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4500];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
            else unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* The pid in NAME = BASE.spotq-KIND-PID, or 0 when name is not of that form. */
static long leftover_pid(const char *name, const char *base, size_t blen, const char *kind) {
    size_t kl = strlen(kind);
    if (strncmp(name, base, blen) || strncmp(name + blen, kind, kl)) return 0;
    const char *d = name + blen + kl;
    if (!*d) return 0;
    long pid = 0;
    for (; *d; d++) {
        if (*d < '0' || *d > '9' || pid > 100000000) return 0;
        pid = pid * 10 + (*d - '0');
    }
    return pid;
}

void sq_outdir_sweep(const char *path) {
    char dir[4096], base[4096];
    snprintf(dir, sizeof dir, "%s", path);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = 0;
    char *slash = strrchr(dir, '/');
    if (slash) {
        snprintf(base, sizeof base, "%s", slash + 1);
        if (slash == dir) dir[1] = 0;
        else *slash = 0;
    } else {
        snprintf(base, sizeof base, "%s", dir);
        snprintf(dir, sizeof dir, ".");
    }
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (!d || !blen) {
        if (d) closedir(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = leftover_pid(e->d_name, base, blen, ".spotq-tmp-");
        bool old = false;
        if (!pid) old = (pid = leftover_pid(e->d_name, base, blen, ".spotq-old-")) != 0;
        if (!pid || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[8300], target[8300];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        snprintf(target, sizeof target, "%s/%s", dir, base);
        struct stat st;
        if (old && lstat(target, &st) != 0 && rename(p, target) == 0) {
            sq_log(SQ_LOG_WARN, "%s: put back the previous output that process %ld moved aside before it was killed", target, pid);
            continue;
        }
        if (lstat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) remove_tree(p);
        else unlink(p);
        sq_log(SQ_LOG_WARN, "%s: removed, left by process %ld which no longer runs", p, pid);
    }
    closedir(d);
}

sq_status sq_outdir_begin(sq_outdir **out, const char *path, bool force, sq_err *err) {
    *out = NULL;
    sq_outdir_sweep(path);
    struct stat st;
    if (stat(path, &st) == 0 && !force)
        return sq_fail(err, SQ_ERR_ARG, "%s: already exists (use --force to replace it)", path);
    if (strlen(path) >= 4000) return sq_fail(err, SQ_ERR_ARG, "%s: path too long", path);
    sq_outdir *o = sq_calloc(1, sizeof *o, err);
    if (!o) return SQ_ERR_NOMEM;
    snprintf(o->path, sizeof o->path, "%s", path);
    size_t n = strlen(o->path);
    while (n > 1 && o->path[n - 1] == '/') o->path[--n] = 0;
    snprintf(o->tmp, sizeof o->tmp, "%s.spotq-tmp-%d", o->path, (int)getpid());
    o->force = force;
    /* missing parent directories are made, as `mkdir -p` would */
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", o->path);
    for (char *p = parent + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(parent, 0755) != 0 && errno != EEXIST) {
                sq_status s = sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", parent, strerror(errno));
                free(o);
                return s;
            }
            *p = '/';
        }
    if (mkdir(o->tmp, 0755) != 0) {
        sq_status s = sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", o->tmp, strerror(errno));
        free(o);
        return s;
    }
    snprintf(g_pending, sizeof g_pending, "%s", o->tmp);
    *out = o;
    return SQ_OK;
}

const char *sq_outdir_tmp(const sq_outdir *o) { return o->tmp; }

sq_status sq_outdir_file(const sq_outdir *o, const char *name, char *buf, size_t cap, sq_err *err) {
    return sq_path_join(buf, cap, o->tmp, name, err);
}

sq_status sq_outdir_copy(sq_outdir *o, const char *src_dir, const char *name, bool optional, sq_err *err) {
    char src[4500], dst[4500];
    sq_status s = sq_path_join(src, sizeof src, src_dir, name, err);
    if (s || (s = sq_outdir_file(o, name, dst, sizeof dst, err))) return s;
    FILE *in = fopen(src, "rb");
    if (!in) {
        if (optional && errno == ENOENT) return SQ_OK;
        return sq_fail(err, SQ_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    }
    FILE *outf = fopen(dst, "wb");
    if (!outf) {
        fclose(in);
        return sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    }
    char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, got, outf) != got) { s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", dst, strerror(errno)); break; }
    if (!s && ferror(in)) s = sq_fail(err, SQ_ERR_IO, "%s: read failed", src);
    fclose(in);
    if (fclose(outf) != 0 && !s) s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
    return s;
}

sq_status sq_outdir_write(sq_outdir *o, const char *name, const char *text, sq_err *err) {
    char dst[4500];
    sq_status s = sq_outdir_file(o, name, dst, sizeof dst, err);
    if (s) return s;
    FILE *f = fopen(dst, "wb");
    if (!f) return sq_fail(err, SQ_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n) s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
    if (fclose(f) != 0 && !s) s = sq_fail(err, SQ_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
    return s;
}

sq_status sq_outdir_commit(sq_outdir *o, sq_err *err) {
    sq_status s = SQ_OK;
    char old[4300] = "";
    struct stat st;
    if (stat(o->path, &st) == 0) {
        if (!o->force) {
            s = sq_fail(err, SQ_ERR_ARG, "%s: appeared while spotq ran; output left in %s", o->path, o->tmp);
            g_pending[0] = 0;
            free(o);
            return s;
        }
        snprintf(old, sizeof old, "%s.spotq-old-%d", o->path, (int)getpid());
        if (rename(o->path, old) != 0) {
            s = sq_fail(err, SQ_ERR_IO, "%s: cannot move the old output aside: %s", o->path, strerror(errno));
            sq_outdir_abort(o);
            return s;
        }
    }
    if (rename(o->tmp, o->path) != 0) {
        s = sq_fail(err, SQ_ERR_IO, "%s: cannot rename into place: %s", o->path, strerror(errno));
        if (old[0]) rename(old, o->path);
        sq_outdir_abort(o);
        return s;
    }
    if (old[0]) remove_tree(old);
    g_pending[0] = 0;
    free(o);
    return SQ_OK;
}

void sq_outdir_abort(sq_outdir *o) {
    if (!o) return;
    remove_tree(o->tmp);
    g_pending[0] = 0;
    free(o);
}
