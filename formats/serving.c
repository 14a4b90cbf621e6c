/* serving.c: vLLM's kernel rules (see serving.h for the source read) applied to every linear. */
#include "serving.h"

#include <stdio.h>
#include <string.h>

const char *sq_serve_verdict_name(sq_serve_verdict v) {
    static const char *const names[] = {"kernel", "fallback", "full precision", "rejected"};
    return (unsigned)v < 4 ? names[v] : "?";
}

typedef struct {
    const sq_config *c; /* shapes (hidden, heads) */
    int bits, group;    /* the scheme the rules read: the checkpoint's, or a plan's before anything is written */
    bool sym;
    int tp;
    int64_t n_part, k_part; /* per tensor-parallel shard; n_part of q/k/v (and gate/up) is their fused sum, as vLLM
                             * runs them as one QKVParallelLinear (MergedColumnParallelLinear) */
    bool expert, fused;
} lin_ctx;

static const int marlin_groups[] = {-1, 32, 64, 128};

static bool marlin_group_ok(int g) {
    for (size_t i = 0; i < sizeof marlin_groups / sizeof *marlin_groups; i++)
        if (marlin_groups[i] == g) return true;
    return false;
}

/* Marlin's type and group rules (query_marlin_supported_quant_types, _check_marlin_supported). */
static bool marlin_type(int bits, bool zp, int group, char *rule, size_t cap) {
    if (zp ? bits != 4 : bits != 4 && bits != 8) {
        snprintf(rule, cap, "Marlin takes %s, not %d-bit%s", zp ? "4-bit weights with zero points (uint4)" : "4- or 8-bit symmetric weights (uint4b8, uint8b128)",
                 bits, zp ? " with zero points" : "");
        return false;
    }
    if (!marlin_group_ok(group)) {
        snprintf(rule, cap, "Marlin takes group sizes -1, 32, 64, 128, not %d", group);
        return false;
    }
    return true;
}

/* verify_marlin_supports_shape, or check_moe_marlin_supports_layer for an expert. */
static bool marlin_shape(const lin_ctx *x, int64_t k_full, int group, char *rule, size_t cap) {
    if (x->expert) {
        int64_t inter = x->n_part < x->k_part ? x->n_part : x->k_part, hidden = x->c->hidden, m = group > 64 ? group : 64;
        if (hidden % 128) snprintf(rule, cap, "Marlin MoE needs hidden %lld to be a multiple of 128", (long long)hidden);
        else if (inter % m) snprintf(rule, cap, "Marlin MoE needs the expert width per shard %lld to be a multiple of %lld", (long long)inter, (long long)m);
        else return true;
        return false;
    }
    if (x->n_part % 64)
        snprintf(rule, cap, "%sout_features per shard %lld is not a multiple of 64 (Marlin's min_thread_n)", x->fused ? "the fused " : "",
                 (long long)x->n_part);
    else if (x->k_part % 128) snprintf(rule, cap, "in_features per shard %lld is not a multiple of 128 (Marlin's min_thread_k)", (long long)x->k_part);
    else if (group > 0 && group < k_full && x->k_part % group)
        snprintf(rule, cap, "in_features per shard %lld is not a multiple of the group size %d", (long long)x->k_part, group);
    else return true;
    return false;
}

/* One row per on-disk format: the kernel vLLM picks for a quantised linear of it. */
typedef void (*serve_fn)(const lin_ctx *x, sq_serve_linear *l);

static void serve_gptq(const lin_ctx *x, sq_serve_linear *l) {
    snprintf(l->kernel, sizeof l->kernel, x->expert ? "Marlin MoE (gptq_marlin)" : "Marlin (gptq_marlin)");
    if (!x->sym) {
        snprintf(l->rule, sizeof l->rule, "GPTQ v1 loads only through Marlin, which takes symmetric weights (this checkpoint is asymmetric)");
        l->verdict = SQ_SERVE_REJECT;
    } else if (!marlin_type(x->bits, false, x->group, l->rule, sizeof l->rule)) {
        l->verdict = SQ_SERVE_REJECT;
    } else if (!marlin_shape(x, l->k, x->group, l->rule, sizeof l->rule)) {
        if (x->expert) { /* gptq_marlin falls back to the MoE WNA16 kernels for such experts */
            snprintf(l->kernel, sizeof l->kernel, "MoE WNA16");
            l->verdict = SQ_SERVE_FALLBACK;
        } else l->verdict = SQ_SERVE_REJECT;
    }
}

