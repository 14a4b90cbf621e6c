/* qconfig.c: a quantised checkpoint's quantization_config held to its tensors: the walk over its linears
 * (each held by a row of the config's quant_method, or named by its ignore list) and the readers the
 * rows' checks share; what each format's config must state (bits, group size, symmetry, act-order,
 * checkpoint format, FP8 scheme and activations) is its row's check() (formats/fmt_*.c). The runtime
 * reads the tensors; a config that says otherwise would have a serving engine read them differently,
 * so a mismatch is an error naming config.json and the field. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <stdarg.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "format.h"
#include "qcheck.h"

static const sq_tensor *find(void *user, const char *name) { return sq_st_find(user, name); }

const sq_tensor *sq_qc_tensor(const sq_qc *x, const char *module, const char *suffix) {
    char name[300];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    return sq_st_find(x->ck->st, name);
}

sq_status sq_qc_bad(sq_qc *x, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: quantization_config%s", x->ck->config_path, msg);
}

int sq_qc_int(const cJSON *o, const char *key, int absent) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v) return absent;
    if (cJSON_IsNull(v)) return -1;
    return cJSON_IsNumber(v) ? (int)v->valuedouble : -2;
}
const char *sq_qc_str(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
int sq_qc_bool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v) return dflt;
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -2;
}
int32_t sq_qc_i32(const sq_tensor *t, int64_t i) {
    int32_t v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}
const char *sq_qc_yes(int b) { return b ? "true" : "false"; }

/* ---------------------------------------------------------------- modules left in full precision */

bool sq_qc_re_match(const char *pat, const char *name) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, &ec, &eo, NULL);
    if (!re) return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = md ? pcre2_match(re, (PCRE2_SPTR)name, strlen(name), 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

/* ---------------------------------------------------------------- shared by the rows' checks */

/* The group count the config implies for K inputs (group_size -1 or null: one group). */
static int64_t groups_for(int gs, int64_t k) { return gs <= 0 ? 1 : (k + gs - 1) / gs; }

void sq_qc_groups(sq_qc *x, const char *field, int gs, const char *module, int64_t G, int64_t K) {
    if (groups_for(gs, K) != G)
        sq_qc_bad(x, "%s is %d, but %s holds %lld group%s of its %lld inputs (group size %lld)", field, gs, module, (long long)G,
                  G == 1 ? "" : "s", (long long)K, (long long)(K / G));
}

bool sq_qc_g_idx_trivial(const sq_tensor *gi, int64_t K, int64_t G) {
    if (!gi) return true;
    if (gi->dtype != SQ_DT_I32 || gi->numel != K || K % G) return true; /* malformed: the loader says so */
    for (int64_t k = 0; k < K; k++)
        if (sq_qc_i32(gi, k) != k / (K / G)) return false;
    return true;
}

void sq_qc_missing_input_scale(sq_qc *x, const char *module) {
    x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: missing tensor '%s.input_scale' (config.json asks for static activation scales)",
                        x->ck->weights_path, module);
}

/* ---------------------------------------------------------------- the walk */

/* Each expected linear: its tensors are those of a row of the config's quant_method, which the
 * config's ignore list does not name; that row then checks what the config states about them; a
 * linear in full precision must be named by the ignore list. */
static int check_linear(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user) {
    sq_qc *x = user;
    if (!is_linear) return 0;
    char module[256];
    size_t n = strlen(name);
    if (n < 8 || n >= sizeof module) return 0;
    memcpy(module, name, n - 7);
    module[n - 7] = 0;
    const sq_config *cfg = &x->ck->cfg;
    sq_tensor_src src = {find, x->ck->st, x->ck->weights_path};
    const sq_fmt *stated = sq_fmt_of_config(cfg), *held = sq_fmt_of_linear(&src, module, cfg);
    if (!held && !sq_qc_tensor(x, module, "weight")) return 0; /* missing: the loader names it */
    const char *field;
    bool ign = stated->ignores(x->q, module, &field);
    if (!held) {
        if (!ign) sq_qc_bad(x, "%s does not list %s, but it holds full-precision weights", field, module);
        return x->status != SQ_OK;
    }
    if (ign) {
        sq_qc_bad(x, "%s lists %s, but it holds %s", field, module, held->tensors);
        return 1;
    }
    if (strcmp(held->quant_method, stated->quant_method)) {
        sq_qc_bad(x, ".quant_method is '%s', but %s holds %s", cfg->quant_method_name, module, held->tensors);
        return 1;
    }
    held->check(x, module, shape[0], shape[1]);
    return x->status != SQ_OK;
}

sq_status sq_ckpt_check_quant(const sq_ckpt *ck, sq_err *err) {
    const sq_fmt *stated = sq_fmt_of_config(&ck->cfg);
    if (!stated) return SQ_OK; /* not quantised, or a method spotq does not read */
    char *text;
    size_t len;
    sq_status s = sq_read_file(ck->config_path, &text, &len, err);
    if (s) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid JSON", ck->config_path);
    sq_qc x = {.ck = ck, .q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config"), .err = err};
    if (stated->check_config) stated->check_config(&x);
    if (!x.status) sq_ckpt_expected_tensors(&ck->cfg, check_linear, &x);
    cJSON_Delete(root);
    return x.status;
}
