// Streaming conversion (layer by layer, straight to disk) against the in-memory methods + saveModel:
// the same tensors, bit for bit, for sparse and Drop-Upcycling, f32 and bf16, sharded in and out.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "formats/checkpoint_files.h"
#include "model/model_io.h"
#include "test_util.h"
#include "upcycle/methods.h"
#include "upcycle/stream_convert.h"

using namespace upcycle;
using upcycle::test::TempDir;

namespace {

struct Case {
  const char* fixture;
  const char* method;
  double ratio;
  bool shared;
  int64_t expertFf;
  uint64_t maxShard;
  int64_t layerFreq = 1;  // > 1: Qwen3-MoE with dense layers in between
};

}  // namespace

TEST(StreamConvert, SameTensorsAsTheInMemoryMethods) {
  const Case cases[] = {
      {"llama_gqa", "sparse", 0, false, 0, 5ull << 30},
      {"llama_gqa", "drop", 0.5, false, 0, 5ull << 30},
      {"llama_bf16", "drop", 0.5, true, 0, 5ull << 30},
      {"llama_sharded", "drop", 0.25, false, 0, 20000},
      {"mistral_window", "drop", 1.0, false, 0, 5ull << 30},
      {"llama_gqa", "drop", 0.5, false, 16, 5ull << 30},
      {"llama_tied_rope_linear", "sparse", 0, false, 0, 5ull << 30},
      {"qwen3_qknorm", "sparse", 0, false, 0, 5ull << 30},
      {"qwen3_qknorm", "drop", 0.5, false, 0, 20000, 2},
      {"qwen3_qknorm", "drop", 0.5, true, 24, 5ull << 30},
      {"qwen3_qknorm", "sparse", 0, false, 0, 5ull << 30, 2},
      // Qwen2 bases become Qwen2-MoE (q/k/v biases copied, tied embeddings).
      {"qwen2_bias_tied", "sparse", 0, false, 0, 5ull << 30},
      {"qwen2_bias_tied", "drop", 0.5, false, 0, 20000},
      {"qwen2_bias_tied", "drop", 0.5, true, 0, 5ull << 30, 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.fixture) + " " + c.method + " freq " + std::to_string(c.layerFreq));
    TempDir dir;
    const auto base = test::fixtures() / "models" / c.fixture;
    const MoeShape shape{4, 2, c.layerFreq, c.expertFf};
    ASSERT_TRUE(canStreamConvert(loadHfConfig(base), c.method, shape, "mixtral-hub"));
    // In memory: load, convert, save.
    {
      DecoderLM dense = loadModel(base);
      torch::Generator gen = at::detail::createCPUGenerator(7);
      DecoderLM moe = std::string(c.method) == "sparse" ? sparseUpcycle(*dense, shape, "uniform_std002", gen)
                                                        : dropUpcycle(*dense, shape, "uniform_std002", c.ratio, c.shared, gen);
      saveModel(moe, dir / "memory");
    }
    StreamConvertOptions o;
    o.base = base;
    o.out = dir / "stream";
    o.method = c.method;
    o.shape = shape;
    o.ratio = c.ratio;
    o.sharedIndices = c.shared;
    o.seed = 7;
    o.maxShardBytes = c.maxShard;
    const ModelConfig mc = streamConvert(o);
    EXPECT_EQ(mc.numExperts, 4);
    test::expectSameTensors(dir / "memory", dir / "stream");
    if (c.maxShard < 1000000) {
      EXPECT_TRUE(std::filesystem::exists(dir / "stream/model.safetensors.index.json"));
    }
    // The written folder loads as the MoE it claims to be.
    DecoderLM back = loadModel(dir / "stream");
    EXPECT_EQ(back->config().numExperts, 4);
  }
}

