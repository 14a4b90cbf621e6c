/* qpack.c: quantised matrices <-> GPTQ v1 and compressed-tensors pack-quantized tensors. */
#include "qpack.h"

#include <stdlib.h>
#include <string.h>

#include "dtype.h"

sq_status sq_qmatrix_alloc(sq_qmatrix *m, int64_t n, int64_t k, int bits, int group_size, sq_err *err) {
    memset(m, 0, sizeof *m);
    int gs = group_size > 0 ? group_size : (int)k;
    m->n = n;
    m->k = k;
    m->bits = bits;
    m->group_size = group_size;
    m->n_groups = (int)((k + gs - 1) / gs);
    m->q = sq_malloc((size_t)(n * k), err);
    m->scale = sq_calloc((size_t)m->n_groups * (size_t)n, sizeof *m->scale, err);
    m->zero = sq_calloc((size_t)m->n_groups * (size_t)n, sizeof *m->zero, err);
    m->g_idx = sq_calloc((size_t)k, sizeof *m->g_idx, err);
    if (!m->q || !m->scale || !m->zero || !m->g_idx) {
        sq_qmatrix_free(m);
        return SQ_ERR_NOMEM;
    }
    return SQ_OK;
}

void sq_qmatrix_free(sq_qmatrix *m) {
    if (!m) return;
    free(m->q);
    free(m->scale);
    free(m->zero);
    free(m->g_idx);
    memset(m, 0, sizeof *m);
}

void sq_qmatrix_dequant(const sq_qmatrix *m, float *out) {
    /* tiles of 64 rows x 16 columns through a local buffer, each output row's 16 floats then written
     * as one cache line (a column at a time over all N rows wrote one float per line, at a stride
     * that maps the lines to one L1 set, and took 8% of a GPTQ run) */
    enum { TR = 64, TC = 16 };
    float tile[TR][TC];
    for (int64_t r0 = 0; r0 < m->n; r0 += TR) {
        int64_t r1 = r0 + TR < m->n ? r0 + TR : m->n;
        for (int64_t c0 = 0; c0 < m->k; c0 += TC) {
            int64_t c1 = c0 + TC < m->k ? c0 + TC : m->k;
            for (int64_t c = c0; c < c1; c++) {
                int64_t g = m->g_idx[c];
                const float *s = m->scale + g * m->n;
                const int32_t *z = m->zero + g * m->n;
                const uint8_t *q = m->q + c * m->n;
                for (int64_t r = r0; r < r1; r++) tile[r - r0][c - c0] = s[r] * (float)((int32_t)q[r] - z[r]);
            }
            for (int64_t r = r0; r < r1; r++) memcpy(out + r * m->k + c0, tile[r - r0], (size_t)(c1 - c0) * sizeof *out);
        }
    }
}

void sq_pack_gptq(const sq_qmatrix *m, int32_t *qweight, int32_t *qzeros, uint16_t *scales, int32_t *g_idx) {
    int b = m->bits, per = 32 / b;
    int64_t n = m->n, k = m->k, zw = n / per;
    uint32_t mask = (1u << b) - 1;
    memset(qweight, 0, (size_t)(k / per * n) * sizeof *qweight);
    memset(qzeros, 0, (size_t)(m->n_groups * zw) * sizeof *qzeros);
    for (int64_t c = 0; c < k; c++) {
        uint32_t *row = (uint32_t *)qweight + (c / per) * n;
        int shift = b * (int)(c % per);
        for (int64_t r = 0; r < n; r++) row[r] |= ((uint32_t)m->q[c * n + r] & mask) << shift;
    }
    for (int64_t g = 0; g < m->n_groups; g++)
        for (int64_t r = 0; r < n; r++) {
            uint32_t stored = (uint32_t)(m->zero[g * n + r] - 1) & mask; /* v1: zero minus one */
            ((uint32_t *)qzeros)[g * zw + r / per] |= stored << (b * (int)(r % per));
            scales[g * n + r] = sq_f32_to_f16(m->scale[g * n + r]);
        }
    memcpy(g_idx, m->g_idx, (size_t)k * sizeof *g_idx);
}

