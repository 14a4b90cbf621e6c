/* test_config.c: config.json of each supported family -> sq_config, and the errors for bad ones. */
#include <string.h>

#include "../../formats/config.h"
#include "check.h"

static sq_status parse(sq_config *c, const char *json, sq_err *err) { return sq_config_parse(c, json, strlen(json), "config.json", err); }

static void test_families(void) {
    sq_config c;
    sq_err err = {0};
    /* Llama-3.1-8B's fields */
    const char *llama3 =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":4096,\"intermediate_size\":14336,"
        "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":128256,"
        "\"max_position_embeddings\":131072,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"rope_scaling\":{\"factor\":8.0,"
        "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
        "\"tie_word_embeddings\":false,\"attention_bias\":false,\"mlp_bias\":false,\"bos_token_id\":128000,"
        "\"eos_token_id\":[128001,128008,128009],\"torch_dtype\":\"bfloat16\"}";
    CHECK_OK(parse(&c, llama3, &err), &err);
    CHECK(c.arch == SQ_ARCH_LLAMA && c.hidden == 4096 && c.intermediate == 14336 && c.n_layers == 32 && c.n_heads == 32 &&
              c.n_kv_heads == 8 && c.head_dim == 128 && c.vocab == 128256 && c.max_pos == 131072, "llama3 sizes");
    CHECK(c.rope_theta == 500000.0 && c.rope_scaling.type == SQ_ROPE_LLAMA3 && c.rope_scaling.factor == 8.0 &&
              c.rope_scaling.low_freq_factor == 1.0 && c.rope_scaling.high_freq_factor == 4.0 && c.rope_scaling.original_max_pos == 8192,
          "llama3 rope");
    CHECK(!c.tied_embeddings && !c.attn_bias && c.bos_id == 128000 && c.eos_id == 128001 && c.n_eos == 3 && c.eos_ids[2] == 128009,
          "llama3 ids");
    CHECK(c.n_experts == 0 && c.quant_method == SQ_FORMAT_NONE, "llama3 dense");

    const char *mistral = "{\"model_type\":\"mistral\",\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,"
                          "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":32768,\"rms_norm_eps\":1e-05,"
                          "\"rope_theta\":1000000.0,\"head_dim\":128,\"sliding_window\":null,\"tie_word_embeddings\":false,"
                          "\"bos_token_id\":1,\"eos_token_id\":2}";
    CHECK_OK(parse(&c, mistral, &err), &err);
    CHECK(c.arch == SQ_ARCH_MISTRAL && c.head_dim == 128 && c.rope_theta == 1e6 && c.max_pos == 2048, "mistral");

    const char *qwen2 = "{\"model_type\":\"qwen2\",\"hidden_size\":896,\"intermediate_size\":4864,\"num_hidden_layers\":24,"
                        "\"num_attention_heads\":14,\"num_key_value_heads\":2,\"vocab_size\":151936,\"rms_norm_eps\":1e-06,"
                        "\"rope_theta\":1000000.0,\"tie_word_embeddings\":true,\"bos_token_id\":151643,\"eos_token_id\":151645,"
                        "\"max_position_embeddings\":32768}";
    CHECK_OK(parse(&c, qwen2, &err), &err);
    CHECK(c.arch == SQ_ARCH_QWEN2 && c.attn_bias && c.tied_embeddings && c.head_dim == 64 && c.n_kv_heads == 2, "qwen2");

    const char *mixtral = "{\"model_type\":\"mixtral\",\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,"
                          "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":32000,\"rms_norm_eps\":1e-05,"
                          "\"rope_theta\":1000000.0,\"num_local_experts\":8,\"num_experts_per_tok\":2,\"bos_token_id\":1,"
                          "\"eos_token_id\":2}";
    CHECK_OK(parse(&c, mixtral, &err), &err);
    CHECK(c.arch == SQ_ARCH_MIXTRAL && c.n_experts == 8 && c.n_experts_per_tok == 2 && c.moe_intermediate == 14336 && c.norm_topk_prob,
          "mixtral");

    const char *qwen2moe = "{\"model_type\":\"qwen2_moe\",\"hidden_size\":2048,\"intermediate_size\":5632,\"num_hidden_layers\":24,"
                           "\"num_attention_heads\":16,\"num_key_value_heads\":16,\"vocab_size\":151936,\"rms_norm_eps\":1e-06,"
                           "\"num_experts\":60,\"num_experts_per_tok\":4,\"moe_intermediate_size\":1408,"
                           "\"shared_expert_intermediate_size\":5632,\"norm_topk_prob\":false,\"decoder_sparse_step\":1}";
    CHECK_OK(parse(&c, qwen2moe, &err), &err);
    CHECK(c.arch == SQ_ARCH_QWEN2_MOE && c.n_experts == 60 && c.n_experts_per_tok == 4 && c.moe_intermediate == 1408 &&
              c.shared_expert_intermediate == 5632 && !c.norm_topk_prob && c.attn_bias && c.bos_id == -1,
          "qwen2_moe");

    const char *qwen3moe = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":2048,\"num_hidden_layers\":48,\"num_attention_heads\":32,"
                           "\"num_key_value_heads\":4,\"head_dim\":128,\"vocab_size\":151936,\"rms_norm_eps\":1e-06,"
                           "\"num_experts\":128,\"num_experts_per_tok\":8,\"moe_intermediate_size\":768,\"norm_topk_prob\":true,"
                           "\"intermediate_size\":6144,\"attention_bias\":false}";
    CHECK_OK(parse(&c, qwen3moe, &err), &err);
    CHECK(c.arch == SQ_ARCH_QWEN3_MOE && c.n_experts == 128 && c.norm_topk_prob && c.head_dim == 128 && !c.attn_bias &&
              c.shared_expert_intermediate == 0,
          "qwen3_moe");
    CHECK(sq_config_moe_layer(&c, 0) && sq_config_moe_layer(&c, 47) && !sq_config_moe_layer(&c, -1), "qwen3_moe: every layer sparse");

    /* which layers are sparse: every decoder_sparse_step-th, less mlp_only_layers; Mixtral all; dense none */
    const char *stepped = "{\"model_type\":\"qwen2_moe\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":6,"
                          "\"num_attention_heads\":4,\"vocab_size\":32,\"rms_norm_eps\":1e-06,\"num_experts\":4,"
                          "\"num_experts_per_tok\":2,\"moe_intermediate_size\":32,\"decoder_sparse_step\":2,\"mlp_only_layers\":[3]}";
    CHECK_OK(parse(&c, stepped, &err), &err);
    CHECK(!sq_config_moe_layer(&c, 0) && sq_config_moe_layer(&c, 1) && !sq_config_moe_layer(&c, 2) && !sq_config_moe_layer(&c, 3) &&
              !sq_config_moe_layer(&c, 4) && sq_config_moe_layer(&c, 5),
          "decoder_sparse_step 2 with mlp_only_layers [3]: sparse layers 1 and 5");
    CHECK_OK(parse(&c, qwen2moe, &err), &err);
    CHECK(sq_config_moe_layer(&c, 23), "qwen2_moe: sparse");

    const char *gptq = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":172,\"num_hidden_layers\":5,"
                       "\"num_attention_heads\":8,\"vocab_size\":512,\"rms_norm_eps\":1e-05,\"quantization_config\":{"
                       "\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":128,\"desc_act\":true,\"sym\":true}}";
    CHECK_OK(parse(&c, gptq, &err), &err);
    CHECK(c.quant_method == SQ_FORMAT_GPTQ && c.quant_bits == 4 && c.quant_group_size == 128 && c.quant_sym && c.quant_desc_act &&
              c.n_kv_heads == 8,
          "gptq quantization_config");
    CHECK(!sq_config_moe_layer(&c, 0), "llama: dense");

    /* transformers 5: rope_parameters holds rope_theta and the scaling; it wins over top-level keys */
    const char *v5 = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                     "\"num_attention_heads\":4,\"vocab_size\":32,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"rope_parameters\":"
                     "{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":8.0,\"low_freq_factor\":1.0,"
                     "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}";
    CHECK_OK(parse(&c, v5, &err), &err);
    CHECK(c.rope_theta == 500000.0 && c.rope_scaling.type == SQ_ROPE_LLAMA3 && c.rope_scaling.factor == 8.0 &&
              c.rope_scaling.original_max_pos == 8192,
          "rope_parameters: theta %g type %d", c.rope_theta, (int)c.rope_scaling.type);
    const char *v5d = "{\"model_type\":\"mistral\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":3,"
                      "\"num_attention_heads\":4,\"vocab_size\":32,\"rms_norm_eps\":1e-05,\"sliding_window\":4096,"
                      "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000000.0}}";
    CHECK_OK(parse(&c, v5d, &err), &err);
    CHECK(c.rope_theta == 1e6 && c.rope_scaling.type == SQ_ROPE_NONE, "rope_parameters default: theta %g", c.rope_theta);
    CHECK(sq_config_window(&c, 0) == 4096 && sq_config_window(&c, 2) == 4096, "mistral: every layer slides");

    /* Qwen: sliding only with use_sliding_window, from max_window_layers on, or as layer_types says */
    const char *qw = "{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":4,"
                     "\"num_attention_heads\":4,\"vocab_size\":32,\"rms_norm_eps\":1e-06,\"sliding_window\":32,"
                     "\"use_sliding_window\":true,\"max_window_layers\":2}";
    CHECK_OK(parse(&c, qw, &err), &err);
    CHECK(sq_config_window(&c, 0) == 0 && sq_config_window(&c, 1) == 0 && sq_config_window(&c, 2) == 32 && sq_config_window(&c, 3) == 32,
          "qwen2: layers 2 and 3 slide");
    const char *qt = "{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":3,"
                     "\"num_attention_heads\":4,\"vocab_size\":32,\"rms_norm_eps\":1e-06,\"sliding_window\":32,"
                     "\"use_sliding_window\":true,\"layer_types\":[\"sliding_attention\",\"full_attention\",\"sliding_attention\"]}";
    CHECK_OK(parse(&c, qt, &err), &err);
    CHECK(sq_config_window(&c, 0) == 32 && sq_config_window(&c, 1) == 0 && sq_config_window(&c, 2) == 32, "qwen2: layer_types");
    const char *qoff = "{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":3,"
                       "\"num_attention_heads\":4,\"vocab_size\":32,\"rms_norm_eps\":1e-06,\"sliding_window\":32,"
                       "\"use_sliding_window\":false}";
    CHECK_OK(parse(&c, qoff, &err), &err);
    CHECK(sq_config_window(&c, 2) == 0, "qwen2 without use_sliding_window: no window");
    CHECK_OK(parse(&c, gptq, &err), &err);
    CHECK(sq_config_window(&c, 0) == 0, "llama: no window");
}

