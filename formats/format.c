/* format.c: the format table (one row per on-disk format, each in its fmt_*.c), the format names, and
 * the helpers the rows share. */
#include "fmt_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "dtype.h"

/* The rows (each defined in its fmt_*.c), in the order a linear's tensors are matched against them. */
/* The FP4 rows come before ct-pack, whose weight_packed and catch-all format string would claim them. */
extern const sq_fmt sq_fmt_gptq, sq_fmt_awq, sq_fmt_ct_nvfp4, sq_fmt_ct_mxfp4, sq_fmt_ct_pack, sq_fmt_ct_float, sq_fmt_fp8, sq_fmt_ct_int;
static const sq_fmt *const table[] = {&sq_fmt_gptq, &sq_fmt_awq, &sq_fmt_ct_nvfp4, &sq_fmt_ct_mxfp4, &sq_fmt_ct_pack, &sq_fmt_ct_float, &sq_fmt_fp8, &sq_fmt_ct_int};

int sq_fmt_count(void) { return (int)(sizeof table / sizeof *table); }
const sq_fmt *sq_fmt_get(int i) { return i >= 0 && i < sq_fmt_count() ? table[i] : NULL; }

const sq_fmt *sq_fmt_for(sq_format f, sq_scheme_kind k) {
    for (int i = 0; i < sq_fmt_count(); i++)
        if (table[i]->format == f && table[i]->kind == k) return table[i];
    return NULL;
}

const sq_fmt *sq_fmt_for_scheme(sq_format f, const sq_scheme *s) {
    for (int i = 0; i < sq_fmt_count(); i++)
        if (table[i]->format == f && table[i]->kind == s->kind && (s->kind != SQ_SCHEME_FP4 || table[i]->fp4 == s->fp4)) return table[i];
    return NULL;
}

const sq_fmt *sq_fmt_of_config(const sq_config *cfg) {
    for (int i = 0; i < sq_fmt_count(); i++)
        if (table[i]->recognise(cfg)) return table[i];
    return NULL;
}

const sq_fmt *sq_fmt_of_linear(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    for (int i = 0; i < sq_fmt_count(); i++)
        if (table[i]->holds(src, module, cfg)) return table[i];
    return NULL;
}

/* ---------------------------------------------------------------- names */

static const struct { const char *name; sq_format f; } names[] = {
    {"gptq", SQ_FORMAT_GPTQ}, {"compressed-tensors", SQ_FORMAT_CT}, {"awq", SQ_FORMAT_AWQ}, {"fp8", SQ_FORMAT_FP8}, {"auto", SQ_FORMAT_AUTO},
};

const char *sq_format_name(sq_format f) {
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].f == f) return names[i].name;
    return f == SQ_FORMAT_NONE ? "none" : "other";
}

bool sq_format_parse(const char *name, sq_format *out) {
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(names[i].name, name)) {
            *out = names[i].f;
            return true;
        }
    return false;
}

sq_format sq_format_of_quant_method(const char *quant_method) {
    for (int i = 0; i < sq_fmt_count(); i++)
        if (!strcmp(table[i]->quant_method, quant_method)) return table[i]->format;
    return SQ_FORMAT_OTHER;
}

void sq_qlinear_free(sq_qlinear *l) {
    if (!l) return;
    sq_qmatrix_free(&l->q);
    free(l->scale);
    memset(l, 0, sizeof *l);
}

/* ---------------------------------------------------------------- reading */

cJSON *sq_fmt_ct_open(const char *fmt, cJSON **g0) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "quant_method", "compressed-tensors");
    cJSON_AddStringToObject(q, "format", fmt);
    cJSON_AddStringToObject(q, "quantization_status", "compressed");
    *g0 = cJSON_AddObjectToObject(cJSON_AddObjectToObject(q, "config_groups"), "group_0");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(*g0, "targets"), cJSON_CreateString("Linear"));
    return q;
}

cJSON *sq_fmt_ct_close(cJSON *q, cJSON *g0, const char *fmt, cJSON *kept) {
    cJSON_AddNullToObject(g0, "output_activations");
    cJSON_AddStringToObject(g0, "format", fmt);
    cJSON_InsertItemInArray(kept, 0, cJSON_CreateString("lm_head"));
    cJSON_AddItemToObject(q, "ignore", kept);
    cJSON_AddNullToObject(q, "kv_cache_scheme");
    return q;
}

const sq_tensor *sq_fmt_tensor(const sq_tensor_src *src, const char *module, const char *suffix) {
    char name[300];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    return src->find(src->user, name);
}

