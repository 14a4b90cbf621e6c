/* outdir.h: an output model directory written atomically: everything goes into a temporary directory
 * beside OUT, which is renamed into place only when complete. An existing OUT is kept unless force. */
#ifndef SQ_OUTDIR_H
#define SQ_OUTDIR_H

#include "../base/base.h"

typedef struct sq_outdir sq_outdir;

/* Fails when OUT exists and force is false, or when the temporary directory cannot be made. */
sq_status sq_outdir_begin(sq_outdir **out /* OUT */, const char *path, bool force, sq_err *err);
/* The temporary directory to write into (valid until commit or abort). */
const char *sq_outdir_tmp(const sq_outdir *o);
/* Joins the temporary directory and a file name. */
sq_status sq_outdir_file(const sq_outdir *o, const char *name, char *buf, size_t cap, sq_err *err);
/* Copies src_dir/name into the output; a missing file is skipped when optional. */
sq_status sq_outdir_copy(sq_outdir *o, const char *src_dir, const char *name, bool optional, sq_err *err);
/* Writes text to name in the output. */
sq_status sq_outdir_write(sq_outdir *o, const char *name, const char *text, sq_err *err);
/* Renames the temporary directory to OUT (replacing an old OUT when force). Frees o either way. */
sq_status sq_outdir_commit(sq_outdir *o, sq_err *err);
/* Removes the temporary directory. NULL is fine. */
void sq_outdir_abort(sq_outdir *o);

/* Cleans up after runs that were killed before they could (SIGKILL, power loss): beside path, the
 * temporary outputs path.spotq-tmp-PID of processes that no longer exist are removed, and an old
 * output moved aside as path.spotq-old-PID is put back when path itself is missing (else removed).
 * Each one is logged; entries of live processes are left alone. sq_outdir_begin calls it. */
void sq_outdir_sweep(const char *path);

/* The temporary directory of the run in progress, for a signal handler to remove (NULL when none). */
const char *sq_outdir_pending(void);

#endif
