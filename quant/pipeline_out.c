/* pipeline_out.c: the quantize pipeline's config.json (quantization_config of each format) and
 * spotq.json (arguments, calibration, per-layer errors, timings), from its plain report (report.h). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "budget_run.h"
#include "report.h"
#include "smooth.h"

/* ---------------------------------------------------------------- config.json and spotq.json */

/* The linear modules left in full precision: the linears kept (shape, --ignore), and the MoE routers
 * and Qwen2-MoE's shared-expert gates, which serving engines and transformers must not look for in
 * quantised form (transformers treats them as Linear targets otherwise). */
static cJSON *kept_modules(const sq_qreport *r) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < r->nrows; i++)
        if (!r->rows[i].quantized) cJSON_AddItemToArray(a, cJSON_CreateString(r->rows[i].name));
    for (int l = 0; l < r->c->n_layers; l++) {
        if (!sq_config_moe_layer(r->c, l)) continue;
        char name[96];
        snprintf(name, sizeof name, r->c->arch == SQ_ARCH_MIXTRAL ? "model.layers.%d.block_sparse_moe.gate" : "model.layers.%d.mlp.gate", l);
        cJSON_AddItemToArray(a, cJSON_CreateString(name));
        if (r->c->shared_expert_intermediate) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.shared_expert_gate", l);
            cJSON_AddItemToArray(a, cJSON_CreateString(name));
        }
    }
    return a;
}

static const char *act_name(sq_act a) { return a == SQ_ACT_STATIC ? "static" : a == SQ_ACT_DYNAMIC ? "dynamic" : "none"; }

/* Per MoE layer: the calibration tokens routed to each expert, and the experts calibrated on every
 * token because they were routed too few. */
static cJSON *moe_report(const sq_qreport *r) {
    cJSON *a = cJSON_CreateArray();
    int E = r->c->n_experts;
    for (int l = 0; l < r->c->n_layers; l++) {
        if (!sq_config_moe_layer(r->c, l)) continue;
        cJSON *e = cJSON_CreateObject(), *tok = cJSON_AddArrayToObject(e, "tokens_per_expert"), *all;
        cJSON_AddNumberToObject(e, "layer", l);
        all = cJSON_AddArrayToObject(e, "calibrated_on_all_tokens");
        for (int x = 0; x < E; x++) {
            cJSON_AddItemToArray(tok, cJSON_CreateNumber((double)r->moe_tokens[(int64_t)l * E + x]));
            if (r->moe_all[(int64_t)l * E + x]) cJSON_AddItemToArray(all, cJSON_CreateNumber(x));
        }
        cJSON_AddItemToArray(a, e);
    }
    return a;
}

/* Whether two integer schemes differ only where the plan leaves them (bits, group size, symmetry). */
static bool same_group(const sq_scheme *a, const sq_scheme *b) {
    return a->bits == b->bits && a->group_size == b->group_size && a->sym == b->sym;
}

/* r->scheme with the plan's bits, group size and symmetry of d. */
static sq_scheme with_group(const sq_qreport *r, const sq_scheme *d) {
    sq_scheme s = r->scheme;
    s.bits = d->bits, s.group_size = d->group_size, s.sym = d->sym;
    return s;
}

/* The output format's quantization_config for the schemes written (formats/format.h): one scheme (the
 * quantised rows' own, as the plan gave it) as before, the group targeting the class Linear; several
 * (a format with several_schemes alone, pipeline.c) one config group each, its targets the names of
 * its modules, as compressed-tensors' match_targets takes them (compressed-tensors 0.20,
 * src/compressed_tensors/utils/match.py: a target is a module name, "re:" + a pattern, or a class). */
