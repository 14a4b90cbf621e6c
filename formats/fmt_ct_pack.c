/* fmt_ct_pack.c: compressed-tensors pack-quantized (quant_method "compressed-tensors", format
 * "pack-quantized"): codes packed along K [N, K*b/32], fp16 scales [N, G], zero points only when
 * asymmetric, weight_shape; 4 or 8 bits, groups or channels. spotq writes no weight_g_idx (vLLM's
 * decompressor path takes static groups), and reads one when a peer wrote it. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt_internal.h"
#include "qcheck.h"

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) {
    if (!sq_fmt_int_shape(s, n, k, why, cap)) return false;
    if (sq_scheme_g_idx(s)) snprintf(why, cap, "spotq's compressed-tensors output stores no g_idx (act-order needs static groups)");
    return !why[0];
}

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    const sq_qmatrix *q = &l->q;
    int per = 32 / q->bits;
    int64_t n = q->n, k = q->k, G = q->n_groups;
    sq_status s = SQ_ERR_NOMEM;
    double zeros = (double)(G * n) * q->bits / 8;
    *bytes = (double)(n * k) * q->bits / 8 + (double)(G * n) * 2 + (sc->sym ? 0 : zeros);
    int32_t *wp = malloc((size_t)(n * k / per) * 4), *zp = sc->sym ? NULL : malloc((size_t)(n / per * G) * 4);
    uint16_t *ws = malloc((size_t)(n * G) * 2);
    int64_t shape[2] = {n, k};
    if (wp && ws && (sc->sym || zp)) {
        sq_pack_ct(q, wp, ws, zp);
        if (!(s = sq_fmt_add(out, module, "weight_packed", SQ_DT_I32, 2, n, k / per, wp, err)) &&
            !(s = sq_fmt_add(out, module, "weight_scale", SQ_DT_F16, 2, n, G, ws, err)) &&
            !(s = sq_fmt_add(out, module, "weight_shape", SQ_DT_I64, 1, 2, 0, shape, err)) && zp)
            s = sq_fmt_add(out, module, "weight_zero_point", SQ_DT_I32, 2, n / per, G, zp, err);
    } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
    free(wp); free(zp); free(ws);
    return s;
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) { return sq_fmt_tensor(src, module, "weight_packed"); }

static sq_status read(const sq_tensor_src *src, const char *module, int64_t N, int64_t K, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    const sq_tensor *wp = sq_fmt_tensor(src, module, "weight_packed"), *ws = sq_fmt_tensor(src, module, "weight_scale"), *shape;
    sq_status s;
    if ((s = sq_fmt_need(src, module, "weight_shape", SQ_DT_I64, 1, 2, 0, &shape, err))) return s;
    const int64_t *sh = shape->data;
    if (sh[0] != N || sh[1] != K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s.weight_shape is [%lld, %lld], config.json implies [%lld, %lld]", src->path, module,
                       (long long)sh[0], (long long)sh[1], (long long)N, (long long)K);
    if (!wp || wp->ndim != 2 || wp->shape[0] != N || wp->shape[1] <= 0 || K <= 0 || (wp->shape[1] * 32) % K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_packed' has the wrong shape", src->path, module);
    int bits = (int)(wp->shape[1] * 32 / K);
    if (bits != 4 && bits != 8)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s is %d-bit; the runtime reads 4 and 8 bits", src->path, module, bits);
    if (!ws || ws->ndim != 2 || ws->shape[0] != N || ws->shape[1] < 1 || ws->shape[1] > K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_scale' is missing or has the wrong shape", src->path, module);
    int64_t G = ws->shape[1];
    const sq_tensor *zp = NULL, *gi = NULL;
    const uint16_t *f16 = NULL;
    uint16_t *zeros = NULL;
    if ((s = sq_fmt_need(src, module, "weight_packed", SQ_DT_I32, 2, N, K * bits / 32, &wp, err)) ||
        (s = sq_fmt_need_scale(src, module, "weight_scale", N, G, &ws, &f16, &zeros, err)) ||
        (sq_fmt_tensor(src, module, "weight_zero_point") &&
         (s = sq_fmt_need(src, module, "weight_zero_point", SQ_DT_I32, 2, N * bits / 32, G, &zp, err))) ||
        (sq_fmt_tensor(src, module, "weight_g_idx") && (s = sq_fmt_need(src, module, "weight_g_idx", SQ_DT_I32, 1, K, 0, &gi, err)))) {
        free(zeros);
        return s;
    }
    s = sq_unpack_ct(&out->q, N, K, bits, G == 1 ? -1 : (int)(K / G), wp->data, f16, zp ? zp->data : NULL, gi ? gi->data : NULL, err);
    if (!s && zeros && (s = sq_fmt_put_scales(ws, true, &out->q, err))) sq_qmatrix_free(&out->q);
    free(zeros);
    out->kind = SQ_SCHEME_INT;
    out->n = N;
    out->k = K;
    return sq_fmt_unpacked(src, module, s, err);
}

static cJSON *config(const sq_scheme *p, cJSON *kept) {
    cJSON *g0, *q = sq_fmt_ct_open("pack-quantized", &g0);
    cJSON *wq = cJSON_AddObjectToObject(g0, "weights");
    cJSON_AddNumberToObject(wq, "num_bits", p->bits);
    cJSON_AddStringToObject(wq, "type", "int");
    cJSON_AddBoolToObject(wq, "symmetric", p->sym);
    cJSON_AddStringToObject(wq, "strategy", p->group_size > 0 ? "group" : "channel");
    if (p->group_size > 0) cJSON_AddNumberToObject(wq, "group_size", p->group_size);
    else cJSON_AddNullToObject(wq, "group_size");
    if (p->act_order) cJSON_AddStringToObject(wq, "actorder", "static");
    else cJSON_AddNullToObject(wq, "actorder");
    cJSON_AddBoolToObject(wq, "dynamic", false);
    cJSON_AddNullToObject(g0, "input_activations");
    return sq_fmt_ct_close(q, g0, "pack-quantized", kept);
}

static bool recognise(const sq_config *cfg) {
    return cfg->quant_method == SQ_FORMAT_CT && strcmp(cfg->quant_format, "float-quantized") && strcmp(cfg->quant_format, "naive-quantized") &&
           strcmp(cfg->quant_format, "int-quantized"); /* INT8 W8A8: fmt_ct_int.c */
}

