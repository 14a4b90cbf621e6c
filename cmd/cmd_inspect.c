/* cmd_inspect.c: `spotq inspect MODEL`: architecture, tensors, parameter count, size at each precision. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/checkpoint.h"
#include "cmd.h"

static const char *USAGE = "MODEL [--json]\n\n"
                           "MODEL is a Hugging Face directory or a .safetensors file with config.json beside it.";

/* sq_quant_act, as inspect prints it. */
static const char *const acts[] = {"none", "static", "dynamic per token", "dynamic per tensor", "dynamic per token group"};

/* What the checkpoint would weigh: linear weights quantised, everything else in BF16. */
typedef struct {
    const sq_st *st;
    int64_t params, bf16, int8, int4_g128, fp8;
    int64_t n_linear, int4_kept;
} sizes;

static int64_t int8_bytes(int64_t n, int64_t k) {
    if (k % 4 || n % 4) return 2 * n * k;
    return n * k + n + 2 * n + 4 * k; /* per channel: qweight, qzeros, scales fp16, g_idx int32 */
}

/* GPTQ layout at 4 bits, group 128: qweight K*N/2, qzeros (K/g)*N/2, scales (K/g)*N fp16, g_idx K int32.
 * A matrix that does not fit the packing stays BF16. */
static int64_t int4_g128_bytes(int64_t n, int64_t k) {
    if (k % 128 || n % 8) return 2 * n * k;
    return n * k / 2 + (k / 128) * (n / 2) + (k / 128) * n * 2 + 4 * k;
}

static int mark_linear(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user) {
    sizes *z = user;
    const sq_tensor *t = is_linear ? sq_st_find(z->st, name) : NULL;
    if (!t || t->ndim != 2) return 0;
    int64_t n = t->shape[0], k = t->shape[1], bf = 2 * n * k;
    z->n_linear++;
    if (k % 128 || n % 8) z->int4_kept++;
    z->int8 += int8_bytes(n, k) - bf;
    z->int4_g128 += int4_g128_bytes(n, k) - bf;
    z->fp8 += n * k + 4 - bf; /* E4M3 weights and one F32 scale */
    return 0;
}

static void shape_str(const sq_tensor *t, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "[");
    for (int k = 0; k < t->ndim && (size_t)n < cap; k++) n += snprintf(buf + n, cap - (size_t)n, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
    if ((size_t)n < cap) snprintf(buf + n, cap - (size_t)n, "]");
}

static void print_text(const sq_ckpt *ck, const sizes *z, int64_t disk, const char *model) {
    const sq_config *c = &ck->cfg;
    printf("model:            %s\n", model);
    printf("architecture:     %s\n", sq_arch_name(c->arch));
    printf("layers:           %d\n", c->n_layers);
    printf("hidden:           %d\n", c->hidden);
    printf("intermediate:     %d\n", c->intermediate);
    printf("heads:            %d\n", c->n_heads);
    printf("kv heads:         %d\n", c->n_kv_heads);
    printf("head dim:         %d\n", c->head_dim);
    printf("vocab:            %d\n", c->vocab);
    printf("max positions:    %d\n", c->max_pos);
    printf("rope theta:       %g%s\n", c->rope_theta,
           c->rope_scaling.type == SQ_ROPE_LLAMA3 ? " (llama3 scaling)" : c->rope_scaling.type == SQ_ROPE_LINEAR ? " (linear scaling)" : "");
    printf("norm eps:         %g\n", (double)c->norm_eps);
    printf("tied embeddings:  %s\n", c->tied_embeddings ? "yes" : "no");
    printf("attention bias:   %s\n", c->attn_bias ? "yes" : "no");
    int nslide = 0;
    for (int l = 0; l < c->n_layers; l++) nslide += sq_config_window(c, l) > 0;
    if (nslide) printf("sliding window:   %d positions, %d of %d layers\n", c->sliding_window, nslide, c->n_layers);
    if (c->n_experts)
        printf("experts:          %d, %d per token, width %d%s%s\n", c->n_experts, c->n_experts_per_tok, c->moe_intermediate,
               c->shared_expert_intermediate ? ", shared expert" : "", c->norm_topk_prob ? ", top-k renormalised" : "");
    if (c->quant_method == SQ_FORMAT_FP8 || !strcmp(c->quant_format, "float-quantized"))
        printf("quantization:     %s%s%s, FP8 E4M3 weights%s, activations %s\n", c->quant_method_name, c->quant_format[0] ? " " : "",
               c->quant_format, c->quant_block_n > 0 ? " in blocks" : "", acts[c->quant_act]);
    else if (strstr(c->quant_format, "fp4-pack-quantized")) /* nvfp4- / mxfp4-pack-quantized */
        printf("quantization:     %s %s, FP4 E2M1 weights in groups of %d (%s scales), activations %s\n", c->quant_method_name, c->quant_format,
               c->quant_group_size, c->quant_format[0] == 'n' ? "E4M3 and a global" : "E8M0", c->quant_act != SQ_QACT_NONE ? "FP4 per group of 16" : "none");
    else if (c->quant_method != SQ_FORMAT_NONE)
        printf("quantization:     %s, %d bits, group %d%s\n", c->quant_method_name, c->quant_bits, c->quant_group_size,
               c->quant_sym ? ", sym" : "");
    else printf("quantization:     none\n");
    int64_t n = sq_st_count(ck->st);
    printf("tensors:          %lld\n", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const sq_tensor *t = sq_st_get(ck->st, i);
        char sh[128];
        shape_str(t, sh, sizeof sh);
        printf("  %-52s %-8s %s\n", t->name, sq_dtype_name(t->dtype), sh);
    }
    char h[32];
    printf("parameters:       %lld\n", (long long)z->params);
    sq_human_bytes(disk, h, sizeof h);
    printf("size on disk:     %lld bytes (%s)\n", (long long)disk, h);
    sq_human_bytes(z->bf16, h, sizeof h);
    printf("size at BF16:     %lld bytes (%s)\n", (long long)z->bf16, h);
    sq_human_bytes(z->int8, h, sizeof h);
    printf("size at INT8:     %lld bytes (%s)\n", (long long)z->int8, h);
    sq_human_bytes(z->int4_g128, h, sizeof h);
    printf("size at INT4 g128: %lld bytes (%s)%s\n", (long long)z->int4_g128, h,
           z->int4_kept ? "  (matrices that do not fit 4-bit g128 packing stay BF16)" : "");
    sq_human_bytes(z->fp8, h, sizeof h);
    printf("size at FP8:      %lld bytes (%s)\n", (long long)z->fp8, h);
}