static cJSON *quant_config(const sq_qreport *r) {
    enum { CAP = 16 };
    sq_scheme d[CAP];
    int nd = 0;
    for (int i = 0; i < r->nrows && r->scheme.kind == SQ_SCHEME_INT; i++) {
        if (!r->rows[i].quantized) continue;
        int j = 0;
        while (j < nd && !same_group(&d[j], &r->rows[i].scheme)) j++;
        if (j == nd && nd < CAP) d[nd++] = r->rows[i].scheme;
    }
    sq_scheme s0 = nd ? with_group(r, &d[0]) : r->scheme;
    cJSON *q = r->fmt->config(&s0, kept_modules(r));
    cJSON *groups = cJSON_GetObjectItemCaseSensitive(q, "config_groups");
    if (nd < 2 || !r->fmt->several_schemes || !groups) return q;
    cJSON_DeleteItemFromObjectCaseSensitive(groups, "group_0");
    for (int g = 0; g < nd; g++) {
        sq_scheme sg = with_group(r, &d[g]);
        cJSON *qg = r->fmt->config(&sg, cJSON_CreateArray());
        cJSON *one = cJSON_DetachItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(qg, "config_groups"), "group_0");
        cJSON_Delete(qg);
        if (!one) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(one, "targets");
        cJSON *t = cJSON_CreateArray();
        for (int i = 0; i < r->nrows; i++)
            if (r->rows[i].quantized && same_group(&d[g], &r->rows[i].scheme)) cJSON_AddItemToArray(t, cJSON_CreateString(r->rows[i].name));
        cJSON_AddItemToObject(one, "targets", t);
        char name[24];
        snprintf(name, sizeof name, "group_%d", g);
        cJSON_AddItemToObject(groups, name, one);
    }
    return q;
}

sq_status sq_pl_write_config(const sq_qreport *r, sq_outdir *od, const char *src_config, sq_err *err) {
    char *text;
    size_t len;
    sq_status s = sq_read_file(src_config, &text, &len, err);
    if (s) return s;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cfg) return sq_fail(err, SQ_ERR_FORMAT, "%s: not valid JSON", src_config);
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "quantization_config");
    cJSON_AddItemToObject(cfg, "quantization_config", quant_config(r));
    char *out = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    if (!out) return sq_fail(err, SQ_ERR_NOMEM, "out of memory printing config.json");
    s = sq_outdir_write(od, "config.json", out, err);
    free(out);
    return s;
}

/* --target-bits / --max-kld: the candidates, the chosen scheme per unit with its predicted and measured
 * KLD, which source each unit's KLD came from, how well the proxy predicted the measurements, and the whole
 * choice measured on the held-out windows. */
static void add_budget(cJSON *j, const sq_budget_result *b, const sq_quantize_opts *o) {
    const sq_sens *s = &b->sens;
    cJSON *bj = cJSON_AddObjectToObject(j, "budget");
    if (o->target_bits > 0) cJSON_AddNumberToObject(bj, "target_bits", o->target_bits);
    else cJSON_AddNumberToObject(bj, "max_kld", o->max_kld);
    cJSON *cs = cJSON_AddArrayToObject(bj, "candidates");
    for (int i = 0; i < s->n_schemes; i++) cJSON_AddItemToArray(cs, cJSON_CreateString(s->schemes[i].name));
    cJSON_AddStringToObject(bj, "sensitivity",
                            "proxy: GPTQ's Hessian-weighted output error tr(D H D^T) per unit and scheme (the statistics' Hessians), "
                            "scaled to a KLD by one measured KLD per unit (the unit alone at its smallest scheme) on held-out windows");
    cJSON_AddNumberToObject(bj, "predicted_bits_per_weight", b->bits);
    cJSON_AddNumberToObject(bj, "predicted_bytes", b->bytes);
    cJSON_AddNumberToObject(bj, "predicted_kld", b->pred_kld);
    cJSON_AddNumberToObject(bj, "heldout_kld", b->heldout_kld);
    cJSON_AddNumberToObject(bj, "heldout_windows", s->heldout_windows);
    cJSON_AddNumberToObject(bj, "measure_windows", s->measure_windows);
    cJSON_AddNumberToObject(bj, "unit_windows", s->unit_windows);
    cJSON_AddNumberToObject(bj, "measure_ctx", s->measure_ctx);
    if (o->max_kld > 0) {
        cJSON_AddBoolToObject(bj, "max_kld_met", b->heldout_kld <= o->max_kld);
        cJSON_AddNumberToObject(bj, "solver_kld", b->solver_kld);
    }
    cJSON_AddNumberToObject(bj, "rounds", b->rounds);
    cJSON *pv = cJSON_AddObjectToObject(bj, "proxy_validation");
    cJSON_AddNumberToObject(pv, "units", s->n_validate);
    if (isfinite(s->validate_r)) cJSON_AddNumberToObject(pv, "log_log_r", s->validate_r);
    else cJSON_AddNullToObject(pv, "log_log_r");
    if (isfinite(s->validate_ratio)) cJSON_AddNumberToObject(pv, "median_predicted_over_measured", s->validate_ratio);
    else cJSON_AddNullToObject(pv, "median_predicted_over_measured");
    cJSON_AddNumberToObject(bj, "seconds_proxy", s->seconds_proxy);
    cJSON_AddNumberToObject(bj, "seconds_measure", s->seconds_measure);
    cJSON_AddNumberToObject(bj, "seconds", b->seconds);
    cJSON *us = cJSON_AddArrayToObject(bj, "units");
    for (int u = 0; u < s->n_units; u++) {
        int c = b->choice[u], ns = s->n_schemes;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "unit", s->units[u].name);
        cJSON_AddStringToObject(e, "scheme", s->schemes[c].name);
        cJSON_AddNumberToObject(e, "bytes", s->bytes[(size_t)u * ns + c]);
        cJSON_AddNumberToObject(e, "predicted_kld", s->cost[(size_t)u * ns + c]);
        double k = s->kld[(size_t)u * ns + c];
        if (isfinite(k)) cJSON_AddNumberToObject(e, "measured_kld", k);
        else cJSON_AddNullToObject(e, "measured_kld");
        cJSON_AddStringToObject(e, "source", s->schemes[c].keep ? "kept" : isfinite(k) ? "measured" : "proxy");
        if (s->ref[u] >= 0) {
            cJSON_AddStringToObject(e, "measured_scheme", s->schemes[s->ref[u]].name);
            cJSON_AddNumberToObject(e, "measured_scheme_kld", s->kld[(size_t)u * ns + s->ref[u]]);
        }
        cJSON_AddItemToArray(us, e);
    }
}

