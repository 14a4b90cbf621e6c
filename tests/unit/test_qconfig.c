/* test_qconfig.c: every field of every quantization_config spotq writes (GPTQ v1, AWQ GEMM,
 * compressed-tensors pack-quantized and float-quantized, vLLM's fp8), held to the arguments of the run
 * and to the tensors written, the ignore lists equal to spotq.json's kept_in_full_precision (and
 * lm_head); then each field changed in turn must make sq_ckpt_open refuse the checkpoint with
 * config.json and the field named (formats/qconfig.c). Runs the quantiser on tests/fixtures/matrix. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../formats/checkpoint.h"
#include "../../quant/pipeline.h"
#include "check.h"

static char tmpdir[256];

static void quiet(sq_log_level l, const char *m, void *u) { (void)l; (void)m; (void)u; }

static cJSON *load_json(const char *dir, const char *file) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    char *t;
    size_t n;
    sq_err err = {0};
    if (sq_read_file(p, &t, &n, &err)) return NULL;
    cJSON *j = cJSON_ParseWithLength(t, n);
    free(t);
    return j;
}

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static bool is_num(const cJSON *o, const char *k, double v) { return cJSON_IsNumber(get(o, k)) && get(o, k)->valuedouble == v; }
static bool is_str(const cJSON *o, const char *k, const char *v) { return cJSON_IsString(get(o, k)) && !strcmp(get(o, k)->valuestring, v); }
static bool is_bool(const cJSON *o, const char *k, bool v) { return cJSON_IsBool(get(o, k)) && cJSON_IsTrue(get(o, k)) == v; }
static bool is_null(const cJSON *o, const char *k) { return cJSON_IsNull(get(o, k)); }

/* The object's keys are exactly these (a field spotq adds or drops is a change to review). */
static bool keys_are(const cJSON *o, const char *const *keys) {
    int n = 0, want = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, o) n++;
    for (; keys[want]; want++)
        if (!get(o, keys[want])) return false;
    return n == want;
}

/* A string array as a sorted, '\n'-joined list (for set equality). */
static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static void joined(const cJSON *arr, char *out, size_t cap) {
    const char *v[512];
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) if (cJSON_IsString(e) && n < 512) v[n++] = e->valuestring;
    qsort(v, (size_t)n, sizeof *v, cmpstr);
    out[0] = 0;
    for (int i = 0; i < n; i++) snprintf(out + strlen(out), cap - strlen(out), "%s\n", v[i]);
}

/* GPTQ's dynamic keys "-:model\.layers\.0\.mlp\.down_proj" back to module names. */
static void dynamic_names(const cJSON *dyn, char *out, size_t cap) {
    cJSON *arr = cJSON_CreateArray();
    const cJSON *e;
    cJSON_ArrayForEach(e, dyn) {
        char name[256], *o = name;
        const char *s = e->string;
        if (strncmp(s, "-:", 2) || !cJSON_IsObject(e) || e->child) continue; /* only empty negative matches */
        for (s += 2; *s && o < name + 255; s++)
            if (*s != '\\') *o++ = *s;
        *o = 0;
        cJSON_AddItemToArray(arr, cJSON_CreateString(name));
    }
    joined(arr, out, cap);
    cJSON_Delete(arr);
}

typedef struct {
    const char *name;
    sq_method method;
    sq_format format;
    int bits, group;
    bool sym, act_order, static_groups, per_channel;
    sq_act act;
    const char *ignore;
    bool block;              /* FP8 per 128 x 128 block */
} run_case;

/* What the tensors say about the first quantised linear (model.layers.0.self_attn.q_proj, [64, 64]). */
typedef struct {
    int bits, groups;
    bool zero_points, g_idx_ordered, fp8, per_channel, input_scale, block;
} seen;