static void serve_awq(const lin_ctx *x, sq_serve_linear *l) {
    snprintf(l->kernel, sizeof l->kernel, x->expert ? "Marlin MoE (awq_marlin)" : "Marlin (awq_marlin)");
    if (!marlin_type(x->bits, true, x->group, l->rule, sizeof l->rule) || !marlin_shape(x, l->k, x->group, l->rule, sizeof l->rule)) {
        snprintf(l->kernel, sizeof l->kernel, x->expert ? "MoE WNA16" : "AWQ GEMM (awq)");
        l->verdict = SQ_SERVE_FALLBACK;
    }
}

static void serve_ct_int(const lin_ctx *x, sq_serve_linear *l) {
    snprintf(l->kernel, sizeof l->kernel, x->expert ? "Marlin MoE (wNa16)" : "Marlin (wNa16)");
    if (!marlin_type(x->bits, !x->sym, x->group, l->rule, sizeof l->rule) || !marlin_shape(x, l->k, x->group, l->rule, sizeof l->rule)) {
        snprintf(l->kernel, sizeof l->kernel, x->expert ? "MoE WNA16" : "another mixed-precision kernel, if one takes it");
        l->verdict = SQ_SERVE_FALLBACK;
    }
}

static void serve_fp8(const lin_ctx *x, sq_serve_linear *l) {
    (void)x;
    snprintf(l->kernel, sizeof l->kernel, "FP8 scaled_mm (shapes not checked)");
}

/* FP4 (compressed-tensors nvfp4- / mxfp4-pack-quantized). vLLM's scheme choice
 * (model_executor/layers/quantization/compressed_tensors/compressed_tensors.py::_get_scheme_from_parts @be696453):
 * NVFP4 weights without input_activations -> CompressedTensorsW4A16Fp4 (Marlin FP4); with them ->
 * CompressedTensorsW4A4Fp4 when cutlass_fp4_supported() (Blackwell, SM100/120: FlashInfer or vLLM CUTLASS
 * FP4, schemes/compressed_tensors_w4a4_nvfp4.py @0094cb9b), else the Marlin W4A16 fallback (H100/H200: the
 * activations then stay in 16 bits). MXFP4 -> CompressedTensorsW4A16Mxfp4 (Marlin FP4,
 * schemes/compressed_tensors_w4a16_mxfp4.py @1a6da548). The hard shape rule is the group along K
 * (16 or 32) per shard: CUTLASS pads N and K to 32 itself (pad_nvfp4_weight_for_cutlass); Marlin FP4's
 * thread tiles are not checked in Python (its N%64 / K%128 limits are unconfirmed: not applied). */
static void serve_fp4(const lin_ctx *x, sq_serve_linear *l) {
    bool mx = x->group == 32, a4 = !mx && x->c->quant_act != SQ_QACT_NONE;
    int64_t kp = x->k_part ? x->k_part : l->k;
    snprintf(l->kernel, sizeof l->kernel, "%s", mx ? "Marlin FP4 (W4A16 MXFP4)" : a4 ? "CUTLASS FP4 W4A4 (SM100+); Marlin FP4 W4A16 below"
                                                                                   : "Marlin FP4 (W4A16 NVFP4)");
    if (kp % (mx ? 32 : 16)) {
        snprintf(l->rule, sizeof l->rule, "in_features per shard %lld is not a multiple of the FP4 group %d", (long long)kp, mx ? 32 : 16);
        l->verdict = SQ_SERVE_REJECT;
    }
}

