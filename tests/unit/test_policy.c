/* test_policy.c: sq_quantize_resolve, the rules between quantize's options, called as a library caller
 * would (no CLI): AWQ 4-bit only and asymmetric, act-order with static groups where the format stores
 * no g_idx, the format of awq and fp8 under SQ_FORMAT_AUTO, the grid default, the calibration each
 * method needs; each refusal one line naming the option; a second call on the result a no-op. */
#include <string.h>

#include "../../quant/pipeline.h"
#include "check.h"

static sq_quantize_opts base(sq_method m) {
    return (sq_quantize_opts){.model = "M", .out = "O", .calib = "C", .method = m, .format = SQ_FORMAT_AUTO,
                              .q = {.bits = 4, .group_size = 128, .sym = true, .damp = 0.01, .block_size = 128}};
}

/* resolve o, expecting a refusal whose message contains want (NULL: success) */
static void expect(sq_quantize_opts o, const char *want, const char *what) {
    sq_err err = {0};
    sq_status s = sq_quantize_resolve(&o, &err);
    if (!want) CHECK(s == SQ_OK, "%s: %s", what, err.msg);
    else {
        CHECK(s != SQ_OK && strstr(err.msg, want), "%s: got '%s' (status %d), want '%s'", what, err.msg, (int)s, want);
        CHECK(!strchr(err.msg, '\n'), "%s: one line", what);
    }
}

/* resolve o twice: the second call changes nothing */
static sq_quantize_opts resolved(sq_quantize_opts o, const char *what) {
    sq_err err = {0};
    CHECK_OK(sq_quantize_resolve(&o, &err), &err);
    sq_quantize_opts again = o;
    CHECK_OK(sq_quantize_resolve(&again, &err), &err);
    CHECK(again.format == o.format && again.q.sym == o.q.sym && again.q.static_groups == o.q.static_groups && again.q.grid == o.q.grid &&
              again.grid_auto == o.grid_auto && again.q.bits == o.q.bits,
          "%s: a second resolve changed the options", what);
    return o;
}