bool sq_fmt_ct_ignores(const cJSON *q, const char *module, const char **field) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(q, "ignore"), *e;
    *field = ".ignore";
    cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
        if (cJSON_IsString(e) && !strncmp(e->valuestring, "re:", 3) && sq_qc_re_match(e->valuestring + 3, module)) return true;
    cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
        if (cJSON_IsString(e) && !strcmp(e->valuestring, module)) return true;
    return false;
}

static void use_group(sq_qc *x, const cJSON *g) {
    snprintf(x->group, sizeof x->group, "%s", g->string ? g->string : "?");
    x->w = cJSON_GetObjectItemCaseSensitive(g, "weights");
    x->ia = cJSON_GetObjectItemCaseSensitive(g, "input_activations");
}

/* Whether group g's targets name module: exactly, as "re:" + a pattern, or (module NULL) the class "Linear". */
static bool targets(const cJSON *g, const char *module) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(g, "targets"), *e;
    cJSON_ArrayForEach(e, (cJSON_IsArray(t) ? t : NULL)) {
        if (!cJSON_IsString(e)) continue;
        if (!module && !strcmp(e->valuestring, "Linear")) return true;
        if (module && (!strcmp(e->valuestring, module) || (!strncmp(e->valuestring, "re:", 3) && sq_qc_re_match(e->valuestring + 3, module))))
            return true;
    }
    return false;
}

/* Whether g's targets name modules (a dotted name or "re:" pattern), not a class such as "Embedding". */
static bool names_modules(const cJSON *g) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(g, "targets"), *e;
    cJSON_ArrayForEach(e, (cJSON_IsArray(t) ? t : NULL))
        if (cJSON_IsString(e) && (!strncmp(e->valuestring, "re:", 3) || strchr(e->valuestring, '.'))) return true;
    return false;
}

/* compressed-tensors: the group targeting Linear, else (several groups, each naming its modules, as spotq
 * writes a per-linear plan and llm-compressor a mixed recipe) the first group; sq_fmt_ct_group_of then
 * picks each module's own. */
void sq_fmt_ct_group(sq_qc *x) {
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(x->q, "config_groups"), *g, *first = NULL;
    cJSON_ArrayForEach(g, (cJSON_IsObject(groups) ? groups : NULL)) {
        if (!first && cJSON_IsObject(g) && names_modules(g)) first = g;
        if (targets(g, NULL)) { use_group(x, g); return; }
    }
    if (first) { use_group(x, first); return; }
    sq_qc_bad(x, ".config_groups has no group targeting Linear");
}

/* The group whose targets name module (by name or regex, before the class "Linear", as compressed-tensors'
 * match_targets orders them), else the one sq_fmt_ct_group chose. */
void sq_fmt_ct_group_of(sq_qc *x, const char *module) {
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(x->q, "config_groups"), *g;
    cJSON_ArrayForEach(g, (cJSON_IsObject(groups) ? groups : NULL))
        if (cJSON_IsObject(g) && targets(g, module)) { use_group(x, g); return; }
    cJSON_ArrayForEach(g, (cJSON_IsObject(groups) ? groups : NULL))
        if (cJSON_IsObject(g) && targets(g, NULL)) { use_group(x, g); return; }
}

