/* gemm.c: the prefill building block every weight kind shares: y = x . W^T + bias by OpenBLAS sgemm on
 * chunks of W's rows, each converted by the kind's rows_to_f32 into the thread's scratch (never the
 * whole matrix), or read in place for F32. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

/* Rows of W per chunk for F32 read in place (sgemm runs as fast on 128 rows of W at a time as on all of them). */
#define GEMM_CHUNK 128
/* A converted tile holds about this many floats (rows * cols), at least TILE_MIN_ROWS rows. */
#define TILE_FLOATS (1 << 18)
#define TILE_MIN_ROWS 16

typedef struct {
    sq_kctx *c;
    const sq_wmat *w;
    sq_rows_fn to_f32;           /* W's rows as floats (NULL: F32, read in place) */
    const float *bias, *x;
    float *y;
    int n;
    int64_t chunk;               /* rows of W per chunk (converted: one tile) */
    _Atomic int64_t next;        /* next chunk to take */
} mm_job;

static void mm_gemm(void *arg, int ith, int nth) {
    mm_job *j = arg;
    const sq_wmat *w = j->w;
    int64_t lo, hi, k = w->cols;
    float *tile = j->c->scratch[ith];
    while (sq_chunk_next(&j->next, w->rows, j->chunk, &lo, &hi)) {
        const float *b = (const float *)w->data + lo * k;
        if (j->to_f32) {
            j->to_f32(w, lo, hi - lo, tile);
            b = tile;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)(hi - lo), (int)k, 1.0f, j->x, (int)k, b, (int)k, 0.0f,
                    j->y + lo, (int)w->rows);
        sq_cpu_add_bias(j->y, j->bias, j->n, j->w->rows, lo, hi);
    }
}

sq_status sq_cpu_tiled_gemm(sq_kctx *c, const sq_wmat *w, sq_rows_fn to_f32, const float *bias, const float *x, float *y, int n,
                            sq_err *err) {
    if (n <= 0 || w->rows == 0) return SQ_OK;
    mm_job j = {.c = c, .w = w, .to_f32 = to_f32, .bias = bias, .x = x, .y = y, .n = n, .chunk = GEMM_CHUNK};
    if (to_f32) {
        int64_t tr = TILE_FLOATS / (w->cols > 0 ? w->cols : 1);
        j.chunk = tr < TILE_MIN_ROWS ? TILE_MIN_ROWS : tr / TILE_MIN_ROWS * TILE_MIN_ROWS;
        sq_status s = sq_kctx_reserve(c, (size_t)(j.chunk * w->cols), err);
        if (s) return s;
    }
    sq_pool_run_work(c->pool, mm_gemm, &j, (int64_t)n * w->rows * w->cols);
    return SQ_OK;
}
