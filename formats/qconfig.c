/* qconfig.c: a quantised checkpoint's quantization_config held to its tensors (GPTQ v1, AWQ GEMM,
 * compressed-tensors pack-quantized and float-quantized, vLLM's fp8): bits, group size, symmetry,
 * act-order, checkpoint format, FP8 scheme and activations, and the modules left unquantised. The
 * runtime reads the tensors; a config that says otherwise would have a serving engine read them
 * differently, so a mismatch is an error naming config.json and the field. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <stdarg.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checkpoint.h"

typedef struct {
    const sq_ckpt *ck;
    const cJSON *q;       /* quantization_config */
    const cJSON *w;       /* compressed-tensors: the Linear group's weights */
    const cJSON *ia;      /* compressed-tensors: its input_activations (NULL or JSON null: none) */
    char group[64];       /* its key in config_groups */
    sq_err *err;
    sq_status status;
} qc;

static const sq_tensor *tensor(const qc *x, const char *module, const char *suffix) {
    char name[300];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    return sq_st_find(x->ck->st, name);
}

static sq_status bad(qc *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static sq_status bad(qc *x, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: quantization_config%s", x->ck->config_path, msg);
}

/* The value of key in o as an integer (-1 for JSON null when null_ok), or `absent` when missing. */
static int jint(const cJSON *o, const char *key, int absent) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v) return absent;
    if (cJSON_IsNull(v)) return -1;
    return cJSON_IsNumber(v) ? (int)v->valuedouble : -2;
}
static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
/* 1 true, 0 false, dflt when absent, -2 when not a boolean */
static int jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    if (!v) return dflt;
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -2;
}
static int32_t i32_at(const sq_tensor *t, int64_t i) {
    int32_t v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}
static const char *yes(int b) { return b ? "true" : "false"; }

/* ---------------------------------------------------------------- modules left in full precision */