/* n_packed: whether out_features are packed too (GPTQ's and AWQ's qzeros, compressed-tensors' zero points);
 * compressed-tensors' symmetric weight_packed [N, K / per] packs only along K, so any N reads back. */
static sq_status check_unpack_args(int64_t n, int64_t k, int bits, bool n_packed, sq_err *err) {
    if (bits != 4 && bits != 8) return sq_fail(err, SQ_ERR_UNSUPPORTED, "%d-bit packing is not supported (4 or 8)", bits);
    int per = 32 / bits;
    if (n <= 0 || k <= 0 || k % per || (n_packed && n % per))
        return sq_fail(err, SQ_ERR_FORMAT, "a [%lld, %lld] matrix cannot be %d-bit packed", (long long)n, (long long)k, bits);
    return SQ_OK;
}

sq_status sq_unpack_gptq(sq_qmatrix *m, int64_t n, int64_t k, int bits, int group_size, const int32_t *qweight,
                         const int32_t *qzeros, const uint16_t *scales, const int32_t *g_idx, sq_err *err) {
    sq_status s = check_unpack_args(n, k, bits, true, err);
    if (s || (s = sq_qmatrix_alloc(m, n, k, bits, group_size, err))) return s;
    int per = 32 / bits;
    uint32_t mask = (1u << bits) - 1;
    int64_t zw = n / per;
    for (int64_t c = 0; c < k; c++) {
        if (g_idx[c] < 0 || g_idx[c] >= m->n_groups) {
            sq_qmatrix_free(m);
            return sq_fail(err, SQ_ERR_FORMAT, "g_idx[%lld] = %d is outside the %d groups", (long long)c, g_idx[c], m->n_groups);
        }
        m->g_idx[c] = g_idx[c];
        const uint32_t *row = (const uint32_t *)qweight + (c / per) * n;
        int shift = bits * (int)(c % per);
        for (int64_t r = 0; r < n; r++) m->q[c * n + r] = (uint8_t)((row[r] >> shift) & mask);
    }
    for (int64_t g = 0; g < m->n_groups; g++)
        for (int64_t r = 0; r < n; r++) {
            uint32_t stored = (((const uint32_t *)qzeros)[g * zw + r / per] >> (bits * (int)(r % per))) & mask;
            m->zero[g * n + r] = (int32_t)stored + 1;
            m->scale[g * n + r] = sq_f16_to_f32(scales[g * n + r]);
        }
    return SQ_OK;
}

void sq_pack_ct(const sq_qmatrix *m, int32_t *weight_packed, uint16_t *weight_scale, int32_t *weight_zero_point) {
    int b = m->bits, per = 32 / b;
    int64_t n = m->n, k = m->k, kw = k / per, G = m->n_groups;
    memset(weight_packed, 0, (size_t)(n * kw) * sizeof *weight_packed);
    for (int64_t r = 0; r < n; r++) {
        uint32_t *row = (uint32_t *)weight_packed + r * kw;
        for (int64_t c = 0; c < k; c++) row[c / per] |= (uint32_t)m->q[c * n + r] << (b * (int)(c % per));
    }
    for (int64_t r = 0; r < n; r++)
        for (int64_t g = 0; g < G; g++) weight_scale[r * G + g] = sq_f32_to_f16(m->scale[g * n + r]);
    if (weight_zero_point) {
        memset(weight_zero_point, 0, (size_t)(n / per * G) * sizeof *weight_zero_point);
        for (int64_t r = 0; r < n; r++)
            for (int64_t g = 0; g < G; g++)
                ((uint32_t *)weight_zero_point)[(r / per) * G + g] |= (uint32_t)m->zero[g * n + r] << (b * (int)(r % per));
    }
}