sq_status sq_fmt_need(const sq_tensor_src *src, const char *module, const char *suffix, sq_dtype dt, int ndim, int64_t d0, int64_t d1,
                      const sq_tensor **out, sq_err *err) {
    const sq_tensor *t = sq_fmt_tensor(src, module, suffix);
    const char *path = src->path;
    if (!t) return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.%s'", path, module, suffix);
    if (t->dtype != dt)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has dtype %s (expected %s)", path, module, suffix, sq_dtype_name(t->dtype),
                       sq_dtype_name(dt));
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim > 1 && t->shape[1] != d1))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has the wrong shape for a [%lld, %lld] linear layer", path, module,
                       suffix, (long long)d0, (long long)d1);
    if ((uintptr_t)t->data % (uintptr_t)sq_dtype_size(dt))
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: tensor '%s.%s' is not aligned in the file", path, module, suffix);
    *out = t;
    return SQ_OK;
}

sq_status sq_fmt_need_scale(const sq_tensor_src *src, const char *module, const char *suffix, int64_t d0, int64_t d1, const sq_tensor **out,
                            const uint16_t **f16, uint16_t **zeros, sq_err *err) {
    const sq_tensor *t = sq_fmt_tensor(src, module, suffix);
    sq_dtype dt = t && (t->dtype == SQ_DT_BF16 || t->dtype == SQ_DT_F32) ? t->dtype : SQ_DT_F16;
    *zeros = NULL;
    sq_status s = sq_fmt_need(src, module, suffix, dt, 2, d0, d1, out, err);
    if (s) {
        if (t && t->dtype != dt) /* say which dtypes would do */
            sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has dtype %s (expected F16, BF16 or F32)", src->path, module, suffix,
                    sq_dtype_name(t->dtype));
        return s;
    }
    if (dt == SQ_DT_F16) {
        *f16 = (*out)->data;
        return SQ_OK;
    }
    *zeros = calloc((size_t)(d0 * d1), sizeof **zeros);
    if (!*zeros) return sq_fail(err, SQ_ERR_NOMEM, "out of memory reading %s.%s", module, suffix);
    *f16 = *zeros;
    return SQ_OK;
}

sq_status sq_fmt_put_scales(const sq_tensor *t, bool n_major, sq_qmatrix *qm, sq_err *err) {
    int64_t N = qm->n, G = qm->n_groups;
    float *f = malloc((size_t)(N * G) * sizeof *f);
    if (!f) return sq_fail(err, SQ_ERR_NOMEM, "out of memory reading scales");
    sq_dtype_to_f32(t->dtype, t->data, f, (size_t)(N * G));
    for (int64_t g = 0; g < G; g++)
        for (int64_t r = 0; r < N; r++) qm->scale[g * N + r] = n_major ? f[r * G + g] : f[g * N + r];
    free(f);
    return SQ_OK;
}

sq_status sq_fmt_unpacked(const sq_tensor_src *src, const char *module, sq_status unpacked, sq_err *err) {
    if (!unpacked) return SQ_OK;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
    return sq_fail(err, unpacked, "%s: %s: %s", src->path, module, msg);
}

bool sq_fmt_has_e4m3(const sq_tensor_src *src, const char *module) {
    const sq_tensor *wt = sq_fmt_tensor(src, module, "weight");
    return wt && wt->dtype == SQ_DT_F8_E4M3;
}

/* A scale tensor (F32, F16 or BF16) of `count` finite positive values, into out. */
static sq_status read_scales(const sq_tensor_src *src, const char *module, const char *suffix, const sq_tensor *t, int64_t count, float *out,
                             sq_err *err) {
    const char *path = src->path;
    if (t->dtype != SQ_DT_F32 && t->dtype != SQ_DT_F16 && t->dtype != SQ_DT_BF16)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has dtype %s (expected F32, F16 or BF16)", path, module, suffix,
                       sq_dtype_name(t->dtype));
    if (t->numel != count)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has %lld values, expected %lld", path, module, suffix, (long long)t->numel,
                       (long long)count);
    sq_dtype_to_f32(t->dtype, t->data, out, (size_t)count);
    for (int64_t i = 0; i < count; i++)
        if (!(isfinite(out[i]) && out[i] > 0))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' holds %g at %lld (scales must be finite and positive)", path, module,
                           suffix, (double)out[i], (long long)i);
    return SQ_OK;
}