static int print_json(const sq_ckpt *ck, const sizes *z, int64_t disk, const char *model) {
    const sq_config *c = &ck->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "architecture", sq_arch_name(c->arch));
    cJSON_AddNumberToObject(o, "layers", c->n_layers);
    cJSON_AddNumberToObject(o, "hidden", c->hidden);
    cJSON_AddNumberToObject(o, "intermediate", c->intermediate);
    cJSON_AddNumberToObject(o, "heads", c->n_heads);
    cJSON_AddNumberToObject(o, "kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "vocab", c->vocab);
    cJSON_AddNumberToObject(o, "max_positions", c->max_pos);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(o, "norm_eps", c->norm_eps);
    cJSON_AddBoolToObject(o, "tied_embeddings", c->tied_embeddings);
    cJSON_AddBoolToObject(o, "attention_bias", c->attn_bias);
    cJSON *sw = cJSON_AddArrayToObject(o, "sliding_window_layers");
    for (int l = 0; l < c->n_layers; l++)
        if (sq_config_window(c, l)) cJSON_AddItemToArray(sw, cJSON_CreateNumber(l));
    cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
    if (c->n_experts) {
        cJSON *m = cJSON_AddObjectToObject(o, "moe");
        cJSON_AddNumberToObject(m, "experts", c->n_experts);
        cJSON_AddNumberToObject(m, "experts_per_token", c->n_experts_per_tok);
        cJSON_AddNumberToObject(m, "expert_intermediate", c->moe_intermediate);
        cJSON_AddNumberToObject(m, "shared_expert_intermediate", c->shared_expert_intermediate);
        cJSON_AddBoolToObject(m, "norm_topk_prob", c->norm_topk_prob);
    }
    if (c->quant_method != SQ_FORMAT_NONE) {
        cJSON *q = cJSON_AddObjectToObject(o, "quantization");
        cJSON_AddStringToObject(q, "quant_method", c->quant_method_name);
        cJSON_AddNumberToObject(q, "bits", c->quant_bits);
        cJSON_AddNumberToObject(q, "group_size", c->quant_group_size);
        cJSON_AddBoolToObject(q, "sym", c->quant_sym);
        if (c->quant_format[0]) cJSON_AddStringToObject(q, "format", c->quant_format);
        cJSON_AddStringToObject(q, "activations", acts[c->quant_act]);
    } else cJSON_AddNullToObject(o, "quantization");
    cJSON *ts = cJSON_AddArrayToObject(o, "tensors");
    for (int64_t i = 0; i < sq_st_count(ck->st); i++) {
        const sq_tensor *t = sq_st_get(ck->st, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON_AddStringToObject(e, "dtype", sq_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < t->ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
        cJSON_AddItemToArray(ts, e);
    }
    cJSON_AddNumberToObject(o, "parameters", (double)z->params);
    cJSON_AddNumberToObject(o, "size_on_disk", (double)disk);
    cJSON *s = cJSON_AddObjectToObject(o, "size_at");
    cJSON_AddNumberToObject(s, "bf16", (double)z->bf16);
    cJSON_AddNumberToObject(s, "int8", (double)z->int8);
    cJSON_AddNumberToObject(s, "int4_g128", (double)z->int4_g128);
    cJSON_AddNumberToObject(s, "fp8", (double)z->fp8);
    return sq_cmd_print_json(o);
}

int cmd_inspect(int argc, char **argv) {
    bool json = false;
    const sq_opt opts[] = {{"--json", 'f', &json, "print JSON instead of text"}, {0}};
    const char *pos[1];
    int npos;
    int r = sq_args_parse("inspect", USAGE, argc, argv, opts, pos, 1, 1, &npos);
    if (r) return r < 0 ? 0 : r;
    sq_err err = {0};
    sq_ckpt *ck;
    if (sq_ckpt_open(&ck, pos[0], &err)) return sq_cmd_fail(&err);
    sizes z = {.st = ck->st};
    for (int64_t i = 0; i < sq_st_count(ck->st); i++) z.params += sq_st_get(ck->st, i)->numel;
    z.bf16 = z.int8 = z.int4_g128 = z.fp8 = 2 * z.params;
    sq_ckpt_expected_tensors(&ck->cfg, mark_linear, &z);
    int64_t disk = 0;
    for (int i = 0; i < sq_st_nshards(ck->st); i++) disk += sq_st_shard_size(ck->st, i);
    r = json ? print_json(ck, &z, disk, pos[0]) : (print_text(ck, &z, disk, pos[0]), 0);
    sq_ckpt_close(ck);
    return r;
}
