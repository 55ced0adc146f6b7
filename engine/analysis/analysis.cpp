#include "analysis/analysis.h"

#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/gram.h"
#include "api/torch_errors.h"
#include "core/error.h"
#include "data/prepare.h"
#include "model/model_io.h"
#include "upcycle/methods.h"

namespace upcycle {

Matrix cosineMatrix(const torch::Tensor& x) { return cosineMatrix(std::vector<torch::Tensor>{x}, {}); }

Matrix cosineMatrix(const std::vector<torch::Tensor>& parts, const std::vector<torch::Tensor>& refs) {
  // The Gram matrix G = X X^T in float64, accumulated part by part so that no copy of X (nor of
  // X - ref) is ever made whole; cos_ij = G_ij / sqrt(G_ii G_jj). Rows stored as bfloat16 are read as
  // they are (widened 8 values at a time inside the kernel), so a bf16 model is never copied to float32.
  const int64_t n = parts.at(0).size(0);
  auto streamable = [](const torch::Tensor& t) {
    return t.device().is_cpu() && (t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kBFloat16);
  };
  bool fast = true;
  for (const auto& p : parts) fast = fast && streamable(p);
  auto g = torch::zeros({n, n}, torch::kDouble);
  for (size_t p = 0; p < parts.size(); ++p) {
    const auto x = parts[p].reshape({n, -1});  // (n, m_p)
    const torch::Tensor ref = refs.empty() ? torch::Tensor() : refs[p].reshape({1, -1});
    const int64_t m = x.size(1);
    if (fast) {  // float32 or bfloat16 rows on the CPU: one streaming pass (analysis/gram.h)
      const auto xc = x.contiguous();
      // The reference is one row (a dense FFN matrix): float32, whatever its storage (exact for bf16).
      const auto rc = ref.defined() ? ref.to(torch::kCPU, torch::kFloat).contiguous() : torch::Tensor();
      const float* r = rc.defined() ? rc.data_ptr<float>() : nullptr;
      if (xc.scalar_type() == torch::kBFloat16) {
        std::vector<const uint16_t*> rows(static_cast<size_t>(n));
        const auto* base = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
        for (int64_t i = 0; i < n; ++i) rows[i] = base + i * m;
        accumulateGramBf16(rows.data(), n, r, m, g.data_ptr<double>(), at::get_num_threads());
      } else {
        std::vector<const float*> rows(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) rows[i] = xc.data_ptr<float>() + i * m;
        accumulateGram(rows.data(), n, r, m, g.data_ptr<double>(), at::get_num_threads());
      }
      continue;
    }
    constexpr int64_t kChunk = 1 << 16;  // other dtypes and devices: float64 GEMMs over column chunks
    for (int64_t k = 0; k < m; k += kChunk) {
      const int64_t c = std::min(kChunk, m - k);
      auto xb = x.narrow(1, k, c);
      if (ref.defined()) xb = xb - ref.narrow(1, k, c);
      xb = xb.to(torch::kCPU, torch::kDouble);  // (n, c)
      g.add_(torch::matmul(xb, xb.t()));
    }
  }
  auto norm = g.diagonal().clamp_min(1e-300).sqrt();  // (n)
  auto cos = (g / (norm.unsqueeze(1) * norm.unsqueeze(0))).contiguous();
  Matrix out;
  out.rows = out.cols = n;
  out.values.assign(cos.data_ptr<double>(), cos.data_ptr<double>() + cos.numel());
  return out;
}

double linearCka(const torch::Tensor& a, const torch::Tensor& b) {
  auto A = a.to(torch::kDouble), B = b.to(torch::kDouble);
  A = A - A.mean(0, true);
  B = B - B.mean(0, true);
  const double ab = torch::matmul(A.t(), B).pow(2).sum().item<double>();
  const double aa = torch::matmul(A.t(), A).norm().item<double>();
  const double bb = torch::matmul(B.t(), B).norm().item<double>();
  return (aa > 0 && bb > 0) ? ab / (aa * bb) : 0.0;
}

namespace {
Matrix toMatrix(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous().cpu();
  Matrix m;
  m.rows = c.size(0);
  m.cols = c.size(1);
  m.values.assign(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  return m;
}
}  // namespace

AnalysisReport analyzeDecoder(DecoderLMImpl& moe, DecoderLMImpl* base, const std::vector<TokenRecord>& probe) {
  const ModelConfig& c = moe.config();
  UPCYCLE_CHECK(c.isMoe(), "analysis needs an MoE model (this one is ", c.modelType, ")");
  torch::NoGradGuard ng;
  AnalysisReport r;
  r.experts = c.numExperts;
  r.topK = c.topK;
  const int64_t E = c.numExperts;
  std::vector<std::shared_ptr<MoeBlockImpl>> blocks;
  std::vector<int64_t> layerIds;
  for (size_t l = 0; l < moe.model->layers->size(); ++l)
    if (auto layer = layerAt(moe, l); layer->moe) {
      blocks.push_back(layer->moe.ptr());
      layerIds.push_back(static_cast<int64_t>(l));
    }
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto& b = blocks[i];
    // The experts' flattened FFNs: gate, up, down, each (E, F D), never concatenated, in their own
    // dtype (cosineMatrix reads bfloat16 rows without a float32 copy).
    // LoRA experts: base + update each (the deltas against the base are then their updates).
    const auto [wg, wu, wd] = b->expertWeights();
    const std::vector<torch::Tensor> parts = {wg.to(torch::kCPU), wu.to(torch::kCPU), wd.to(torch::kCPU)};
    LayerSimilarity s;
    s.layer = layerIds[i];
    s.weights = cosineMatrix(parts, {});
    if (base) {
      auto d = layerAt(*base, layerIds[i])->mlp;
      UPCYCLE_CHECK(d, "the base model's layer ", layerIds[i], " has no dense FFN");
      UPCYCLE_CHECK(d->gate_proj->weight.size(0) == parts[0].size(1), "the base's d_ff differs from the experts'");
      s.deltas = cosineMatrix(parts, {d->gate_proj->weight.to(torch::kCPU), d->up_proj->weight.to(torch::kCPU),
                                      d->down_proj->weight.to(torch::kCPU)});
    }
    double off = 0;
    for (int64_t a = 0; a < E; ++a)
      for (int64_t bb = 0; bb < E; ++bb)
        if (a != bb) off += 1.0 - s.weights.at(a, bb);
    s.diversity = E > 1 ? off / double(E * (E - 1)) : 0.0;
    r.diversity += s.diversity / double(blocks.size());
    r.similarity.push_back(std::move(s));
  }
  if (probe.empty()) return r;

