/* qweight.c: quantised linears of a checkpoint (GPTQ v1, compressed-tensors pack-quantized; FP8 in fp8.c) unpacked
 * through formats/qpack and repacked into the kernels' layout: codes of each output row along the
 * input dimension, act-order columns sorted into contiguous groups (x is permuted instead). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/qpack.h"
#include "internal.h"

static const sq_tensor *tensor(const sq_model *m, const char *module, const char *suffix) {
    char name[300];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    return sq_st_find(m->ck->st, name);
}

/* A checked view of one of a quantised linear's tensors. */
static sq_status need(const sq_model *m, const char *module, const char *suffix, sq_dtype dt, int ndim, int64_t d0, int64_t d1,
                      const sq_tensor **out, sq_err *err) {
    const sq_tensor *t = tensor(m, module, suffix);
    const char *path = m->ck->weights_path;
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

/* A scale tensor in F16, BF16 or F32 (GPTQ and AutoAWQ write F16; llm-compressor writes the model's dtype).
 * *f16 is what the unpacker reads: the tensor itself when it is F16, else zeros (allocated here, freed
 * by the caller) whose places put_scales() fills with the exact values after unpacking. */
static sq_status need_scale(const sq_model *m, const char *module, const char *suffix, int64_t d0, int64_t d1, const sq_tensor **out,
                            const uint16_t **f16, uint16_t **zeros, sq_err *err) {
    const sq_tensor *t = tensor(m, module, suffix);
    sq_dtype dt = t && (t->dtype == SQ_DT_BF16 || t->dtype == SQ_DT_F32) ? t->dtype : SQ_DT_F16;
    sq_status s = need(m, module, suffix, dt, 2, d0, d1, out, err);
    if (s) {
        if (t && t->dtype != dt) /* say which dtypes would do */
            sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.%s' has dtype %s (expected F16, BF16 or F32)", m->ck->weights_path, module, suffix,
                    sq_dtype_name(t->dtype));
        return s;
    }
    *zeros = NULL;
    if (dt == SQ_DT_F16) {
        *f16 = (*out)->data;
        return SQ_OK;
    }
    *zeros = calloc((size_t)(d0 * d1), sizeof **zeros);
    if (!*zeros) return sq_fail(err, SQ_ERR_NOMEM, "out of memory reading %s.%s", module, suffix);
    *f16 = *zeros;
    return SQ_OK;
}

/* The exact scales of a BF16/F32 tensor t into qm->scale [G, N]; t is [G, N] (GPTQ, AWQ) or [N, G] (compressed-tensors). */
static sq_status put_scales(const sq_tensor *t, bool n_major, sq_qmatrix *qm, sq_err *err) {
    int64_t N = qm->n, G = qm->n_groups;
    float *f = malloc((size_t)(N * G) * sizeof *f);
    if (!f) return sq_fail(err, SQ_ERR_NOMEM, "out of memory reading scales");
    sq_dtype_to_f32(t->dtype, t->data, f, (size_t)(N * G));
    for (int64_t g = 0; g < G; g++)
        for (int64_t r = 0; r < N; r++) qm->scale[g * N + r] = n_major ? f[r * G + g] : f[g * N + r];
    free(f);
    return SQ_OK;
}

void sq_rt_qweight_free(sq_qweight *q) {
    if (!q) return;
    free((void *)q->codes);
    free((void *)q->scale);
    free((void *)q->zero);
    free((void *)q->perm);
    free(q);
}

void sq_rt_free_qweights(sq_model *m) {
    for (int i = 0; i < m->n_qweights; i++) sq_rt_qweight_free(m->qweights[i]);
    free(m->qweights);
    m->qweights = NULL;
    m->n_qweights = 0;
}

typedef struct { int32_t g; int32_t col; } gcol;
static int cmp_gcol(const void *a, const void *b) {
    const gcol *x = a, *y = b;
    return x->g != y->g ? (x->g > y->g) - (x->g < y->g) : (x->col > y->col) - (x->col < y->col);
}

