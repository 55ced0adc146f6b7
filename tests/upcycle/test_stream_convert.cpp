// Streaming conversion (layer by layer, straight to disk) against the in-memory methods + saveModel:
// the same tensors, bit for bit, for sparse and Drop-Upcycling, f32 and bf16, sharded in and out.
#include <gtest/gtest.h>
#include <torch/torch.h>

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
};

}  // namespace

TEST(StreamConvert, SameTensorsAsTheInMemoryMethods) {
  const Case cases[] = {
      {"llama_gqa", "sparse", 0, false, 0, 5ull << 30},     {"llama_gqa", "drop", 0.5, false, 0, 5ull << 30},
      {"llama_bf16", "drop", 0.5, true, 0, 5ull << 30},     {"llama_sharded", "drop", 0.25, false, 0, 20000},
      {"mistral_window", "drop", 1.0, false, 0, 5ull << 30}, {"llama_gqa", "drop", 0.5, false, 16, 5ull << 30},
      {"llama_tied_rope_linear", "sparse", 0, false, 0, 5ull << 30},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.fixture) + " " + c.method);
    TempDir dir;
    const auto base = test::fixtures() / "models" / c.fixture;
    const MoeShape shape{4, 2, 1, c.expertFf};
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
  ModelConfig qwen = llama;
  qwen.modelType = "qwen2";
  EXPECT_FALSE(canStreamConvert(qwen, "sparse", MoeShape{8, 2, 1, 0}, "mixtral-hub"));
}
