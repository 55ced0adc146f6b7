#include "core/error.h"
#include "formats/hf_config.h"
#include "formats/trainer_outputs.h"
#include "test_util.h"

using namespace upcycle;

namespace {
const char* kLlama = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,
  "hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,
  "hidden_act":"silu","rms_norm_eps":1e-05,"max_position_embeddings":4096,"torch_dtype":"float16",
  "bos_token_id":1,"eos_token_id":2,"tie_word_embeddings":false,"rope_scaling":null})";

std::string with(const std::string& base, const std::string& extra) {
  return base.substr(0, base.size() - 1) + "," + extra + "}";
}
}  // namespace

TEST(HfConfig, LlamaDefaultsFollowTransformers) {
  ModelConfig c = parseHfConfig(kLlama, "config.json");
  EXPECT_EQ(c.modelType, "llama");
  EXPECT_EQ(c.numKvHeads, 32);    // absent = num_attention_heads
  EXPECT_EQ(c.headDim, 128);      // absent = hidden / heads
  EXPECT_DOUBLE_EQ(c.ropeTheta, 10000.0);
  EXPECT_EQ(c.dtype, DType::F16);
  EXPECT_FALSE(c.attentionBias);
  EXPECT_FALSE(c.isMoe());
  EXPECT_EQ(*c.eosTokenId, 2);
  EXPECT_EQ(c.architecture(), "LlamaForCausalLM");
}

TEST(HfConfig, Qwen2HasAttentionBiasAndListEos) {
  ModelConfig c = parseHfConfig(
      R"({"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
          "num_attention_heads":2,"num_key_value_heads":1,"eos_token_id":[5,6],"tie_word_embeddings":true})",
      "q.json");
  EXPECT_TRUE(c.attentionBias);
  EXPECT_TRUE(c.tieWordEmbeddings);
  EXPECT_EQ(*c.eosTokenId, 5);
  EXPECT_EQ(c.numKvHeads, 1);
}

TEST(HfConfig, MixtralAndQwen2MoeFields) {
  ModelConfig m = parseHfConfig(test::readBytes(test::fixtures() / "models/mixtral_hub/config.json"), "m");
  EXPECT_EQ(m.numExperts, 4);
  EXPECT_EQ(m.topK, 2);
  EXPECT_EQ(m.expertIntermediateSize, 48);
  EXPECT_TRUE(m.normTopkProb);
  EXPECT_DOUBLE_EQ(m.routerAuxLossCoef, 0.02);
  EXPECT_EQ(m.moeLayers, (std::vector<bool>{true, true}));

  ModelConfig q = parseHfConfig(test::readBytes(test::fixtures() / "models/qwen2_moe_shared/config.json"), "q");
  EXPECT_EQ(q.expertIntermediateSize, 24);
  EXPECT_EQ(q.sharedExpertIntermediateSize, 40);
  EXPECT_FALSE(q.normTopkProb);
  EXPECT_EQ(q.moeLayers, (std::vector<bool>{true, false, true}));  // mlp_only_layers = [1]
}

TEST(HfConfig, DecoderSparseStepSelectsEveryOtherLayer) {
  ModelConfig q = parseHfConfig(
      R"({"model_type":"qwen2_moe","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":4,
          "num_attention_heads":2,"num_experts":4,"num_experts_per_tok":1,"moe_intermediate_size":8,
          "decoder_sparse_step":2})",
      "q");
  EXPECT_EQ(q.moeLayers, (std::vector<bool>{false, true, false, true}));
}

namespace {
// Modelled on Qwen3-0.6B's config.json (the keys transformers' Qwen3Config writes), no token ids.
const char* kQwen3 =
    R"({"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
  "head_dim":128,"hidden_act":"silu","hidden_size":1024,"initializer_range":0.02,"intermediate_size":3072,
  "max_position_embeddings":40960,"max_window_layers":28,"model_type":"qwen3","num_attention_heads":16,
  "num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,
  "rope_theta":1000000,"sliding_window":null,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
  "use_cache":true,"use_sliding_window":false,"vocab_size":151936})";
}  // namespace

TEST(HfConfig, Qwen3HasQkNormAndItsOwnHeadDim) {
  ModelConfig c = parseHfConfig(kQwen3, "config.json");
  EXPECT_EQ(c.modelType, "qwen3");
  EXPECT_EQ(c.architecture(), "Qwen3ForCausalLM");
  EXPECT_EQ(c.headDim, 128);  // not 1024 / 16 = 64: q_proj is (16 * 128, 1024) = (2048, 1024)
  EXPECT_EQ(c.numHeads * c.headDim, 2048);
  EXPECT_TRUE(c.qkNorm);
  EXPECT_FALSE(c.attentionBias);
  EXPECT_TRUE(c.tieWordEmbeddings);
  EXPECT_EQ(c.slidingWindow, 0);
  EXPECT_DOUBLE_EQ(c.ropeTheta, 1e6);
  EXPECT_FALSE(c.isMoe());
  // head_dim absent: Qwen3Config's default, 128, not hidden / heads.
  std::string noHeadDim = kQwen3;
  noHeadDim.replace(noHeadDim.find("\"head_dim\":128,"), 15, "");
  EXPECT_EQ(parseHfConfig(noHeadDim, "c").headDim, 128);
  // Other families keep hidden / heads.
  EXPECT_EQ(parseHfConfig(kLlama, "c").headDim, 128);
  EXPECT_FALSE(parseHfConfig(kLlama, "c").qkNorm);
  // transformers v5 spells rope_theta inside rope_parameters.
  ModelConfig v5 = parseHfConfig(
      with(kQwen3, R"("rope_parameters":{"rope_type":"default","rope_theta":5000000})"), "c");
  EXPECT_DOUBLE_EQ(v5.ropeTheta, 5e6);
}

