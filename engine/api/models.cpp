#include "api/models.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "api/torch_errors.h"
#include "core/error.h"
#include "data/token_records.h"
#include "model/model_io.h"
#include "upcycle/moe_builder.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

// ------------------------------------------------------------------------------------ evaluate

EvalReport evaluateModel(const fs::path& modelPath, const fs::path& dataPath, const EvalOptions& opts) {
  return withTorchErrors("evaluate", [&] {
  UPCYCLE_CHECK(opts.batchSize >= 1, "batch size must be at least 1, got ", opts.batchSize);
  const torch::Device device = resolveDevice(opts.device);
  std::vector<TokenRecord> records = readTokenRecords(dataPath);
  DecoderLM model = loadModel(modelPath, {device, torch::kFloat});
  model->eval();
  torch::NoGradGuard noGrad;
  const int64_t V = model->config().vocabSize;
  for (const TokenRecord& r : records)
    for (int64_t id : r.inputIds)
      UPCYCLE_CHECK(id < V, dataPath.string(), ":", r.line, ": token id ", id,
                    " is outside the model's vocabulary (", V, ")");

  // Batches of similar length waste the least padding.
  std::vector<size_t> order(records.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return records[a].inputIds.size() < records[b].inputIds.size();
  });
  std::map<std::string, std::pair<double, int64_t>> perDomain;  // loss sum, tokens
  std::map<std::string, int64_t> recordsPerDomain;
  double total = 0;
  int64_t tokens = 0;
  for (size_t start = 0; start < order.size(); start += opts.batchSize) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(opts.batchSize));
    const int64_t B = static_cast<int64_t>(end - start);
    int64_t T = 0;
    for (size_t i = start; i < end; ++i) T = std::max<int64_t>(T, records[order[i]].inputIds.size());
    auto ids = torch::zeros({B, T}, torch::kLong);
    auto labels = torch::full({B, T}, -100, torch::kLong);
    auto mask = torch::zeros({B, T}, torch::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const TokenRecord& r = records[order[start + b]];
      const int64_t n = static_cast<int64_t>(r.inputIds.size());
      const auto& lab = r.labels.empty() ? r.inputIds : r.labels;
      for (int64_t t = 0; t < n; ++t) {
        ids[b][t] = r.inputIds[t];
        labels[b][t] = lab[t];
        mask[b][t] = 1;
      }
    }
    auto out = model->forward(ids.to(device), mask.to(device));
    auto logits = out.logits.narrow(1, 0, T - 1);                 // (B, T-1, V)
    auto target = labels.narrow(1, 1, T - 1).to(device);           // (B, T-1)
    auto ce = torch::nn::functional::cross_entropy(
        logits.reshape({-1, V}), target.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
    auto perRow = ce.view({B, T - 1}).sum(1).to(torch::kDouble).cpu();  // (B)
    auto count = (target != -100).sum(1).cpu();                          // (B)
    for (int64_t b = 0; b < B; ++b) {
      const TokenRecord& r = records[order[start + b]];
      const double s = perRow[b].item<double>();
      const int64_t c = count[b].item<int64_t>();
      total += s;
      tokens += c;
      if (!r.domain.empty()) {
        perDomain[r.domain].first += s;
        perDomain[r.domain].second += c;
        recordsPerDomain[r.domain] += 1;
      }
    }
  }
  UPCYCLE_CHECK(tokens > 0, dataPath.string(), ": no token to predict (all labels ignored?)");
  EvalReport rep;
  rep.overall = {total / tokens, std::exp(total / tokens), tokens, static_cast<int64_t>(records.size())};
  for (const auto& [d, st] : perDomain) {
    const double loss = st.second ? st.first / st.second : 0.0;
    rep.domains[d] = {loss, std::exp(loss), st.second, recordsPerDomain[d]};
  }
  return rep;
  });
}

std::string evalJson(const EvalReport& r) {
  json j = {{"loss", r.overall.loss}, {"perplexity", r.overall.perplexity},
            {"tokens", r.overall.tokens}, {"records", r.overall.records}};
  if (!r.domains.empty()) {
    json d = json::object();
    for (const auto& [name, f] : r.domains)
      d[name] = {{"loss", f.loss}, {"perplexity", f.perplexity}, {"tokens", f.tokens}, {"records", f.records}};
    j["domains"] = d;
  }
  return j.dump(2);
}