sq_status sq_rt_qweight_new(const sq_qmatrix *qm, const char *what, sq_qweight **out, sq_err *err) {
    *out = NULL;
    int64_t N = qm->n, K = qm->k, G = qm->n_groups;
    int bits = qm->bits, per = 32 / bits;
    if (K % G) return sq_fail(err, SQ_ERR_FORMAT, "%s: %lld groups do not divide %lld columns", what, (long long)G, (long long)K);
    int64_t gs = K / G;
    gcol *order = sq_malloc((size_t)K * sizeof *order, err);
    if (!order) return SQ_ERR_NOMEM;
    bool identity = true;
    for (int64_t k = 0; k < K; k++) {
        order[k] = (gcol){qm->g_idx[k], (int32_t)k};
        identity = identity && qm->g_idx[k] == k / gs;
    }
    if (!identity) qsort(order, (size_t)K, sizeof *order, cmp_gcol);
    for (int64_t j = 0; j < K; j++)
        if (order[j].g != j / gs) {
            free(order);
            return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: g_idx gives groups of unequal size (spotq runs %lld columns a group)", what,
                           (long long)gs);
        }
    sq_qweight *q = sq_calloc(1, sizeof *q, err);
    uint32_t *codes = q ? sq_calloc((size_t)(N * K / per), sizeof *codes, err) : NULL;
    float *scale = codes ? sq_malloc((size_t)(N * G) * sizeof *scale, err) : NULL;
    float *zero = scale ? sq_malloc((size_t)(N * G) * sizeof *zero, err) : NULL;
    int32_t *perm = identity || !zero ? NULL : sq_malloc((size_t)K * sizeof *perm, err);
    if (!zero || (!identity && !perm)) {
        free(order); free(codes); free(scale); free(zero); free(perm); free(q);
        return sq_fail(err, SQ_ERR_NOMEM, "out of memory repacking %s", what);
    }
    for (int64_t r = 0; r < N; r++) {
        uint32_t *row = codes + r * (K / per);
        for (int64_t j = 0; j < K; j++) row[j / per] |= (uint32_t)qm->q[(int64_t)order[j].col * N + r] << (bits * (int)(j % per));
        for (int64_t g = 0; g < G; g++) {
            scale[r * G + g] = qm->scale[g * N + r];
            zero[r * G + g] = (float)qm->zero[g * N + r];
        }
    }
    if (perm)
        for (int64_t j = 0; j < K; j++) perm[j] = order[j].col;
    free(order);
    *q = (sq_qweight){.bits = bits, .group_size = (int)gs, .n_groups = G, .codes = codes, .scale = scale, .zero = zero, .perm = perm};
    *out = q;
    return SQ_OK;
}

/* qmatrix (codes [K, N]) -> the kernels' layout, owned by the model. */
static sq_status repack(sq_model *m, const char *module, const sq_qmatrix *qm, sq_wmat *w, sq_err *err) {
    char what[SQ_PATH_MAX + 300];
    snprintf(what, sizeof what, "%s: %s", m->ck->weights_path, module);
    sq_qweight **list = realloc(m->qweights, (size_t)(m->n_qweights + 1) * sizeof *list);
    if (!list) return sq_fail(err, SQ_ERR_NOMEM, "out of memory repacking %s", module);
    m->qweights = list;
    sq_qweight *q;
    sq_status s = sq_rt_qweight_new(qm, what, &q, err);
    if (s) return s;
    m->qweights[m->n_qweights++] = q;
    *w = (sq_wmat){.dtype = SQ_DT_F32, .rows = qm->n, .cols = qm->k, .data = NULL, .q = q};
    return SQ_OK;
}

/* After an unpack: a failure is reworded to name the file and module; a success is repacked for the
 * kernels (and the unpacked form freed). */
static sq_status finish_unpack(sq_model *m, const char *module, sq_status unpacked, sq_qmatrix *qm, sq_wmat *w, sq_err *err) {
    if (unpacked) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        return sq_fail(err, unpacked, "%s: %s: %s", m->ck->weights_path, module, msg);
    }
    sq_status s = repack(m, module, qm, w, err);
    sq_qmatrix_free(qm);
    return s;
}