static void test_errors(void) {
    struct { const char *json, *want; } cases[] = {
        {"{\"model_type\":\"gpt2\"}", "config.json: unknown architecture 'gpt2'"},
        {"{\"hidden_size\":4}", "missing field 'model_type'"},
        {"{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"num_attention_heads\":2,\"vocab_size\":8,\"rms_norm_eps\":1e-5,"
         "\"intermediate_size\":8}", "missing field 'hidden_size'"},
        {"{\"model_type\":\"llama\",\"hidden_size\":\"64\",\"num_hidden_layers\":2,\"num_attention_heads\":2,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"intermediate_size\":8}", "field 'hidden_size' must be an integer >= 1"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"num_key_value_heads\":3,"
         "\"vocab_size\":8,\"rms_norm_eps\":1e-5,\"intermediate_size\":8}", "not a multiple of num_key_value_heads 3"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"intermediate_size\":8,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
         "rope_scaling type 'yarn' is not supported"},
        {"{\"model_type\":\"mixtral\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"intermediate_size\":8,\"num_experts_per_tok\":2}", "missing field 'num_local_experts'"},
        {"{\"model_type\":\"llama\",", "config.json: not valid JSON"},
        {"[]", "not a JSON object"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"intermediate_size\":8,\"bos_token_id\":9}", "outside the vocabulary"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":0,\"intermediate_size\":8}", "rms_norm_eps must be positive"},
        {"{\"model_type\":\"qwen2_moe\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":8,\"mlp_only_layers\":[1.5]}",
         "'mlp_only_layers' holds a value that is not a layer index"},
        {"{\"model_type\":\"qwen2_moe\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":8,\"mlp_only_layers\":[0]}",
         "missing field 'intermediate_size' (a layer has a dense MLP)"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"intermediate_size\":8,\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4,\"rope_theta\":1e4}}",
         "rope_parameters type 'yarn' is not supported"},
        {"{\"model_type\":\"mistral\",\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":8,\"vocab_size\":8,"
         "\"rms_norm_eps\":1e-5,\"intermediate_size\":8,\"sliding_window\":4,\"layer_types\":[\"full_attention\",\"chunked\"]}",
         "layer_types must list"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sq_config c;
        sq_err err = {0};
        sq_status r = parse(&c, cases[i].json, &err);
        CHECK(r != SQ_OK && strstr(err.msg, cases[i].want), "case %zu: want '%s', got '%s'", i, cases[i].want, err.msg);
    }
}

int main(void) {
    test_families();
    test_errors();
    return check_report("test_config");
}
