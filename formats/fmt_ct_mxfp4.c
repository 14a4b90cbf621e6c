/* fmt_ct_mxfp4.c: compressed-tensors mxfp4-pack-quantized (compressed-tensors 0.20 compressors/mxfp4/base.py,
 * a subclass of the NVFP4 compressor; quantization/utils/mxfp_utils.py): per linear
 *   weight_packed  U8 [N, K / 2]   E2M1 codes, packed as NVFP4's
 *   weight_scale   U8 [N, K / 32]  E8M0 biased exponents e: scale = 2^(e - 127)
 * no global scale; e = 127 + floor(log2(round_to_power_2(amax_g))) - 2 (generate_mx_scales), W = e2m1(q) * 2^(e - 127).
 * Config: the MXFP4A16 preset (weights {num_bits 4, type float, strategy group, group_size 32, symmetric,
 * dynamic false, scale_dtype torch.uint8}); weight-only (see sq_fmt_fp4_shape). The helpers are fmt_ct_nvfp4.c's. */
#include <string.h>

#include "fmt_internal.h"
#include "qcheck.h"

static bool can_hold(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap) { return sq_fmt_fp4_shape(s, SQ_FP4_MX, n, k, why, cap); }

static sq_status write(const sq_scheme *sc, const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err) {
    (void)sc;
    return sq_fmt_fp4_write(module, l, out, bytes, err);
}

static bool holds(const sq_tensor_src *src, const char *module, const sq_config *cfg) {
    const sq_tensor *t = sq_fmt_tensor(src, module, "weight_packed");
    return t && t->dtype == SQ_DT_U8 && cfg->quant_method == SQ_FORMAT_CT && !strcmp(cfg->quant_format, "mxfp4-pack-quantized");
}

static sq_status read(const sq_tensor_src *src, const char *module, int64_t n, int64_t k, const sq_config *cfg, sq_qlinear *out, sq_err *err) {
    return sq_fmt_fp4_read(src, module, SQ_FP4_MX, n, k, cfg, out, err);
}

static bool recognise(const sq_config *cfg) { return cfg->quant_method == SQ_FORMAT_CT && !strcmp(cfg->quant_format, "mxfp4-pack-quantized"); }

static void check(sq_qc *x, const char *module, int64_t N, int64_t K) {
    (void)N, (void)K;
    sq_fmt_fp4_check(x, SQ_FP4_MX, module);
}

const sq_fmt sq_fmt_ct_mxfp4 = {
    .name = "ct-mxfp4", .format = SQ_FORMAT_CT, .kind = SQ_SCHEME_FP4, .fp4 = SQ_FP4_MX, .quant_method = "compressed-tensors", .ct_format = "mxfp4-pack-quantized",
    .can_hold = can_hold, .write = write, .holds = holds, .read = read, .config = sq_fmt_fp4_config, .recognise = recognise,
    .tensors = "MXFP4 weights", .ignores = sq_fmt_ct_ignores, .check_config = sq_fmt_ct_group, .check = check,
};