static sq_status load_gptq(sq_model *m, const char *module, int64_t N, int64_t K, sq_wmat *w, sq_err *err) {
    const sq_tensor *qw = tensor(m, module, "qweight");
    if (qw->ndim != 2 || qw->shape[1] != N || qw->shape[0] <= 0 || (qw->shape[0] * 32) % K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.qweight' has the wrong shape for a [%lld, %lld] linear layer", m->ck->weights_path,
                       module, (long long)N, (long long)K);
    int bits = (int)(qw->shape[0] * 32 / K);
    if (bits != 4 && bits != 8)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s is %d-bit; the runtime reads 4 and 8 bits", m->ck->weights_path, module, bits);
    const sq_tensor *sc = tensor(m, module, "scales");
    if (!sc || sc->ndim != 2 || sc->shape[1] != N || sc->shape[0] < 1 || sc->shape[0] > K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.scales' is missing or has the wrong shape", m->ck->weights_path, module);
    int64_t G = sc->shape[0];
    const sq_tensor *qz, *gi;
    const uint16_t *f16 = NULL;
    uint16_t *zeros = NULL;
    sq_status s;
    if ((s = need(m, module, "qweight", SQ_DT_I32, 2, K * bits / 32, N, &qw, err)) ||
        (s = need(m, module, "qzeros", SQ_DT_I32, 2, G, N * bits / 32, &qz, err)) ||
        (s = need_scale(m, module, "scales", G, N, &sc, &f16, &zeros, err)) || (s = need(m, module, "g_idx", SQ_DT_I32, 1, K, 0, &gi, err))) {
        free(zeros);
        return s;
    }
    sq_qmatrix qm;
    int gs = (int)(K / G);
    s = sq_unpack_gptq(&qm, N, K, bits, G == 1 ? -1 : gs, qw->data, qz->data, f16, gi->data, err);
    if (!s && zeros && (s = put_scales(sc, false, &qm, err))) sq_qmatrix_free(&qm);
    free(zeros);
    return finish_unpack(m, module, s, &qm, w, err);
}

static sq_status load_ct(sq_model *m, const char *module, int64_t N, int64_t K, sq_wmat *w, sq_err *err) {
    const sq_tensor *wp = tensor(m, module, "weight_packed"), *ws = tensor(m, module, "weight_scale"), *shape;
    sq_status s;
    if ((s = need(m, module, "weight_shape", SQ_DT_I64, 1, 2, 0, &shape, err))) return s;
    const int64_t *sh = shape->data;
    if (sh[0] != N || sh[1] != K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s.weight_shape is [%lld, %lld], config.json implies [%lld, %lld]", m->ck->weights_path,
                       module, (long long)sh[0], (long long)sh[1], (long long)N, (long long)K);
    if (wp->ndim != 2 || wp->shape[0] != N || wp->shape[1] <= 0 || (wp->shape[1] * 32) % K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_packed' has the wrong shape", m->ck->weights_path, module);
    int bits = (int)(wp->shape[1] * 32 / K);
    if (bits != 4 && bits != 8)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s is %d-bit; the runtime reads 4 and 8 bits", m->ck->weights_path, module, bits);
    if (!ws || ws->ndim != 2 || ws->shape[0] != N || ws->shape[1] < 1 || ws->shape[1] > K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight_scale' is missing or has the wrong shape", m->ck->weights_path, module);
    int64_t G = ws->shape[1];
    const sq_tensor *zp = NULL, *gi = NULL;
    const uint16_t *f16 = NULL;
    uint16_t *zeros = NULL;
    if ((s = need(m, module, "weight_packed", SQ_DT_I32, 2, N, K * bits / 32, &wp, err)) ||
        (s = need_scale(m, module, "weight_scale", N, G, &ws, &f16, &zeros, err)) ||
        (tensor(m, module, "weight_zero_point") && (s = need(m, module, "weight_zero_point", SQ_DT_I32, 2, N * bits / 32, G, &zp, err))) ||
        (tensor(m, module, "weight_g_idx") && (s = need(m, module, "weight_g_idx", SQ_DT_I32, 1, K, 0, &gi, err)))) {
        free(zeros);
        return s;
    }
    sq_qmatrix qm;
    s = sq_unpack_ct(&qm, N, K, bits, G == 1 ? -1 : (int)(K / G), wp->data, f16, zp ? zp->data : NULL, gi ? gi->data : NULL, err);
    if (!s && zeros && (s = put_scales(ws, true, &qm, err))) sq_qmatrix_free(&qm);
    free(zeros);
    return finish_unpack(m, module, s, &qm, w, err);
}

static sq_status load_awq(sq_model *m, const char *module, int64_t N, int64_t K, sq_wmat *w, sq_err *err) {
    const sq_tensor *sc = tensor(m, module, "scales"), *qw, *qz;
    if (!sc || sc->ndim != 2 || sc->shape[1] != N || sc->shape[0] < 1 || sc->shape[0] > K || K % sc->shape[0])
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.scales' is missing or has the wrong shape", m->ck->weights_path, module);
    int64_t G = sc->shape[0];
    sq_status s;
    const uint16_t *f16 = NULL;
    uint16_t *zeros = NULL;
    if ((s = need(m, module, "qweight", SQ_DT_I32, 2, K, N / 8, &qw, err)) || (s = need(m, module, "qzeros", SQ_DT_I32, 2, G, N / 8, &qz, err)) ||
        (s = need_scale(m, module, "scales", G, N, &sc, &f16, &zeros, err)))
        return s;
    if (N % 8) {
        free(zeros);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: %lld output features do not pack 8 to a word", m->ck->weights_path, module, (long long)N);
    }
    sq_qmatrix qm;
    s = sq_unpack_awq(&qm, N, K, G == 1 ? -1 : (int)(K / G), qw->data, qz->data, f16, err);
    if (!s && zeros && (s = put_scales(sc, false, &qm, err))) sq_qmatrix_free(&qm);
    free(zeros);
    return finish_unpack(m, module, s, &qm, w, err);
}

sq_status sq_rt_load_qlinear(sq_model *m, const char *weight_name, int64_t rows, int64_t cols, sq_wmat *w, bool *found, sq_err *err) {
    *found = false;
    char module[256];
    size_t n = strlen(weight_name);
    if (n < 8 || n >= sizeof module || strcmp(weight_name + n - 7, ".weight")) return SQ_OK;
    memcpy(module, weight_name, n - 7);
    module[n - 7] = 0;
    if (tensor(m, module, "qweight")) {
        *found = true;
        return m->cfg.quant_method == SQ_QM_AWQ ? load_awq(m, module, rows, cols, w, err) : load_gptq(m, module, rows, cols, w, err);
    }
    if (tensor(m, module, "weight_packed")) {
        *found = true;
        return load_ct(m, module, rows, cols, w, err);
    }
    const sq_tensor *wt = tensor(m, module, "weight");
    if (wt && wt->dtype == SQ_DT_F8_E4M3) {
        *found = true;
        return sq_rt_load_fp8(m, module, rows, cols, w, err);
    }
    return SQ_OK;
}