/* Probes layer 0's down_proj ([64, 256]), or its q_proj ([64, 64]) where down_proj stays dense. */
static seen look(const sq_st *st, const run_case *c, int *K) {
    seen s = {0};
    const char *m = "model.layers.0.mlp.down_proj";
    char n[128];
    const sq_tensor *dw = sq_st_find(st, "model.layers.0.mlp.down_proj.weight");
    *K = 256;
    if (dw && dw->dtype != SQ_DT_F8_E4M3) m = "model.layers.0.self_attn.q_proj", *K = 64;
#define T(suffix) (snprintf(n, sizeof n, "%s.%s", m, suffix), sq_st_find(st, n))
    const sq_tensor *t;
    if ((t = T("qweight")) && c->format == SQ_FORMAT_GPTQ) {
        s.bits = (int)(t->shape[0] * 32 / *K);
        s.groups = (int)T("scales")->shape[0];
        s.zero_points = true;
        const sq_tensor *gi = T("g_idx");
        s.g_idx_ordered = true;
        for (int k = 0; k < *K; k++) s.g_idx_ordered = s.g_idx_ordered && ((const int32_t *)gi->data)[k] == k / (*K / s.groups);
        /* symmetric: every stored zero 2^(b-1) - 1 */
        const sq_tensor *qz = T("qzeros");
        uint32_t want = s.bits == 4 ? 0x77777777u : 0x7F7F7F7Fu;
        bool all = true;
        for (int64_t i = 0; i < qz->numel; i++) all = all && ((const uint32_t *)qz->data)[i] == want;
        s.zero_points = !all;
    } else if ((t = T("qweight"))) { /* AWQ GEMM: [K, N/8], always 4-bit */
        s.bits = t->shape[0] == *K ? 4 : 0;
        s.groups = (int)T("scales")->shape[0];
        s.zero_points = T("qzeros") != NULL;
        s.g_idx_ordered = true;
    } else if ((t = T("weight_packed"))) {
        s.bits = (int)(t->shape[1] * 32 / *K);
        s.groups = (int)T("weight_scale")->shape[1];
        s.zero_points = T("weight_zero_point") != NULL;
        s.g_idx_ordered = T("weight_g_idx") == NULL;
    } else if ((t = T("weight")) && t->dtype == SQ_DT_F8_E4M3) {
        s.fp8 = true;
        const sq_tensor *ws = T("weight_scale"), *wi = T("weight_scale_inv");
        s.block = wi || (ws && ws->ndim == 2 && ws->shape[1] != 1); /* [ceil(N/128), ceil(K/128)] = [1, 2] */
        s.per_channel = !s.block && ws && ws->numel == 64; /* N = 64 either way */
        s.input_scale = T("input_scale") != NULL;
    }
#undef T
    return s;
}