sq_status sq_fmt_read_e4m3(const sq_tensor_src *src, const char *module, int64_t N, int64_t K, const sq_config *cfg, sq_qlinear *out,
                           sq_err *err) {
    const char *path = src->path;
    memset(out, 0, sizeof *out);
    /* block-wise: vLLM's fp8 names the scale weight_scale_inv (a multiplier despite the name), compressed-tensors weight_scale */
    int bn = cfg->quant_block_n, bk = cfg->quant_block_k;
    const char *ws_name = bn > 0 && cfg->quant_method == SQ_FORMAT_FP8 ? "weight_scale_inv" : "weight_scale";
    const sq_tensor *wt = sq_fmt_tensor(src, module, "weight"), *ws = sq_fmt_tensor(src, module, ws_name),
                    *is = sq_fmt_tensor(src, module, "input_scale");
    if (!wt || wt->dtype != SQ_DT_F8_E4M3) return sq_fail(err, SQ_ERR_INTERNAL, "%s: '%s.weight' is not an FP8 tensor", path, module);
    if (wt->ndim != 2 || wt->shape[0] != N || wt->shape[1] != K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight' has the wrong shape for a [%lld, %lld] linear layer", path, module,
                       (long long)N, (long long)K);
    if (!ws) {
        if (!bn && sq_fmt_tensor(src, module, "weight_scale_inv"))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: %s has block-wise FP8 scales (weight_scale_inv), but config.json states no weight_block_size",
                           path, module);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.%s'", path, module, ws_name);
    }
    /* block-wise: [ceil(N / bn), ceil(K / bk)]; else one scale ([], [1], [1, 1]) or one per output row ([N], [N, 1]) */
    int64_t nb = bn > 0 ? (N + bn - 1) / bn : 0, kb = bn > 0 ? (K + bk - 1) / bk : 0;
    bool per_channel = !bn && ws->numel != 1;
    if (bn > 0 && !(ws->ndim == 2 && ws->shape[0] == nb && ws->shape[1] == kb))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has the wrong shape for [%d, %d] blocks of a [%lld, %lld] linear layer (expected [%lld, %lld])",
                       path, module, ws_name, bn, bk, (long long)N, (long long)K, (long long)nb, (long long)kb);
    if (per_channel && !(ws->numel == N && ws->shape[0] == N && (ws->ndim == 1 || (ws->ndim == 2 && ws->shape[1] == 1))))
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: tensor '%s.weight_scale' has %d dimensions and %lld values; the runtime reads one scale or one per output row ([%lld, 1])",
                       path, module, ws->ndim, (long long)ws->numel, (long long)N);
    /* A NaN code is never written by a quantiser; refuse it here rather than compute with it. */
    const uint8_t *codes = wt->data;
    for (int64_t i = 0; i < N * K; i++)
        if ((codes[i] & 0x7F) == 0x7F)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight' holds an E4M3 NaN at element %lld", path, module, (long long)i);
    int64_t ns = bn > 0 ? nb * kb : per_channel ? N : 1;
    float *scale = sq_malloc((size_t)ns * sizeof *scale, err);
    if (!scale) return SQ_ERR_NOMEM;
    *out = (sq_qlinear){.kind = SQ_SCHEME_FP8, .n = N, .k = K, .codes = codes, .scale = scale, .per_channel = per_channel,
                        .block_n = bn > 0 ? bn : 0, .block_k = bn > 0 ? bk : 0};
    sq_status s = read_scales(src, module, ws_name, ws, ns, scale, err);
    if (!s && cfg->quant_act == SQ_QACT_STATIC) {
        if (!is)
            s = sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.input_scale' (config.json asks for static activation scales)", path,
                        module);
        else s = read_scales(src, module, "input_scale", is, 1, &out->input_scale, err);
    }
    if (s) sq_qlinear_free(out);
    return s;
}

/* ---------------------------------------------------------------- writing */

sq_status sq_fmt_add(const sq_tensor_sink *out, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                     const void *data, sq_err *err) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    int64_t shape[2] = {d0, d1};
    return out->add(out->user, name, dt, nd, shape, data, err);
}

bool sq_fmt_int_shape(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) {
    why[0] = 0;
    if (s->kind != SQ_SCHEME_INT) snprintf(why, cap, "it holds integer codes, not FP8");
    else if (s->bits != 4 && s->bits != 8) snprintf(why, cap, "it holds 4- and 8-bit codes, not %d-bit", s->bits);
    else if (s->group_size == 0 || s->group_size < -1 || (s->group_size > 0 && s->group_size % (32 / s->bits)))
        snprintf(why, cap, "group size %d is neither -1 nor a positive multiple of %d (the %d-bit packing)", s->group_size, 32 / s->bits,
                 s->bits);
    if (why[0] || (n == 0 && k == 0)) return !why[0];
    int pack = 32 / s->bits;
    if (k % pack) snprintf(why, cap, "in_features %lld is not a multiple of %d (the %d-bit packing)", (long long)k, pack, s->bits);
    else if (n % pack) snprintf(why, cap, "out_features %lld is not a multiple of %d (the zero-point packing)", (long long)n, pack);
    else if (s->group_size > 0 && k % s->group_size)
        snprintf(why, cap, "in_features %lld is not a multiple of the group size %d", (long long)k, s->group_size);
    return !why[0];
}