/* Block-wise FP8 (serving.h): the block shape is the config's (128 x 128 when it states none). */
static void serve_fp8_block(const lin_ctx *x, sq_serve_linear *l) {
    int bn = x->c->quant_block_n > 0 ? x->c->quant_block_n : 128, bk = x->c->quant_block_k > 0 ? x->c->quant_block_k : 128;
    int64_t n = l->n, k_part = x->k_part;
    l->verdict = SQ_SERVE_REJECT;
    if (x->expert) {
        int64_t inter = x->n_part < x->k_part ? x->n_part : x->k_part, hidden = x->c->hidden;
        snprintf(l->kernel, sizeof l->kernel, "fused MoE block FP8 (Triton / DeepGEMM)");
        if (inter % bn) snprintf(l->rule, sizeof l->rule, "block-wise FP8 MoE needs the expert width per shard %lld to be a multiple of block_n %d", (long long)inter, bn);
        else if (x->tp > 1 && inter % bk) snprintf(l->rule, sizeof l->rule, "block-wise FP8 MoE with TP needs the expert width per shard %lld to be a multiple of block_k %d", (long long)inter, bk);
        else if (hidden % bk || inter % bk)
            snprintf(l->rule, sizeof l->rule, "the activations' K (%lld) is not a multiple of %d (per_token_group_quant_fp8 asserts it)", (long long)(hidden % bk ? hidden : inter), bk);
        else l->verdict = SQ_SERVE_KERNEL;
        return;
    }
    bool row = strstr(l->name, ".o_proj") || strstr(l->name, ".down_proj");
    int64_t n_part = row || x->tp == 1 ? n : n / x->tp; /* this linear's own shard of a merged partition */
    bool merged_not_last = x->fused && !strstr(l->name, ".v_proj") && !strstr(l->name, ".up_proj");
    snprintf(l->kernel, sizeof l->kernel, "block FP8");
    if (x->tp > 1 && row && k_part % bk)
        snprintf(l->rule, sizeof l->rule, "in_features per shard %lld is not a multiple of block_k %d (validate_fp8_block_shape)", (long long)k_part, bk);
    else if (((x->tp > 1 && !row) || merged_not_last) && n_part % bn)
        snprintf(l->rule, sizeof l->rule, "%s %lld is not a multiple of block_n %d (validate_fp8_block_shape)",
                 x->tp > 1 ? "out_features per shard" : "an output partition of a merged linear (not its last)", (long long)n_part, bn);
    else if (k_part % bk)
        snprintf(l->rule, sizeof l->rule, "in_features %lld is not a multiple of %d: per_token_group_quant_fp8 asserts the activations' K %% %d == 0", (long long)k_part, bk, bk);
    else {
        l->verdict = SQ_SERVE_KERNEL;
        if (bn == 128 && bk == 128 && n_part % 128 == 0 && k_part % 128 == 0) snprintf(l->kernel, sizeof l->kernel, "CUTLASS block FP8 (DeepGEMM where installed)");
        else snprintf(l->kernel, sizeof l->kernel, "Triton w8a8_block_fp8_matmul");
    }
}

/* INT8 W8A8 (serving.h): CUTLASS where the shard's K and N are multiples of 16, else vLLM's Triton scaled_mm. */
static void serve_w8a8(const lin_ctx *x, sq_serve_linear *l) {
    if (x->expert) {
        l->verdict = SQ_SERVE_KERNEL;
        snprintf(l->kernel, sizeof l->kernel, "fused MoE INT8 W8A8 (Triton)");
        return;
    }
    bool row = strstr(l->name, ".o_proj") || strstr(l->name, ".down_proj");
    int64_t n_part = row ? l->n : x->n_part, k_part = x->k_part; /* a merged linear (q/k/v, gate/up) runs as one GEMM */
    if (n_part % 16 == 0 && k_part % 16 == 0) {
        l->verdict = SQ_SERVE_KERNEL;
        snprintf(l->kernel, sizeof l->kernel, "CUTLASS scaled_mm int8");
        return;
    }
    l->verdict = SQ_SERVE_FALLBACK;
    snprintf(l->kernel, sizeof l->kernel, "Triton scaled_mm int8");
    snprintf(l->rule, sizeof l->rule, "CUTLASS scaled_mm needs K and N per shard multiples of 16 (has %lld x %lld: cutlass_compatible_b)",
             (long long)k_part, (long long)n_part);
}

/* A column-parallel linear splits its outputs across shards, a row-parallel one its inputs. */
static bool row_parallel(const char *name) {
    return strstr(name, ".o_proj") || strstr(name, ".down_proj") || strstr(name, ".w2");
}

void sq_serve_plan(const sq_config *c, const char *name, int64_t n, int64_t k, sq_serve_storage as, int bits, int group_size, bool sym,
                   int tp, sq_serve_linear *out) {
    sq_serve_linear l = {.n = n, .k = k};
    snprintf(l.name, sizeof l.name, "%s", name);
    lin_ctx x = {c, bits, group_size, sym, tp, n, k, strstr(name, ".experts.") != NULL, false};
    bool row = row_parallel(name);
    if (!x.expert && (strstr(name, ".q_proj") || strstr(name, ".k_proj") || strstr(name, ".v_proj")))
        x.n_part = (int64_t)c->n_heads * c->head_dim + 2 * (int64_t)c->n_kv_heads * c->head_dim, x.fused = true;
    else if (!x.expert && (strstr(name, ".gate_proj") || strstr(name, ".up_proj"))) x.n_part = 2 * n, x.fused = true;
    int64_t split = row ? k : x.n_part;
    if (tp < 1 || split % tp) {
        l.verdict = SQ_SERVE_REJECT;
        snprintf(l.kernel, sizeof l.kernel, "tensor parallelism");
        snprintf(l.rule, sizeof l.rule, "%s %lld does not split into %d shards", row ? "in_features" : "out_features", (long long)split, tp);
    } else {
        if (row) x.k_part = k / tp;
        else x.n_part /= tp;
        static const serve_fn fns[] = {NULL, serve_gptq, serve_awq, serve_ct_int, serve_fp8, serve_fp8_block, serve_fp4, serve_w8a8};
        bool integer = as == SQ_SERVE_AS_GPTQ || as == SQ_SERVE_AS_AWQ || as == SQ_SERVE_AS_CT_INT;
        if (fns[as]) fns[as](&x, &l);
        else l.verdict = SQ_SERVE_FULL;
        if (integer && group_size > 0 && k % group_size && l.verdict != SQ_SERVE_REJECT) { /* whatever kernel the row would pick: its scales hold input_size // group_size groups */
            l.verdict = SQ_SERVE_REJECT;
            snprintf(l.kernel, sizeof l.kernel, "none");
            snprintf(l.rule, sizeof l.rule, "in_features %lld is not a multiple of the group size %d: vLLM's integer schemes hold "
                     "in_features // group_size scale groups (compressed_tensors_wNa16.py, gptq.py, awq.py create_weights): "
                     "the last, short one does not load", (long long)k, group_size);
        }
    }
    *out = l;
}

