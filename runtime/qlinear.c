/* qlinear.c: the runtime's glue to the format table (formats/format.h): every quantised linear of a
 * checkpoint is read by the row that holds it, then put in the kernels' layout: integer codes of each
 * output row along the input dimension, act-order columns sorted into contiguous groups (x is permuted
 * instead); FP8 codes used in place from the mmap, with their scales and activation scheme. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/format.h"
#include "internal.h"

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
    bool uniform = true;
    for (int64_t i = 1; i < N * G && uniform; i++) uniform = zero[i] == zero[0];
    *q = (sq_qweight){.bits = bits, .group_size = (int)gs, .n_groups = G, .codes = codes, .scale = scale, .zero = zero, .perm = perm,
                      .zero_uniform = uniform};
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

void sq_rt_free_fp8(sq_model *m) {
    for (int i = 0; i < m->n_fp8; i++) free(m->fp8[i]);
    free(m->fp8);
    m->fp8 = NULL;
    m->n_fp8 = 0;
}

/* An FP8 linear as the kernels run it: its scales in an sq_fp8weight the model owns, the activations as
 * config.json states them. */
static sq_status put_fp8(sq_model *m, const char *module, const sq_qlinear *l, sq_wmat *w, sq_err *err) {
    sq_fp8weight **list = realloc(m->fp8, (size_t)(m->n_fp8 + 1) * sizeof *list);
    if (!list) return sq_fail(err, SQ_ERR_NOMEM, "out of memory loading %s", module);
    m->fp8 = list;
    sq_fp8weight shape = {.per_channel = l->per_channel, .block_n = l->block_n, .block_k = l->block_k};
    int64_t ns = sq_fp8weight_nscales(&shape, l->n, l->k);
    sq_fp8weight *f = sq_calloc(1, sizeof *f + (size_t)ns * sizeof(float), err);
    if (!f) return SQ_ERR_NOMEM;
    m->fp8[m->n_fp8++] = f;
    float *scale = (float *)(f + 1);
    memcpy(scale, l->scale, (size_t)ns * sizeof *scale);
    *f = shape;
    f->scale = scale;
    f->act = SQ_FP8_ACT_NONE;
    if (l->kind == SQ_SCHEME_W8A8) { /* INT8 codes, activations INT8 per token (fmt_ct_int.c checks the config states it) */
        f->act = SQ_FP8_ACT_DYNAMIC_TOKEN;
        *w = (sq_wmat){.dtype = SQ_DT_I8, .rows = l->n, .cols = l->k, .data = l->codes, .f8 = f};
        return SQ_OK;
    }
    if (l->block_n > 0) { /* block-wise: vLLM runs the activations per token and group of block_k whatever the config's group */
        if (m->cfg.quant_act != SQ_QACT_NONE) f->act = SQ_FP8_ACT_DYNAMIC_GROUP;
        *w = (sq_wmat){.dtype = SQ_DT_F8_E4M3, .rows = l->n, .cols = l->k, .data = l->codes, .f8 = f};
        return SQ_OK;
    }
    switch (m->cfg.quant_act) {
    case SQ_QACT_NONE: break;
    case SQ_QACT_DYNAMIC_GROUP: /* per-token groups on per-tensor or per-channel weights: no vLLM kernel runs it */
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s: activations per group on FP8 weights that are not block-wise", m->ck->weights_path, module);
    case SQ_QACT_DYNAMIC_TOKEN: f->act = SQ_FP8_ACT_DYNAMIC_TOKEN; break;
    case SQ_QACT_DYNAMIC_TENSOR: f->act = SQ_FP8_ACT_DYNAMIC_TENSOR; break;
    case SQ_QACT_STATIC:
        f->act = SQ_FP8_ACT_STATIC;
        f->input_scale = l->input_scale;
        break;
    }
    *w = (sq_wmat){.dtype = SQ_DT_F8_E4M3, .rows = l->n, .cols = l->k, .data = l->codes, .f8 = f};
    return SQ_OK;
}

/* An FP4 linear as the kernels run it: the packed codes in place from the mmap, the effective scales
 * (E4M3 / global scale, or 2^(e - 127)) in an sq_fp4weight the model owns (kept with the FP8 ones),
 * W4A4 when config.json states input activations (NVFP4 only: its row refuses an input_global_scale-less one). */
static sq_status put_fp4(sq_model *m, const char *module, const sq_qlinear *l, sq_wmat *w, sq_err *err) {
    sq_fp8weight **list = realloc(m->fp8, (size_t)(m->n_fp8 + 1) * sizeof *list);
    if (!list) return sq_fail(err, SQ_ERR_NOMEM, "out of memory loading %s", module);
    m->fp8 = list;
    int64_t ng = l->k / l->group;
    sq_fp4weight *f = sq_calloc(1, sizeof *f + (size_t)(l->n * ng) * sizeof(float), err);
    if (!f) return SQ_ERR_NOMEM;
    m->fp8[m->n_fp8++] = (sq_fp8weight *)(void *)f; /* freed with them: one allocation each */
    float *scale = (float *)(f + 1);
    for (int64_t i = 0; i < l->n * ng; i++)
        scale[i] = l->fp4 == SQ_FP4_NV ? sq_e4m3_to_f32(l->fp4_scale[i]) / l->global_scale : ldexpf(1.0f, (int)l->fp4_scale[i] - 127);
    *f = (sq_fp4weight){.scale = scale, .group = l->group, .act_fp4 = l->fp4 == SQ_FP4_NV && m->cfg.quant_act != SQ_QACT_NONE,
                        .input_global_scale = l->input_global_scale};
    *w = (sq_wmat){.dtype = SQ_DT_U8, .rows = l->n, .cols = l->k, .data = l->fp4_packed, .f4 = f};
    return SQ_OK;
}

