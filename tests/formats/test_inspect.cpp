#include "api/inspect.h"
#include "test_util.h"

using namespace upcycle;

// Parameter counts computed by hand from the fixture dimensions:
// V=64, D=32, F=48, L=2, heads 4 x hd 8, kv heads 2, E=4, k=2, untied embeddings.
//   attention per layer: q 32*32 + k 16*32 + v 16*32 + o 32*32 = 3072; norms 2*32 = 64
//   mixtral layer: router 4*32 = 128, experts 4 * 3 * 32*48 = 18432  -> 21696 per layer
//   total = 2*21696 + embed 2048 + lm_head 2048 + final norm 32 = 47520
//   active = total - 2 layers * (4-2) experts * 4608 = 29088
TEST(Inspect, MixtralParameterCountsMatchHandArithmetic) {
  CheckpointSummary s = summarizeCheckpoint(test::fixtures() / "models/mixtral_hub");
  EXPECT_EQ(s.totalParams, 47520);
  EXPECT_EQ(s.activeParams, 29088);
  EXPECT_EQ(s.layout, "mixtral-hub");
  EXPECT_EQ(s.config.architecture(), "MixtralForCausalLM");
  EXPECT_EQ(s.numFiles, 1);
  EXPECT_EQ(s.fileDtypes, (std::vector<std::string>{"F32"}));
}

TEST(Inspect, FusedLayoutIsRecognized) {
  CheckpointSummary s = summarizeCheckpoint(test::fixtures() / "models/mixtral_fused");
  EXPECT_EQ(s.layout, "mixtral-fused");
  EXPECT_EQ(s.totalParams, 47520);
}

// llama_gqa dense: per layer 3072 + 64 + FFN 3*32*48 = 7744; total = 2*7744 + 2048*2 + 32 = 19616.
TEST(Inspect, DenseCountsAndShards) {
  CheckpointSummary s = summarizeCheckpoint(test::fixtures() / "models/llama_sharded");
  EXPECT_EQ(s.totalParams, 19616);
  EXPECT_EQ(s.activeParams, 19616);
  EXPECT_EQ(s.numFiles, 3);
  EXPECT_EQ(s.layout, "dense");
}

TEST(Inspect, JsonHasTheDocumentedKeys) {
  auto j = inspectJson(inspectPath(test::fixtures() / "models/qwen2_moe_shared"));
  for (const char* key : {"\"architecture\": \"Qwen2MoeForCausalLM\"", "\"num_experts\": 4", "\"top_k\": 2",
                          "\"params_total\"", "\"params_active\"", "\"file_bytes\"", "\"moe_layers\""})
    EXPECT_NE(j.find(key), std::string::npos) << key << "\n" << j;
}
