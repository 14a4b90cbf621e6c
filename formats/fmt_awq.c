/* fmt_awq.c: AutoAWQ's GEMM layout (quant_method "awq", version "gemm"): 4-bit codes packed along N in
 * AWQ's nibble order, zero points packed the same way, fp16 scales [G, N]; groups in column order. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fmt_internal.h"
#include "qcheck.h"

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) {
    if (!sq_fmt_int_shape(s, n, k, why, cap)) return false;
    if (s->bits != 4) snprintf(why, cap, "AWQ GEMM is 4-bit only");
    else if (sq_scheme_g_idx(s)) snprintf(why, cap, "AWQ GEMM stores no g_idx (act-order needs static groups)");
    return !why[0];
}

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    const sq_qmatrix *q = &l->q;
    int64_t n = q->n, k = q->k, G = q->n_groups;
    sq_status s = SQ_ERR_NOMEM;
    if (q->bits != 4) return sq_fail(err, SQ_ERR_ARG, "%s: AWQ GEMM is 4-bit only (%d-bit codes given)", module, q->bits);
    *bytes = (double)(n * k) * q->bits / 8 + (double)(G * n) * 2 + (double)(G * n) * q->bits / 8;
    int32_t *qw = malloc((size_t)(k * n / 8) * 4), *qz = malloc((size_t)(G * n / 8) * 4);
    uint16_t *scl = malloc((size_t)(G * n) * 2);
    if (qw && qz && scl) {
        sq_pack_awq(q, qw, qz, scl);
        if (!(s = sq_fmt_add(out, module, "qweight", SQ_DT_I32, 2, k, n / 8, qw, err)) &&
            !(s = sq_fmt_add(out, module, "qzeros", SQ_DT_I32, 2, G, n / 8, qz, err)))
            s = sq_fmt_add(out, module, "scales", SQ_DT_F16, 2, G, n, scl, err);
    } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
    free(qw); free(qz); free(scl);
    return s;
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    return cfg->quant_method == SQ_FORMAT_AWQ && sq_fmt_tensor(src, module, "qweight");
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t N, int64_t K, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    const sq_tensor *sc = sq_fmt_tensor(src, module, "scales"), *qw, *qz;
    if (!sc || sc->ndim != 2 || sc->shape[1] != N || sc->shape[0] < 1 || sc->shape[0] > K || K % sc->shape[0])
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.scales' is missing or has the wrong shape", src->path, module);
    int64_t G = sc->shape[0];
    sq_status s;
    const uint16_t *f16 = NULL;
    uint16_t *zeros = NULL;
    if ((s = sq_fmt_need(src, module, "qweight", SQ_DT_I32, 2, K, N / 8, &qw, err)) ||
        (s = sq_fmt_need(src, module, "qzeros", SQ_DT_I32, 2, G, N / 8, &qz, err)) ||
        (s = sq_fmt_need_scale(src, module, "scales", G, N, &sc, &f16, &zeros, err)))
        return s;
    if (N % 8) {
        free(zeros);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: %lld output features do not pack 8 to a word", src->path, module, (long long)N);
    }
    s = sq_unpack_awq(&out->q, N, K, G == 1 ? -1 : (int)(K / G), qw->data, qz->data, f16, err);
    if (!s && zeros && (s = sq_fmt_put_scales(sc, false, &out->q, err))) sq_qmatrix_free(&out->q);
    free(zeros);
    out->kind = SQ_SCHEME_INT;
    out->n = N;
    out->k = K;
    return sq_fmt_unpacked(src, module, s, err);
}

static cJSON *config(const sq_scheme *p, cJSON *kept) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "quant_method", "awq");
    cJSON_AddNumberToObject(q, "bits", p->bits);
    cJSON_AddNumberToObject(q, "group_size", p->group_size > 0 ? p->group_size : -1);
    cJSON_AddBoolToObject(q, "zero_point", true);
    cJSON_AddStringToObject(q, "version", "gemm");
    cJSON_AddItemToObject(q, "modules_to_not_convert", kept);
    cJSON_AddStringToObject(q, "quantizer", "spotq " SQ_VERSION);
    return q;
}

static bool recognise(const sq_config *cfg) { return cfg->quant_method == SQ_FORMAT_AWQ; }

/* transformers and vLLM: a module whose name contains an entry of modules_to_not_convert. */
static bool ignores(const cJSON *q, const char *module, const char **field) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(q, "modules_to_not_convert"), *e;
    *field = ".modules_to_not_convert";
    cJSON_ArrayForEach(e, (cJSON_IsArray(list) ? list : NULL))
        if (cJSON_IsString(e) && strstr(module, e->valuestring)) return true;
    return false;
}

static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    const sq_tensor *qw = sq_qc_tensor(x, module, "qweight"), *sc = sq_qc_tensor(x, module, "scales"), *qz = sq_qc_tensor(x, module, "qzeros");
    if (!sc || sc->ndim != 2 || sc->shape[0] < 1) return;
    if (qw->ndim == 2 && qw->shape[1] == N && qw->shape[0] * 32 % K == 0 && qw->shape[0] != K) {
        sq_qc_bad(x, ".quant_method is 'awq', but %s's qweight is [%lld, %lld], GPTQ's layout (AWQ GEMM packs along the outputs: [%lld, %lld])",
            module, (long long)qw->shape[0], (long long)N, (long long)K, (long long)(N / 8));
        return;
    }
    int cb = sq_qc_int(x->q, "bits", sq_qc_int(x->q, "w_bit", 0)), gs = sq_qc_int(x->q, "group_size", sq_qc_int(x->q, "q_group_size", 0));
    int zp = sq_qc_bool(x->q, "zero_point", 1);
    const char *ver = sq_qc_str(x->q, "version");
    if (cb != 4) {
        sq_qc_bad(x, ".bits is %d, but %s holds 4-bit AWQ GEMM codes (qweight [%lld, %lld], 8 to a word)", cb, module,
            (long long)qw->shape[0], qw->ndim > 1 ? (long long)qw->shape[1] : 0LL);
        return;
    }
    if (gs == 0 || gs < -1) {
        sq_qc_bad(x, " has no valid group_size (%s holds %lld groups of its %lld inputs)", module, (long long)sc->shape[0], (long long)K);
        return;
    }
    sq_qc_groups(x, ".group_size", gs, module, sc->shape[0], K);
    if (x->status) return;
    if (ver && strcasecmp(ver, "gemm")) {
        sq_qc_bad(x, ".version is '%s', but %s's tensors are laid out for GEMM (qweight [%lld, %lld]), the only layout the runtime reads", ver,
            module, (long long)K, (long long)(N / 8));
        return;
    }
    if (zp != 1 && qz) sq_qc_bad(x, ".zero_point is %s, but %s holds qzeros", zp == 0 ? "false" : "not a boolean", module);
}

const sq_fmt sq_fmt_awq = {
    .name = "awq", .format = SQ_FORMAT_AWQ, .kind = SQ_SCHEME_INT, .quant_method = "awq", .ct_format = NULL,
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = config, .recognise = recognise,
    .tensors = "GPTQ/AWQ tensors (qweight)", .ignores = ignores, .check_config = NULL, .check = check,
};
