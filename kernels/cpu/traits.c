/* traits.c: the weight kinds as a table (F32, F16, BF16, INT4/INT8 packed, FP8 E4M3, FP4 E2M1), as ggml's type
 * traits: rows to f32, the GEMV/GEMM and its scalar reference, activation preparation; sq_cpu_matmul
 * and sq_cpu_matmul_ref dispatch through it, so the kinds' files (matmul.c, qmatmul.c, fp8matmul.c)
 * never call each other (they share gemm.c's tiled sgemm). */
#include "cpu.h"

static void fp8_act(const sq_wmat *w, const float *x, float *out, int n) { sq_cpu_fp8_act(w->f8, x, out, n, w->cols); }
static void fp8_act_ref(const sq_wmat *w, const float *x, float *out, int n) { sq_cpu_fp8_act_ref(w->f8, x, out, n, w->cols); }

static void fp8b_act(const sq_wmat *w, const float *x, float *out, int n) { sq_cpu_fp8b_act_ref(w->f8, x, out, n, w->cols); }

static void fp4_act(const sq_wmat *w, const float *x, float *out, int n) { sq_cpu_fp4_act_ref(w->f4, x, out, n, w->cols); }

static void qrow_ref(const sq_wmat *w, int64_t r, float *dst) { sq_cpu_qrow_to_f32(w, r, dst); }

#define DENSE(nm) {nm, sq_cpu_dense_rows_to_f32, sq_cpu_row_to_f32, sq_cpu_dense_matmul, sq_cpu_dense_matmul_ref, NULL, NULL}
#define QUANT(nm) {nm, sq_cpu_qrows_to_f32, qrow_ref, sq_cpu_qmatmul, sq_cpu_qmatmul_ref, NULL, NULL}

static const sq_wkind_traits traits[SQ_WKIND_COUNT] = {
    [SQ_WKIND_F32] = DENSE("f32"),
    [SQ_WKIND_F16] = DENSE("f16"),
    [SQ_WKIND_BF16] = DENSE("bf16"),
    [SQ_WKIND_INT4] = QUANT("int4"),
    [SQ_WKIND_INT8] = QUANT("int8"),
    [SQ_WKIND_FP8_E4M3] = {"fp8-e4m3", sq_cpu_f8rows_to_f32, sq_cpu_f8row_to_f32_ref, sq_cpu_f8matmul, sq_cpu_f8matmul_ref, fp8_act, fp8_act_ref},
    [SQ_WKIND_FP8_BLOCK] = {"fp8-block", sq_cpu_fp8b_rows_to_f32, sq_cpu_fp8b_row_to_f32_ref, sq_cpu_fp8b_matmul, sq_cpu_fp8b_matmul_ref, fp8b_act, fp8b_act},
    [SQ_WKIND_FP4] = {"fp4", sq_cpu_fp4_rows_to_f32, sq_cpu_fp4_row_to_f32_ref, sq_cpu_fp4_matmul, sq_cpu_fp4_matmul_ref, fp4_act, fp4_act},
};

int sq_cpu_wkind_of(const sq_wmat *w) {
    if (w->q) return w->q->bits == 8 ? SQ_WKIND_INT8 : SQ_WKIND_INT4; /* other widths: qmatmul's own error */
    if (w->f4) return SQ_WKIND_FP4;
    if (w->f8) return w->f8->block_n > 0 ? SQ_WKIND_FP8_BLOCK : SQ_WKIND_FP8_E4M3;
    switch (w->dtype) {
    case SQ_DT_F32: return SQ_WKIND_F32;
    case SQ_DT_F16: return SQ_WKIND_F16;
    case SQ_DT_BF16: return SQ_WKIND_BF16;
    default: return -1;
    }
}

const sq_wkind_traits *sq_cpu_wkind_traits(sq_wkind kind) { return kind >= 0 && kind < SQ_WKIND_COUNT ? &traits[kind] : NULL; }

static const sq_wkind_traits *kind_of(const sq_wmat *w, sq_err *err) {
    int k = sq_cpu_wkind_of(w);
    if (k < 0) sq_fail(err, SQ_ERR_UNSUPPORTED, "matmul: weight dtype %s is not supported by the CPU kernels", sq_dtype_name(w->dtype));
    return k < 0 ? NULL : &traits[k];
}

sq_status sq_cpu_matmul(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    const sq_wkind_traits *t = kind_of(w, err);
    return t ? t->matmul(c, w, bias, x, y, n, err) : SQ_ERR_UNSUPPORTED;
}

sq_status sq_cpu_matmul_ref(sq_kctx *c, const sq_wmat *w, const float *bias, const float *x, float *y, int n, sq_err *err) {
    const sq_wkind_traits *t = kind_of(w, err);
    return t ? t->matmul_ref(c, w, bias, x, y, n, err) : SQ_ERR_UNSUPPORTED;
}
