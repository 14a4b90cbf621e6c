/* attention.c: causal grouped-query attention over the KV cache. Few queries (decode, a speculative
 * verify step): AVX2 dot products per (query, head), threads taking pairs as they come free. Many queries (prefill):
 * per head, scores Q.K^T and P.V as OpenBLAS sgemm calls, threads taking heads. */
#include <cblas.h>
#include <math.h>

#include "vec.h"

/* From this many queries on, the sgemm path. */
#define GEMM_MIN_N 8

/* Softmax of s[first..valid) in place (the rest of s[0..total) set to 0). */
SQ_AVX2 static void softmax_row(float *s, int first, int valid, int total) {
    for (int j = 0; j < first; j++) s[j] = 0;
    s += first;
    valid -= first;
    total -= first;
    __m256 mx8 = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= valid; j += 8) mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(s + j));
    float mx = sq_hmax8(mx8);
    for (; j < valid; j++) mx = s[j] > mx ? s[j] : mx;
    __m256 vm = _mm256_set1_ps(mx), sum8 = _mm256_setzero_ps();
    for (j = 0; j + 8 <= valid; j += 8) {
        __m256 e = sq_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    float sum = sq_hsum8(sum8);
    for (; j < valid; j++) sum += s[j] = expf(s[j] - mx);
    __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (j = 0; j + 8 <= valid; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
    for (; j < valid; j++) s[j] /= sum;
    for (j = valid; j < total; j++) s[j] = 0;
}

typedef struct {
    sq_kctx *c;
    const sq_attn *a;
    _Atomic int64_t next;        /* next (query, head) pair or head to take */
} att_job;

/* One query head of one token: scores, softmax, weighted sum of values. */
SQ_AVX2 static void attend_one(const sq_attn *a, int t, int h, float *s) {
    int hd = a->head_dim, g = h / (a->n_heads / a->n_kv_heads), j0 = sq_attn_first_key(a, a->pos0 + t);
    int nk = a->pos0 + t + 1 - j0; /* keys j0 .. pos0+t, as s[0..nk) */
    int64_t qs = (int64_t)a->n_heads * hd;
    const float *q = a->q + t * qs + (int64_t)h * hd;
    const float *kb = a->k + (int64_t)(g * hd) + (int64_t)j0 * a->kv_stride, *vb = a->v + (int64_t)(g * hd) + (int64_t)j0 * a->kv_stride;
    for (int j = 0; j < nk; j++) {
        const float *k = kb + (int64_t)j * a->kv_stride;
        __m256 acc = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= hd; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
        float d = sq_hsum8(acc);
        for (; i < hd; i++) d += q[i] * k[i];
        s[j] = d * a->scale;
    }
    softmax_row(s, 0, nk, nk);
    float *o = a->out + t * qs + (int64_t)h * hd;
    int i = 0;
    for (; i + 8 <= hd; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < nk; j++) acc = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), _mm256_loadu_ps(vb + (int64_t)j * a->kv_stride + i), acc);
        _mm256_storeu_ps(o + i, acc);
    }
    for (; i < hd; i++) {
        float acc = 0;
        for (int j = 0; j < nk; j++) acc += s[j] * vb[(int64_t)j * a->kv_stride + i];
        o[i] = acc;
    }
}

static void att_pairs(void *arg, int ith, int nth) {
    att_job *j = arg;
    const sq_attn *a = j->a;
    int64_t lo, hi;
    while (sq_chunk_next(&j->next, (int64_t)a->n * a->n_heads, 1, &lo, &hi))
        attend_one(a, (int)(lo / a->n_heads), (int)(lo % a->n_heads), j->c->scratch[ith]);
}

static void att_heads(void *arg, int ith, int nth) {
    att_job *j = arg;
    const sq_attn *a = j->a;
    int hd = a->head_dim, nk = a->pos0 + a->n, group = a->n_heads / a->n_kv_heads;
    int qs = a->n_heads * hd;
    float *s = j->c->scratch[ith];
    int64_t h, end;
    while (sq_chunk_next(&j->next, a->n_heads, 1, &h, &end)) {
        int g = (int)h / group;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->n, nk, hd, a->scale, a->q + h * hd, qs, a->k + (int64_t)g * hd,
                    a->kv_stride, 0.0f, s, nk);
        for (int t = 0; t < a->n; t++) softmax_row(s + (int64_t)t * nk, sq_attn_first_key(a, a->pos0 + t), a->pos0 + t + 1, nk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->n, hd, nk, 1.0f, s, nk, a->v + (int64_t)g * hd, a->kv_stride,
                    0.0f, a->out + h * hd, qs);
    }
}

sq_status sq_cpu_attention(sq_kctx *c, const sq_attn *a, sq_err *err) {
    if (a->n <= 0) return SQ_OK;
    int64_t nk = (int64_t)a->pos0 + a->n;
    bool gemm = a->n >= GEMM_MIN_N;
    sq_status s = sq_kctx_reserve(c, (size_t)(gemm ? nk * a->n : nk), err);
    if (s) return s;
    att_job j = {.c = c, .a = a};
    sq_pool_run_work(c->pool, gemm ? att_heads : att_pairs, &j, (int64_t)a->n * a->n_heads * nk * a->head_dim);
    return SQ_OK;
}