typedef struct {
    const sq_ckpt *ck;
    int tp;
    sq_serve_fn fn;
    void *user;
    sq_serve_summary *sum;
} walk;

static int check_linear(const char *tname, int ndim, const int64_t *shape, bool is_linear, void *user) {
    walk *w = user;
    if (!is_linear || ndim != 2) return 0;
    const sq_ckpt *ck = w->ck;
    const sq_config *c = &ck->cfg;
    char name[200], buf[260];
    size_t nl = strlen(tname);
    snprintf(name, sizeof name, "%.*s", (int)(nl > 7 && !strcmp(tname + nl - 7, ".weight") ? nl - 7 : nl), tname);
    sq_serve_storage as = SQ_SERVE_AS_FULL;
    snprintf(buf, sizeof buf, "%s.qweight", name);
    if (sq_st_find(ck->st, buf)) as = c->quant_method == SQ_FORMAT_AWQ ? SQ_SERVE_AS_AWQ : SQ_SERVE_AS_GPTQ;
    snprintf(buf, sizeof buf, "%s.weight_packed", name);
    const sq_tensor *wp = sq_st_find(ck->st, buf);
    if (wp) as = wp->dtype == SQ_DT_U8 ? SQ_SERVE_AS_FP4 : SQ_SERVE_AS_CT_INT;
    const sq_tensor *t = sq_st_find(ck->st, tname);
    if (t && t->dtype == SQ_DT_I8 && c->quant_method == SQ_FORMAT_CT) as = SQ_SERVE_AS_W8A8;
    if (t && t->dtype == SQ_DT_F8_E4M3) as = c->quant_block_n > 0 ? SQ_SERVE_AS_FP8_BLOCK : SQ_SERVE_AS_FP8;
    int group = c->quant_group_size;
    snprintf(buf, sizeof buf, "%s.weight_scale", name);
    const sq_tensor *ws = as == SQ_SERVE_AS_CT_INT ? sq_st_find(ck->st, buf) : NULL;
    if (ws && ws->ndim == 2) { /* compressed-tensors: the module's own group size (several config groups), from its scales */
        int64_t G = ws->shape[1], k = shape[1];
        if (G == 1) group = -1;
        else if (!(group > 0 && (k + group - 1) / group == G) && k % G == 0) group = (int)(k / G);
    }
    sq_serve_linear l;
    sq_serve_plan(c, name, shape[0], shape[1], as, c->quant_bits, group, c->quant_sym, w->tp, &l);
    if (l.verdict == SQ_SERVE_FULL) snprintf(l.kernel, sizeof l.kernel, "%s GEMM (not quantised)", t ? sq_dtype_name(t->dtype) : "?");
    sq_serve_summary *s = w->sum;
    s->n_linear++;
    if (l.verdict == SQ_SERVE_KERNEL) s->n_kernel++;
    else if (l.verdict == SQ_SERVE_FALLBACK) s->n_fallback++;
    else if (l.verdict == SQ_SERVE_FULL) s->n_full++;
    else if (!s->n_reject++) s->first_reject = l;
    if (w->fn) w->fn(&l, w->user);
    return 0;
}

sq_status sq_serve_check(const sq_ckpt *ck, int tp, sq_serve_fn fn, void *user, sq_serve_summary *sum, sq_err *err) {
    memset(sum, 0, sizeof *sum);
    if (!ck || tp < 1) return sq_fail(err, SQ_ERR_ARG, "--tp %d: tensor parallelism must be at least 1", tp);
    walk w = {ck, tp, fn, user, sum};
    sq_ckpt_expected_tensors(&ck->cfg, check_linear, &w);
    return SQ_OK;
}