TEST(HfConfig, Qwen3MoeFieldsAndTheSparseLayerRule) {
  ModelConfig a =
      parseHfConfig(test::readBytes(test::fixtures() / "models/qwen3_moe/config.json"), "a");
  EXPECT_EQ(a.architecture(), "Qwen3MoeForCausalLM");
  EXPECT_TRUE(a.qkNorm);
  EXPECT_EQ(a.headDim, 8);  // != 16 / 4
  EXPECT_EQ(a.numExperts, 4);
  EXPECT_EQ(a.topK, 2);
  EXPECT_EQ(a.expertIntermediateSize, 12);
  EXPECT_EQ(a.intermediateSize, 32);  // the dense layers' FFN
  EXPECT_EQ(a.sharedExpertIntermediateSize, 0);
  EXPECT_FALSE(a.normTopkProb);
  EXPECT_DOUBLE_EQ(a.routerAuxLossCoef, 0.001);
  EXPECT_EQ(a.moeLayout, MoeLayout::Qwen2Moe);
  EXPECT_EQ(a.moeLayers, (std::vector<bool>{false, true, false, true}));  // decoder_sparse_step 2

  ModelConfig b = parseHfConfig(
      test::readBytes(test::fixtures() / "models/qwen3_moe_mlp_only/config.json"), "b");
  EXPECT_TRUE(b.normTopkProb);
  EXPECT_EQ(b.moeLayers, (std::vector<bool>{false, true, true}));  // mlp_only_layers [0]

  // transformers: layer i is sparse iff i not in mlp_only_layers and (i + 1) % step == 0.
  // 7 layers, step 3, mlp_only [5]: (i+1) % 3 == 0 for i = 2, 5; 5 is dense -> only layer 2.
  ModelConfig c = parseHfConfig(
      R"({"model_type":"qwen3_moe","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":7,
          "num_attention_heads":2,"num_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":8,
          "decoder_sparse_step":3,"mlp_only_layers":[5],"shared_expert_intermediate_size":32})",
      "c");
  EXPECT_EQ(c.moeLayers, (std::vector<bool>{false, false, true, false, false, false, false}));
  EXPECT_EQ(c.headDim, 4);  // qwen3_moe's config has no head_dim default: hidden / heads
  EXPECT_EQ(c.sharedExpertIntermediateSize, 0) << "Qwen3-MoE has no shared expert";
  EXPECT_FALSE(c.normTopkProb);  // transformers' default
}

TEST(HfConfig, OtherFamiliesAreRefusedListingTheSupportedOnes) {
  test::TempDir dir;
  for (const char* type :
       {"gemma", "gemma2", "gemma3", "phi", "phi3", "deepseek_v2", "deepseek_v3", "qwen3_next"}) {
    test::writeBytes(dir / "config.json", std::string(R"({"model_type":")") + type +
                                              R"(","vocab_size":10,"hidden_size":8})");
    test::expectErrorContaining(
        [&] { loadHfConfig(dir.path()); },
        {(dir / "config.json").string(),
         std::string("model_type \"") + type + "\" is not supported",
         "supported model types: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe"});
  }
}

TEST(HfConfig, Qwen3RefusesWhatItCannotRun) {
  test::expectErrorContaining(
      [] { parseHfConfig(with(kQwen3, R"("attention_bias":true)"), "c.json"); },
      {"c.json", "attention_bias = true is not supported for qwen3"});
  test::expectErrorContaining(
      [] { parseHfConfig(with(kQwen3, R"("use_sliding_window":true)"), "c.json"); },
      {"c.json", "use_sliding_window = true is not supported for qwen3"});
  test::expectErrorContaining(
      [] {
        parseHfConfig(with(kQwen3, R"("layer_types":["full_attention","sliding_attention"])"),
                      "c.json");
      },
      {"layer_types entry \"sliding_attention\""});
  test::expectErrorContaining(
      [] {
        parseHfConfig(with(kQwen3, R"("rope_parameters":{"rope_type":"yarn","factor":4.0})"),
                      "c.json");
      },
      {"rope_parameters type \"yarn\" is not supported"});
  // A list of full-attention layers (what transformers >= 4.53 writes) is fine.
  EXPECT_NO_THROW(parseHfConfig(
      with(kQwen3, R"("layer_types":["full_attention","full_attention"])"), "c.json"));
}

