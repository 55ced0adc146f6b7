// Save/load round trips: same bits for the same dtype, every layout, sharded saves.
#include <cstring>

#include "formats/checkpoint_files.h"
#include "model/model_io.h"
#include "test_util.h"

using namespace upcycle;

namespace {

class RoundTrip : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(RoundTrip, SameBitsForTheSameDtype) {
  const auto src = test::fixtures() / "models" / GetParam();
  test::TempDir dir;
  DecoderLM model = loadModel(src);
  SaveOptions opts;
  if (GetParam() == "mixtral_fused") opts.layout = MoeLayout::MixtralFused;
  saveModel(model, dir.path(), opts);
  test::expectSameTensors(src, dir.path());
  ModelConfig a = loadHfConfig(src), b = loadHfConfig(dir.path());
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.modelType, b.modelType);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RoundTrip,
                         ::testing::Values("llama_gqa", "llama_bf16", "qwen2_bias_tied", "mistral_window",
                                           "mixtral_hub", "mixtral_fused", "qwen2_moe_shared"));

TEST(ModelIo, FusedAndHubLayoutsHoldTheSameExperts) {
  // Fused -> hub by our writer; check by hand that hub w1/w3 are the two halves of gate_up_proj.
  test::TempDir dir;
  const auto src = test::fixtures() / "models/mixtral_fused";
  DecoderLM model = loadModel(src);
  saveModel(model, dir.path());  // default: hub layout
  CheckpointFiles fused(src), hub(dir.path());
  const auto& gu = fused.tensor("model.layers.1.mlp.experts.gate_up_proj");  // (E, 2F, D) F32
  const int64_t F = 48, D = 32;
  for (int64_t e = 0; e < 4; ++e) {
    const auto& w1 = hub.tensor("model.layers.1.block_sparse_moe.experts." + std::to_string(e) + ".w1.weight");
    const auto& w3 = hub.tensor("model.layers.1.block_sparse_moe.experts." + std::to_string(e) + ".w3.weight");
    const unsigned char* base = gu.data + e * 2 * F * D * 4;
    EXPECT_EQ(std::memcmp(w1.data, base, F * D * 4), 0) << e;
    EXPECT_EQ(std::memcmp(w3.data, base + F * D * 4, F * D * 4), 0) << e;
  }
  EXPECT_TRUE(hub.contains("model.layers.0.block_sparse_moe.gate.weight"));
}

TEST(ModelIo, ShardedSaveReloadsIdentically) {
  test::TempDir dir;
  const auto src = test::fixtures() / "models/llama_gqa";
  DecoderLM model = loadModel(src);
  SaveOptions opts;
  opts.maxShardBytes = 20000;
  saveModel(model, dir.path(), opts);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_GT(CheckpointFiles(dir.path()).files().size(), 2u);
  test::expectSameTensors(src, dir.path());
}

TEST(ModelIo, SavingInAnotherDtypeRoundsToThatDtype) {
  test::TempDir dir;
  DecoderLM model = loadModel(test::fixtures() / "models/llama_gqa");
  SaveOptions opts;
  opts.dtype = DType::BF16;
  saveModel(model, dir.path(), opts);
  EXPECT_EQ(loadHfConfig(dir.path()).dtype, DType::BF16);
  CheckpointFiles f(dir.path());
  const auto& v = f.tensor("model.norm.weight");
  EXPECT_EQ(v.dtype, DType::BF16);
  // bf16 is the top half of the float32 bits, rounded to nearest even.
  float x = model->model->norm->weight[0].item<float>();
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  uint32_t rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
  uint16_t stored;
  std::memcpy(&stored, v.data, 2);
  EXPECT_EQ(stored, rounded);
}

TEST(ModelIo, MissingTensorAndWrongShapeAreNamed) {
  test::TempDir dir;
  const auto src = test::fixtures() / "models/llama_gqa";
  std::filesystem::copy_file(src / "config.json", dir / "config.json");
  // Copy every tensor but one.
  CheckpointFiles f(src);
  std::vector<TensorWrite> w;
  for (const auto& n : f.names())
    if (n != "model.layers.1.self_attn.k_proj.weight") {
      const auto& v = f.tensor(n);
      w.push_back({n, v.dtype, v.shape, v.data});
    }
  writeCheckpointTensors(dir.path(), w);
  test::expectErrorContaining([&] { loadModel(dir.path()); },
                              {"missing tensor \"model.layers.1.self_attn.k_proj.weight\"", dir.path().string()});
  // A wrong shape.
  const auto& k = f.tensor("model.layers.1.self_attn.k_proj.weight");
  w.push_back({"model.layers.1.self_attn.k_proj.weight", k.dtype, {8, 64}, k.data});
  writeCheckpointTensors(dir.path(), w);
  test::expectErrorContaining([&] { loadModel(dir.path()); },
                              {"\"model.layers.1.self_attn.k_proj.weight\" has shape [8, 64], expected [16, 32]"});
  // An unexpected tensor.
  w.back().shape = {16, 32};
  float extra = 0;
  w.push_back({"model.layers.0.mlp.extra.weight", DType::F32, {1}, &extra});
  writeCheckpointTensors(dir.path(), w);
  test::expectErrorContaining([&] { loadModel(dir.path()); }, {"unexpected tensor \"model.layers.0.mlp.extra.weight\""});
}

TEST(ModelIo, Float16WeightsRoundTripExactly) {
  test::TempDir dir;
  DecoderLM model = loadModel(test::fixtures() / "models/mixtral_hub");
  SaveOptions f16;
  f16.dtype = DType::F16;
  saveModel(model, dir / "a", f16);
  EXPECT_EQ(loadHfConfig(dir / "a").dtype, DType::F16);
  DecoderLM reloaded = loadModel(dir / "a");  // f16 -> f32 is exact, so f32 -> f16 gives the same bits
  saveModel(reloaded, dir / "b");             // default: the config's torch_dtype (float16)
  test::expectSameTensors(dir / "a", dir / "b");
  EXPECT_EQ(CheckpointFiles(dir / "b").tensor("model.norm.weight").dtype, DType::F16);
}
