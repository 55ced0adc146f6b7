// Save/load round trips: same bits for the same dtype, every layout, sharded saves.
#include <algorithm>
#include <cstring>

#include "api/models.h"
#include "data/tokenizer.h"
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
                         ::testing::Values("llama_gqa", "llama_bf16", "qwen2_bias_tied",
                                           "mistral_window", "mixtral_hub", "mixtral_fused",
                                           "qwen2_moe_shared", "qwen3_qknorm", "qwen3_moe",
                                           "qwen3_moe_mlp_only"));

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

TEST(ModelIo, Qwen3MoeIsWrittenWithHfNamesExactly) {
  // The names transformers' Qwen3MoeForCausalLM has, listed from the config by the sparse-layer
  // rule (decoder_sparse_step 2: layers 1 and 3), against what our writer produces.
  test::TempDir dir;
  DecoderLM model = loadModel(test::fixtures() / "models/qwen3_moe");
  saveModel(model, dir.path());
  std::vector<std::string> expected = {"model.embed_tokens.weight", "model.norm.weight",
                                       "lm_head.weight"};
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n :
         {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
          "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
          "self_attn.q_norm.weight", "self_attn.k_norm.weight"})
      expected.push_back(p + n);
    if (l % 2 == 1) {
      expected.push_back(p + "mlp.gate.weight");
      for (int e = 0; e < 4; ++e)
        for (const char* w : {"gate_proj", "up_proj", "down_proj"})
          expected.push_back(p + "mlp.experts." + std::to_string(e) + "." + w + ".weight");
    } else {
      for (const char* w : {"gate_proj", "up_proj", "down_proj"})
        expected.push_back(p + "mlp." + w + ".weight");
    }
  }
  std::sort(expected.begin(), expected.end());
  auto names = CheckpointFiles(dir.path()).names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, expected);
  CheckpointFiles f(dir.path());
  EXPECT_EQ(f.tensor("model.layers.1.mlp.gate.weight").shape,
            (std::vector<int64_t>{4, 16}));  // (E, D)
  EXPECT_EQ(f.tensor("model.layers.1.mlp.experts.3.down_proj.weight").shape,
            (std::vector<int64_t>{16, 12}));  // (D, Fe)
  EXPECT_EQ(f.tensor("model.layers.0.self_attn.q_proj.weight").shape,
            (std::vector<int64_t>{32, 16}));  // (H*hd, D)
  EXPECT_EQ(f.tensor("model.layers.0.self_attn.q_norm.weight").shape,
            (std::vector<int64_t>{8}));  // (hd)
  const std::string cfg = test::readBytes(dir / "config.json");
  for (const char* key :
       {"\"model_type\": \"qwen3_moe\"", "\"Qwen3MoeForCausalLM\"", "\"head_dim\": 8",
        "\"norm_topk_prob\": false", "\"moe_intermediate_size\": 12",
        "\"use_sliding_window\": false", "\"attention_bias\": false"})
    EXPECT_NE(cfg.find(key), std::string::npos) << key << "\n" << cfg;
  EXPECT_EQ(cfg.find("shared_expert"), std::string::npos) << cfg;
  EXPECT_EQ(loadHfConfig(dir.path()).moeLayers, (std::vector<bool>{false, true, false, true}));
  test::expectErrorContaining(
      [&] {
        SaveOptions o;
        o.layout = MoeLayout::MixtralHub;
        saveModel(model, dir / "x", o);
      },
      {"qwen3_moe model can only be written in its own layout"});
}

