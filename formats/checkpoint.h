/* checkpoint.h: a model on disk as spotq sees it: where its files are, its config, its tensors, and
 * the tensors its architecture needs (names and shapes), checked before anything runs.
 *
 * MODEL is a Hugging Face directory (config.json, model.safetensors or a sharded index,
 * tokenizer.json) or a single .safetensors file with config.json (and tokenizer.json) beside it. */
#ifndef SQ_CHECKPOINT_H
#define SQ_CHECKPOINT_H

#include "config.h"
#include "safetensors.h"

#define SQ_PATH_MAX 4096

typedef struct {
    char dir[SQ_PATH_MAX];            /* the directory holding config.json */
    char config_path[SQ_PATH_MAX];
    char weights_path[SQ_PATH_MAX];   /* .safetensors file or index */
    char tokenizer_path[SQ_PATH_MAX]; /* empty when there is no tokenizer.json */
    sq_config cfg;
    sq_st *st;                        /* owned */
} sq_ckpt;

/* Resolves MODEL's files, parses config.json, opens and validates the weights. */
sq_status sq_ckpt_open(sq_ckpt **out /* OUT */, const char *model, sq_err *err);
void sq_ckpt_close(sq_ckpt *ck); /* NULL is fine */

/* Calls fn for every tensor the architecture needs in full precision (name, expected shape).
 * Layer-specific names use the HF layout ("model.layers.3.self_attn.q_proj.weight"). Returns the
 * first non-zero value fn returns. */
typedef int (*sq_ckpt_tensor_fn)(const char *name, int ndim, const int64_t *shape, bool is_linear, void *user);
int sq_ckpt_expected_tensors(const sq_config *cfg, sq_ckpt_tensor_fn fn, void *user);

/* What the checkpoint's weights are, for a person or a script: scheme is the dtype for full precision ("F32", "BF16"), else "int4 g64 sym (gptq)",
 * "int8 per-channel asym (compressed-tensors)", "fp8 per-tensor, activations static (fp8)", ...; *params is
 * the parameter count of the architecture (the source's) and *bytes every stored tensor's data (the whole
 * checkpoint, embeddings and norms included): its bits per weight are 8 * bytes / params. */
void sq_ckpt_describe(const sq_ckpt *ck, char *scheme, size_t cap, int64_t *params /* OUT */, int64_t *bytes /* OUT */);

/* Checks that every expected tensor is present with its shape and a float dtype (F32, F16, BF16).
 * Linear weights are skipped for quantised checkpoints (their layout is the format's business). */
sq_status sq_ckpt_check(const sq_ckpt *ck, sq_err *err);
/* A hash of the checkpoint's header (config.json, its tensors' names, dtypes, shapes and files' sizes),
 * continuing from h: what the ranks of an MPI job compare before any work (base/par.h). */
uint64_t sq_ckpt_hash(const sq_ckpt *ck, uint64_t h);

/* A quantised checkpoint's quantization_config against its tensors (qconfig.c): for every linear
 * layer, the bits, group size, symmetry, act-order, checkpoint format and version, FP8 weight and
 * activation scheme the config states must be what the tensors hold, and the config's ignore list
 * (dynamic, modules_to_not_convert, ignored_layers, ignore) must name exactly the linears left in
 * full precision. A mismatch is SQ_ERR_FORMAT naming config.json and the field. Called by
 * sq_ckpt_check; SQ_OK for unquantised checkpoints and methods spotq does not read. */
sq_status sq_ckpt_check_quant(const sq_ckpt *ck, sq_err *err);

#endif