static void check_config(const run_case *c, const char *dir) {
    cJSON *cfg = load_json(dir, "config.json"), *rep = load_json(dir, "spotq.json");
    CHECK(cfg && rep, "%s: config.json or spotq.json unreadable", c->name);
    if (!cfg || !rep) return;
    const cJSON *q = get(cfg, "quantization_config");
    char kept[8192], listed[8192];
    cJSON *k2 = cJSON_Duplicate(get(rep, "kept_in_full_precision"), 1);
    joined(k2, kept, sizeof kept);
    sq_st *st;
    sq_err err = {0};
    char wp[512];
    snprintf(wp, sizeof wp, "%s/model.safetensors", dir);
    CHECK_OK(sq_st_open(&st, wp, &err), &err);
    int K;
    seen s = look(st, c, &K);
    int gs = c->group > 0 ? c->group : K, groups = c->group > 0 ? K / c->group : 1;
    /* the arguments as spotq.json records them */
    const cJSON *a = get(rep, "arguments");
    CHECK(is_str(a, "method", sq_method_name(c->method)) && is_str(a, "format", sq_format_name(c->format)), "%s: spotq.json arguments", c->name);
    if (c->format == SQ_FORMAT_GPTQ) {
        static const char *keys[] = {"quant_method", "bits", "group_size", "desc_act", "sym", "damp_percent", "true_sequential",
                                     "static_groups", "checkpoint_format", "dynamic", "quantizer", NULL};
        CHECK(keys_are(q, keys), "%s: gptq config keys", c->name);
        CHECK(is_str(q, "quant_method", "gptq") && is_str(q, "checkpoint_format", "gptq"), "%s", c->name);
        CHECK(is_num(q, "bits", c->bits) && s.bits == c->bits, "%s: bits %d, tensors %d", c->name, c->bits, s.bits);
        CHECK(is_num(q, "group_size", c->group) && s.groups == groups, "%s: group_size, tensors %d groups", c->name, s.groups);
        CHECK(is_bool(q, "sym", c->sym) && s.zero_points == !c->sym, "%s: sym", c->name);
        CHECK(is_bool(q, "desc_act", c->act_order && !c->static_groups) && s.g_idx_ordered == !(c->act_order && !c->static_groups),
              "%s: desc_act", c->name);
        CHECK(is_bool(q, "static_groups", c->static_groups) && is_bool(q, "true_sequential", true), "%s", c->name);
        CHECK(is_num(q, "damp_percent", 0.01) && is_str(q, "quantizer", "spotq " SQ_VERSION), "%s", c->name);
        dynamic_names(get(q, "dynamic"), listed, sizeof listed);
        CHECK(!strcmp(listed, kept), "%s: dynamic lists\n%s, kept\n%s", c->name, listed, kept);
    } else if (c->format == SQ_FORMAT_AWQ) {
        static const char *keys[] = {"quant_method", "bits", "group_size", "zero_point", "version", "modules_to_not_convert", "quantizer", NULL};
        CHECK(keys_are(q, keys), "%s: awq config keys", c->name);
        CHECK(is_str(q, "quant_method", "awq") && is_str(q, "version", "gemm") && is_str(q, "quantizer", "spotq " SQ_VERSION), "%s", c->name);
        CHECK(is_num(q, "bits", 4) && s.bits == 4, "%s: bits", c->name);
        CHECK(is_num(q, "group_size", c->group) && s.groups == groups, "%s: group_size", c->name);
        CHECK(is_bool(q, "zero_point", true) && s.zero_points, "%s: zero_point", c->name);
        joined(get(q, "modules_to_not_convert"), listed, sizeof listed);
        CHECK(!strcmp(listed, kept), "%s: modules_to_not_convert\n%s, kept\n%s", c->name, listed, kept);
    } else {
        bool fp8 = c->method == SQ_METHOD_FP8 || c->method == SQ_METHOD_FP8_GPTQ;
        if (c->format == SQ_FORMAT_FP8) {
            static const char *keys[] = {"quant_method", "activation_scheme", "ignored_layers", NULL},
                              *bkeys[] = {"quant_method", "activation_scheme", "weight_block_size", "ignored_layers", NULL};
            CHECK(keys_are(q, c->block ? bkeys : keys) && is_str(q, "quant_method", "fp8"), "%s: fp8 config keys", c->name);
            const cJSON *bs = get(q, "weight_block_size");
            CHECK(!c->block || (cJSON_GetArraySize(bs) == 2 && cJSON_GetArrayItem(bs, 0)->valuedouble == 128 &&
                                cJSON_GetArrayItem(bs, 1)->valuedouble == 128 && s.block), "%s: weight_block_size", c->name);
            CHECK(is_str(q, "activation_scheme", c->act == SQ_ACT_STATIC ? "static" : "dynamic") && s.input_scale == (c->act == SQ_ACT_STATIC),
                  "%s: activation_scheme", c->name);
            CHECK(s.fp8 && !s.per_channel && s.block == c->block, "%s: per-tensor (or block) FP8 weights", c->name);
            cJSON_AddItemToArray(k2, cJSON_CreateString("lm_head"));
            joined(k2, kept, sizeof kept);
            joined(get(q, "ignored_layers"), listed, sizeof listed);
            CHECK(!strcmp(listed, kept), "%s: ignored_layers\n%s, kept\n%s", c->name, listed, kept);
        } else {
            static const char *keys[] = {"quant_method", "format", "quantization_status", "config_groups", "ignore", "kv_cache_scheme", NULL};
            static const char *gkeys[] = {"targets", "weights", "input_activations", "output_activations", "format", NULL};
            const char *fmt = fp8 ? "float-quantized" : "pack-quantized";
            CHECK(keys_are(q, keys) && is_str(q, "quant_method", "compressed-tensors") && is_str(q, "format", fmt) &&
                      is_str(q, "quantization_status", "compressed") && is_null(q, "kv_cache_scheme"),
                  "%s: compressed-tensors config", c->name);
            const cJSON *groups_o = get(q, "config_groups"), *g = get(groups_o, "group_0"), *w = get(g, "weights"), *ia = get(g, "input_activations");
            CHECK(cJSON_GetArraySize(groups_o) == 1 && keys_are(g, gkeys) && is_str(g, "format", fmt) && is_null(g, "output_activations"),
                  "%s: group_0", c->name);
            const cJSON *t = get(g, "targets");
            CHECK(cJSON_GetArraySize(t) == 1 && cJSON_IsString(t->child) && !strcmp(t->child->valuestring, "Linear"), "%s: targets", c->name);
            if (fp8) {
                static const char *wkeys[] = {"num_bits", "type", "strategy", "symmetric", "dynamic", "group_size", NULL},
                                  *bwkeys[] = {"num_bits", "type", "strategy", "symmetric", "dynamic", "group_size", "block_structure", NULL};
                const cJSON *bs = get(w, "block_structure");
                CHECK(!c->block || (cJSON_GetArraySize(bs) == 2 && cJSON_GetArrayItem(bs, 0)->valuedouble == 128 &&
                                    cJSON_GetArrayItem(bs, 1)->valuedouble == 128 && s.block), "%s: block_structure", c->name);
                CHECK(keys_are(w, c->block ? bwkeys : wkeys) && is_num(w, "num_bits", 8) && is_str(w, "type", "float") && is_bool(w, "symmetric", true) &&
                          is_bool(w, "dynamic", false) && is_null(w, "group_size"), "%s: weights", c->name);
                CHECK(is_str(w, "strategy", c->block ? "block" : c->per_channel ? "channel" : "tensor") && s.fp8 && s.per_channel == c->per_channel,
                      "%s: strategy", c->name);
                if (c->act == SQ_ACT_NONE) CHECK(is_null(g, "input_activations") && !s.input_scale, "%s: input_activations", c->name);
                else {
                    static const char *akeys[] = {"num_bits", "type", "strategy", "symmetric", "dynamic", NULL},
                                      *bakeys[] = {"num_bits", "type", "strategy", "symmetric", "dynamic", "group_size", NULL};
                    bool st_ = c->act == SQ_ACT_STATIC;
                    CHECK(keys_are(ia, c->block ? bakeys : akeys) && is_num(ia, "num_bits", 8) && is_str(ia, "type", "float") && is_bool(ia, "symmetric", true) &&
                              is_str(ia, "strategy", c->block ? "group" : st_ ? "tensor" : "token") && is_bool(ia, "dynamic", !st_) && s.input_scale == st_ &&
                              (!c->block || is_num(ia, "group_size", 128)),
                          "%s: input_activations", c->name);
                }
            } else {
                static const char *wkeys[] = {"num_bits", "type", "symmetric", "strategy", "group_size", "actorder", "dynamic", NULL};
                CHECK(keys_are(w, wkeys) && is_str(w, "type", "int") && is_bool(w, "dynamic", false), "%s: weights", c->name);
                CHECK(is_num(w, "num_bits", c->bits) && s.bits == c->bits, "%s: num_bits", c->name);
                CHECK(is_bool(w, "symmetric", c->sym) && s.zero_points == !c->sym, "%s: symmetric", c->name);
                CHECK(is_str(w, "strategy", c->group > 0 ? "group" : "channel") && s.groups == groups, "%s: strategy", c->name);
                CHECK(c->group > 0 ? is_num(w, "group_size", gs) : is_null(w, "group_size"), "%s: group_size", c->name);
                CHECK(c->act_order ? is_str(w, "actorder", "static") : is_null(w, "actorder"), "%s: actorder", c->name);
                CHECK(s.g_idx_ordered && is_null(g, "input_activations"), "%s: no g_idx, no activations", c->name);
            }
            cJSON_AddItemToArray(k2, cJSON_CreateString("lm_head"));
            joined(k2, kept, sizeof kept);
            joined(get(q, "ignore"), listed, sizeof listed);
            CHECK(!strcmp(listed, kept), "%s: ignore\n%s, kept\n%s", c->name, listed, kept);
        }
    }
    sq_st_close(st);
    cJSON_Delete(k2);
    cJSON_Delete(cfg);
    cJSON_Delete(rep);
}