TEST(ModelIo, Qwen3WithoutQNormIsRefusedNamingTheTensor) {
  test::TempDir dir;
  const auto src = test::fixtures() / "models/qwen3_qknorm";
  std::filesystem::copy_file(src / "config.json", dir / "config.json");
  CheckpointFiles f(src);
  std::vector<TensorWrite> w;
  for (const auto& n : f.names())
    if (n != "model.layers.1.self_attn.q_norm.weight") {
      const auto& v = f.tensor(n);
      w.push_back({n, v.dtype, v.shape, v.data});
    }
  writeCheckpointTensors(dir.path(), w);
  test::expectErrorContaining(
      [&] { loadModel(dir.path()); },
      {"missing tensor \"model.layers.1.self_attn.q_norm.weight\"", dir.path().string()});
  // And q/k norms in a family without them are not silently dropped.
  const auto qwen2 = test::fixtures() / "models/qwen2_bias_tied";
  test::TempDir d2;
  std::filesystem::copy_file(qwen2 / "config.json", d2 / "config.json");
  CheckpointFiles g(qwen2);
  std::vector<TensorWrite> w2;
  for (const auto& n : g.names()) {
    const auto& v = g.tensor(n);
    w2.push_back({n, v.dtype, v.shape, v.data});
  }
  std::vector<float> ones(8, 1.0f);
  w2.push_back({"model.layers.0.self_attn.q_norm.weight", DType::F32, {8}, ones.data()});
  writeCheckpointTensors(d2.path(), w2);
  test::expectErrorContaining(
      [&] { loadModel(d2.path()); },
      {"unexpected tensor \"model.layers.0.self_attn.q_norm.weight\"", "qwen2"});
}

TEST(ModelIo, FusedQwenMoeExpertsReadAsTheHubLayout) {
  // transformers v5 keeps Qwen2/3-MoE experts fused, gate_up_proj (E, 2F, D) = cat(gate, up) on dim
  // 1 and down_proj (E, D, F). Fuse the fixture's experts by hand; the model must be the same.
  for (const char* name : {"qwen3_moe", "qwen2_moe_shared"}) {
    SCOPED_TRACE(name);
    test::TempDir dir;
    const auto src = test::fixtures() / "models" / name;
    std::filesystem::copy_file(src / "config.json", dir / "config.json");
    const ModelConfig cfg = loadHfConfig(src);
    CheckpointFiles f(src);
    std::vector<TensorWrite> w;
    std::vector<torch::Tensor> keep;
    for (const auto& n : f.names()) {
      if (n.find(".mlp.experts.") != std::string::npos) continue;
      const auto& v = f.tensor(n);
      w.push_back({n, v.dtype, v.shape, v.data});
    }
    for (int64_t l = 0; l < cfg.numLayers; ++l) {
      if (!cfg.isMoeLayer(l)) continue;
      const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
      std::vector<torch::Tensor> gu, down;
      for (int64_t e = 0; e < cfg.numExperts; ++e) {
        auto t = [&](const char* which) {
          return tensorFromView(f.tensor(p + std::to_string(e) + "." + which + ".weight"));
        };
        gu.push_back(torch::cat({t("gate_proj"), t("up_proj")}, 0));  // (2F, D)
        down.push_back(t("down_proj"));                               // (D, F)
      }
      keep.push_back(torch::stack(gu).contiguous());
      w.push_back(
          {p + "gate_up_proj", DType::F32, keep.back().sizes().vec(), keep.back().data_ptr()});
      keep.push_back(torch::stack(down).contiguous());
      w.push_back({p + "down_proj", DType::F32, keep.back().sizes().vec(), keep.back().data_ptr()});
    }
    writeCheckpointTensors(dir.path(), w);
    DecoderLM hub = loadModel(src), fused = loadModel(dir.path());
    auto a = hub->named_parameters(), b = fused->named_parameters();
    for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
    // Written back, it is the Hub layout again, bit for bit.
    saveModel(fused, dir / "back");
    test::expectSameTensors(src, dir / "back");
  }
}

namespace {
// bf16 bits of a float32 value, rounded to nearest even (independent of torch's conversion).
uint16_t bf16Bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}
}  // namespace

