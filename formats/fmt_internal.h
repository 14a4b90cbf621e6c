/* fmt_internal.h: what the format table's rows share (format.c): checked views of a linear's tensors,
 * scale tensors in any float dtype, the integer formats' shape rule, E4M3 weights. */
#ifndef SQ_FMT_INTERNAL_H
#define SQ_FMT_INTERNAL_H

#include "format.h"

/* src's tensor "<module>.<suffix>", NULL when absent. */
const sq_tensor *sq_fmt_tensor(const sq_tensor_src *src, const char *module, const char *suffix);
/* The tensor with that dtype and shape ([d0] or [d0, d1]), aligned, or an error naming it. */
sq_status sq_fmt_need(const sq_tensor_src *src, const char *module, const char *suffix, sq_dtype dt, int ndim, int64_t d0, int64_t d1,
                      const sq_tensor **out, sq_err *err);
/* A [d0, d1] scale tensor in F16, BF16 or F32. *f16 is what an unpacker reads: the tensor itself when
 * it is F16, else zeros (*zeros, the caller frees) that sq_fmt_put_scales fills after unpacking. */
sq_status sq_fmt_need_scale(const sq_tensor_src *src, const char *module, const char *suffix, int64_t d0, int64_t d1, const sq_tensor **out,
                            const uint16_t **f16, uint16_t **zeros, sq_err *err);
/* The exact scales of a BF16/F32 tensor t into qm->scale [G, N]; t is [G, N], or [N, G] when n_major. */
sq_status sq_fmt_put_scales(const sq_tensor *t, bool n_major, sq_qmatrix *qm, sq_err *err);
/* After an unpack: a failure reworded to name the weights and the module. */
sq_status sq_fmt_unpacked(const sq_tensor_src *src, const char *module, sq_status unpacked, sq_err *err);
/* Writes "<module>.<suffix>" ([d0, d1] cut to nd dimensions). */
sq_status sq_fmt_add(const sq_tensor_sink *out, const char *module, const char *suffix, sq_dtype dt, int nd, int64_t d0, int64_t d1,
                     const void *data, sq_err *err);
/* The packing rule of the integer formats (codes 32/bits to a word along K, zero points along N). */
bool sq_fmt_int_shape(const sq_scheme *s, int64_t n, int64_t k, char *why, size_t cap);
/* E4M3 weights with one scale or one per output row, and a static input_scale when cfg asks for one
 * (vLLM's fp8 and compressed-tensors float-quantized read the same way). */
sq_status sq_fmt_read_e4m3(const sq_tensor_src *src, const char *module, int64_t n, int64_t k, const sq_config *cfg, sq_qlinear *out,
                           sq_err *err);
/* Whether module's weight is an F8_E4M3 tensor. */
bool sq_fmt_has_e4m3(const sq_tensor_src *src, const char *module);

/* The compressed-tensors quantization_config as its writers share it: sq_fmt_ct_open gives quant_method,
 * format fmt, status compressed and config_groups.group_0 with targets ["Linear"] (in *g0), for the row
 * to add its weights and input_activations; sq_fmt_ct_close adds group_0's output_activations (null) and
 * format, then the ignore list kept with lm_head first, and kv_cache_scheme (null), and returns q. */
struct cJSON;
struct cJSON *sq_fmt_ct_open(const char *fmt, struct cJSON **g0);
struct cJSON *sq_fmt_ct_close(struct cJSON *q, struct cJSON *g0, const char *fmt, struct cJSON *kept);

/* FP4 (fmt_ct_nvfp4.c, shared with fmt_ct_mxfp4.c): whether variant v's row holds scheme s for an n x k
 * linear; its tensors written and read back (read aliases them); its config; its config checks. */
struct sq_qc;
bool sq_fmt_fp4_shape(const sq_scheme *s, sq_fp4_variant v, int64_t n, int64_t k, char *why, size_t cap);
sq_status sq_fmt_fp4_write(const char *module, const sq_qlinear *l, const sq_tensor_sink *out, double *bytes, sq_err *err);
sq_status sq_fmt_fp4_read(const sq_tensor_src *src, const char *module, sq_fp4_variant v, int64_t n, int64_t k, const sq_config *cfg,
                          sq_qlinear *out, sq_err *err);
struct cJSON *sq_fmt_fp4_config(const sq_scheme *p, struct cJSON *kept);
void sq_fmt_fp4_check(struct sq_qc *x, sq_fp4_variant v, const char *module);

#endif