static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    sq_fmt_ct_group_of(x, module);
    const sq_tensor *wp = sq_qc_tensor(x, module, "weight_packed"), *ws = sq_qc_tensor(x, module, "weight_scale");
    const sq_tensor *zp = sq_qc_tensor(x, module, "weight_zero_point"), *gi = sq_qc_tensor(x, module, "weight_g_idx");
    if (wp->ndim != 2 || (wp->shape[1] * 32) % K || !ws || ws->ndim != 2 || ws->shape[1] < 1) return;
    int bits = (int)(wp->shape[1] * 32 / K);
    int64_t G = ws->shape[1];
    const char *fmt = sq_qc_str(x->q, "format"), *type = sq_qc_str(x->w, "type"), *strat = sq_qc_str(x->w, "strategy"), *ao = sq_qc_str(x->w, "actorder");
    const char *g = x->group;
    if (fmt && strcmp(fmt, "pack-quantized")) {
        sq_qc_bad(x, ".format is '%s', but %s holds pack-quantized tensors (weight_packed)", fmt, module);
        return;
    }
    if (!cJSON_IsObject(x->w)) {
        sq_qc_bad(x, ".config_groups.%s has no weights", g);
        return;
    }
    int nb = sq_qc_int(x->w, "num_bits", 0), gs = sq_qc_int(x->w, "group_size", -1), sym = sq_qc_bool(x->w, "symmetric", -2);
    if (nb != bits) sq_qc_bad(x, ".config_groups.%s.weights.num_bits is %d, but %s holds %d-bit codes (weight_packed [%lld, %lld])", g, nb, module, bits,
                        (long long)N, (long long)wp->shape[1]);
    else if (!type || strcmp(type, "int")) sq_qc_bad(x, ".config_groups.%s.weights.type is '%s', but %s holds integer codes", g, type ? type : "absent", module);
    else if (!strat || (strcmp(strat, "group") && strcmp(strat, "channel")))
        sq_qc_bad(x, ".config_groups.%s.weights.strategy is '%s', but %s holds %s scales", g, strat ? strat : "absent", module, G == 1 ? "per-channel" : "per-group");
    else if (!strcmp(strat, "channel") && G != 1)
        sq_qc_bad(x, ".config_groups.%s.weights.strategy is 'channel', but %s holds %lld groups of its %lld inputs", g, module, (long long)G, (long long)K);
    else if (!strcmp(strat, "group") && gs <= 0) sq_qc_bad(x, ".config_groups.%s.weights.group_size must be positive with strategy 'group'", g);
    else if (!strcmp(strat, "group")) {
        char field[128];
        snprintf(field, sizeof field, ".config_groups.%s.weights.group_size", g);
        sq_qc_groups(x, field, gs, module, G, K);
    }
    if (x->status) return;
    if (sym < 0) sq_qc_bad(x, ".config_groups.%s.weights.symmetric is not a boolean", g);
    else if (sym == (zp != NULL))
        sq_qc_bad(x, ".config_groups.%s.weights.symmetric is %s, but %s %s weight_zero_point", g, sq_qc_yes(sym), module, zp ? "holds" : "has no");
    else if (sq_qc_bool(x->w, "dynamic", 0)) sq_qc_bad(x, ".config_groups.%s.weights.dynamic is not false, but %s holds stored scales", g, module);
    else if (ao && !strcmp(ao, "group") && !gi) sq_qc_bad(x, ".config_groups.%s.weights.actorder is 'group', but %s has no weight_g_idx", g, module);
    else if ((!ao || strcmp(ao, "group")) && !sq_qc_g_idx_trivial(gi, K, G))
        sq_qc_bad(x, ".config_groups.%s.weights.actorder is %s%s%s, but %s's weight_g_idx puts its inputs out of order", g, ao ? "'" : "", ao ? ao : "null",
            ao ? "'" : "", module);
    else if (x->ia && !cJSON_IsNull(x->ia))
        sq_qc_bad(x, ".config_groups.%s.input_activations is set, but %s holds pack-quantized weights, which the runtime runs with float activations", g, module);
}

const sq_fmt sq_fmt_ct_pack = {
    .name = "ct-pack", .format = SQ_FORMAT_CT, .kind = SQ_SCHEME_INT, .quant_method = "compressed-tensors", .ct_format = "pack-quantized", .several_schemes = true,
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = config, .recognise = recognise,
    .tensors = "pack-quantized tensors (weight_packed)", .ignores = sq_fmt_ct_ignores, .check_config = sq_fmt_ct_group, .check = check,
};