// A bf16 checkpoint loaded in bf16: every parameter is bf16 and holds the file's own bytes (no float32
// on the way), and saving it writes the same files.
TEST(ModelIo, Bf16CheckpointLoadsInBf16WithItsOwnBytes) {
  const auto src = test::fixtures() / "models/llama_bf16";
  DecoderLM m = loadModel(src, {torch::kCPU, torch::kBFloat16});
  CheckpointFiles f(src);
  size_t checked = 0;
  for (const auto& p : m->named_parameters()) {
    EXPECT_EQ(p.value().scalar_type(), torch::kBFloat16) << p.key();
    const auto& v = f.tensor(p.key());  // dense: the internal names are the HF names
    ASSERT_EQ(v.dtype, DType::BF16) << p.key();
    ASSERT_EQ(v.nbytes, p.value().nbytes()) << p.key();
    EXPECT_EQ(std::memcmp(v.data, p.value().contiguous().data_ptr(), v.nbytes), 0) << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, f.names().size());
  test::TempDir dir;
  saveModel(m, dir.path());
  test::expectSameTensors(src, dir.path());
}

// `create` with the options a real Qwen2.5 needs: bf16 storage (each value the float32 draw of the same
// seed rounded to nearest even), tied embeddings, q/k/v biases, rope theta, RMS eps, positions, and a
// real tokenizer copied in with its special ids. A bf16 MoE loads in bf16 with its experts' bytes.
TEST(ModelIo, CreateWritesBf16AndTheRealTokenizer) {
  test::TempDir dir;
  CreateOptions o;
  o.modelType = "qwen2";
  o.vocabSize = 151936;  // Qwen2.5's padded vocabulary; the tokenizer has 151,665 + specials
  o.hiddenSize = 16;
  o.intermediateSize = 24;
  o.numLayers = 1;
  o.numHeads = 2;
  o.numKvHeads = 1;
  o.tieWordEmbeddings = true;
  o.ropeTheta = 1e6;
  o.rmsNormEps = 1e-6;
  o.maxPositionEmbeddings = 32768;
  o.tokenizer = test::hfTokenizers() / "qwen3";
  o.seed = 5;
  o.out = dir / "f32";
  createRandomModel(o);
  o.dtype = "bf16";
  o.out = dir / "bf16";
  const ModelConfig c = createRandomModel(o);
  const ModelConfig back = loadHfConfig(dir / "bf16");
  EXPECT_EQ(back.dtype, DType::BF16);
  EXPECT_EQ(back.ropeTheta, 1e6);
  EXPECT_EQ(back.rmsNormEps, 1e-6);
  EXPECT_EQ(back.maxPositionEmbeddings, 32768);
  EXPECT_TRUE(back.tieWordEmbeddings);
  EXPECT_TRUE(back.attentionBias);
  EXPECT_EQ(back.eosTokenId.value_or(-1), 151645);  // <|im_end|>, from tokenizer_config.json
  EXPECT_EQ(back.padTokenId.value_or(-1), 151643);  // <|endoftext|>
  EXPECT_EQ(c.eosTokenId, back.eosTokenId);
  EXPECT_EQ(test::readBytes(dir / "bf16/tokenizer.json"), test::readBytes(o.tokenizer / "tokenizer.json"));
  EXPECT_EQ(loadTokenizer(dir / "bf16")->kind(), loadTokenizer(o.tokenizer)->kind());
  CheckpointFiles f32(dir / "f32"), b16(dir / "bf16");
  EXPECT_FALSE(b16.contains("lm_head.weight"));
  EXPECT_TRUE(b16.contains("model.layers.0.self_attn.q_proj.bias"));
  ASSERT_EQ(f32.names(), b16.names());
  for (const auto& n : b16.names()) {
    const auto& a = f32.tensor(n);
    const auto& b = b16.tensor(n);
    ASSERT_EQ(b.dtype, DType::BF16) << n;
    ASSERT_EQ(a.nbytes, 2 * b.nbytes) << n;
    const int64_t count = static_cast<int64_t>(b.nbytes / 2);
    int64_t bad = 0;
    for (int64_t i = 0; i < count; ++i) {
      float x;
      uint16_t y;
      std::memcpy(&x, a.data + 4 * i, 4);
      std::memcpy(&y, b.data + 2 * i, 2);
      bad += y != bf16Bits(x);
    }
    EXPECT_EQ(bad, 0) << n;
  }
  // A vocabulary smaller than the tokenizer's is refused, naming both.
  o.vocabSize = 1000;
  o.out = dir / "small";
  test::expectErrorContaining([&] { createRandomModel(o); }, {"--tokenizer", "--vocab 1000"});

  // An MoE created in bf16 loads in bf16: the stacked experts hold the files' bytes.
  CreateOptions m;
  m.modelType = "mixtral";
  m.experts = 4;
  m.dtype = "bfloat16";
  m.out = dir / "moe";
  createRandomModel(m);
  DecoderLM moe = loadModel(dir / "moe", {torch::kCPU, torch::kBFloat16});
  for (const auto& p : moe->parameters()) EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
  CheckpointFiles mf(dir / "moe");
  auto params = moe->named_parameters();
  const auto& w1 = mf.tensor("model.layers.1.block_sparse_moe.experts.3.w1.weight");
  const auto gate = params["model.layers.1.moe.w_gate"][3].contiguous();  // (F, D)
  ASSERT_EQ(w1.nbytes, gate.nbytes());
  EXPECT_EQ(std::memcmp(w1.data, gate.data_ptr(), w1.nbytes), 0);
}

