// LoRA adapters and PEFT adapter folders against the float64 reference of
// tests/reference/make_lora_fixtures.py: the reference merges W + (alpha / r) B A and runs the
// head-by-head Qwen3 forward; the engine runs the adapter path (base projection plus low-rank update).
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/checkpoint_files.h"
#include "model/lora.h"
#include "model/model_io.h"
#include "train/trainer.h"
#include "test_util.h"

using namespace upcycle;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path loraFixtures() { return test::fixtures() / "lora"; }

struct Expected {
  torch::Tensor ids, mask, logits, baseLogits;
  double loss = 0;
  json raw;
};

torch::Tensor nested3(const json& a, int64_t B, int64_t T) {
  std::vector<double> flat;
  for (const auto& b : a)
    for (const auto& t : b)
      for (const auto& v : t) flat.push_back(v.get<double>());
  return torch::tensor(flat, torch::kDouble).view({B, T, -1});
}

Expected readExpected() {
  Expected e;
  e.raw = json::parse(test::readBytes(loraFixtures() / "expected.json"));
  auto toLong = [](const json& a) {
    std::vector<int64_t> flat;
    for (const auto& row : a) for (const auto& v : row) flat.push_back(v.get<int64_t>());
    return torch::tensor(flat).view({static_cast<int64_t>(a.size()), -1});
  };
  e.ids = toLong(e.raw["input_ids"]);
  e.mask = toLong(e.raw["attention_mask"]);
  e.logits = nested3(e.raw["logits"], e.ids.size(0), e.ids.size(1));
  e.baseLogits = nested3(e.raw["base_logits"], e.ids.size(0), e.ids.size(1));
  e.loss = e.raw["loss"].get<double>();
  return e;
}

double maxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// float32 compute against float64: as for the Qwen3 decoder references (test_reference.cpp), a few
// float32 ulps of logits up to about 10; measured below 1e-5 here.
constexpr double kLogitTol = 2e-5;

}  // namespace

TEST(Lora, AdapterFolderLoadsOnItsBaseAndMatchesTheFloat64Reference) {
  Expected e = readExpected();
  DecoderLM model = loadModel(loraFixtures() / "adapter");  // base_model_name_or_path "../base"
  model->eval();
  torch::NoGradGuard ng;
  auto logits = model->forward(e.ids, e.mask).logits;
  // Padded positions of row 1 are not compared (their values depend on masking conventions).
  auto real = e.mask.to(torch::kBool);
  EXPECT_LT(maxAbsDiff(logits.index({real}), e.logits.index({real})), kLogitTol);
  // The adapter matters: the base alone is far from the adapted logits.
  EXPECT_GT(maxAbsDiff(e.logits.index({real}), e.baseLogits.index({real})), 0.5);
  const LoraOptions o = loraOf(model);
  EXPECT_EQ(o.rank, 4);
  EXPECT_DOUBLE_EQ(o.alpha, 8.0);
  EXPECT_EQ(o.targets, (std::vector<std::string>{"q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"}));
}