sq_status sq_pl_write_report(const sq_qreport *r, sq_outdir *od, sq_err *err) {
    uint64_t calib_hash = r->calib_hash;
    int64_t calib_tokens = r->calib_tokens;
    double total = r->total;
    const sq_quantize_opts *o = r->o;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tool", "spotq");
    cJSON_AddStringToObject(j, "version", SQ_VERSION);
    cJSON_AddStringToObject(j, "command", o->cmdline ? o->cmdline : "");
    cJSON_AddStringToObject(j, "source", o->model);
    cJSON *a = cJSON_AddObjectToObject(j, "arguments");
    cJSON_AddStringToObject(a, "method", sq_method_name(o->method));
    cJSON_AddStringToObject(a, "format", sq_format_name(o->format));
    cJSON_AddNumberToObject(a, "bits", o->q.bits);
    cJSON_AddNumberToObject(a, "group_size", o->q.group_size);
    cJSON_AddBoolToObject(a, "sym", o->q.sym);
    cJSON_AddBoolToObject(a, "act_order", o->q.act_order);
    cJSON_AddBoolToObject(a, "static_groups", o->q.static_groups);
    cJSON_AddNumberToObject(a, "damp", o->q.damp);
    cJSON_AddStringToObject(a, "grid", o->q.grid == SQ_GRID_MSE ? "mse" : "minmax");
    if (r->t.fp8) {
        static const char *int_only[] = {"bits", "group_size", "sym", "static_groups", "act_order", "damp"};
        size_t n_int_only = r->t.gptq ? 4 : 6; /* fp8+gptq keeps GPTQ's act_order and damp */
        for (size_t i = 0; i < n_int_only; i++) cJSON_DeleteItemFromObjectCaseSensitive(a, int_only[i]);
        cJSON_DeleteItemFromObjectCaseSensitive(a, "grid");
        cJSON_AddStringToObject(a, "fp8_scheme", o->fp8_block ? "block" : o->fp8_per_channel ? "channel" : "tensor");
        cJSON_AddStringToObject(a, "act", act_name(o->act));
    }
    if (r->t.fp4) {
        static const char *int_only[] = {"bits", "group_size", "sym", "static_groups", "act_order", "damp"};
        size_t n_int_only = r->t.gptq ? 4 : 6;
        for (size_t i = 0; i < n_int_only; i++) cJSON_DeleteItemFromObjectCaseSensitive(a, int_only[i]);
        cJSON_DeleteItemFromObjectCaseSensitive(a, "grid");
        cJSON_AddStringToObject(a, "fp4", r->scheme.fp4 == SQ_FP4_NV ? "nvfp4" : "mxfp4");
        cJSON_AddNumberToObject(a, "fp4_group_size", r->scheme.group_size);
        cJSON_AddStringToObject(a, "act", act_name(o->act));
    }
    if (r->t.awq) {
        cJSON_AddNumberToObject(j, "awq_fold_max_relative_change", r->fold_max);
        if (r->c->n_experts) cJSON_AddNumberToObject(j, "awq_router_fold_max_relative_change", r->router_fold_max);
        cJSON_AddBoolToObject(a, "awq_duo", o->awq_duo);
        cJSON_AddBoolToObject(a, "awq_clip", o->awq_clip);
        if (o->awq_search_tokens == SQ_AWQ_SEARCH_AUTO) cJSON_AddStringToObject(a, "awq_search_tokens", "auto");
        else cJSON_AddNumberToObject(a, "awq_search_tokens", (double)o->awq_search_tokens);
    }
    if (r->smooth) { /* SmoothQuant: its strength and what it did at each site (smooth.h) */
        const sq_smooth *sm = r->smooth;
        cJSON_AddNumberToObject(a, "smoothquant", sm->alpha);
        cJSON *sj = cJSON_AddObjectToObject(j, "smoothquant");
        cJSON_AddNumberToObject(sj, "alpha", sm->alpha);
        cJSON_AddNumberToObject(sj, "fold_max_relative_change", sm->fold_max);
        if (r->c->n_experts) cJSON_AddNumberToObject(sj, "router_fold_max_relative_change", sm->router_fold_max);
        static const char *site_name[2] = {"q_k_v", "gate_up"};
        cJSON *sites = cJSON_AddArrayToObject(sj, "sites");
        for (int i = 0; i < 2; i++) {
            const sq_smooth_site *st = &sm->site[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "site", site_name[i]);
            cJSON_AddStringToObject(e, "norm", i ? "post_attention_layernorm" : "input_layernorm");
            cJSON_AddNumberToObject(e, "blocks_smoothed", st->blocks);
            cJSON_AddNumberToObject(e, "scale_min", st->blocks ? st->s_min : 0);
            cJSON_AddNumberToObject(e, "scale_max", st->s_max);
            cJSON_AddNumberToObject(e, "act_absmax_max", st->xmax);
            cJSON_AddNumberToObject(e, "act_channel_spread_before", st->spread_before); /* max_j over mean_j of max|x_j|, the largest over blocks */
            cJSON_AddNumberToObject(e, "act_channel_spread_after", st->spread_after);
            cJSON_AddItemToArray(sites, e);
        }
    }
    cJSON *c = cJSON_AddObjectToObject(j, "calibration");
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)calib_hash);
    const sq_stats *st = r->stats; /* --stats: the calibration those statistics came from */
    if (st) cJSON_AddStringToObject(c, "stats", o->stats_in);
    cJSON_AddStringToObject(c, "file", st ? st->calib : o->calib ? o->calib : "");
    cJSON_AddStringToObject(c, "fnv1a64_of_window_ids", st ? st->hash : hex);
    cJSON_AddNumberToObject(c, "text_tokens", st ? (double)st->text_tokens : (double)calib_tokens);
    if (!st && o->calib) { /* each document's BOS, by the tokenizer's own rule */
        if (r->bos_id >= 0) cJSON_AddNumberToObject(c, "bos", r->bos_id);
        else cJSON_AddNullToObject(c, "bos");
        cJSON_AddStringToObject(c, "bos_rule", r->bos_rule);
    }
    cJSON_AddNumberToObject(c, "nsamples", st ? st->nsamples : o->nsamples);
    cJSON_AddNumberToObject(c, "seqlen", st ? st->seqlen : o->seqlen);
    cJSON_AddNumberToObject(c, "seed", st ? (double)st->seed : (double)o->seed);
    cJSON_AddBoolToObject(c, "sequential", !st); /* statistics are of the full-precision model */
    if (r->budget) add_budget(j, r->budget, o);
    cJSON *layers = cJSON_AddArrayToObject(j, "layers");
    for (int i = 0; i < r->nrows; i++) {
        const sq_report_row *p = &r->rows[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", p->name);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)p->n));
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)p->k));
        cJSON_AddBoolToObject(e, "quantized", p->quantized);
        if (p->quantized) {
            cJSON_AddNumberToObject(e, "error_rtn", p->err_rtn);
            cJSON_AddNumberToObject(e, "error", p->err);
            if (r->t.grid_errors) {
                cJSON_AddNumberToObject(e, "error_rtn_minmax", p->err_grid[SQ_GRID_MINMAX]);
                cJSON_AddNumberToObject(e, "error_rtn_mse", p->err_grid[SQ_GRID_MSE]);
            }
            if (r->t.gptq)
                cJSON_AddNumberToObject(e, "damp", p->damp);
            if (p->scheme.kind == SQ_SCHEME_INT) cJSON_AddNumberToObject(e, "group_size", p->scheme.group_size); /* the plan's, per linear */
        }
        if (r->t.awq) cJSON_AddNumberToObject(e, "awq_alpha", p->alpha);
        if (p->act_scale > 0) cJSON_AddNumberToObject(e, "input_scale", p->act_scale);
        if (p->note[0]) cJSON_AddStringToObject(e, "note", p->note);
        cJSON_AddItemToArray(layers, e);
    }
    cJSON_AddItemToObject(j, "kept_in_full_precision", kept_modules(r));
    if (r->serve) { /* spotq check's verdict on this output at tensor parallelism 1 */
        cJSON *v = cJSON_AddObjectToObject(j, "serving");
        cJSON_AddBoolToObject(v, "vllm_loads", r->serve->n_reject == 0);
        cJSON_AddNumberToObject(v, "kernel", r->serve->n_kernel);
        cJSON_AddNumberToObject(v, "fallback", r->serve->n_fallback);
        cJSON_AddNumberToObject(v, "full_precision", r->serve->n_full);
        cJSON_AddNumberToObject(v, "rejected", r->serve->n_reject);
        if (r->serve->n_reject) {
            cJSON_AddStringToObject(v, "first_rejected", r->serve->first_reject.name);
            cJSON_AddStringToObject(v, "rule", r->serve->first_reject.rule);
        }
    }
    if (r->c->n_experts) cJSON_AddItemToObject(j, "moe", moe_report(r));
    cJSON_AddNumberToObject(j, "quantized_weights", (double)r->n_weights_q);
    cJSON_AddNumberToObject(j, "bits_per_quantized_weight", r->n_weights_q ? 8.0 * r->packed_bytes / (double)r->n_weights_q : 0);
    /* the whole checkpoint, every tensor counted, over the source's parameter count */
    cJSON *ck = cJSON_AddObjectToObject(j, "checkpoint");
    cJSON_AddNumberToObject(ck, "parameters", (double)r->src_params);
    cJSON_AddNumberToObject(ck, "bytes", (double)r->out_bytes);
    cJSON_AddNumberToObject(ck, "source_bytes", (double)r->src_bytes);
    cJSON_AddNumberToObject(ck, "bits_per_weight", r->src_params ? 8.0 * (double)r->out_bytes / (double)r->src_params : 0);
    if (o->keep_dtype == SQ_KEEP_BF16) /* --keep-dtype bf16: the F32 matrices written unquantised */
        cJSON_AddStringToObject(ck, "unquantized_matrices_dtype", "BF16");
    cJSON_AddNumberToObject(ck, "source_bits_per_weight", r->src_params ? 8.0 * (double)r->src_bytes / (double)r->src_params : 0);
    cJSON *t = cJSON_AddObjectToObject(j, "seconds");
    cJSON_AddNumberToObject(t, "forward", r->t_forward);
    cJSON_AddNumberToObject(t, "hessian", r->t_hessian);
    cJSON_AddNumberToObject(t, "quantize", r->t_quant);
    cJSON_AddNumberToObject(t, "write", r->t_write);
    cJSON_AddNumberToObject(t, "total", total);
    cJSON *gf = cJSON_AddObjectToObject(j, "gflop"); /* the operations behind those seconds (GEMM-shaped work) */
    cJSON_AddNumberToObject(gf, "forward", r->f_forward / 1e9);
    cJSON_AddNumberToObject(gf, "hessian", r->f_hessian / 1e9);
    cJSON_AddNumberToObject(gf, "quantize", r->f_quant / 1e9);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    cJSON_AddNumberToObject(j, "peak_rss_mib", (double)ru.ru_maxrss / 1024.0);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    if (!out) return sq_fail(err, SQ_ERR_NOMEM, "out of memory printing spotq.json");
    sq_status s = sq_outdir_write(od, "spotq.json", out, err);
    free(out);
    return s;
}
