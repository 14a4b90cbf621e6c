/* fmt_gptq.c: GPTQ v1 (quant_method "gptq", checkpoint_format "gptq"): qweight packed along K, qzeros
 * stored minus one, fp16 scales [G, N], g_idx [K]; 4 or 8 bits, symmetric or not, act-order held. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt_internal.h"
#include "qcheck.h"

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) { return sq_fmt_int_shape(s, n, k, why, cap); }

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    const sq_qmatrix *q = &l->q;
    int per = 32 / q->bits;
    int64_t n = q->n, k = q->k, G = q->n_groups;
    sq_status s = SQ_ERR_NOMEM;
    *bytes = (double)(n * k) * q->bits / 8 + (double)(G * n) * 2 + (double)(G * n) * q->bits / 8 + 4.0 * (double)k;
    int32_t *qw = malloc((size_t)(k / per * n) * 4), *qz = malloc((size_t)(G * n / per) * 4), *gi = malloc((size_t)k * 4);
    uint16_t *scl = malloc((size_t)(G * n) * 2);
    if (qw && qz && gi && scl) {
        sq_pack_gptq(q, qw, qz, scl, gi);
        if (!(s = sq_fmt_add(out, module, "qweight", SQ_DT_I32, 2, k / per, n, qw, err)) &&
            !(s = sq_fmt_add(out, module, "qzeros", SQ_DT_I32, 2, G, n / per, qz, err)) &&
            !(s = sq_fmt_add(out, module, "scales", SQ_DT_F16, 2, G, n, scl, err)))
            s = sq_fmt_add(out, module, "g_idx", SQ_DT_I32, 1, k, 0, gi, err);
    } else sq_fail(err, SQ_ERR_NOMEM, "out of memory packing %s", module);
    free(qw); free(qz); free(gi); free(scl);
    return s;
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    return cfg->quant_method != SQ_FORMAT_AWQ && sq_fmt_tensor(src, module, "qweight");
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t N, int64_t K, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    memset(out, 0, sizeof *out);
    const sq_tensor *qw = sq_fmt_tensor(src, module, "qweight");
    if (!qw || qw->ndim != 2 || qw->shape[1] != N || qw->shape[0] <= 0 || K <= 0 || (qw->shape[0] * 32) % K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.qweight' has the wrong shape for a [%lld, %lld] linear layer", src->path, module,
                       (long long)N, (long long)K);
    int bits = (int)(qw->shape[0] * 32 / K);
    if (bits != 4 && bits != 8)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s is %d-bit; the runtime reads 4 and 8 bits", src->path, module, bits);
    const sq_tensor *sc = sq_fmt_tensor(src, module, "scales");
    if (!sc || sc->ndim != 2 || sc->shape[1] != N || sc->shape[0] < 1 || sc->shape[0] > K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.scales' is missing or has the wrong shape", src->path, module);
    int64_t G = sc->shape[0];
    const sq_tensor *qz, *gi;
    const uint16_t *f16 = NULL;
    uint16_t *zeros = NULL;
    sq_status s;
    if ((s = sq_fmt_need(src, module, "qweight", SQ_DT_I32, 2, K * bits / 32, N, &qw, err)) ||
        (s = sq_fmt_need(src, module, "qzeros", SQ_DT_I32, 2, G, N * bits / 32, &qz, err)) ||
        (s = sq_fmt_need_scale(src, module, "scales", G, N, &sc, &f16, &zeros, err)) ||
        (s = sq_fmt_need(src, module, "g_idx", SQ_DT_I32, 1, K, 0, &gi, err))) {
        free(zeros);
        return s;
    }
    int gs = (int)(K / G);
    s = sq_unpack_gptq(&out->q, N, K, bits, G == 1 ? -1 : gs, qw->data, qz->data, f16, gi->data, err);
    if (!s && zeros && (s = sq_fmt_put_scales(sc, false, &out->q, err))) sq_qmatrix_free(&out->q);
    free(zeros);
    out->kind = SQ_SCHEME_INT;
    out->n = N;
    out->k = K;
    return sq_fmt_unpacked(src, module, s, err);
}

static cJSON *config(const sq_scheme *p, cJSON *kept) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "quant_method", "gptq");
    cJSON_AddNumberToObject(q, "bits", p->bits);
    cJSON_AddNumberToObject(q, "group_size", p->group_size > 0 ? p->group_size : -1);
    cJSON_AddBoolToObject(q, "desc_act", p->act_order && !p->static_groups);
    cJSON_AddBoolToObject(q, "sym", p->sym);
    cJSON_AddNumberToObject(q, "damp_percent", p->damp);
    cJSON_AddBoolToObject(q, "true_sequential", true);
    cJSON_AddBoolToObject(q, "static_groups", p->static_groups);
    cJSON_AddStringToObject(q, "checkpoint_format", "gptq");
    /* Modules kept in full precision: GPTQModel's and vLLM's "dynamic" negative matches. */
    cJSON *dyn = cJSON_CreateObject(), *m;
    cJSON_ArrayForEach(m, kept) {
        char key[256], *o = key + 2;
        strcpy(key, "-:");
        for (const char *c = m->valuestring; *c && o < key + sizeof key - 3; c++) {
            if (*c == '.') *o++ = '\\';
            *o++ = *c;
        }
        *o = 0;
        cJSON_AddItemToObject(dyn, key, cJSON_CreateObject());
    }
    cJSON_Delete(kept);
    cJSON_AddItemToObject(q, "dynamic", dyn);
    cJSON_AddStringToObject(q, "quantizer", "spotq " SQ_VERSION);
    return q;
}