static const sq_tensor *find(void *user, const char *name) { return sq_st_find(((const sq_model *)user)->ck->st, name); }

sq_status sq_rt_load_qlinear(sq_model *m, const char *weight_name, int64_t rows, int64_t cols, sq_wmat *w, bool *found, sq_err *err) {
    *found = false;
    char module[256];
    size_t n = strlen(weight_name);
    if (n < 8 || n >= sizeof module || strcmp(weight_name + n - 7, ".weight")) return SQ_OK;
    memcpy(module, weight_name, n - 7);
    module[n - 7] = 0;
    sq_tensor_src src = {find, m, m->ck->weights_path};
    const sq_fmt *f = sq_fmt_of_linear(&src, module, &m->cfg);
    if (!f) return SQ_OK;
    *found = true;
    sq_qlinear l;
    sq_status s = f->read(&src, module, rows, cols, &m->cfg, &l, err);
    if (s) return s;
    s = l.kind == SQ_SCHEME_FP4 ? put_fp4(m, module, &l, w, err) : l.kind != SQ_SCHEME_INT ? put_fp8(m, module, &l, w, err) : repack(m, module, &l.q, w, err);
    sq_qlinear_free(&l);
    return s;
}

/* lm_head in 8 bits (internal.h). Per output row: s = max|w| / 127 (1 for an all-zero row), codes
 * round(w / s) + 128 (1 .. 255), zero 128, one group a row: the kernels' INT8 layout, run by the
 * integer GEMV. */
sq_status sq_rt_head_int8(sq_model *m, sq_err *err) {
    sq_wmat *h = &m->lm_head;
    int64_t N = h->rows, K = h->cols, es = sq_dtype_size(h->dtype);
    if (h->q || h->f8 || h->f4 || (h->dtype != SQ_DT_F32 && h->dtype != SQ_DT_F16 && h->dtype != SQ_DT_BF16) || K % 4)
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: lm_head (%s, %lld columns) cannot be run in 8 bits", m->ck->weights_path,
                       sq_dtype_name(h->dtype), (long long)K);
    sq_qweight **list = realloc(m->qweights, (size_t)(m->n_qweights + 1) * sizeof *list);
    if (!list) return sq_fail(err, SQ_ERR_NOMEM, "out of memory quantising lm_head");
    m->qweights = list;
    sq_qweight *q = sq_calloc(1, sizeof *q, err);
    uint32_t *codes = q ? sq_malloc((size_t)(N * K), err) : NULL;
    float *scale = codes ? sq_malloc((size_t)N * sizeof *scale, err) : NULL, *zero = scale ? sq_malloc((size_t)N * sizeof *zero, err) : NULL;
    float *row = zero ? sq_malloc((size_t)K * sizeof *row, err) : NULL;
    if (!row) {
        free(q); free(codes); free(scale); free(zero);
        return SQ_ERR_NOMEM;
    }
    for (int64_t r = 0; r < N; r++) {
        sq_dtype_to_f32(h->dtype, (const char *)h->data + r * K * es, row, (size_t)K);
        float amax = 0;
        for (int64_t j = 0; j < K; j++) amax = fmaxf(amax, fabsf(row[j]));
        float s = amax > 0 ? amax / 127.0f : 1.0f;
        uint8_t *c = (uint8_t *)(codes + r * (K / 4)); /* code j is byte j of the row (code_at's order on little-endian) */
        for (int64_t j = 0; j < K; j++) c[j] = (uint8_t)(128 + (int)fminf(127.0f, fmaxf(-127.0f, nearbyintf(row[j] / s))));
        scale[r] = s;
        zero[r] = 128.0f;
    }
    free(row);
    *q = (sq_qweight){.bits = 8, .group_size = (int)K, .n_groups = 1, .codes = codes, .scale = scale, .zero = zero, .zero_uniform = true};
    m->qweights[m->n_qweights++] = q;
    *h = (sq_wmat){.dtype = SQ_DT_F32, .rows = N, .cols = K, .data = NULL, .q = q};
    return SQ_OK;
}

/* runtime.h: the head in 8 bits when it is more bytes than the rest of the checkpoint. */
sq_status sq_model_draft_head(sq_model *m, bool *changed, sq_err *err) {
    *changed = false;
    const sq_wmat *h = &m->lm_head;
    if (h->q || h->f8 || h->f4 || (h->dtype != SQ_DT_F32 && h->dtype != SQ_DT_F16 && h->dtype != SQ_DT_BF16) || h->cols % 4) return SQ_OK;
    int64_t head_bytes = h->rows * h->cols * (int64_t)sq_dtype_size(h->dtype), params, bytes;
    char scheme[128];
    sq_ckpt_describe(m->ck, scheme, sizeof scheme, &params, &bytes);
    if (head_bytes <= bytes - head_bytes) return SQ_OK; /* a tied head is the embedding, counted once in the checkpoint's bytes */
    sq_status s = sq_rt_head_int8(m, err);
    *changed = s == SQ_OK;
    return s;
}
