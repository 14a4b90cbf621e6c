/* ref.c: the scalar reference kernels: plain loops in double precision, one thread, no BLAS.
 * Slow and obviously right; every fast kernel and every other backend is tested against them. */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sq_cpu_row_to_f32(const sq_wmat *w, int64_t r, float *dst) {
    size_t es = (size_t)sq_dtype_size(w->dtype);
    sq_dtype_to_f32(w->dtype, (const char *)w->data + (size_t)r * (size_t)w->cols * es, dst, (size_t)w->cols);
}

static double row_value(const sq_wmat *w, int64_t r, int64_t c) {
    size_t i = (size_t)(r * w->cols + c);
    switch (w->dtype) {
    case SQ_DT_F32: return ((const float *)w->data)[i];
    case SQ_DT_F16: return sq_f16_to_f32(((const uint16_t *)w->data)[i]);
    case SQ_DT_BF16: return sq_bf16_to_f32(((const uint16_t *)w->data)[i]);
    default: return NAN;
    }
}

sq_status sq_cpu_dense_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    for (int t = 0; t < n; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            double s = bias ? bias[r] : 0.0;
            for (int64_t k = 0; k < w->cols; k++) s += row_value(w, r, k) * x[(int64_t)t * w->cols + k];
            y[(int64_t)t * w->rows + r] = (float)s;
        }
    return SQ_OK;
}

void sq_cpu_embed_ref(sq_kctx *c, const sq_wmat *w, const int *ids, int n, float *out) {
    for (int t = 0; t < n; t++)
        for (int64_t k = 0; k < w->cols; k++) out[(int64_t)t * w->cols + k] = (float)row_value(w, ids[t], k);
}

void sq_cpu_rmsnorm_ref(sq_kctx *c, const float *x, const float *g, float eps, float *y, int n, int d) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (int64_t)t * d;
        float *yr = y + (int64_t)t * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        double inv = 1.0 / sqrt(ss / d + eps);
        for (int i = 0; i < d; i++) yr[i] = (float)(xr[i] * inv * g[i]);
    }
}

void sq_cpu_rope_ref(sq_kctx *c, float *x, int n, int stride, int n_heads, int head_dim, const float *cos, const float *sin) {
    int half = head_dim / 2;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (int64_t)t * stride + (int64_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                double cs = cos[(int64_t)t * half + i], sn = sin[(int64_t)t * half + i];
                double a = v[i], b = v[i + half];
                v[i] = (float)(a * cs - b * sn);
                v[i + half] = (float)(b * cs + a * sn);
            }
        }
}

sq_status sq_cpu_attention_ref(sq_kctx *c, const sq_attn *a, sq_err *err) {
    int nk_max = a->pos0 + a->n, group = a->n_heads / a->n_kv_heads, hd = a->head_dim;
    double *p = malloc((size_t)nk_max * sizeof *p);
    if (!p) return sq_fail(err, SQ_ERR_NOMEM, "attention: out of memory for %d scores", nk_max);
    int64_t qs = (int64_t)a->n_heads * hd;
    for (int t = 0; t < a->n; t++)
        for (int h = 0; h < a->n_heads; h++) {
            const float *q = a->q + t * qs + (int64_t)h * hd;
            int g = h / group, nk = a->pos0 + t + 1, j0 = sq_attn_first_key(a, a->pos0 + t);
            double mx = -INFINITY, sum = 0;
            for (int j = j0; j < nk; j++) {
                const float *k = a->k + (int64_t)j * a->kv_stride + (int64_t)g * hd;
                double s = 0;
                for (int i = 0; i < hd; i++) s += (double)q[i] * k[i];
                p[j] = s * a->scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = j0; j < nk; j++) sum += p[j] = exp(p[j] - mx);
            float *o = a->out + t * qs + (int64_t)h * hd;
            for (int i = 0; i < hd; i++) {
                double s = 0;
                for (int j = j0; j < nk; j++) s += p[j] * a->v[(int64_t)j * a->kv_stride + (int64_t)g * hd + i];
                o[i] = (float)(s / sum);
            }
        }
    free(p);
    return SQ_OK;
}

void sq_cpu_swiglu_ref(sq_kctx *c, const float *gate, const float *up, float *out, int64_t m) {
    for (int64_t i = 0; i < m; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

void sq_cpu_add_ref(sq_kctx *c, float *y, const float *x, int64_t m) {
    for (int64_t i = 0; i < m; i++) y[i] += x[i];
}