static bool recognise(const sq_config *cfg) { return cfg->quant_method == SQ_FORMAT_GPTQ; }

/* GPTQModel's and vLLM's "dynamic": "-:regex" keys skip the modules they match. */
static bool ignores(const cJSON *q, const char *module, const char **field) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(q, "dynamic"), *e;
    *field = ".dynamic";
    cJSON_ArrayForEach(e, (cJSON_IsObject(list) ? list : NULL))
        if (e->string && !strncmp(e->string, "-:", 2) && sq_qc_re_match(e->string + 2, module)) return true;
    return false;
}

static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    const sq_tensor *qw = sq_qc_tensor(x, module, "qweight"), *sc = sq_qc_tensor(x, module, "scales"), *qz = sq_qc_tensor(x, module, "qzeros"),
                    *gi = sq_qc_tensor(x, module, "g_idx");
    if (qw->ndim == 2 && qw->shape[0] == K && qw->shape[1] * 8 == N && N != 8) {
        sq_qc_bad(x, ".quant_method is 'gptq', but %s's qweight is [%lld, %lld], AWQ GEMM's layout (GPTQ packs along the inputs)", module,
            (long long)K, (long long)(N / 8));
        return;
    }
    if (qw->ndim != 2 || !sc || sc->ndim != 2 || sc->shape[0] < 1 || (qw->shape[0] * 32) % K) return; /* the loader's message */
    int bits = (int)(qw->shape[0] * 32 / K), G = (int)sc->shape[0];
    int cb = sq_qc_int(x->q, "bits", 0), gs = sq_qc_int(x->q, "group_size", 0), sym = sq_qc_bool(x->q, "sym", 1), desc = sq_qc_bool(x->q, "desc_act", 0);
    const char *fmt = sq_qc_str(x->q, "checkpoint_format");
    if (cb != bits) {
        if (cb == 0) sq_qc_bad(x, " has no bits (%s holds %d-bit codes)", module, bits);
        else sq_qc_bad(x, ".bits is %d, but %s holds %d-bit codes (qweight [%lld, %lld])", cb, module, bits, (long long)qw->shape[0], (long long)N);
        return;
    }
    if (gs == 0 || gs < -1) {
        sq_qc_bad(x, " has no valid group_size (%s holds %d groups of its %lld inputs)", module, G, (long long)K);
        return;
    }
    sq_qc_groups(x, ".group_size", gs, module, G, K);
    if (x->status) return;
    if (fmt && strcmp(fmt, "gptq")) {
        sq_qc_bad(x, ".checkpoint_format is '%s', but %s holds GPTQ v1 zero points (stored minus one), the only form the runtime reads", fmt,
            module);
        return;
    }
    if (sym < 0 || desc < 0) {
        sq_qc_bad(x, ".%s is not a boolean", sym < 0 ? "sym" : "desc_act");
        return;
    }
    /* Symmetric: every zero point 2^(b-1), stored as 2^(b-1) - 1 in v1. */
    if (sym && qz && qz->dtype == SQ_DT_I32) {
        uint32_t mask = (1u << bits) - 1, want = (1u << (bits - 1)) - 1;
        for (int64_t i = 0; i < qz->numel; i++)
            for (int s = 0; s < 32; s += bits)
                if ((((uint32_t)sq_qc_i32(qz, i) >> s) & mask) != want) {
                    sq_qc_bad(x, ".sym is true, but %s's qzeros hold zero points other than %u", module, want + 1);
                    return;
                }
    }
    if (!desc && !sq_qc_g_idx_trivial(gi, K, G))
        sq_qc_bad(x, ".desc_act is false, but %s's g_idx puts its inputs out of order (act-order)", module);
}

const sq_fmt sq_fmt_gptq = {
    .name = "gptq", .format = SQ_FORMAT_GPTQ, .kind = SQ_SCHEME_INT, .quant_method = "gptq", .ct_format = NULL,
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = config, .recognise = recognise,
    .tensors = "GPTQ/AWQ tensors (qweight)", .ignores = ignores, .check_config = NULL, .check = check,
};
