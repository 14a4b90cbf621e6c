/* config.h: a Hugging Face config.json turned into a model description. */
#ifndef SQ_CONFIG_H
#define SQ_CONFIG_H

#include "../base/base.h"
#include "qscheme.h"

typedef enum {
    SQ_ARCH_LLAMA, SQ_ARCH_MISTRAL, SQ_ARCH_QWEN2, SQ_ARCH_MIXTRAL, SQ_ARCH_QWEN2_MOE, SQ_ARCH_QWEN3_MOE,
    SQ_ARCH_COUNT
} sq_arch;

typedef enum { SQ_ROPE_NONE, SQ_ROPE_LLAMA3, SQ_ROPE_LINEAR } sq_rope_type;

/* How a checkpoint's activations are quantised at run time (FP8): not at all, with a stored input_scale,
 * or with a scale computed per token or per tensor as they come. */
typedef enum { SQ_QACT_NONE, SQ_QACT_STATIC, SQ_QACT_DYNAMIC_TOKEN, SQ_QACT_DYNAMIC_TENSOR, SQ_QACT_DYNAMIC_GROUP } sq_quant_act;

/* Layers mlp_only_layers can name (the deepest released MoE models have under 100). */
#define SQ_CONFIG_MAX_LAYERS 512

typedef struct {
    sq_arch arch;
    char model_type[32];
    int hidden;              /* hidden_size */
    int intermediate;        /* intermediate_size (dense FFN width) */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;            /* head_dim, or hidden / n_heads when absent */
    int vocab;
    int max_pos;             /* max_position_embeddings */
    float norm_eps;          /* rms_norm_eps */
    double rope_theta;
    struct {
        sq_rope_type type;
        double factor, low_freq_factor, high_freq_factor;
        int original_max_pos;
    } rope_scaling;
    /* Sliding-window attention: the window in positions (0: none), and the layers that use it
     * (Mistral/Mixtral: all; Qwen: from max_window_layers on when use_sliding_window; or layer_types) */
    int sliding_window;
    uint64_t sliding[SQ_CONFIG_MAX_LAYERS / 64];
    bool tied_embeddings;
    bool attn_bias;          /* q/k/v biases (qwen2 always; llama attention_bias) */
    bool mlp_bias;
    int bos_id, eos_id;      /* -1 when absent; eos_id is the first when config lists several */
    int n_eos;
    int eos_ids[8];
    /* MoE (n_experts == 0 for dense models) */
    int n_experts;           /* num_local_experts (mixtral) / num_experts (qwen) */
    int n_experts_per_tok;
    int moe_intermediate;    /* moe_intermediate_size (qwen), else intermediate */
    int shared_expert_intermediate; /* shared_expert_intermediate_size (qwen2_moe), 0 if none */
    bool norm_topk_prob;
    int decoder_sparse_step; /* qwen MoE: every Nth layer is sparse (1 = all) */
    uint64_t mlp_only[SQ_CONFIG_MAX_LAYERS / 64]; /* qwen MoE: mlp_only_layers (dense), as bits */
    /* An existing quantization_config */
    sq_format quant_method;      /* the format quantization_config.quant_method names (SQ_FORMAT_NONE: none) */
    char quant_method_name[32];
    int quant_bits, quant_group_size;
    bool quant_sym, quant_desc_act;
    char quant_format[32];   /* compressed-tensors' format ("pack-quantized", "float-quantized"), else "" */
    /* fp8: activation_scheme "static" or "dynamic" (vLLM runs dynamic per token on Hopper);
     * compressed-tensors: the first config group's input_activations (null: none) */
    sq_quant_act quant_act;
    int quant_act_group;     /* SQ_QACT_DYNAMIC_GROUP: inputs per activation scale (compressed-tensors' group_size; vLLM's fp8: block_k) */
    /* FP8 block-wise weights: vLLM's fp8 weight_block_size, compressed-tensors' weights.block_structure
     * ([rows, cols] = [block_n, block_k]); 0 when the weights are not block-wise */
    int quant_block_n, quant_block_k;
} sq_config;

const char *sq_arch_name(sq_arch a);

/* The sliding window of layer l's attention (0: it sees every earlier position). */
int sq_config_window(const sq_config *c, int l);

/* Whether layer l's FFN is a mixture of experts (Mixtral: every layer; Qwen: every decoder_sparse_step-th
 * layer not in mlp_only_layers), or a dense MLP of width intermediate. */
bool sq_config_moe_layer(const sq_config *c, int l);

/* Parses config.json text (path is for messages). */
sq_status sq_config_parse(sq_config *cfg /* OUT */, const char *json, size_t len, const char *path, sq_err *err);
/* Reads and parses a config.json file. */
sq_status sq_config_load(sq_config *cfg /* OUT */, const char *path, sq_err *err);

#endif
