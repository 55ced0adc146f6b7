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

// qwen3_moe by hand: V=64, D=16, F=32 (dense layers), L=4, heads 4 x hd 8 (not 16/4), kv heads 2,
// E=4, k=2, expert F=12, decoder_sparse_step 2 (layers 1 and 3 sparse), untied embeddings.
//   attention per layer: q 32*16 + k 16*16 + v 16*16 + o 16*32 = 1536; q_norm + k_norm 2*8 = 16;
//   layer norms 2*16 = 32                                               -> 1584
//   dense layer: 1584 + FFN 3*32*16 = 1536                               -> 3120
//   MoE layer: 1584 + router 4*16 = 64 + experts 4 * 3*12*16 = 2304       -> 3952
//   total = 2*3120 + 2*3952 + embed 1024 + lm_head 1024 + final norm 16 = 16208
//   active = total - 2 MoE layers * (4-2) unchosen experts * 576 = 13904
TEST(Inspect, Qwen3MoeCountsIncludeQkNormsAndOnlyItsSparseLayers) {
  CheckpointSummary s = summarizeCheckpoint(test::fixtures() / "models/qwen3_moe");
  EXPECT_EQ(s.totalParams, 16208);
  EXPECT_EQ(s.activeParams, 13904);
  EXPECT_EQ(s.layout, "qwen3-moe");
  EXPECT_EQ(s.config.architecture(), "Qwen3MoeForCausalLM");
  auto j = inspectJson(inspectPath(test::fixtures() / "models/qwen3_moe"));
  for (const char* key : {"\"architecture\": \"Qwen3MoeForCausalLM\"", "\"qk_norm\": true",
                          "\"head_dim\": 8", "\"shared_expert_intermediate_size\": 0"})
    EXPECT_NE(j.find(key), std::string::npos) << key << "\n" << j;
  EXPECT_NE(j.find("\"moe_layers\": [\n    1,\n    3\n  ]"), std::string::npos) << j;
  const std::string text = inspectText(inspectPath(test::fixtures() / "models/qwen3_moe"));
  EXPECT_NE(text.find("Qwen3MoeForCausalLM (qwen3-moe)"), std::string::npos) << text;
  EXPECT_NE(text.find("head_dim 8, q/k norm"), std::string::npos) << text;
  EXPECT_NE(text.find("2/4 MoE layers"), std::string::npos) << text;
}

// qwen3_qknorm dense: V=64, D=32, F=48, L=2, heads 4 x hd 16 (not 32/4), kv heads 2, tied.
//   per layer: q 64*32 + k 32*32 + v 32*32 + o 32*64 = 6144; q/k norms 2*16 = 32; layer norms 64;
//   FFN 3*48*32 = 4608 -> 10848; total = 2*10848 + embed 2048 + final norm 32 = 23776.
TEST(Inspect, Qwen3DenseCounts) {
  CheckpointSummary s = summarizeCheckpoint(test::fixtures() / "models/qwen3_qknorm");
  EXPECT_EQ(s.totalParams, 23776);
  EXPECT_EQ(s.activeParams, 23776);
  EXPECT_EQ(s.layout, "dense");
  EXPECT_EQ(s.config.architecture(), "Qwen3ForCausalLM");
  EXPECT_TRUE(s.config.qkNorm);
}
