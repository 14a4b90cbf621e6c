/* fp8.c: FP8 linears of a checkpoint (vLLM's fp8, compressed-tensors float-quantized): the E4M3 codes
 * are used in place from the mmap; the weight scale (per tensor or per output channel), the
 * activation scheme from config.json and a static input_scale go into an sq_fp8weight the model owns. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const sq_tensor *tensor(const sq_model *m, const char *module, const char *suffix) {
    char name[300];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    return sq_st_find(m->ck->st, name);
}

/* A scale tensor (F32, F16 or BF16) of `count` finite positive values, into out. */
static sq_status read_scales(const sq_model *m, const char *module, const char *suffix, const sq_tensor *t, int64_t count, float *out,
                             sq_err *err) {
    const char *path = m->ck->weights_path;
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

void sq_rt_free_fp8(sq_model *m) {
    for (int i = 0; i < m->n_fp8; i++) free(m->fp8[i]);
    free(m->fp8);
    m->fp8 = NULL;
    m->n_fp8 = 0;
}

sq_status sq_rt_load_fp8(sq_model *m, const char *module, int64_t N, int64_t K, sq_wmat *w, sq_err *err) {
    const char *path = m->ck->weights_path;
    const sq_tensor *wt = tensor(m, module, "weight"), *ws = tensor(m, module, "weight_scale"), *is = tensor(m, module, "input_scale");
    if (!wt || wt->dtype != SQ_DT_F8_E4M3) return sq_fail(err, SQ_ERR_INTERNAL, "%s: '%s.weight' is not an FP8 tensor", path, module);
    if (wt->ndim != 2 || wt->shape[0] != N || wt->shape[1] != K)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight' has the wrong shape for a [%lld, %lld] linear layer", path, module,
                       (long long)N, (long long)K);
    if (!ws) {
        if (tensor(m, module, "weight_scale_inv"))
            return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s has block-wise FP8 scales (weight_scale_inv); the runtime reads per-tensor and per-channel scales",
                           path, module);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.weight_scale'", path, module);
    }
    /* one scale ([], [1], [1, 1]) or one per output row ([N], [N, 1]) */
    bool per_channel = ws->numel != 1;
    if (per_channel && !(ws->numel == N && ws->shape[0] == N && (ws->ndim == 1 || (ws->ndim == 2 && ws->shape[1] == 1))))
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: tensor '%s.weight_scale' has %d dimensions and %lld values; the runtime reads one scale or one per output row ([%lld, 1])",
                       path, module, ws->ndim, (long long)ws->numel, (long long)N);
    /* A NaN code is never written by a quantiser; refuse it here rather than compute with it. */
    const uint8_t *codes = wt->data;
    for (int64_t i = 0; i < N * K; i++)
        if ((codes[i] & 0x7F) == 0x7F)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: tensor '%s.weight' holds an E4M3 NaN at element %lld", path, module, (long long)i);
    sq_fp8weight **list = realloc(m->fp8, (size_t)(m->n_fp8 + 1) * sizeof *list);
    if (!list) return sq_fail(err, SQ_ERR_NOMEM, "out of memory loading %s", module);
    m->fp8 = list;
    int64_t ns = per_channel ? N : 1;
    sq_fp8weight *f = sq_calloc(1, sizeof *f + (size_t)ns * sizeof(float), err);
    if (!f) return SQ_ERR_NOMEM;
    m->fp8[m->n_fp8++] = f; /* owned by the model from here, whatever happens next */
    float *scale = (float *)(f + 1);
    sq_status s = read_scales(m, module, "weight_scale", ws, ns, scale, err);
    if (s) return s;
    *f = (sq_fp8weight){.scale = scale, .per_channel = per_channel, .act = SQ_FP8_ACT_NONE};
    switch (m->cfg.quant_act) {
    case SQ_QACT_NONE: break;
    case SQ_QACT_DYNAMIC_TOKEN: f->act = SQ_FP8_ACT_DYNAMIC_TOKEN; break;
    case SQ_QACT_DYNAMIC_TENSOR: f->act = SQ_FP8_ACT_DYNAMIC_TENSOR; break;
    case SQ_QACT_STATIC:
        if (!is)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: missing tensor '%s.input_scale' (config.json asks for static activation scales)", path,
                           module);
        if ((s = read_scales(m, module, "input_scale", is, 1, &f->input_scale, err))) return s;
        f->act = SQ_FP8_ACT_STATIC;
        break;
    }
    *w = (sq_wmat){.dtype = SQ_DT_F8_E4M3, .rows = N, .cols = K, .data = wt->data, .f8 = f};
    return SQ_OK;
}
