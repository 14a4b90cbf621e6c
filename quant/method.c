/* method.c: the method table: one row per method (rtn, gptq, awq, awq+gptq, fp8, fp8+gptq, int8, int8+gptq). */
#include "method.h"

#include <string.h>

#define INT .scheme = SQ_SCHEME_INT
#define FP8 .scheme = SQ_SCHEME_FP8
#define FP4(v) .scheme = SQ_SCHEME_FP4, .fp4 = v
#define W8A8 .scheme = SQ_SCHEME_W8A8

static const sq_method_row rows[] = {
    {.id = SQ_METHOD_RTN, .format_default = SQ_FORMAT_AUTO, .name = "rtn", .needs = SQ_NEED_HESSIAN, INT, .calib_optional = true, .plan_groups = true,
     .report = {.grid_errors = true}, .quantize = sq_rtn_quantize},
    {.id = SQ_METHOD_GPTQ, .format_default = SQ_FORMAT_AUTO, .name = "gptq", .needs = SQ_NEED_HESSIAN, INT, .gpu = true, .plan_groups = true,
     .report = {.grid_errors = true, .gptq = true}, .quantize = sq_gptq_linear},
    {.id = SQ_METHOD_AWQ, .name = "awq", .needs = SQ_NEED_FEATURES, .own_grid = true, INT, .zero_point = true,
     .format_default = SQ_FORMAT_AWQ, .index_order = true, .keep_at_end = true,
     .report = {.awq = true}, .init = sq_awq_init, .fini = sq_awq_fini, .block_begin = sq_awq_block_begin,
     .stage_hessians = sq_awq_stage_hessians, .quantize = sq_awq_linear, .block_end = sq_awq_block_end,
     .writes_tensor = sq_awq_writes_tensor},
    {.id = SQ_METHOD_AWQ_GPTQ, .name = "awq+gptq", .needs = SQ_NEED_FEATURES, INT, .format_default = SQ_FORMAT_AWQ, .index_order = true, .keep_at_end = true,
    
     .report = {.awq = true, .gptq = true}, .init = sq_awq_init, .fini = sq_awq_fini, .block_begin = sq_awq_block_begin,
     .stage_hessians = sq_awq_stage_hessians, .quantize = sq_awq_gptq_linear, .block_end = sq_awq_block_end,
     .writes_tensor = sq_awq_writes_tensor},
    {.id = SQ_METHOD_FP8, .name = "fp8", .needs = SQ_NEED_HESSIAN | SQ_NEED_ABSMAX, FP8, .own_grid = true, .calib_optional = true,
     .report = {.fp8 = true}, .init = sq_fp8_init, .fini = sq_fp8_fini, .unit_begin = sq_fp8_unit_begin, .quantize = sq_fp8_linear},
    {.id = SQ_METHOD_FP8_GPTQ, .name = "fp8+gptq", .needs = SQ_NEED_HESSIAN | SQ_NEED_ABSMAX, FP8, .own_grid = true,
     .report = {.fp8 = true, .gptq = true}, .init = sq_fp8_init, .fini = sq_fp8_fini, .unit_begin = sq_fp8_unit_begin,
     .quantize = sq_fp8_gptq_linear},
    {.id = SQ_METHOD_NVFP4, .name = "nvfp4", .needs = SQ_NEED_HESSIAN | SQ_NEED_ABSMAX, FP4(SQ_FP4_NV), .own_grid = true, .calib_optional = true,
     .report = {.fp4 = true}, .init = sq_fp4_init, .fini = sq_fp4_fini, .unit_begin = sq_fp4_unit_begin, .quantize = sq_fp4_linear},
    {.id = SQ_METHOD_NVFP4_GPTQ, .name = "nvfp4+gptq", .needs = SQ_NEED_HESSIAN | SQ_NEED_ABSMAX, FP4(SQ_FP4_NV), .own_grid = true,
     .report = {.fp4 = true, .gptq = true}, .init = sq_fp4_init, .fini = sq_fp4_fini, .unit_begin = sq_fp4_unit_begin, .quantize = sq_fp4_gptq_linear},
    {.id = SQ_METHOD_MXFP4, .name = "mxfp4", .needs = SQ_NEED_HESSIAN, FP4(SQ_FP4_MX), .own_grid = true, .calib_optional = true,
     .report = {.fp4 = true}, .init = sq_fp4_init, .fini = sq_fp4_fini, .unit_begin = sq_fp4_unit_begin, .quantize = sq_fp4_linear},
    {.id = SQ_METHOD_MXFP4_GPTQ, .name = "mxfp4+gptq", .needs = SQ_NEED_HESSIAN, FP4(SQ_FP4_MX), .own_grid = true,
     .report = {.fp4 = true, .gptq = true}, .init = sq_fp4_init, .fini = sq_fp4_fini, .unit_begin = sq_fp4_unit_begin, .quantize = sq_fp4_gptq_linear},
    /* INT8 W8A8 (compressed-tensors int-quantized): data-free RTN, or GPTQ on the fixed per-channel grid (CPU) */
    /* INT8 W8A8 with --smoothquant: the block hooks smooth q/k/v and gate/up before the block's stages (smooth.h) */
    {.id = SQ_METHOD_INT8, .name = "int8", .needs = SQ_NEED_HESSIAN, W8A8, .own_grid = true, .calib_optional = true, .smoothquant = true,
     .format_default = SQ_FORMAT_CT, .report = {0}, .init = sq_int8_init, .fini = sq_int8_fini, .block_begin = sq_int8_block_begin,
     .quantize = sq_int8_linear, .block_end = sq_int8_block_end, .writes_tensor = sq_int8_writes_tensor, .report_figures = sq_int8_report_figures},
    {.id = SQ_METHOD_INT8_GPTQ, .name = "int8+gptq", .needs = SQ_NEED_HESSIAN, W8A8, .own_grid = true, .format_default = SQ_FORMAT_CT, .smoothquant = true,
     .report = {.gptq = true}, .init = sq_int8_init, .fini = sq_int8_fini, .block_begin = sq_int8_block_begin, .quantize = sq_int8_gptq_linear,
     .block_end = sq_int8_block_end, .writes_tensor = sq_int8_writes_tensor, .report_figures = sq_int8_report_figures},
};

const sq_method_row *sq_method_row_of(sq_method m) {
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        if (rows[i].id == m) return &rows[i];
    return NULL;
}

bool sq_method_parse(const char *name, sq_method *out) {
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        if (!strcmp(rows[i].name, name)) {
            *out = rows[i].id;
            return true;
        }
    return false;
}

const char *sq_method_name(sq_method m) {
    const sq_method_row *r = sq_method_row_of(m);
    return r ? r->name : "?";
}