TEST(HfConfig, RefusalsNameTheKey) {
  test::expectErrorContaining([] { parseHfConfig(with(kLlama, R"("rope_scaling":{"type":"yarn","factor":4})"), "c.json"); },
                              {"c.json", "rope_scaling type \"yarn\" is not supported"});
  test::expectErrorContaining([] { parseHfConfig(with(kLlama, R"("hidden_act":"gelu")"), "c.json"); },
                              {"hidden_act \"gelu\""});
  test::expectErrorContaining([] { parseHfConfig(with(kLlama, R"("mlp_bias":true)"), "c.json"); }, {"mlp_bias"});
  test::expectErrorContaining([] { parseHfConfig(R"({"model_type":"gpt2"})", "c.json"); }, {"model_type \"gpt2\""});
  test::expectErrorContaining([] { parseHfConfig(R"({"model_type":"llama","vocab_size":3})", "c.json"); },
                              {"missing required key \"hidden_size\""});
  test::expectErrorContaining([] { parseHfConfig(with(kLlama, R"("num_key_value_heads":5)"), "c.json"); },
                              {"num_key_value_heads (5)"});
  test::expectErrorContaining([] { parseHfConfig("{not json", "c.json"); }, {"c.json", "not valid JSON"});
  test::expectErrorContaining([] { parseHfConfig(with(kLlama, R"("torch_dtype":"int8")"), "c.json"); },
                              {"torch_dtype", "int8"});
  test::expectErrorContaining(
      [] {
        parseHfConfig(R"({"model_type":"mixtral","vocab_size":10,"hidden_size":8,"intermediate_size":16,
          "num_hidden_layers":1,"num_attention_heads":2,"num_local_experts":4,"num_experts_per_tok":5})", "m.json");
      },
      {"num_experts_per_tok (5)", "number of experts (4)"});
}

TEST(HfConfig, WrittenConfigReadsBackTheSame) {
  for (const char* name : {"llama_tied_rope_linear", "qwen2_moe_shared", "mixtral_hub",
                           "mistral_window", "qwen3_qknorm", "qwen3_moe", "qwen3_moe_mlp_only"}) {
    ModelConfig a = parseHfConfig(test::readBytes(test::fixtures() / "models" / name / "config.json"), name);
    ModelConfig b = parseHfConfig(hfConfigJson(a), "written");
    EXPECT_EQ(b.modelType, a.modelType) << name;
    EXPECT_EQ(b.hiddenSize, a.hiddenSize) << name;
    EXPECT_EQ(b.intermediateSize, a.intermediateSize) << name;
    EXPECT_EQ(b.numKvHeads, a.numKvHeads) << name;
    EXPECT_EQ(b.headDim, a.headDim) << name;
    EXPECT_EQ(b.qkNorm, a.qkNorm) << name;
    EXPECT_EQ(b.tieWordEmbeddings, a.tieWordEmbeddings) << name;
    EXPECT_EQ(b.attentionBias, a.attentionBias) << name;
    EXPECT_EQ(b.slidingWindow, a.slidingWindow) << name;
    EXPECT_DOUBLE_EQ(b.ropeLinearFactor, a.ropeLinearFactor) << name;
    EXPECT_DOUBLE_EQ(b.ropeTheta, a.ropeTheta) << name;
    EXPECT_EQ(b.numExperts, a.numExperts) << name;
    EXPECT_EQ(b.expertIntermediateSize, a.expertIntermediateSize) << name;
    EXPECT_EQ(b.sharedExpertIntermediateSize, a.sharedExpertIntermediateSize) << name;
    EXPECT_EQ(b.normTopkProb, a.normTopkProb) << name;
    EXPECT_EQ(b.moeLayers, a.moeLayers) << name;
  }
}

TEST(TrainerOutputs, ListsCheckpointsWithStepAndLoggedLoss) {
  test::TempDir dir;
  const char* state =
      R"({"global_step":%d,"epoch":%s,"log_history":[{"step":5,"loss":2.5},{"step":10,"loss":2.0},{"step":10,"eval_loss":2.2},{"step":15,"loss":1.5}]})";
  for (auto [step, epoch] : {std::pair<int, const char*>{10, "0.5"}, {15, "0.75"}, {5, "0.25"}}) {
    auto sub = dir / ("checkpoint-" + std::to_string(step));
    std::filesystem::create_directories(sub);
    char buf[400];
    std::snprintf(buf, sizeof buf, state, step, epoch);
    test::writeBytes(sub / "trainer_state.json", buf);
  }
  std::filesystem::create_directories(dir / "runs");       // not a checkpoint
  std::filesystem::create_directories(dir / "checkpoint-x");  // not a checkpoint either
  ASSERT_TRUE(isTrainerOutput(dir.path()));
  auto list = listTrainerCheckpoints(dir.path());
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].step, 5);
  EXPECT_DOUBLE_EQ(*list[0].loss, 2.5);
  EXPECT_EQ(list[1].step, 10);
  EXPECT_DOUBLE_EQ(*list[1].loss, 2.0);
  EXPECT_DOUBLE_EQ(*list[1].epoch, 0.5);
  EXPECT_EQ(list[2].step, 15);
  EXPECT_DOUBLE_EQ(*list[2].loss, 1.5);
}