  // Routing and expert outputs on the probe tokens, record by record (no padding to mask).
  const bool wasTraining = moe.is_training();
  moe.eval();
  moe.captureRouterInputs(true);
  const auto dev = moe.lmHeadWeight().device();
  std::vector<torch::Tensor> counts(blocks.size()), co(blocks.size()), entSum(blocks.size());
  std::vector<std::map<std::string, torch::Tensor>> domCounts(blocks.size());
  std::vector<std::vector<torch::Tensor>> inputs(blocks.size());
  int64_t tokens = 0;
  for (const auto& rec : probe) {
    auto out = moe.forward(torch::tensor(rec.inputIds, torch::kLong).view({1, -1}).to(dev));
    tokens += static_cast<int64_t>(rec.inputIds.size());
    for (size_t l = 0; l < blocks.size(); ++l) {
      const auto& rr = out.routing[l];
      auto onehot = torch::one_hot(rr.experts.cpu(), E).sum(1).to(torch::kDouble);  // (N, E) 0/1 per token
      auto cnt = onehot.sum(0);
      counts[l] = counts[l].defined() ? counts[l] + cnt : cnt;
      auto pair = torch::matmul(onehot.t(), onehot);                                 // (E, E)
      co[l] = co[l].defined() ? co[l] + pair : pair;
      auto p = rr.probs.cpu().to(torch::kDouble);
      auto ent = -(p * p.clamp_min(1e-300).log()).sum(1).sum();
      entSum[l] = entSum[l].defined() ? entSum[l] + ent : ent;
      if (!rec.domain.empty()) {
        auto& dc = domCounts[l][rec.domain];
        dc = dc.defined() ? dc + cnt : cnt;
      }
      inputs[l].push_back(rr.inputs.cpu().to(torch::kFloat));
    }
  }
  moe.captureRouterInputs(false);
  if (wasTraining) moe.train();
  r.probeTokens = tokens;
  auto shares = [&](const torch::Tensor& cnt) {
    auto s = cnt / cnt.sum().clamp_min(1e-300);
    return std::vector<double>(s.data_ptr<double>(), s.data_ptr<double>() + E);
  };
  for (size_t l = 0; l < blocks.size(); ++l) {
    RoutingLayer rl;
    rl.layer = layerIds[l];
    rl.shares = shares(counts[l].contiguous());
    for (auto& [d, cnt] : domCounts[l]) rl.domainShares[d] = shares(cnt.contiguous());
    rl.entropy = entSum[l].item<double>() / double(tokens);
    double mx = 0;
    for (double s : rl.shares) {
      if (s > 0) rl.shareEntropy -= s * std::log(s);
      mx = std::max(mx, s);
    }
    rl.imbalance = mx * double(E);
    rl.coselection = toMatrix(co[l]);
    r.routing.push_back(std::move(rl));
    // Output CKA: every expert applied to every probe token's router input.
    auto X = torch::cat(inputs[l], 0).to(dev);  // (N, D)
    auto& b = blocks[l];
    const auto [gates, ups, downs] = b->expertWeights();
    std::vector<torch::Tensor> outs;
    for (int64_t e = 0; e < E; ++e) {
      // In float32, one expert at a time (a bf16 model's expert is widened here, 3 F D floats).
      const auto wg = gates[e].to(torch::kFloat), wu = ups[e].to(torch::kFloat), wd = downs[e].to(torch::kFloat);
      auto h = torch::silu(torch::matmul(X, wg.t())) * torch::matmul(X, wu.t());  // (N, F)
      outs.push_back(torch::matmul(h, wd.t()).cpu());                            // (N, D)
    }
    Matrix cka;
    cka.rows = cka.cols = E;
    cka.values.assign(E * E, 1.0);
    for (int64_t a = 0; a < E; ++a)
      for (int64_t bb = a + 1; bb < E; ++bb) cka.values[a * E + bb] = cka.values[bb * E + a] = linearCka(outs[a], outs[bb]);
    r.similarity[l].cka = std::move(cka);
  }
  return r;
}

AnalysisReport analyzeModel(const std::filesystem::path& modelPath, const AnalyzeOptions& o) {
  std::vector<TokenRecord> probe;
  if (!o.data.empty()) {
    DataOptions d;
    d.path = o.data;
    d.promptTemplate = o.promptTemplate;
    probe = prepareData(modelPath, d).train;
    if (static_cast<int64_t>(probe.size()) > o.maxProbeRecords) probe.resize(o.maxProbeRecords);
  }
  return withTorchErrors("analyze", [&] {
    const torch::Device dev = resolveDevice(o.device);
    // Each model in its own storage dtype under "auto": a bf16 MoE is never widened as a whole.
    DecoderLM moe = loadModel(modelPath, {dev, loadDtype(o.dtype, loadHfConfig(modelPath).dtype, "--dtype")});
    DecoderLM base{nullptr};
    if (!o.base.empty()) base = loadModel(o.base, {dev, loadDtype(o.dtype, loadHfConfig(o.base).dtype, "--dtype")});
    return analyzeDecoder(*moe, base ? base.get() : nullptr, probe);
  });
}

namespace {
nlohmann::json matrixJson(const Matrix& m) {
  if (m.empty()) return nullptr;
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t r = 0; r < m.rows; ++r)
    rows.push_back(std::vector<double>(m.values.begin() + r * m.cols, m.values.begin() + (r + 1) * m.cols));
  return rows;
}
}  // namespace

