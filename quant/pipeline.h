/* pipeline.h: `spotq quantize` as a library call: calibrate block by block, quantise every linear
 * layer that fits, and write the output directory (GPTQ v1 or compressed-tensors) atomically. */
#ifndef SQ_PIPELINE_H
#define SQ_PIPELINE_H

#include "../formats/qscheme.h"
#include "qopts.h"

/* Output shards hold at most this much tensor data by default (4 GiB). */
#define SQ_DEFAULT_SHARD_BYTES (4ll << 30)

/* The rules that tie the options together, as one check (zstd's parameter checks are the model):
 * returns SQ_OK with the choices made in *o (AWQ's grid asymmetric; act-order with static groups where
 * the format stores no g_idx; the format of awq and fp8 under SQ_FORMAT_AUTO, each choice said once
 * through sq_log), or a one-line error naming the option. Calling it again on its result changes
 * nothing and says nothing. sq_quantize_model applies it first. */
sq_status sq_quantize_resolve(sq_quantize_opts *o, sq_err *err);

/* Calibrates (o->calib, or the statistics of o->stats_in), quantises and writes o->out. */
sq_status sq_quantize_model(const sq_quantize_opts *o, sq_err *err);

const char *sq_method_name(sq_method m);
/* The method `--method name` asks for (the method table's names); false when none has that name. */
bool sq_method_parse(const char *name, sq_method *out /* OUT */);

#endif