sq_status sq_unpack_ct(sq_qmatrix *m, int64_t n, int64_t k, int bits, int group_size, const int32_t *weight_packed,
                       const uint16_t *weight_scale, const int32_t *weight_zero_point, const int32_t *g_idx, sq_err *err) {
    sq_status s = check_unpack_args(n, k, bits, weight_zero_point != NULL, err);
    if (s || (s = sq_qmatrix_alloc(m, n, k, bits, group_size, err))) return s;
    int per = 32 / bits;
    uint32_t mask = (1u << bits) - 1;
    int64_t kw = k / per, G = m->n_groups, gs = group_size > 0 ? group_size : k;
    for (int64_t c = 0; c < k; c++) {
        int32_t g = g_idx ? g_idx[c] : (int32_t)(c / gs);
        if (g < 0 || g >= G) {
            sq_qmatrix_free(m);
            return sq_fail(err, SQ_ERR_FORMAT, "weight_g_idx[%lld] = %d is outside the %lld groups", (long long)c, g, (long long)G);
        }
        m->g_idx[c] = g;
    }
    for (int64_t r = 0; r < n; r++) {
        const uint32_t *row = (const uint32_t *)weight_packed + r * kw;
        for (int64_t c = 0; c < k; c++) m->q[c * n + r] = (uint8_t)((row[c / per] >> (bits * (int)(c % per))) & mask);
        for (int64_t g = 0; g < G; g++) {
            m->scale[g * n + r] = sq_f16_to_f32(weight_scale[r * G + g]);
            m->zero[g * n + r] = weight_zero_point
                                     ? (int32_t)((((const uint32_t *)weight_zero_point)[(r / per) * G + g] >> (bits * (int)(r % per))) & mask)
                                     : 1 << (bits - 1);
        }
    }
    return SQ_OK;
}

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

void sq_pack_awq(const sq_qmatrix *m, int32_t *qweight, int32_t *qzeros, uint16_t *scales) {
    int64_t n = m->n, k = m->k, w8 = n / 8;
    for (int64_t c = 0; c < k; c++)
        for (int64_t wc = 0; wc < w8; wc++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++) v |= ((uint32_t)m->q[c * n + 8 * wc + awq_order[i]] & 15u) << (4 * i);
            ((uint32_t *)qweight)[c * w8 + wc] = v;
        }
    for (int64_t g = 0; g < m->n_groups; g++) {
        for (int64_t wc = 0; wc < w8; wc++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++) v |= ((uint32_t)m->zero[g * n + 8 * wc + awq_order[i]] & 15u) << (4 * i);
            ((uint32_t *)qzeros)[g * w8 + wc] = v;
        }
        for (int64_t r = 0; r < n; r++) scales[g * n + r] = sq_f32_to_f16(m->scale[g * n + r]);
    }
}

sq_status sq_unpack_awq(sq_qmatrix *m, int64_t n, int64_t k, int group_size, const int32_t *qweight, const int32_t *qzeros,
                        const uint16_t *scales, sq_err *err) {
    sq_status s = check_unpack_args(n, k, 4, true, err);
    if (s || (s = sq_qmatrix_alloc(m, n, k, 4, group_size, err))) return s;
    int64_t w8 = n / 8, gs = group_size > 0 ? group_size : k;
    for (int64_t c = 0; c < k; c++) {
        m->g_idx[c] = (int32_t)(c / gs);
        for (int64_t wc = 0; wc < w8; wc++) {
            uint32_t v = ((const uint32_t *)qweight)[c * w8 + wc];
            for (int i = 0; i < 8; i++) m->q[c * n + 8 * wc + awq_order[i]] = (uint8_t)((v >> (4 * i)) & 15u);
        }
    }
    for (int64_t g = 0; g < m->n_groups; g++) {
        for (int64_t wc = 0; wc < w8; wc++) {
            uint32_t v = ((const uint32_t *)qzeros)[g * w8 + wc];
            for (int i = 0; i < 8; i++) m->zero[g * n + 8 * wc + awq_order[i]] = (int32_t)((v >> (4 * i)) & 15u);
        }
        for (int64_t r = 0; r < n; r++) m->scale[g * n + r] = sq_f16_to_f32(scales[g * n + r]);
    }
    return SQ_OK;
}
