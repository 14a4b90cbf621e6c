/* qint_body.h: the integer GEMV's inner kernels, included twice by qmatmul.c: once for AVX2 (products
 * of unsigned and signed bytes by maddubs, pairs summed by madd) and once for AVX512-VNNI (vpdpbusd on
 * 256-bit registers, AVX512VL). Both sum the same exact integers (no maddubs saturation is possible:
 * 4-bit codes <= 15, 8-bit |q - 128| <= 128 against |c| <= 127), and the float operations are the same
 * in the same order, so the two variants give bit-identical y (test_kernels checks it).
 * Before including: QINT_TARGET (the function attribute), QINT_NAME(x) (the variant's name of x),
 * QINT_DOT2(a, x, b, y) (int32 lanes of sum of the 4-byte products of a.x + b.y) and QINT_DOT1(a, x). */

/* Rows r0 .. r0+RB-1 of a 4-bit weight against tokens t0 .. t0+NT-1 (RB, NT constants after
 * inlining): each 64 columns are 32 bytes, the low nibbles the even columns and the high the odd. */
QINT_TARGET static inline __attribute__((always_inline)) void QINT_NAME(q4_block)(const qint_job *j, int64_t r0, int RB, int t0, int NT) {
    const sq_qweight *q = j->w->q;
    int64_t K = j->w->cols, G = q->n_groups, gs = q->group_size, wpr = K / 8;
    const uint8_t *wb = (const uint8_t *)(q->codes + r0 * wpr);
    const float *s = q->scale + r0 * G;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i pair = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    __m256 acc[4][4];
    UNROLL
    for (int b = 0; b < RB; b++) {
        UNROLL
        for (int t = 0; t < NT; t++) acc[b][t] = _mm256_setzero_ps();
    }
    /* the weight scales of each 64 columns: two groups' (g32) or one group's, spread over the lanes */
    int64_t cpg = gs / 64, g = 0, left = cpg;
    for (int64_t c = 0; c < K / 64; c++) {
        __m256i lo[4], hi[4];
        __m256 sv[4];
        UNROLL
        for (int b = 0; b < RB; b++) {
            _mm_prefetch((const char *)(wb + b * wpr * 4 + 32 * c + QINT_PF), _MM_HINT_T0);
            __m256i v = _mm256_loadu_si256((const __m256i *)(wb + b * wpr * 4 + 32 * c));
            lo[b] = _mm256_and_si256(v, m4);
            hi[b] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            sv[b] = gs == 32 ? _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(s + b * G + 2 * c)))), pair)
                             : _mm256_broadcast_ss(s + b * G + g);
        }
        if (gs != 32 && --left == 0) {
            g++;
            left = cpg;
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const int8_t *xt = j->xq + (int64_t)(t0 + t) * K + 64 * c;
            __m256i xe = _mm256_loadu_si256((const __m256i *)xt), xo = _mm256_loadu_si256((const __m256i *)(xt + 32));
            __m256 dx = _mm256_loadu_ps(j->dx + (int64_t)(t0 + t) * (K / 8) + 8 * c);
            UNROLL
            for (int b = 0; b < RB; b++) {
                __m256 f = _mm256_cvtepi32_ps(QINT_DOT2(lo[b], xe, hi[b], xo));
                acc[b][t] = _mm256_fmadd_ps(f, _mm256_mul_ps(dx, sv[b]), acc[b][t]);
            }
        }
    }
    store_acc(j, acc, r0, RB, t0, NT);
}

/* The same for an 8-bit weight: codes q - 128 as signed bytes, multiplied by the activation codes
 * as |q - 128| * (c with q - 128's sign), which maddubs takes without saturating (2 * 128 * 127). */
QINT_TARGET static inline __attribute__((always_inline)) void QINT_NAME(q8_block)(const qint_job *j, int64_t r0, int RB, int t0, int NT) {
    const sq_qweight *q = j->w->q;
    int64_t K = j->w->cols, G = q->n_groups, gs = q->group_size, bpg = gs / QBLK;
    const uint8_t *wb = (const uint8_t *)(q->codes + r0 * (K / 4));
    const float *s = q->scale + r0 * G;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[4][4];
    UNROLL
    for (int b = 0; b < RB; b++) {
        UNROLL
        for (int t = 0; t < NT; t++) acc[b][t] = _mm256_setzero_ps();
    }
    for (int64_t g = 0; g < G; g++) {
        __m256 ag[4][4];
        UNROLL
        for (int b = 0; b < RB; b++) {
            UNROLL
            for (int t = 0; t < NT; t++) ag[b][t] = _mm256_setzero_ps();
        }
        for (int64_t k = g * bpg; k < (g + 1) * bpg; k++) {
            __m256i v[4], av[4];
            UNROLL
            for (int b = 0; b < RB; b++) {
                _mm_prefetch((const char *)(wb + b * K + QBLK * k + QINT_PF), _MM_HINT_T0);
                v[b] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wb + b * K + QBLK * k)), flip);
                av[b] = _mm256_abs_epi8(v[b]);
            }
            UNROLL
            for (int t = 0; t < NT; t++) {
                __m256i xt = _mm256_loadu_si256((const __m256i *)(j->xq + (int64_t)(t0 + t) * K + QBLK * k));
                __m256 d = _mm256_broadcast_ss(j->d + (int64_t)(t0 + t) * (K / QBLK) + k);
                UNROLL
                for (int b = 0; b < RB; b++) {
                    ag[b][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(QINT_DOT1(av[b], _mm256_sign_epi8(xt, v[b]))), d, ag[b][t]);
                }
            }
        }
        UNROLL
        for (int b = 0; b < RB; b++) {
            __m256 sv = _mm256_broadcast_ss(s + b * G + g);
            UNROLL
            for (int t = 0; t < NT; t++) acc[b][t] = _mm256_fmadd_ps(ag[b][t], sv, acc[b][t]);
        }
    }
    store_acc(j, acc, r0, RB, t0, NT);
}

QINT_TARGET static void QINT_NAME(qint_gemv)(void *arg, int ith, int nth) {
    qint_job *j = arg;
    int64_t lo, hi;
    while (sq_chunk_next(&j->next, j->w->rows, j->chunk, &lo, &hi)) {
        if (j->w->q->bits == 4) QINT_ROWS(QINT_NAME(q4_block));
        else QINT_ROWS(QINT_NAME(q8_block));
        qint_zero_bias(j, lo, hi);
    }
}