/* ---------------------------------------------------------------- the runtime's check, field by field */

/* Replaces quantization_config[path] (a '/'-separated path) with value (JSON text), writes config.json,
 * and requires sq_ckpt_open to refuse naming config.json and want (a part of the field's name). */
static void lie(const char *dir, const char *path, const char *value, const char *want) {
    char p[512], orig[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    snprintf(orig, sizeof orig, "%s/config.json.orig", dir);
    cJSON *cfg = load_json(dir, "config.json");
    char *keep = cJSON_Print(cfg);
    cJSON *o = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *key = strtok(buf, "/"), *next;
    while ((next = strtok(NULL, "/"))) {
        o = cJSON_GetObjectItemCaseSensitive(o, key);
        key = next;
    }
    cJSON *v = cJSON_Parse(value);
    if (get(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else cJSON_AddItemToObject(o, key, v);
    char *text = cJSON_Print(cfg);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    sq_ckpt *ck = NULL;
    sq_err err = {0};
    sq_status s = sq_ckpt_open(&ck, dir, &err);
    /* a missing tensor is the weights' fault, named so; every other lie is config.json's */
    const char *file = strncmp(want, "missing tensor", 14) ? p : dir;
    CHECK(s == SQ_ERR_FORMAT && strstr(err.msg, file) && strstr(err.msg, want), "%s: %s = %s: status %d, '%s'", dir, path, value, s, err.msg);
    sq_ckpt_close(ck);
    f = fopen(p, "w");
    fputs(keep, f);
    fclose(f);
    free(text);
    free(keep);
    cJSON_Delete(cfg);
}

static void run(const run_case *c) {
    char out[512];
    snprintf(out, sizeof out, "%s/%s", tmpdir, c->name);
    const char *ign[1] = {c->ignore};
    sq_quantize_opts o = {.model = "tests/fixtures/matrix/llama", .out = out, .method = c->method, .format = c->format,
                          .q = {.bits = c->bits, .group_size = c->group, .sym = c->sym, .act_order = c->act_order,
                                .static_groups = c->static_groups, .damp = 0.01, .block_size = 128},
                          .nsamples = 2, .seqlen = 32, .seed = 0, .threads = 1, .force = true, .ignore = c->ignore ? ign : NULL,
                          .n_ignore = c->ignore ? 1 : 0, .awq_duo = true, .awq_clip = true, .fp8_per_channel = c->per_channel, .fp8_block = c->block, .act = c->act};
    bool calib = c->method != SQ_METHOD_RTN && !(c->method == SQ_METHOD_FP8 && c->act != SQ_ACT_STATIC);
    o.calib = calib ? "data/tinystories/calib.txt" : NULL;
    sq_err err = {0};
    CHECK_OK(sq_quantize_model(&o, &err), &err);
    if (err.code) return;
    check_config(c, out);
    sq_ckpt *ck = NULL;
    CHECK_OK(sq_ckpt_open(&ck, out, &err), &err); /* the truth passes */
    sq_ckpt_close(ck);
}

int main(void) {
    sq_log_set(quiet, NULL, SQ_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spotq-test-qconfig-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    static const run_case cases[] = {
        {"gptq4", SQ_METHOD_RTN, SQ_FORMAT_GPTQ, 4, 32, true, false, false, false, SQ_ACT_NONE, NULL, false},
        {"gptq8a", SQ_METHOD_RTN, SQ_FORMAT_GPTQ, 8, -1, false, false, false, false, SQ_ACT_NONE, "model.layers.*.mlp.down_proj", false},
        {"gptq_ao", SQ_METHOD_GPTQ, SQ_FORMAT_GPTQ, 4, 32, true, true, false, false, SQ_ACT_NONE, NULL, false},
        {"gptq_sg", SQ_METHOD_GPTQ, SQ_FORMAT_GPTQ, 4, 32, false, true, true, false, SQ_ACT_NONE, NULL, false},
        {"gptq128", SQ_METHOD_RTN, SQ_FORMAT_GPTQ, 4, 128, true, false, false, false, SQ_ACT_NONE, "*[qkvoep]_proj", false}, /* only down_proj fits g128; the 64-wide
                                        * linears ignored (else the plan would write them at g64, two group sizes GPTQ v1 cannot state) */
        {"awq", SQ_METHOD_RTN, SQ_FORMAT_AWQ, 4, 32, false, false, false, false, SQ_ACT_NONE, "*.self_attn.o_proj", false},
        {"ct4", SQ_METHOD_RTN, SQ_FORMAT_CT, 4, 32, true, false, false, false, SQ_ACT_NONE, NULL, false},
        {"ct8a", SQ_METHOD_RTN, SQ_FORMAT_CT, 8, -1, false, false, false, false, SQ_ACT_NONE, "model.layers.1.*", false},
        {"ct_ao", SQ_METHOD_GPTQ, SQ_FORMAT_CT, 4, 32, false, true, true, false, SQ_ACT_NONE, NULL, false},
        {"ctf", SQ_METHOD_FP8, SQ_FORMAT_CT, 8, 128, true, false, false, false, SQ_ACT_NONE, NULL, false},
        {"ctf_cs", SQ_METHOD_FP8, SQ_FORMAT_CT, 8, 128, true, false, false, true, SQ_ACT_STATIC, "model.layers.0.mlp.up_proj", false},
        {"ctf_d", SQ_METHOD_FP8_GPTQ, SQ_FORMAT_CT, 8, 128, true, false, false, false, SQ_ACT_DYNAMIC, NULL, false},
        {"fp8s", SQ_METHOD_FP8, SQ_FORMAT_FP8, 8, 128, true, false, false, false, SQ_ACT_STATIC, "model.layers.4.mlp.gate_proj", false},
        {"fp8d", SQ_METHOD_FP8, SQ_FORMAT_FP8, 8, 128, true, false, false, false, SQ_ACT_DYNAMIC, NULL, false},
        {"fp8b", SQ_METHOD_FP8, SQ_FORMAT_FP8, 8, 128, true, false, false, false, SQ_ACT_DYNAMIC, NULL, true},
        {"ctfb", SQ_METHOD_FP8_GPTQ, SQ_FORMAT_CT, 8, 128, true, false, false, false, SQ_ACT_DYNAMIC, "model.layers.1.mlp.down_proj", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run(&cases[i]);
    char d[600];
#define DIR(n) (snprintf(d, sizeof d, "%s/%s", tmpdir, n), d)
    /* every field the runtime can hold to the tensors, changed alone */
    lie(DIR("gptq4"), "bits", "8", "quantization_config.bits is 8");
    lie(DIR("gptq4"), "group_size", "128", "quantization_config.group_size is 128");
    lie(DIR("gptq4"), "group_size", "-1", "quantization_config.group_size is -1");
    lie(DIR("gptq4"), "checkpoint_format", "\"gptq_v2\"", "quantization_config.checkpoint_format is 'gptq_v2'");
    lie(DIR("gptq8a"), "sym", "true", "quantization_config.sym is true");
    lie(DIR("gptq_ao"), "desc_act", "false", "quantization_config.desc_act is false");
    lie(DIR("gptq8a"), "dynamic", "{}", "quantization_config.dynamic does not list model.layers.0.mlp.down_proj");
    lie(DIR("gptq4"), "dynamic", "{\"-:model\\\\.layers\\\\.2\\\\.self_attn\\\\.k_proj\": {}}", "quantization_config.dynamic lists model.layers.2.self_attn.k_proj");
    lie(DIR("gptq4"), "quant_method", "\"awq\"", "quantization_config.quant_method is 'awq'");
    lie(DIR("awq"), "quant_method", "\"gptq\"", "quantization_config.quant_method is 'gptq'");
    lie(DIR("awq"), "bits", "8", "quantization_config.bits is 8");
    lie(DIR("awq"), "group_size", "64", "quantization_config.group_size is 64");
    lie(DIR("awq"), "version", "\"gemv\"", "quantization_config.version is 'gemv'");
    lie(DIR("awq"), "zero_point", "false", "quantization_config.zero_point is false");
    lie(DIR("awq"), "modules_to_not_convert", "[]", "quantization_config.modules_to_not_convert does not list model.layers.0.self_attn.o_proj");
    lie(DIR("ct4"), "config_groups/group_0/weights/num_bits", "8", ".weights.num_bits is 8");
    lie(DIR("ct4"), "config_groups/group_0/weights/group_size", "64", ".weights.group_size is 64");
    lie(DIR("ct4"), "config_groups/group_0/weights/strategy", "\"channel\"", ".weights.strategy is 'channel'");
    lie(DIR("ct4"), "config_groups/group_0/weights/symmetric", "false", ".weights.symmetric is false");
    lie(DIR("ct8a"), "config_groups/group_0/weights/symmetric", "true", ".weights.symmetric is true");
    lie(DIR("ct4"), "config_groups/group_0/weights/type", "\"float\"", ".weights.type is 'float'");
    lie(DIR("ct4"), "config_groups/group_0/weights/actorder", "\"group\"", ".weights.actorder is 'group'");
    lie(DIR("ct4"), "format", "\"float-quantized\"", "quantization_config.format is 'float-quantized'");
    lie(DIR("ct4"), "config_groups/group_0/targets", "[\"Embedding\"]", "quantization_config.config_groups has no group targeting Linear");
    lie(DIR("ct8a"), "ignore", "[\"lm_head\"]", "quantization_config.ignore does not list model.layers.1.");
    lie(DIR("ct4"), "ignore", "[\"lm_head\", \"re:.*layers\\\\.3\\\\.mlp\\\\.up_proj\"]", "quantization_config.ignore lists model.layers.3.mlp.up_proj");
    lie(DIR("ctf"), "config_groups/group_0/weights/strategy", "\"channel\"", ".weights.strategy is 'channel'");
    lie(DIR("ctf_cs"), "config_groups/group_0/weights/strategy", "\"tensor\"", ".weights.strategy is 'tensor'");
    lie(DIR("ctf_cs"), "config_groups/group_0/input_activations", "null", ".input_activations is null");
    lie(DIR("ctf_d"), "config_groups/group_0/input_activations/dynamic", "false", "missing tensor 'model.layers.0.self_attn.q_proj.input_scale' (config.json asks for static");
    lie(DIR("ctf"), "config_groups/group_0/weights/num_bits", "4", ".weights is 4-bit float");
    lie(DIR("ctf"), "format", "\"pack-quantized\"", "quantization_config.format is 'pack-quantized'");
    lie(DIR("fp8s"), "activation_scheme", "\"dynamic\"", "quantization_config.activation_scheme is 'dynamic'");
    lie(DIR("fp8d"), "activation_scheme", "\"static\"", "missing tensor 'model.layers.0.self_attn.q_proj.input_scale' (config.json asks for static");
    lie(DIR("fp8s"), "ignored_layers", "[\"lm_head\"]", "quantization_config.ignored_layers does not list model.layers.4.mlp.gate_proj");
    lie(DIR("fp8d"), "quant_method", "\"gptq\"", "quantization_config.quant_method is 'gptq'");
    lie(DIR("fp8b"), "weight_block_size", "null", "quantization_config states no weight_block_size, but model.layers.0.self_attn.q_proj holds block-wise scales (weight_scale_inv)");
    lie(DIR("fp8b"), "weight_block_size", "[32, 128]", "quantization_config.weight_block_size is [32, 128], but model.layers.0.self_attn.q_proj holds 1 weight_scale_inv values (expected [2, 1])");
    lie(DIR("fp8b"), "weight_block_size", "[128]", "quantization_config: weight_block_size must be two positive integers");
    lie(DIR("fp8b"), "activation_scheme", "\"static\"", "quantization_config.activation_scheme is 'static', but block-wise fp8");
    lie(DIR("fp8d"), "weight_block_size", "[128, 128]", "quantization_config.weight_block_size is [128, 128], but model.layers.0.self_attn.q_proj holds a weight_scale");
    lie(DIR("ctfb"), "config_groups/group_0/weights/block_structure", "[32, 128]", ".weights.block_structure is [32, 128], but model.layers.0.self_attn.q_proj holds 1 weight scales (expected [2, 1])");
    lie(DIR("ctfb"), "config_groups/group_0/input_activations/strategy", "\"token\"", ".input_activations.strategy is 'token', but block-wise FP8 runs activations per group");
    lie(DIR("ctfb"), "config_groups/group_0/input_activations/group_size", "64", ".input_activations.group_size is 64, but the weight blocks are 128 wide");
    lie(DIR("ctfb"), "config_groups/group_0/weights/strategy", "\"tensor\"", ".weights.strategy is 'tensor', but model.layers.0.mlp.gate_proj holds 2 weight scales");
    lie(DIR("ctfb"), "ignore", "[\"lm_head\"]", "quantization_config.ignore does not list model.layers.1.mlp.down_proj");
#undef DIR
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("test_qconfig");
}