// The dtype names `--dtype` takes, and auto following the checkpoint.
TEST(ModelIo, LoadDtypeNames) {
  EXPECT_EQ(loadDtype("auto", DType::BF16, "--dtype"), torch::kBFloat16);
  EXPECT_EQ(loadDtype("auto", DType::F32, "--dtype"), torch::kFloat);
  EXPECT_EQ(loadDtype("auto", DType::F16, "--dtype"), torch::kFloat);
  EXPECT_EQ(loadDtype("bf16", DType::F32, "--dtype"), torch::kBFloat16);
  EXPECT_EQ(loadDtype("float32", DType::BF16, "--dtype"), torch::kFloat);
  test::expectErrorContaining([] { loadDtype("int8", DType::F32, "--dtype"); }, {"--dtype", "int8"});
}

// The forward of a bf16 model in bf16 against the same weights in float32: logits agree to bf16's
// precision. bf16 keeps 8 significant bits (0.4% per rounding); through 2 layers of matmuls the largest
// logit difference was 1.6% of the largest logit (0.046 of 2.95), so the bound is 3%; the mean
// next-token loss moved by 4.5e-4, bound 0.01.
TEST(ModelIo, Bf16ForwardMatchesFloat32ToBf16Precision) {
  const auto src = test::fixtures() / "models/llama_bf16";
  DecoderLM a = loadModel(src, {torch::kCPU, torch::kFloat});
  DecoderLM b = loadModel(src, {torch::kCPU, torch::kBFloat16});
  a->eval();
  b->eval();
  torch::NoGradGuard ng;
  auto ids = torch::arange(0, 24, torch::kLong).remainder(a->config().vocabSize).view({2, 12});
  auto la = a->forward(ids).logits, lb = b->forward(ids).logits;
  EXPECT_EQ(lb.scalar_type(), torch::kFloat);
  const double maxDiff = (la - lb).abs().max().item<double>();
  EXPECT_LT(maxDiff, 0.03 * la.abs().max().item<double>()) << "logit scale " << la.abs().max().item<double>();
  const auto lossA = nextTokenLoss(la, ids), lossB = nextTokenLoss(lb, ids);
  EXPECT_NEAR(lossA.sum.item<double>() / lossA.count, lossB.sum.item<double>() / lossB.count, 0.01);
}
