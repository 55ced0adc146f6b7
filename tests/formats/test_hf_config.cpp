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
  for (const char* name : {"llama_tied_rope_linear", "qwen2_moe_shared", "mixtral_hub", "mistral_window"}) {
    ModelConfig a = parseHfConfig(test::readBytes(test::fixtures() / "models" / name / "config.json"), name);
    ModelConfig b = parseHfConfig(hfConfigJson(a), "written");
    EXPECT_EQ(b.modelType, a.modelType) << name;
    EXPECT_EQ(b.hiddenSize, a.hiddenSize) << name;
    EXPECT_EQ(b.intermediateSize, a.intermediateSize) << name;
    EXPECT_EQ(b.numKvHeads, a.numKvHeads) << name;
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