std::string analysisJson(const AnalysisReport& r) {
  nlohmann::json j = {{"experts", r.experts}, {"top_k", r.topK}, {"diversity", r.diversity},
                      {"probe_tokens", r.probeTokens}, {"layers", nlohmann::json::array()}};
  for (size_t i = 0; i < r.similarity.size(); ++i) {
    const auto& s = r.similarity[i];
    nlohmann::json L = {{"layer", s.layer}, {"diversity", s.diversity}, {"weight_similarity", matrixJson(s.weights)},
                        {"delta_similarity", matrixJson(s.deltas)}, {"output_cka", matrixJson(s.cka)}};
    if (i < r.routing.size()) {
      const auto& rl = r.routing[i];
      L["routing"] = {{"shares", rl.shares}, {"entropy", rl.entropy}, {"share_entropy", rl.shareEntropy},
                      {"imbalance", rl.imbalance}, {"coselection", matrixJson(rl.coselection)},
                      {"domains", rl.domainShares}};
    }
    j["layers"].push_back(L);
  }
  return j.dump(2);
}

std::string analysisText(const AnalysisReport& r) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(3);
  os << r.experts << " experts, top-" << r.topK << "; diversity (mean off-diagonal 1 - cosine) " << r.diversity;
  if (r.probeTokens) os << "; " << r.probeTokens << " probe tokens";
  os << "\n";
  for (size_t i = 0; i < r.similarity.size(); ++i) {
    const auto& s = r.similarity[i];
    os << "layer " << s.layer << ": diversity " << s.diversity;
    if (i < r.routing.size()) {
      const auto& rl = r.routing[i];
      os << ", routing entropy " << rl.entropy << " nats, imbalance " << rl.imbalance << ", shares";
      for (double v : rl.shares) os << " " << std::setprecision(2) << v << std::setprecision(3);
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace upcycle
