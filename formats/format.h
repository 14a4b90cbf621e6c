/* format.h: the format table: one row per on-disk quantised-linear format (GPTQ v1, AWQ GEMM,
 * compressed-tensors pack-quantized and float-quantized, vLLM's fp8), each a descriptor plus functions,
 * as ggml's type traits: what it can hold, how it writes one linear and reads it back, the
 * quantization_config it writes and the config it recognises. The quantiser hands a row a quantised
 * linear (codes, scales, zeros, g_idx; or E4M3 codes, scales and an input scale) without saying which
 * method made it; the runtime loads every quantised linear through the row that holds it.
 *
 * Rows: formats/fmt_gptq.c, fmt_awq.c, fmt_ct_pack.c, fmt_ct_float.c, fmt_fp8.c; the table in format.c;
 * bit packing in qpack.c; layouts in FORMATS.md.
 *
 * Adding a format. NVFP4 as issue 14 describes it (compressed-tensors nvfp4-pack-quantized: E2M1 codes
 * in groups of 16, E4M3 group scales, an FP32 global scale) touches, on the format side:
 *   - formats/fmt_ct_nvfp4.c (new): the row: can_hold (kind SQ_SCHEME_FP4, group 16, sym), write
 *     (weight_packed U8 [N, K/2], weight_scale F8_E4M3 [N, K/16], weight_global_scale F32 [1], and
 *     input_global_scale with W4A4), holds/read (the same tensors back into sq_qlinear), config
 *     (config_groups weights type "float", num_bits 4, strategy "tensor_group", group_size 16; format
 *     "nvfp4-pack-quantized"), recognise (quant_format "nvfp4-pack-quantized"), tensors, check (what
 *     the config must state about those tensors); ignores = sq_fmt_ct_ignores and check_config =
 *     sq_fmt_ct_group, compressed-tensors' own;
 *   - formats/format.c: the row in table[] and its extern (two lines);
 *   - formats/qscheme.h: SQ_SCHEME_FP4 in sq_scheme_kind (the group size and sq_act are there already);
 *   - formats/format.h: sq_qlinear's FP4 fields (packed codes, E4M3 group scales, global scale, input
 *     global scale);
 *   - runtime/qlinear.c: the FP4 case of the glue from sq_qlinear to the kernels' weight kind;
 *   - tests/unit/test_formats.c: an FP4 branch of the round trip; tests/fuzz/fuzz_fmt_ct_nvfp4.c and
 *     tests/fuzz/corpus/fmt_ct_nvfp4/ (new, seeds written by the harness).
 * Outside the table, and not format code: the kernel (kernels/, a weight-kind row: be13's area), the
 * method that makes the codes (quant/: a row in method.c stating its scheme kind, which sq_pl_scheme in
 * quant/pipeline_write.c reads, and its quantise hook), vLLM's FP4 kernel rule in serving.c, and the
 * one-line descriptions of a checkpoint's scheme (formats/checkpoint.c sq_ckpt_describe and
 * cmd/cmd_inspect.c, which tell FP8 from integer schemes by quant_format). */
#ifndef SQ_FORMAT_H
#define SQ_FORMAT_H

#include "config.h"
#include "qpack.h"
#include "qscheme.h"
#include "safetensors.h"

struct cJSON;
struct sq_qc;

/* One quantised linear (n = out_features, k = in_features), in format-neutral form. Handed to write()
 * (nothing owned); filled by read() (then owned: sq_qlinear_free). */
typedef struct {
    sq_scheme_kind kind;
    int64_t n, k;
    sq_qmatrix q;            /* INT: codes [K, N], scales, zeros, g_idx */
    const uint8_t *codes;    /* FP8: E4M3 [N, K] (read: aliases the tensor) */
    float *scale;            /* FP8: [1] or [N] (per_channel) */
    bool per_channel;
    float input_scale;       /* FP8: the static activation scale, 0 when none is stored */
    int block_n, block_k;    /* FP8 block-wise (> 0): scale [ceil(N / block_n), ceil(K / block_k)] row-major */
    /* FP4 (read: aliases the tensors): E2M1 codes packed [N, K / 2] (column 2j low nibble), group scales
     * [N, K / group] as E4M3 (NVFP4) or E8M0 (MXFP4) bytes, NVFP4's global scales (the divisors
     * 448 * 6 / amax: weight_global_scale; input_global_scale for W4A4, 0 when none). */
    sq_fp4_variant fp4;
    int group;
    const uint8_t *fp4_packed, *fp4_scale;
    float global_scale, input_global_scale;
} sq_qlinear;
void sq_qlinear_free(sq_qlinear *l); /* read() results; NULL-filled is fine */