TEST(StreamConvert, OnlyWhereTheLayoutAllows) {
  ModelConfig llama;
  llama.modelType = "llama";
  llama.intermediateSize = 64;
  EXPECT_TRUE(canStreamConvert(llama, "drop", MoeShape{8, 2, 1, 0}, "mixtral-hub"));
  EXPECT_FALSE(canStreamConvert(llama, "drop", MoeShape{8, 2, 2, 0}, "mixtral-hub")) << "every other layer: qwen2_moe";
  EXPECT_FALSE(canStreamConvert(llama, "drop", MoeShape{8, 2, 1, 0}, "mixtral-fused"));
  EXPECT_FALSE(canStreamConvert(llama, "noise", MoeShape{8, 2, 1, 0}, "mixtral-hub"));
  EXPECT_FALSE(canStreamConvert(llama, "sparse", MoeShape{8, 2, 1, 32}, "mixtral-hub"));
  // Qwen2 bases become Qwen2-MoE in its own layout, like Qwen3 below.
  ModelConfig qwen = llama;
  qwen.modelType = "qwen2";
  EXPECT_TRUE(canStreamConvert(qwen, "sparse", MoeShape{8, 2, 1, 0}, "mixtral-hub"));
  EXPECT_TRUE(canStreamConvert(qwen, "drop", MoeShape{8, 2, 2, 0}, "mixtral-fused"));
  EXPECT_FALSE(canStreamConvert(qwen, "noise", MoeShape{8, 2, 1, 0}, "mixtral-hub"));
  // Qwen3 bases become Qwen3-MoE in its own layout: any layer frequency, whatever --layout says.
  ModelConfig qwen3 = llama;
  qwen3.modelType = "qwen3";
  EXPECT_TRUE(canStreamConvert(qwen3, "sparse", MoeShape{8, 2, 2, 0}, "mixtral-hub"));
  EXPECT_TRUE(canStreamConvert(qwen3, "drop", MoeShape{8, 2, 1, 16}, "mixtral-fused"));
  EXPECT_FALSE(canStreamConvert(qwen3, "noise", MoeShape{8, 2, 1, 0}, "mixtral-hub"));
  EXPECT_FALSE(canStreamConvert(qwen3, "sparse", MoeShape{8, 2, 1, 32}, "mixtral-hub"));
}

// A bf16 base stays bf16, byte for byte: every tensor that is copied (embeddings, attention with its
// biases, norms) is the source's bytes, and sparse upcycling's experts are the dense FFN's bytes. The
// source tensors are read from the files, not from our loader.
TEST(StreamConvert, Bf16BaseKeepsItsBytes) {
  TempDir dir;
  const auto base = test::fixtures() / "models/llama_bf16";
  const ModelConfig dc = loadHfConfig(base);
  ASSERT_EQ(dc.dtype, DType::BF16);
  StreamConvertOptions o;
  o.base = base;
  o.out = dir / "sparse";
  o.method = "sparse";
  o.shape = MoeShape{4, 2, 1, 0};
  o.seed = 3;
  streamConvert(o);
  CheckpointFiles src(base), out(dir / "sparse");
  auto sameBytes = [](const TensorView& a, const TensorView& b) {
    return a.dtype == b.dtype && a.nbytes == b.nbytes && std::memcmp(a.data, b.data, a.nbytes) == 0;
  };
  for (const auto& n : out.names()) EXPECT_EQ(out.tensor(n).dtype, DType::BF16) << n;
  int64_t copied = 0, experts = 0;
  for (const auto& n : src.names()) {
    const auto pos = n.find(".mlp.");
    if (pos == std::string::npos) {
      EXPECT_TRUE(sameBytes(src.tensor(n), out.tensor(n))) << n;
      ++copied;
      continue;
    }
    // model.layers.L.mlp.{gate,up,down}_proj.weight -> block_sparse_moe.experts.E.{w1,w3,w2}.weight
    const std::string layer = n.substr(0, pos + 1);
    const std::string w = n.find("gate_proj") != std::string::npos ? "w1" : n.find("up_proj") != std::string::npos ? "w3" : "w2";
    for (int e = 0; e < 4; ++e) {
      const std::string en = layer + "block_sparse_moe.experts." + std::to_string(e) + "." + w + ".weight";
      EXPECT_TRUE(sameBytes(src.tensor(n), out.tensor(en))) << en;
      ++experts;
    }
  }
  EXPECT_GT(copied, 0);
  EXPECT_EQ(experts, 4 * 3 * dc.numLayers);

  // Drop-Upcycling: every neuron of an expert is either a dense neuron's bytes (its permuted row)
  // or re-drawn; with r = 0.5, exactly half of each gate's rows are some dense row's exact bytes.
  o.out = dir / "drop";
  o.method = "drop";
  o.ratio = 0.5;
  streamConvert(o);
  CheckpointFiles drop(dir / "drop");
  const auto& dg = src.tensor("model.layers.0.mlp.gate_proj.weight");  // (F, D) bf16
  const int64_t F = dg.shape[0], D = dg.shape[1], rowBytes = D * 2;
  for (int e = 0; e < 4; ++e) {
    const auto& g = drop.tensor("model.layers.0.block_sparse_moe.experts." + std::to_string(e) + ".w1.weight");
    ASSERT_EQ(g.dtype, DType::BF16);
    int64_t kept = 0;
    for (int64_t r = 0; r < F; ++r)
      for (int64_t q = 0; q < F; ++q)
        if (std::memcmp(g.data + r * rowBytes, dg.data + q * rowBytes, rowBytes) == 0) {
          ++kept;
          break;
        }
    EXPECT_EQ(kept, F - static_cast<int64_t>(std::floor(0.5 * F + 1e-9))) << "expert " << e;
  }
}