TEST(Lora, GradientsOfEveryFactorMatchTheReference) {
  Expected e = readExpected();
  DecoderLM model = loadModel(loraFixtures() / "adapter");
  model->eval();  // lora_dropout 0.1 in the config: off outside training, as in PEFT
  auto labels = e.ids.masked_fill(e.mask == 0, -100);
  auto ls = nextTokenLoss(model->forward(e.ids, e.mask).logits, labels);
  auto loss = ls.sum / static_cast<double>(ls.count);
  EXPECT_NEAR(loss.item<double>(), e.loss, 5e-6);
  loss.backward();
  const auto& grads = e.raw["grads"];
  int checked = 0;
  for (const auto& lt : loraTensors(model)) {
    for (auto [suffix, t] : {std::pair<std::string, torch::Tensor>{".lora_A.weight", lt.A}, {".lora_B.weight", lt.B}}) {
      const std::string name = lt.peftPrefix + suffix;
      ASSERT_TRUE(grads.contains(name)) << name;
      std::vector<double> ref = grads[name].get<std::vector<double>>();
      auto r = torch::tensor(ref, torch::kDouble).view(t.sizes());
      ASSERT_TRUE(t.grad().defined()) << name;
      const double scale = std::max(1e-3, r.abs().max().item<double>());
      EXPECT_LT(maxAbsDiff(t.grad(), r) / scale, 1e-4) << name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 20);  // 5 targets x 2 layers x (A, B)
  // The base receives gradients too here (no trainer); the trainer's freezing is tested below.
}

TEST(Lora, MergedWeightsComputeWhatTheAdapterPathComputes) {
  Expected e = readExpected();
  DecoderLM model = loadModel(loraFixtures() / "adapter");
  mergeLora(model);
  EXPECT_TRUE(loraTensors(model).empty());
  for (const auto& p : model->named_parameters()) EXPECT_EQ(p.key().find("_lora."), std::string::npos) << p.key();
  model->eval();
  torch::NoGradGuard ng;
  auto real = e.mask.to(torch::kBool);
  EXPECT_LT(maxAbsDiff(model->forward(e.ids, e.mask).logits.index({real}), e.logits.index({real})), kLogitTol);
  test::TempDir dir;
  saveModel(model, dir / "merged");  // a plain Qwen3 checkpoint now
  DecoderLM back = loadModel(dir / "merged");
  back->eval();
  EXPECT_LT(maxAbsDiff(back->forward(e.ids, e.mask).logits.index({real}), e.logits.index({real})), kLogitTol);
}

TEST(Lora, FreshAdaptersArePeftInitializedAndStartExactlyAtTheBase) {
  Expected e = readExpected();
  DecoderLM model = loadModel(loraFixtures() / "base");
  LoraOptions o;
  o.rank = 8;
  o.alpha = 16;
  torch::Generator gen = at::detail::createCPUGenerator(7);
  addLora(model, o, gen);
  const auto all = loraTensors(model);
  ASSERT_EQ(all.size(), 14u);  // 7 projections x 2 layers
  for (const auto& lt : all) {
    EXPECT_EQ(lt.B.abs().max().item<double>(), 0.0) << lt.peftPrefix;
    const double bound = 1.0 / std::sqrt(static_cast<double>(lt.A.size(1)));
    EXPECT_LE(lt.A.abs().max().item<double>(), bound) << lt.peftPrefix;
    EXPECT_GT(lt.A.abs().max().item<double>(), 0.5 * bound) << lt.peftPrefix;  // drawn, not zero
    EXPECT_EQ(lt.A.size(0), 8);
  }
  model->eval();
  torch::NoGradGuard ng;
  auto real = e.mask.to(torch::kBool);
  EXPECT_LT(maxAbsDiff(model->forward(e.ids, e.mask).logits.index({real}), e.baseLogits.index({real})), kLogitTol);
  DecoderLM again = loadModel(loraFixtures() / "base");
  torch::Generator gen2 = at::detail::createCPUGenerator(7);
  addLora(again, o, gen2);
  EXPECT_TRUE(torch::equal(loraTensors(again)[0].A, all[0].A)) << "the draw follows the generator's seed";
}

TEST(Lora, SavedAdapterHasPeftNamesAndConfigAndLoadsBackBitForBit) {
  Expected e = readExpected();
  DecoderLM model = loadModel(loraFixtures() / "adapter");
  test::TempDir dir;
  const fs::path base = fs::canonical(loraFixtures() / "base");
  savePeftAdapter(model, dir / "a", base.string());
  // The same tensor names and values as the PEFT-style fixture written by the reference script.
  test::expectSameTensors(loraFixtures() / "adapter" / "adapter_model.safetensors", dir / "a" / "adapter_model.safetensors");
  json c = json::parse(test::readBytes(dir / "a" / "adapter_config.json"));
  EXPECT_EQ(c["peft_type"], "LORA");
  EXPECT_EQ(c["r"], 4);
  EXPECT_EQ(c["lora_alpha"], 8.0);
  EXPECT_EQ(c["base_model_name_or_path"], base.string());
  EXPECT_EQ(c["task_type"], "CAUSAL_LM");
  EXPECT_EQ(c["target_modules"], json({"q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"}));
  DecoderLM back = loadModel(dir / "a");
  model->eval();
  back->eval();
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(back->forward(e.ids, e.mask).logits, model->forward(e.ids, e.mask).logits));
}