/* Where a row reads a linear's tensors from (a checkpoint, a test's list): find returns NULL when
 * absent; path names the weights in messages. */
typedef struct {
    const sq_tensor *(*find)(void *user, const char *name);
    void *user;
    const char *path;
} sq_tensor_src;

/* Where a row writes a linear's tensors (the output's shards, a test's list). */
typedef struct {
    sq_status (*add)(void *user, const char *name, sq_dtype dt, int ndim, const int64_t *shape, const void *data, sq_err *err);
    void *user;
} sq_tensor_sink;

typedef struct sq_fmt {
    const char *name;            /* the row: "gptq", "awq", "ct-pack", "ct-float", "fp8" */
    sq_format format;            /* the --format that writes it... */
    sq_scheme_kind kind;         /* ...for schemes of this kind */
    sq_fp4_variant fp4;          /* ...and, for SQ_SCHEME_FP4, of this variant */
    const char *quant_method;    /* quantization_config.quant_method */
    const char *ct_format;       /* compressed-tensors' format string, NULL for other formats */
    bool several_schemes;        /* its config holds several schemes (config groups, each naming its modules) */
    /* Whether the format holds scheme s for an n x k linear (n = k = 0: the scheme alone); else false
     * and the reason into why. */
    bool (*can_hold)(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap);
    /* Writes linear l (module "model.layers.0.self_attn.q_proj") as the format's tensors; *bytes: the
     * bytes of its quantised tensors (codes, scales, zeros, g_idx) for bits-per-weight figures. */
    sq_status (*write)(const sq_scheme *s, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes,
                       sq_err *err);
    /* Whether module's tensors in src are this format's (cfg: the checkpoint's config). */
    bool (*holds)(const sq_tensor_src *src, const char *module, const sq_config *cfg);
    /* Reads module back as an n x k linear (the shape the architecture expects) into *out. */
    sq_status (*read)(const sq_tensor_src *src, const char *module, int64_t n, int64_t k, const sq_config *cfg, sq_qlinear *out,
                      sq_err *err);
    /* The quantization_config of scheme s; kept: the array of modules left in full precision (taken). */
    struct cJSON *(*config)(const sq_scheme *s, struct cJSON *kept);
    /* Whether a parsed config.json states this format. */
    bool (*recognise)(const sq_config *cfg);
    /* Holding a checkpoint's quantization_config to its tensors (qconfig.c, formats/qcheck.h): what
     * its tensors are, for messages; whether the config leaves module unquantised (*field: the key
     * that says so); the config as a whole before its linears (may be NULL); and what the config must
     * state about module's n x k tensors, a mismatch through sq_qc_bad. */
    const char *tensors;
    bool (*ignores)(const struct cJSON *q, const char *module, const char **field);
    void (*check_config)(struct sq_qc *x);
    void (*check)(struct sq_qc *x, const char *module, int64_t n, int64_t k);
} sq_fmt;

int sq_fmt_count(void);
const sq_fmt *sq_fmt_get(int i);
/* The row that writes --format f for schemes of kind k; NULL for none (SQ_FORMAT_AUTO included). */
const sq_fmt *sq_fmt_for(sq_format f, sq_scheme_kind k);
/* The row that writes --format f for scheme s: of kind s->kind (FP4: and its variant), NULL for none. */
const sq_fmt *sq_fmt_for_scheme(sq_format f, const sq_scheme *s);
/* The row a config states; NULL when none (not quantised, or a format spotq does not read). */
const sq_fmt *sq_fmt_of_config(const sq_config *cfg);
/* The row whose tensors hold module in src, NULL when it is not quantised (a plain .weight). */
const sq_fmt *sq_fmt_of_linear(const sq_tensor_src *src, const char *module, const sq_config *cfg);

#endif