std::string evalText(const EvalReport& r) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(4);
  os << "loss " << r.overall.loss << "  perplexity " << r.overall.perplexity << "  (" << r.overall.tokens
     << " tokens, " << r.overall.records << " records)\n";
  if (!r.domains.empty()) {
    os << std::left << std::setw(20) << "domain" << std::setw(10) << "loss" << std::setw(12) << "perplexity"
       << "tokens\n";
    for (const auto& [name, f] : r.domains)
      os << std::left << std::setw(20) << name << std::setw(10) << f.loss << std::setw(12) << f.perplexity
         << f.tokens << "\n";
  }
  return os.str();
}

// ------------------------------------------------------------------------------------ convert

void validateConvertOptions(const ConvertOptions& o) {
  UPCYCLE_CHECK(o.method == "sparse", "method \"", o.method,
                "\" is not available yet (available: sparse)");
  UPCYCLE_CHECK(!o.base.empty(), "--base is required");
  UPCYCLE_CHECK(!o.out.empty(), "--out is required");
  UPCYCLE_CHECK(o.experts >= 1, "experts must be at least 1, got ", o.experts);
  UPCYCLE_CHECK(o.topK >= 1 && o.topK <= o.experts, "top-k (", o.topK,
                ") must be between 1 and the number of experts (", o.experts, ")");
  UPCYCLE_CHECK(o.moeLayerFreq >= 1, "moe_layer_freq must be at least 1, got ", o.moeLayerFreq);
  UPCYCLE_CHECK(o.layout == "mixtral-hub" || o.layout == "mixtral-fused", "layout \"", o.layout,
                "\" is not one of mixtral-hub, mixtral-fused");
  checkRouterInit(o.routerInit);
  UPCYCLE_CHECK(fs::weakly_canonical(o.base) != fs::weakly_canonical(o.out),
                "--out must differ from --base (", o.out.string(), ")");
}

ConvertReport convertModel(const ConvertOptions& o) {
  validateConvertOptions(o);
  return withTorchErrors("convert", [&] {
  DecoderLM dense = loadModel(o.base);  // float32 on the CPU; saved back in the base's dtype
  torch::Generator gen = at::detail::createCPUGenerator(o.seed);
  MoeShape shape{o.experts, o.topK, o.moeLayerFreq, 0};
  DecoderLM moe = sparseUpcycle(*dense, shape, o.routerInit, gen);
  SaveOptions save;
  if (moe->config().modelType == "mixtral")
    save.layout = o.layout == "mixtral-fused" ? MoeLayout::MixtralFused : MoeLayout::MixtralHub;
  saveModel(moe, o.out, save);
  return ConvertReport{o.out, moe->config()};
  });
}

// ------------------------------------------------------------------------------------ create

ModelConfig createRandomModel(const CreateOptions& o) {
  UPCYCLE_CHECK(!o.out.empty(), "--out is required");
  ModelConfig c;
  c.modelType = o.modelType;
  c.vocabSize = o.vocabSize;
  c.hiddenSize = o.hiddenSize;
  c.intermediateSize = o.intermediateSize;
  c.numLayers = o.numLayers;
  c.numHeads = o.numHeads;
  c.numKvHeads = o.numKvHeads;
  UPCYCLE_CHECK(o.numHeads > 0 && o.hiddenSize % o.numHeads == 0, "hidden size (", o.hiddenSize,
                ") must be a multiple of the number of heads (", o.numHeads, ")");
  c.headDim = o.hiddenSize / o.numHeads;
  c.tieWordEmbeddings = o.tieWordEmbeddings;
  c.dtype = dtypeFromTorchName(o.dtype, "--dtype");
  c.attentionBias = o.modelType == "qwen2" || o.modelType == "qwen2_moe";
  c.rmsNormEps = 1e-5;
  c.maxPositionEmbeddings = 2048;
  if (o.modelType == "mixtral" || o.modelType == "qwen2_moe") {
    c.numExperts = o.experts > 0 ? o.experts : 4;
    c.topK = o.topK;
    c.expertIntermediateSize = o.intermediateSize;
    c.moeLayers.assign(o.numLayers, true);
    c.moeLayout = o.modelType == "mixtral" ? MoeLayout::MixtralHub : MoeLayout::Qwen2Moe;
  } else {
    UPCYCLE_CHECK(o.modelType == "llama" || o.modelType == "mistral" || o.modelType == "qwen2",
                  "model type \"", o.modelType, "\" is not one of llama, mistral, qwen2, mixtral, qwen2_moe");
  }
  c.validate("--arch " + o.modelType);
  return withTorchErrors("create", [&] {
  DecoderLM model(c);
  torch::Generator gen = at::detail::createCPUGenerator(o.seed);
  model->initWeights(gen);
  saveModel(model, o.out);
  return c;
  });
}

}  // namespace upcycle