TEST(Lora, BadAdapterFoldersGetOneErrorNamingTheFileAndField) {
  test::TempDir dir;
  auto variant = [&](const std::string& name, const std::function<void(json&)>& edit) {
    const fs::path f = dir / name;
    fs::create_directories(f);
    fs::copy_file(loraFixtures() / "adapter" / "adapter_model.safetensors", f / "adapter_model.safetensors");
    json c = json::parse(test::readBytes(loraFixtures() / "adapter" / "adapter_config.json"));
    c["base_model_name_or_path"] = fs::canonical(loraFixtures() / "base").string();
    edit(c);
    std::ofstream(f / "adapter_config.json") << c.dump();
    return f;
  };
  auto expectError = [](const fs::path& f, const std::string& part) {
    try {
      loadModel(f);
      ADD_FAILURE() << "no error for " << f;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expectError(variant("dora", [](json& c) { c["use_dora"] = true; }), "use_dora");
  expectError(variant("regex", [](json& c) { c["target_modules"] = ".*proj"; }), "target_modules");
  expectError(variant("rank", [](json& c) { c["r"] = 0; }), "adapter_config.json: r must be");
  expectError(variant("prefix", [](json& c) { c["peft_type"] = "PREFIX_TUNING"; }), "PREFIX_TUNING");
  expectError(variant("more", [](json& c) { c["target_modules"].push_back("k_proj"); }), "missing tensor");
  expectError(variant("shape", [](json& c) { c["r"] = 8; }), "has shape [4,");
  expectError(variant("nobase", [](json& c) { c["base_model_name_or_path"] = "Qwen/Qwen3-0.6B"; }), "--base");
  expectError(variant("pattern", [](json& c) { c["layers_to_transform"] = json::array({0}); }), "layers_to_transform");
}

TEST(Lora, TrainingKeepsTheBaseFrozenAndWritesAdapterCheckpointsThatContinue) {
  test::TempDir dir;
  const fs::path base = loraFixtures() / "base";
  std::vector<TokenRecord> data;
  for (int i = 0; i < 8; ++i) {
    TokenRecord r;
    for (int t = 0; t < 12; ++t) r.inputIds.push_back((i * 7 + t * 3) % 64);
    r.line = i + 1;
    data.push_back(r);
  }
  TrainOptions o;
  o.lr = 1e-2;
  o.batchSize = 4;
  o.maxSteps = 4;
  o.saveSteps = 2;
  o.outDir = dir / "run";
  o.precision = "fp32";
  o.lora.rank = 2;
  o.lora.alpha = 4;
  o.lora.targets = {"q_proj", "gate_proj", "up_proj", "down_proj"};
  TrainResult r = trainModel(base, data, o);
  ASSERT_EQ(r.checkpoints.size(), 2u);
  const fs::path ck = r.checkpoints.back();
  EXPECT_TRUE(fs::exists(ck / "adapter_config.json"));
  EXPECT_TRUE(fs::exists(ck / "adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(ck / "model.safetensors")) << "a LoRA checkpoint holds the adapter only";
  EXPECT_TRUE(fs::exists(ck / "trainer_state.json"));
  json c = json::parse(test::readBytes(ck / "adapter_config.json"));
  EXPECT_EQ(c["base_model_name_or_path"], fs::canonical(base).string());
  EXPECT_EQ(c["r"], 2);
  // The adapted model's base weights are the base's, bit for bit; the adapters moved (B left zero).
  DecoderLM trained = loadModel(ck);
  DecoderLM plain = loadModel(base);
  auto tp = trained->named_parameters();
  for (const auto& p : plain->named_parameters())
    EXPECT_TRUE(torch::equal(tp[p.key()], p.value())) << p.key() << " changed: the base must stay frozen";
  for (const auto& lt : loraTensors(trained)) EXPECT_GT(lt.B.abs().max().item<double>(), 0) << lt.peftPrefix;
  // The optimizer holds the adapters alone: AdamW keeps two float32 moments per trained value, so
  // its file is far smaller than the base's moments would be.
  int64_t loraValues = 0, baseValues = 0;
  for (const auto& lt : loraTensors(trained)) loraValues += lt.A.numel() + lt.B.numel();
  for (const auto& p : plain->parameters()) baseValues += p.numel();
  const auto optBytes = static_cast<int64_t>(fs::file_size(ck / "optimizer.pt"));
  EXPECT_GE(optBytes, 8 * loraValues);
  EXPECT_LT(optBytes, 8 * loraValues + 8 * baseValues / 4);
  // Continuing the adapter: the folder is the model, no LoRA options; its checkpoints name the base.
  TrainOptions more = o;
  more.lora = LoraOptions{};
  more.outDir = dir / "more";
  more.saveSteps = 0;
  TrainResult r2 = trainModel(ck, data, more);
  json c2 = json::parse(test::readBytes(r2.checkpoints.back() / "adapter_config.json"));
  EXPECT_EQ(c2["base_model_name_or_path"], fs::canonical(base).string());
  // A different rank on an adapter is refused by name.
  TrainOptions clash = more;
  clash.lora.rank = 3;
  clash.outDir = dir / "clash";
  try {
    trainModel(ck, data, clash);
    ADD_FAILURE() << "a rank clash was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2"), std::string::npos) << e.what();
  }
}

TEST(Lora, TargetListsParseShortAndLongNamesAndRefuseUnknownOnes) {
  EXPECT_EQ(parseLoraTargets("q,v, gate_proj,down"),
            (std::vector<std::string>{"q_proj", "v_proj", "gate_proj", "down_proj"}));
  EXPECT_THROW(parseLoraTargets("q,lm_head"), UserError);
  EXPECT_THROW(parseLoraTargets("q,q_proj"), UserError);
  EXPECT_THROW(parseLoraTargets(""), UserError);
  LoraOptions o;
  o.rank = 4;
  o.alpha = 8;
  EXPECT_DOUBLE_EQ(o.scale(), 2.0);
  o.rslora = true;
  EXPECT_DOUBLE_EQ(o.scale(), 4.0);  // alpha / sqrt(r)
}
