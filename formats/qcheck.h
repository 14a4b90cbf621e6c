/* qcheck.h: what qconfig.c hands the format table's rows when it holds a checkpoint's
 * quantization_config to its tensors: the config being checked, and readers of its fields. Each row's
 * check() says what its config must state for the tensors a linear holds. */
#ifndef SQ_QCHECK_H
#define SQ_QCHECK_H

#include <cJSON.h>

#include "checkpoint.h"

typedef struct sq_qc {
    const sq_ckpt *ck;
    const cJSON *q;       /* quantization_config */
    const cJSON *w;       /* compressed-tensors: the Linear group's weights */
    const cJSON *ia;      /* compressed-tensors: its input_activations (NULL or JSON null: none) */
    char group[64];       /* its key in config_groups */
    sq_err *err;
    sq_status status;
} sq_qc;

/* A mismatch: SQ_ERR_FORMAT, "<config.json>: quantization_config<msg>", kept in x->status. */
sq_status sq_qc_bad(sq_qc *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The value of key in o as an integer (-1 for JSON null), `absent` when missing, -2 when not a number. */
int sq_qc_int(const cJSON *o, const char *key, int absent);
const char *sq_qc_str(const cJSON *o, const char *key); /* NULL unless a string */
/* 1 true, 0 false, dflt when absent, -2 when not a boolean */
int sq_qc_bool(const cJSON *o, const char *key, int dflt);
int32_t sq_qc_i32(const sq_tensor *t, int64_t i);
const char *sq_qc_yes(int b);
const sq_tensor *sq_qc_tensor(const sq_qc *x, const char *module, const char *suffix);
/* Whether a (Python re.match: anchored at the start) pattern matches name. */
bool sq_qc_re_match(const char *pat, const char *name);
/* field (group_size -1 or null: one group) against the G groups module holds of its K inputs. */
void sq_qc_groups(sq_qc *x, const char *field, int gs, const char *module, int64_t G, int64_t K);
/* g_idx (NULL: absent) is k / gs for every input k: columns in order. */
bool sq_qc_g_idx_trivial(const sq_tensor *gi, int64_t K, int64_t G);
/* Static activations without their scale: the tensor is what is missing (the loader's message too). */
void sq_qc_missing_input_scale(sq_qc *x, const char *module);

/* compressed-tensors (both rows): the first config group targeting Linear into x->w, x->ia, x->group;
 * and the modules its ignore list leaves unquantised (names, or "re:" patterns). */
void sq_fmt_ct_group(sq_qc *x);
/* The group that targets module by name or regex, else the Linear one, into x->w, x->ia, x->group. */
void sq_fmt_ct_group_of(sq_qc *x, const char *module);
bool sq_fmt_ct_ignores(const cJSON *q, const char *module, const char **field);

#endif
