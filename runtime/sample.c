/* sample.c: choosing the next token: greedy, or temperature and nucleus (top-p) sampling from a
 * seeded generator, so that a run is repeatable. */
#include <math.h>
#include <stdlib.h>

#include "runtime.h"

typedef struct {
    float p;
    int id;
} cand;

struct sq_sampler {
    int vocab;
    float temp, top_p;
    uint64_t state;
    cand *cands;                 /* (vocab) */
};

/* splitmix64: a small, well-mixed generator; each call advances the state once. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), 24 bits. */
static float next_f32(uint64_t *s) { return (float)(next_u64(s) >> 40) * (1.0f / 16777216.0f); }

sq_status sq_sampler_new(sq_sampler **out, int vocab, float temp, float top_p, uint64_t seed, sq_err *err) {
    *out = NULL;
    if (vocab < 1) return sq_fail(err, SQ_ERR_ARG, "sampler: vocabulary of %d", vocab);
    if (!(top_p > 0 && top_p <= 1)) return sq_fail(err, SQ_ERR_ARG, "--top-p %g: must be in (0, 1]", (double)top_p);
    if (!isfinite(temp)) return sq_fail(err, SQ_ERR_ARG, "--temp must be a finite number");
    sq_sampler *s = sq_calloc(1, sizeof *s, err);
    if (!s) return SQ_ERR_NOMEM;
    s->vocab = vocab;
    s->temp = temp;
    s->top_p = top_p;
    s->state = seed;
    if (temp > 0 && !(s->cands = sq_malloc((size_t)vocab * sizeof *s->cands, err))) {
        free(s);
        return SQ_ERR_NOMEM;
    }
    *out = s;
    return SQ_OK;
}

void sq_sampler_free(sq_sampler *s) {
    if (!s) return;
    free(s->cands);
    free(s);
}

int sq_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    float x = ((const cand *)a)->p, y = ((const cand *)b)->p;
    if (x != y) return x < y ? 1 : -1;
    return ((const cand *)a)->id - ((const cand *)b)->id;
}

void sq_sampler_probs(sq_sampler *s, float *logits, float *probs) {
    int n = s->vocab;
    if (s->temp <= 0) {
        int best = sq_argmax(logits, n);
        for (int i = 0; i < n; i++) probs[i] = i == best;
        return;
    }
    /* softmax(logits / temp) */
    float mx = logits[sq_argmax(logits, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += probs[i] = expf((logits[i] - mx) / s->temp);
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
    if (s->top_p >= 1) return;
    /* Nucleus: the smallest set of most likely tokens whose mass reaches top_p. A token with
     * p < (1 - top_p) / (n - 1) can never be in it (all such tokens together hold less than
     * 1 - top_p), so only the others are sorted. */
    float cut = n > 1 ? (1 - s->top_p) / (float)(n - 1) : 0;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (probs[i] >= cut) s->cands[m++] = (cand){probs[i], i};
    qsort(s->cands, (size_t)m, sizeof *s->cands, by_prob_desc);
    double mass = 0;
    int k = 0;
    while (k < m && mass < s->top_p) mass += s->cands[k++].p;
    for (int i = 0; i < n; i++) probs[i] = 0;
    for (int i = 0; i < k; i++) probs[s->cands[i].id] = (float)(s->cands[i].p / mass);
}

int sq_sample_probs(sq_sampler *s, const float *probs) {
    float u = next_f32(&s->state);
    double acc = 0;
    int last = 0;
    for (int i = 0; i < s->vocab; i++) {
        if (probs[i] <= 0) continue;
        if ((acc += probs[i]) > u) return i;
        last = i;
    }
    return last; /* rounding left acc just under u */
}

int sq_sample(sq_sampler *s, float *logits) {
    if (s->temp <= 0) return sq_argmax(logits, s->vocab);
    sq_sampler_probs(s, logits, logits);
    return sq_sample_probs(s, logits);
}

int sq_spec_accept(sq_sampler *s, float *p, const float *q, int d, bool *accepted) {
    /* keep d with probability min(1, p[d] / q[d]) */
    float u = next_f32(&s->state);
    *accepted = q[d] > 0 && u * q[d] < p[d];
    if (*accepted) return d;
    double mass = 0;
    for (int i = 0; i < s->vocab; i++) mass += p[i] = fmaxf(p[i] - q[i], 0.0f);
    if (!(mass > 0)) return d; /* p <= q everywhere means p == q, where d is always kept: rounding only */
    for (int i = 0; i < s->vocab; i++) p[i] = (float)(p[i] / mass);
    return sq_sample_probs(s, p);
}
