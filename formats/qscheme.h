/* qscheme.h: the vocabulary config.json, the format table and the quantiser share: which on-disk format
 * (sq_format, the one enum), how activations run (sq_act), and a quantisation scheme as a plain
 * description (sq_scheme) that a format is asked whether it can hold and writes the config of. */
#ifndef SQ_QSCHEME_H
#define SQ_QSCHEME_H

#include "../base/base.h"

/* The on-disk formats, as `--format` names them and as a checkpoint's quantization_config states them.
 * SQ_FORMAT_CT: compressed-tensors (pack-quantized for integer schemes, float-quantized for FP8).
 * SQ_FORMAT_FP8: vLLM's native fp8. SQ_FORMAT_AUTO: only as a request (rtn, gptq): GPTQ v1 where vLLM's
 * Marlin takes every linear that is quantised, else compressed-tensors pack-quantized.
 * SQ_FORMAT_NONE / SQ_FORMAT_OTHER: only as what a config states: not quantised / a quant_method
 * spotq does not read. */
typedef enum {
    SQ_FORMAT_NONE, SQ_FORMAT_GPTQ, SQ_FORMAT_CT, SQ_FORMAT_AWQ, SQ_FORMAT_FP8, SQ_FORMAT_AUTO, SQ_FORMAT_OTHER
} sq_format;

/* The name --format and spotq.json use ("gptq", "compressed-tensors", "awq", "fp8", "auto"). */
const char *sq_format_name(sq_format f);
/* The format `--format name` asks for; false when no format has that name. */
bool sq_format_parse(const char *name, sq_format *out /* OUT */);
/* The format a config's quant_method names ("gptq", "awq", "compressed-tensors", "fp8"); SQ_FORMAT_OTHER
 * for any other name. */
sq_format sq_format_of_quant_method(const char *quant_method);

/* FP8 activations: kept in float (weight-only), a static per-tensor scale from calibration (max |x| at
 * the linear's input / 448), or per-token scales computed at run time (nothing stored). */
typedef enum { SQ_ACT_NONE, SQ_ACT_STATIC, SQ_ACT_DYNAMIC } sq_act;

/* INT: integer codes; FP8: E4M3; FP4: E2M1 codes in groups along K (the variant in sq_scheme.fp4). */
typedef enum { SQ_SCHEME_INT, SQ_SCHEME_FP8, SQ_SCHEME_FP4 } sq_scheme_kind;

/* The FP4 variants: NVFP4 (groups of 16, E4M3 group scales, an FP32 global scale; compressed-tensors
 * nvfp4-pack-quantized) and MXFP4 (groups of 32, E8M0 power-of-two scales; mxfp4-pack-quantized). */
typedef enum { SQ_FP4_NV, SQ_FP4_MX } sq_fp4_variant;
#define SQ_NVFP4_GROUP 16
#define SQ_MXFP4_GROUP 32

/* The block of block-wise FP8 (DeepSeek-V3 / Qwen3-FP8, compressed-tensors' FP8_BLOCK preset): 128 x 128 weight
 * blocks, activation groups of 128 along K. */
#define SQ_FP8_BLOCK 128

/* What a quantiser stores, whatever method chose the values. */
typedef struct {
    sq_scheme_kind kind;
    int bits;                /* INT: code width; FP8: 8 */
    int group_size;          /* INT: inputs per scale group, -1: one group per output channel */
    bool sym;                /* no zero points (FP8: always) */
    bool act_order;          /* INT: columns quantised in act-order... */
    bool static_groups;      /* ...with groups kept in column order (no g_idx needed) */
    double damp;             /* GPTQ's damping (recorded by configs that state it) */
    bool fp8_per_channel;    /* FP8: one weight scale per output channel; else one per tensor */
    bool fp8_block;          /* FP8: one weight scale per SQ_FP8_BLOCK x SQ_FP8_BLOCK block, activations dynamic per token and group of SQ_FP8_BLOCK */
    sq_act act;              /* FP8: the activations; FP4: none (W4A16) or dynamic (NVFP4 W4A4, per group of 16 with a static global scale) */
    sq_fp4_variant fp4;      /* FP4: NVFP4 or MXFP4 */
} sq_scheme;

/* Whether the scheme stores a g_idx (act-order with groups out of column order). */
static inline bool sq_scheme_g_idx(const sq_scheme *s) { return s->kind == SQ_SCHEME_INT && s->act_order && !s->static_groups; }

#endif