/* Whether a (Python re.match: anchored at the start) pattern matches name. */
static bool re_match(const char *pat, const char *name) {
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

/* Whether the config leaves module unquantised, and the field that says so (for messages). */
static bool ignored(const qc *x, sq_format m, const char *module, const char **field) {
    const cJSON *list, *e;
    switch (m) {
    case SQ_FORMAT_GPTQ: /* GPTQModel's and vLLM's "dynamic": "-:regex" keys skip the modules they match */
        *field = ".dynamic";
        list = cJSON_GetObjectItemCaseSensitive(x->q, "dynamic");
        cJSON_ArrayForEach(e, (cJSON_IsObject(list) ? list : NULL))
            if (e->string && !strncmp(e->string, "-:", 2) && re_match(e->string + 2, module)) return true;
        return false;
    case SQ_FORMAT_AWQ: /* transformers and vLLM: a module whose name contains an entry */
        *field = ".modules_to_not_convert";
        list = cJSON_GetObjectItemCaseSensitive(x->q, "modules_to_not_convert");
        cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
            if (cJSON_IsString(e) && strstr(module, e->valuestring)) return true;
        return false;
    case SQ_FORMAT_FP8:
        *field = ".ignored_layers";
        list = cJSON_GetObjectItemCaseSensitive(x->q, "ignored_layers");
        break;
    default: /* compressed-tensors: names, or "re:" patterns */
        *field = ".ignore";
        list = cJSON_GetObjectItemCaseSensitive(x->q, "ignore");
        cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
            if (cJSON_IsString(e) && !strncmp(e->valuestring, "re:", 3) && re_match(e->valuestring + 3, module)) return true;
        break;
    }
    cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
        if (cJSON_IsString(e) && !strcmp(e->valuestring, module)) return true;
    return false;
}

/* ---------------------------------------------------------------- per format */

/* The group count the config implies for K inputs (group_size -1 or null: one group). */
static int64_t groups_for(int gs, int64_t k) { return gs <= 0 ? 1 : (k + gs - 1) / gs; }

static void check_groups(qc *x, const char *field, int gs, const char *module, int64_t G, int64_t K) {
    if (groups_for(gs, K) != G)
        bad(x, "%s is %d, but %s holds %lld group%s of its %lld inputs (group size %lld)", field, gs, module, (long long)G,
            G == 1 ? "" : "s", (long long)K, (long long)(K / G));
}

/* g_idx (NULL: absent) is k / gs for every input k: columns in order. */
static bool g_idx_trivial(const sq_tensor *gi, int64_t K, int64_t G) {
    if (!gi) return true;
    if (gi->dtype != SQ_DT_I32 || gi->numel != K || K % G) return true; /* malformed: the loader says so */
    for (int64_t k = 0; k < K; k++)
        if (i32_at(gi, k) != k / (K / G)) return false;
    return true;
}

static void check_gptq(qc *x, const char *module, int64_t N, int64_t K) {
    const sq_tensor *qw = tensor(x, module, "qweight"), *sc = tensor(x, module, "scales"), *qz = tensor(x, module, "qzeros"),
                    *gi = tensor(x, module, "g_idx");
    if (qw->ndim == 2 && qw->shape[0] == K && qw->shape[1] * 8 == N && N != 8) {
        bad(x, ".quant_method is 'gptq', but %s's qweight is [%lld, %lld], AWQ GEMM's layout (GPTQ packs along the inputs)", module,
            (long long)K, (long long)(N / 8));
        return;
    }
    if (qw->ndim != 2 || !sc || sc->ndim != 2 || sc->shape[0] < 1 || (qw->shape[0] * 32) % K) return; /* the loader's message */
    int bits = (int)(qw->shape[0] * 32 / K), G = (int)sc->shape[0];
    int cb = jint(x->q, "bits", 0), gs = jint(x->q, "group_size", 0), sym = jbool(x->q, "sym", 1), desc = jbool(x->q, "desc_act", 0);
    const char *fmt = jstr(x->q, "checkpoint_format");
    if (cb != bits) {
        if (cb == 0) bad(x, " has no bits (%s holds %d-bit codes)", module, bits);
        else bad(x, ".bits is %d, but %s holds %d-bit codes (qweight [%lld, %lld])", cb, module, bits, (long long)qw->shape[0], (long long)N);
        return;
    }
    if (gs == 0 || gs < -1) {
        bad(x, " has no valid group_size (%s holds %d groups of its %lld inputs)", module, G, (long long)K);
        return;
    }
    check_groups(x, ".group_size", gs, module, G, K);
    if (x->status) return;
    if (fmt && strcmp(fmt, "gptq")) {
        bad(x, ".checkpoint_format is '%s', but %s holds GPTQ v1 zero points (stored minus one), the only form the runtime reads", fmt,
            module);
        return;
    }
    if (sym < 0 || desc < 0) {
        bad(x, ".%s is not a boolean", sym < 0 ? "sym" : "desc_act");
        return;
    }
    /* Symmetric: every zero point 2^(b-1), stored as 2^(b-1) - 1 in v1. */
    if (sym && qz && qz->dtype == SQ_DT_I32) {
        uint32_t mask = (1u << bits) - 1, want = (1u << (bits - 1)) - 1;
        for (int64_t i = 0; i < qz->numel; i++)
            for (int s = 0; s < 32; s += bits)
                if ((((uint32_t)i32_at(qz, i) >> s) & mask) != want) {
                    bad(x, ".sym is true, but %s's qzeros hold zero points other than %u", module, want + 1);
                    return;
                }
    }
    if (!desc && !g_idx_trivial(gi, K, G))
        bad(x, ".desc_act is false, but %s's g_idx puts its inputs out of order (act-order)", module);
}

static void check_awq(qc *x, const char *module, int64_t N, int64_t K) {
    const sq_tensor *qw = tensor(x, module, "qweight"), *sc = tensor(x, module, "scales"), *qz = tensor(x, module, "qzeros");
    if (!sc || sc->ndim != 2 || sc->shape[0] < 1) return;
    if (qw->ndim == 2 && qw->shape[1] == N && qw->shape[0] * 32 % K == 0 && qw->shape[0] != K) {
        bad(x, ".quant_method is 'awq', but %s's qweight is [%lld, %lld], GPTQ's layout (AWQ GEMM packs along the outputs: [%lld, %lld])",
            module, (long long)qw->shape[0], (long long)N, (long long)K, (long long)(N / 8));
        return;
    }
    int cb = jint(x->q, "bits", jint(x->q, "w_bit", 0)), gs = jint(x->q, "group_size", jint(x->q, "q_group_size", 0));
    int zp = jbool(x->q, "zero_point", 1);
    const char *ver = jstr(x->q, "version");
    if (cb != 4) {
        bad(x, ".bits is %d, but %s holds 4-bit AWQ GEMM codes (qweight [%lld, %lld], 8 to a word)", cb, module,
            (long long)qw->shape[0], qw->ndim > 1 ? (long long)qw->shape[1] : 0LL);
        return;
    }
    if (gs == 0 || gs < -1) {
        bad(x, " has no valid group_size (%s holds %lld groups of its %lld inputs)", module, (long long)sc->shape[0], (long long)K);
        return;
    }
    check_groups(x, ".group_size", gs, module, sc->shape[0], K);
    if (x->status) return;
    if (ver && strcasecmp(ver, "gemm")) {
        bad(x, ".version is '%s', but %s's tensors are laid out for GEMM (qweight [%lld, %lld]), the only layout the runtime reads", ver,
            module, (long long)K, (long long)(N / 8));
        return;
    }
    if (zp != 1 && qz) bad(x, ".zero_point is %s, but %s holds qzeros", zp == 0 ? "false" : "not a boolean", module);
}

/* compressed-tensors: the first group targeting Linear (spotq writes one). */
static void find_group(qc *x) {
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(x->q, "config_groups"), *g;
    cJSON_ArrayForEach(g, (cJSON_IsObject(groups) ? groups : NULL)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(g, "targets"), *e;
        bool linear = false;
        cJSON_ArrayForEach(e, (cJSON_IsArray(t) ? t : NULL)) linear = linear || (cJSON_IsString(e) && !strcmp(e->valuestring, "Linear"));
        if (!linear) continue;
        snprintf(x->group, sizeof x->group, "%s", g->string ? g->string : "?");
        x->w = cJSON_GetObjectItemCaseSensitive(g, "weights");
        x->ia = cJSON_GetObjectItemCaseSensitive(g, "input_activations");
        return;
    }
    bad(x, ".config_groups has no group targeting Linear");
}

static void check_ct_int(qc *x, const char *module, int64_t N, int64_t K) {
    const sq_tensor *wp = tensor(x, module, "weight_packed"), *ws = tensor(x, module, "weight_scale");
    const sq_tensor *zp = tensor(x, module, "weight_zero_point"), *gi = tensor(x, module, "weight_g_idx");
    if (wp->ndim != 2 || (wp->shape[1] * 32) % K || !ws || ws->ndim != 2 || ws->shape[1] < 1) return;
    int bits = (int)(wp->shape[1] * 32 / K);
    int64_t G = ws->shape[1];
    const char *fmt = jstr(x->q, "format"), *type = jstr(x->w, "type"), *strat = jstr(x->w, "strategy"), *ao = jstr(x->w, "actorder");
    const char *g = x->group;
    if (fmt && strcmp(fmt, "pack-quantized")) {
        bad(x, ".format is '%s', but %s holds pack-quantized tensors (weight_packed)", fmt, module);
        return;
    }
    if (!cJSON_IsObject(x->w)) {
        bad(x, ".config_groups.%s has no weights", g);
        return;
    }
    int nb = jint(x->w, "num_bits", 0), gs = jint(x->w, "group_size", -1), sym = jbool(x->w, "symmetric", -2);
    if (nb != bits) bad(x, ".config_groups.%s.weights.num_bits is %d, but %s holds %d-bit codes (weight_packed [%lld, %lld])", g, nb, module, bits,
                        (long long)N, (long long)wp->shape[1]);
    else if (!type || strcmp(type, "int")) bad(x, ".config_groups.%s.weights.type is '%s', but %s holds integer codes", g, type ? type : "absent", module);
    else if (!strat || (strcmp(strat, "group") && strcmp(strat, "channel")))
        bad(x, ".config_groups.%s.weights.strategy is '%s', but %s holds %s scales", g, strat ? strat : "absent", module, G == 1 ? "per-channel" : "per-group");
    else if (!strcmp(strat, "channel") && G != 1)
        bad(x, ".config_groups.%s.weights.strategy is 'channel', but %s holds %lld groups of its %lld inputs", g, module, (long long)G, (long long)K);
    else if (!strcmp(strat, "group") && gs <= 0) bad(x, ".config_groups.%s.weights.group_size must be positive with strategy 'group'", g);
    else if (!strcmp(strat, "group")) {
        char field[128];
        snprintf(field, sizeof field, ".config_groups.%s.weights.group_size", g);
        check_groups(x, field, gs, module, G, K);
    }
    if (x->status) return;
    if (sym < 0) bad(x, ".config_groups.%s.weights.symmetric is not a boolean", g);
    else if (sym == (zp != NULL))
        bad(x, ".config_groups.%s.weights.symmetric is %s, but %s %s weight_zero_point", g, yes(sym), module, zp ? "holds" : "has no");
    else if (jbool(x->w, "dynamic", 0)) bad(x, ".config_groups.%s.weights.dynamic is not false, but %s holds stored scales", g, module);
    else if (ao && !strcmp(ao, "group") && !gi) bad(x, ".config_groups.%s.weights.actorder is 'group', but %s has no weight_g_idx", g, module);
    else if ((!ao || strcmp(ao, "group")) && !g_idx_trivial(gi, K, G))
        bad(x, ".config_groups.%s.weights.actorder is %s%s%s, but %s's weight_g_idx puts its inputs out of order", g, ao ? "'" : "", ao ? ao : "null",
            ao ? "'" : "", module);
    else if (x->ia && !cJSON_IsNull(x->ia))
        bad(x, ".config_groups.%s.input_activations is set, but %s holds pack-quantized weights, which the runtime runs with float activations", g, module);
}

/* Static activations without their scale: the tensor is what is missing (the message the runtime's
 * loader gives too). */
static void missing_input_scale(qc *x, const char *module) {
    x->status = sq_fail(x->err, SQ_ERR_FORMAT, "%s: missing tensor '%s.input_scale' (config.json asks for static activation scales)",
                        x->ck->weights_path, module);
}

/* FP8: the weight scale's strategy and the activations against weight_scale and input_scale. */
static void check_fp8(qc *x, sq_format m, const char *module, int64_t N) {
    const sq_tensor *ws = tensor(x, module, "weight_scale"), *is = tensor(x, module, "input_scale");
    if (!ws) return; /* the loader's message */
    bool per_channel = ws->numel != 1;
    if (m == SQ_FORMAT_FP8) {
        const char *act = jstr(x->q, "activation_scheme");
        if (per_channel) bad(x, " (vLLM's fp8) holds one weight scale per tensor, but %s holds %lld", module, (long long)ws->numel);
        else if (act && !strcmp(act, "dynamic") && is) bad(x, ".activation_scheme is 'dynamic', but %s holds an input_scale", module);
        else if (act && !strcmp(act, "static") && !is) missing_input_scale(x, module);
        return;
    }
    const char *fmt = jstr(x->q, "format"), *type = jstr(x->w, "type"), *strat = jstr(x->w, "strategy"), *g = x->group;
    if (fmt && strcmp(fmt, "float-quantized") && strcmp(fmt, "naive-quantized"))
        bad(x, ".format is '%s', but %s holds FP8 weights (float-quantized)", fmt, module);
    else if (!cJSON_IsObject(x->w)) bad(x, ".config_groups.%s has no weights", g);
    else if (jint(x->w, "num_bits", 0) != 8 || !type || strcmp(type, "float"))
        bad(x, ".config_groups.%s.weights is %d-bit %s, but %s holds F8_E4M3 weights", g, jint(x->w, "num_bits", 0), type ? type : "(no type)", module);
    else if (!strat || strcmp(strat, per_channel ? "channel" : "tensor"))
        bad(x, ".config_groups.%s.weights.strategy is '%s', but %s holds %lld weight scale%s", g, strat ? strat : "absent", module,
            (long long)ws->numel, ws->numel == 1 ? "" : "s");
    else if (per_channel && ws->numel != N)
        bad(x, ".config_groups.%s.weights.strategy is 'channel', but %s holds %lld weight scales for %lld outputs", g, module, (long long)ws->numel, (long long)N);
    else if ((!x->ia || cJSON_IsNull(x->ia)) && is)
        bad(x, ".config_groups.%s.input_activations is null, but %s holds an input_scale", g, module);
    else if (x->ia && !cJSON_IsNull(x->ia) && jbool(x->ia, "dynamic", 0) != 0 && is)
        bad(x, ".config_groups.%s.input_activations.dynamic is true, but %s holds an input_scale", g, module);
    else if (x->ia && !cJSON_IsNull(x->ia) && jbool(x->ia, "dynamic", 0) == 0 && !is) missing_input_scale(x, module);
}

/* ---------------------------------------------------------------- the walk */

typedef struct {
    qc *x;
    sq_format m;
} walk;

static const char *kind_name(int k) {
    static const char *n[] = {"full-precision weights", "GPTQ/AWQ tensors (qweight)", "pack-quantized tensors (weight_packed)", "FP8 weights"};
    return n[k];
}

static int check_linear(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user) {
    walk *wk = user;
    qc *x = wk->x;
    if (!is_linear) return 0;
    char module[256];
    size_t n = strlen(name);
    if (n < 8 || n >= sizeof module) return 0;
    memcpy(module, name, n - 7);
    module[n - 7] = 0;
    const sq_tensor *wt = tensor(x, module, "weight");
    int kind = tensor(x, module, "qweight") ? 1 : tensor(x, module, "weight_packed") ? 2 : wt && wt->dtype == SQ_DT_F8_E4M3 ? 3 : wt ? 0 : -1;
    if (kind < 0) return 0; /* missing: the loader names it */
    const char *field;
    bool ign = ignored(x, wk->m, module, &field);
    if (kind == 0) {
        if (!ign) bad(x, "%s does not list %s, but it holds full-precision weights", field, module);
        return x->status != SQ_OK;
    }
    if (ign) {
        bad(x, "%s lists %s, but it holds %s", field, module, kind_name(kind));
        return 1;
    }
    int want = wk->m == SQ_FORMAT_GPTQ || wk->m == SQ_FORMAT_AWQ ? 1 : wk->m == SQ_FORMAT_FP8 ? 3 : kind == 1 ? 2 : kind;
    if (kind != want) {
        bad(x, ".quant_method is '%s', but %s holds %s", x->ck->cfg.quant_method_name, module, kind_name(kind));
        return 1;
    }
    if (kind == 1 && wk->m == SQ_FORMAT_GPTQ) check_gptq(x, module, shape[0], shape[1]);
    else if (kind == 1) check_awq(x, module, shape[0], shape[1]);
    else if (kind == 2) check_ct_int(x, module, shape[0], shape[1]);
    else check_fp8(x, wk->m, module, shape[0]);
    return x->status != SQ_OK;
}

sq_status sq_ckpt_check_quant(const sq_ckpt *ck, sq_err *err) {
    sq_format m = ck->cfg.quant_method;
    if (m == SQ_FORMAT_NONE || m == SQ_FORMAT_OTHER) return SQ_OK;
    char *text;
    size_t len;
    sq_status s = sq_read_file(ck->config_path, &text, &len, err);
    if (s) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid JSON", ck->config_path);
    qc x = {.ck = ck, .q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config"), .err = err};
    if (m == SQ_FORMAT_CT) find_group(&x);
    walk wk = {&x, m};
    if (!x.status) sq_ckpt_expected_tensors(&ck->cfg, check_linear, &wk);
    cJSON_Delete(root);
    return x.status;
}