int main(void) {
    sq_log_set(NULL, NULL, SQ_LOG_ERROR); /* the choices said through sq_log stay quiet here */
    /* AWQ: 4-bit only (its packer holds nibbles), asymmetric whatever sym says, AWQ GEMM by default */
    sq_quantize_opts o = base(SQ_METHOD_AWQ);
    o.q.bits = 8;
    expect(o, "--format awq is 4-bit only", "awq 8-bit");
    o = resolved(base(SQ_METHOD_AWQ), "awq");
    CHECK(o.format == SQ_FORMAT_AWQ && !o.q.sym, "awq: format %d sym %d", (int)o.format, (int)o.q.sym);
    o = resolved(base(SQ_METHOD_AWQ_GPTQ), "awq+gptq");
    CHECK(o.format == SQ_FORMAT_AWQ && o.q.sym, "awq+gptq keeps sym: format %d sym %d", (int)o.format, (int)o.q.sym);
    o = base(SQ_METHOD_AWQ_GPTQ);
    o.format = SQ_FORMAT_CT, o.q.bits = 8;
    expect(o, NULL, "awq+gptq 8-bit compressed-tensors");
    /* act-order: static groups where the format stores no g_idx, not in GPTQ v1 */
    for (int f = 0; f < 2; f++) {
        o = base(SQ_METHOD_GPTQ);
        o.format = f ? SQ_FORMAT_CT : SQ_FORMAT_GPTQ, o.q.act_order = true;
        o = resolved(o, "act-order");
        CHECK(o.q.static_groups == (f == 1), "act-order with format %d: static_groups %d", (int)o.format, (int)o.q.static_groups);
    }
    o = base(SQ_METHOD_AWQ);
    o.q.act_order = true;
    CHECK(resolved(o, "awq act-order").q.static_groups, "awq act-order: static groups");
    o = base(SQ_METHOD_FP8); /* fp8 has no groups: act_order is GPTQ's column order there */
    o.q.act_order = true, o.act = SQ_ACT_DYNAMIC;
    CHECK(!resolved(o, "fp8 act-order").q.static_groups, "fp8 act-order: no static groups");
    /* the fp8 format: vLLM's where it holds the scheme, else compressed-tensors */
    o = base(SQ_METHOD_FP8);
    o.act = SQ_ACT_STATIC;
    CHECK(resolved(o, "fp8 static").format == SQ_FORMAT_FP8, "fp8 static: vLLM's fp8");
    o = base(SQ_METHOD_FP8_GPTQ);
    CHECK(resolved(o, "fp8 weight-only").format == SQ_FORMAT_CT, "fp8 weight-only: compressed-tensors");
    o = base(SQ_METHOD_FP8);
    o.act = SQ_ACT_DYNAMIC, o.fp8_per_channel = true;
    CHECK(resolved(o, "fp8 per channel").format == SQ_FORMAT_CT, "fp8 per channel: compressed-tensors");
    o.format = SQ_FORMAT_FP8;
    expect(o, "use --format compressed-tensors for per-channel scales", "fp8 per channel in vLLM's format");
    o = base(SQ_METHOD_FP8);
    o.format = SQ_FORMAT_AWQ;
    expect(o, "--method fp8 writes --format fp8 or compressed-tensors", "fp8 as awq");
    o = base(SQ_METHOD_RTN);
    o.format = SQ_FORMAT_FP8;
    expect(o, "--format fp8: use gptq, awq or compressed-tensors", "rtn as fp8");
    o = base(SQ_METHOD_GPTQ);
    o.act = SQ_ACT_STATIC;
    expect(o, "--fp8-scheme and --act apply to --method fp8", "gptq with --act");
    /* block-wise FP8: activations dynamic by default (act_auto) and only dynamic; vLLM's fp8 format by default */
    o = base(SQ_METHOD_FP8);
    o.fp8_block = true, o.act_auto = true;
    sq_quantize_opts ob = resolved(o, "fp8 block");
    CHECK(ob.act == SQ_ACT_DYNAMIC && ob.format == SQ_FORMAT_FP8 && !ob.act_auto, "fp8 block: dynamic activations, vLLM's fp8");
    o = base(SQ_METHOD_FP8_GPTQ);
    o.fp8_block = true, o.act_auto = true, o.format = SQ_FORMAT_CT;
    CHECK(resolved(o, "fp8+gptq block ct").act == SQ_ACT_DYNAMIC, "fp8+gptq block in compressed-tensors: dynamic");
    o = base(SQ_METHOD_FP8);
    o.fp8_block = true, o.act = SQ_ACT_STATIC;
    expect(o, "--fp8-scheme block runs its activations dynamic per token and group of 128", "fp8 block static");
    o = base(SQ_METHOD_FP8);
    o.fp8_block = true, o.act = SQ_ACT_NONE; /* --act none given */
    expect(o, "drop --act none or use --act dynamic", "fp8 block weight-only");
    o = base(SQ_METHOD_GPTQ);
    o.fp8_block = true;
    expect(o, "--fp8-scheme and --act apply to --method fp8", "gptq with --fp8-scheme block");
    o = base(SQ_METHOD_FP8);
    o.act_auto = true; /* act_auto alone leaves per-tensor FP8 as it was: weight-only, compressed-tensors */
    CHECK(resolved(o, "fp8 act auto").act == SQ_ACT_NONE, "fp8 without --act: weight-only");
    /* rtn and gptq keep SQ_FORMAT_AUTO: chosen with the model */
    CHECK(resolved(base(SQ_METHOD_GPTQ), "gptq auto").format == SQ_FORMAT_AUTO, "gptq: the format waits for the model");
    /* the grid default: mse where it runs */
    o = base(SQ_METHOD_GPTQ);
    o.grid_auto = true;
    CHECK(resolved(o, "gptq grid").q.grid == SQ_GRID_MSE, "gptq: mse");
    o = base(SQ_METHOD_AWQ);
    o.grid_auto = true;
    CHECK(resolved(o, "awq grid").q.grid == SQ_GRID_MINMAX, "awq: its own grid");
    o = base(SQ_METHOD_RTN);
    o.grid_auto = true, o.q.bits = 8, o.calib = NULL;
    CHECK(resolved(o, "rtn8 data-free grid").q.grid == SQ_GRID_MINMAX, "8-bit rtn without data: minmax");
    o = base(SQ_METHOD_AWQ);
    o.q.grid = SQ_GRID_MSE;
    expect(o, "--grid mse applies to rtn, gptq and awq+gptq", "awq mse");
    /* the calibration each method needs */
    o = base(SQ_METHOD_GPTQ);
    o.calib = NULL;
    expect(o, "--method gptq needs --calib FILE", "gptq without data");
    o.stats_in = "S";
    expect(o, NULL, "gptq from statistics");
    o = base(SQ_METHOD_AWQ);
    o.calib = NULL, o.stats_in = "S";
    expect(o, "--stats replaces --calib", "awq from statistics");
    o = base(SQ_METHOD_FP8);
    o.calib = NULL, o.act = SQ_ACT_STATIC;
    expect(o, "--method fp8 --act static needs --calib FILE", "fp8 static without data");
    o.act = SQ_ACT_DYNAMIC;
    expect(o, NULL, "fp8 dynamic data-free");
    o = base(SQ_METHOD_RTN);
    o.calib = NULL;
    expect(o, NULL, "rtn data-free");
    /* the numbers */
    o = base(SQ_METHOD_RTN);
    o.q.bits = 3;
    expect(o, "--bits 3: spotq writes 4 or 8 bits", "3 bits");
    o.q.bits = 4, o.q.group_size = 7;
    expect(o, "--group-size 7: use -1", "group 7");
    o.q.group_size = 32, o.q.damp = 0;
    expect(o, "--damp must be positive", "damp 0");
    o = base((sq_method)42);
    expect(o, "--method 42", "an unknown method");
    return check_report("test_policy");
}
