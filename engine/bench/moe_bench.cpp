#include "bench/moe_bench.h"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <vector>

#include "api/bench.h"
#include "api/runtime.h"
#include "bench/timing.h"
#include "api/torch_errors.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "model/model_io.h"

namespace upcycle {

SeparateExperts separateExperts(const MoeBlockImpl& b) {
  SeparateExperts s;
  torch::NoGradGuard noGrad;
  for (int64_t e = 0; e < b.numExperts; ++e) {
    s.gate.push_back(b.w_gate[e].clone().requires_grad_(b.w_gate.requires_grad()));
    s.up.push_back(b.w_up[e].clone().requires_grad_(b.w_up.requires_grad()));
    s.down.push_back(b.w_down[e].clone().requires_grad_(b.w_down.requires_grad()));
  }
  return s;
}

torch::Tensor naiveMoeForward(const MoeBlockImpl& b, const SeparateExperts& ex, const torch::Tensor& x) {
  auto logits = torch::linear(x.to(torch::kFloat), b.router->weight.to(torch::kFloat));
  auto probs = torch::softmax(logits, -1);
  auto [w, idx] = probs.topk(b.topK, -1);                     // (N, K)
  if (b.normTopk) w = w / w.sum(-1, true);
  auto out = torch::zeros_like(x);
  auto mask = torch::one_hot(idx, b.numExperts).permute({2, 1, 0});  // (E, K, N) as in transformers
  for (int64_t e = 0; e < b.numExperts; ++e) {
    auto hit = torch::nonzero(mask[e]);                       // (n, 2): slot, token
    if (hit.size(0) == 0) continue;
    auto slot = hit.select(1, 0), tok = hit.select(1, 1);
    auto xs = x.index_select(0, tok);
    auto h = torch::silu(torch::matmul(xs, ex.gate[e].t())) * torch::matmul(xs, ex.up[e].t());
    auto y = torch::matmul(h, ex.down[e].t()) * w.index({tok, slot}).unsqueeze(1).to(x.scalar_type());
    out = out.index_add(0, tok, y.to(out.scalar_type()));  // transformers: .to(hidden_states.dtype)
  }
  return out;
}


MoeBenchResult benchMoe(const MoeBenchOptions& o) {
  UPCYCLE_CHECK(o.dModel > 0 && o.dFf > 0 && o.tokens > 0, "bench sizes must be positive");
  UPCYCLE_CHECK(o.topK >= 1 && o.topK <= o.experts, "top-k (", o.topK, ") must be between 1 and experts (", o.experts, ")");
  UPCYCLE_CHECK(o.iterations >= 1 && o.warmup >= 0, "iterations must be at least 1");
  return withTorchErrors("bench", [&] {
    const torch::Device dev = resolveDevice(o.device);
    ModelConfig c;
    c.modelType = "mixtral";
    c.hiddenSize = o.dModel;
    c.intermediateSize = c.expertIntermediateSize = o.dFf;
    c.numExperts = o.experts;
    c.topK = o.topK;
    c.numLayers = 1;
    c.moeLayers = {true};
    MoeBlock block(c);
    torch::Generator gen = at::detail::createCPUGenerator(o.seed);
    {
      torch::NoGradGuard ng;
      for (auto& p : block->parameters()) p.normal_(0.0, 0.02, gen);
    }
    block->to(dev);
    std::vector<torch::Tensor> inputs;  // one per round with varyRouting, else one
    for (int64_t i = 0; i < (o.varyRouting ? o.warmup + o.iterations : 1); ++i)
      inputs.push_back(torch::randn({o.tokens, o.dModel}, gen).to(dev).requires_grad_(true));
    size_t round = 0;
    torch::Tensor x = inputs[0];
    RouterRecord rec;
    const bool bf16 = resolvePrecision(o.precision, dev.is_cuda(), "--precision") == "bf16";
    auto grouped = [&] {
      block->zero_grad();
      Bf16Autocast autocast(dev, bf16);
      block->forward(x.view({1, o.tokens, o.dModel}), rec).sum().backward();
    };
    SeparateExperts experts = separateExperts(*block);
    auto naiveIn = [&](bool lowPrecision) {
      block->zero_grad();
      for (auto* v : {&experts.gate, &experts.up, &experts.down})
        for (auto& t : *v) t.mutable_grad().reset();
      Bf16Autocast autocast(dev, lowPrecision);
      naiveMoeForward(*block, experts, x).sum().backward();
    };
    auto naive = [&] { naiveIn(bf16); };
    auto naiveFp32 = [&] { naiveIn(false); };
    MoeBenchResult r;
    r.options = o;
    r.threads = at::get_num_threads();
    // Matmul peak at the layer's own shape: (T k / E) x D times D x F, the average expert GEMM, batched
    // E times so that it runs as long as the real work.
    const int64_t rows = std::max<int64_t>(1, o.tokens * o.topK / o.experts);
    auto a = torch::randn({rows, o.dModel}, gen).to(dev), w = torch::randn({o.dModel, o.dFf}, gen).to(dev);
    auto ab = a.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
    auto peak = [&] {
      for (int64_t e = 0; e < o.experts; ++e) torch::matmul(bf16 ? ab : a, bf16 ? wb : w);
    };
    auto peakFp32 = [&] {
      for (int64_t e = 0; e < o.experts; ++e) torch::matmul(a, w);
    };
    std::vector<std::function<void()>> work{grouped, naive, peak};
    if (bf16) work.insert(work.end(), {naiveFp32, peakFp32});
    if (o.varyRouting) {  // the round's last function moves every path to the next input
      auto last = work.back();
      work.back() = [&, last] {
        last();
        x = inputs[++round % inputs.size()];
      };
    }
    const auto t = interleavedSeconds(o.warmup, o.iterations, dev, work);
    std::vector<double> ratios;  // per round: the same machine state for both paths
    for (size_t i = 0; i < t[0].size(); ++i) ratios.push_back(t[1][i] / t[0][i]);
    r.groupedSeconds = median(t[0]);
    r.naiveSeconds = median(t[1]);
    const double peakSeconds = median(t[2]);
    // FLOPs: per (token, slot) 3 matmuls of D x F (2 FLOPs per multiply-add), backward twice the forward;
    // the router adds 2 D E per token, likewise tripled.
    const double flops = 3.0 * (double(o.tokens) * o.topK * 6.0 * o.dModel * o.dFf + 2.0 * o.tokens * o.dModel * o.experts);
    r.tokensPerS = o.tokens / r.groupedSeconds;
    r.naiveTokensPerS = o.tokens / r.naiveSeconds;
    r.achievedGflops = flops / r.groupedSeconds / 1e9;
    r.naiveGflops = flops / r.naiveSeconds / 1e9;
    r.speedup = median(ratios);
    r.matmulPeakGflops = 2.0 * rows * o.dModel * o.dFf * o.experts / peakSeconds / 1e9;
    if (bf16) {
      std::vector<double> vsFp32;
      for (size_t i = 0; i < t[0].size(); ++i) vsFp32.push_back(t[3][i] / t[0][i]);
      r.naiveFp32Seconds = median(t[3]);
      r.speedupVsNaiveFp32 = median(vsFp32);
      r.fp32PeakGflops = 2.0 * rows * o.dModel * o.dFf * o.experts / median(t[4]) / 1e9;
    }
    return r;
  });
}

std::string moeBenchJson(const MoeBenchResult& r) {
  const auto& o = r.options;
  nlohmann::json j = {{"d_model", o.dModel}, {"d_ff", o.dFf}, {"experts", o.experts}, {"top_k", o.topK},
                      {"tokens", o.tokens}, {"device", o.device}, {"threads", r.threads}, {"blas", runtimeInfo().blas},
                      {"iterations", o.iterations}, {"grouped_seconds", r.groupedSeconds},
                      {"naive_seconds", r.naiveSeconds}, {"tokens_per_s", r.tokensPerS},
                      {"naive_tokens_per_s", r.naiveTokensPerS}, {"achieved_gflops", r.achievedGflops},
                      {"naive_gflops", r.naiveGflops}, {"matmul_peak_gflops", r.matmulPeakGflops},
                      {"fraction_of_peak", r.achievedGflops / r.matmulPeakGflops},
                      {"speedup_vs_naive", r.speedup}, {"precision", o.precision},
                      {"vary_routing", o.varyRouting}};
  if (r.naiveFp32Seconds > 0) {
    j["naive_fp32_seconds"] = r.naiveFp32Seconds;
    j["speedup_vs_naive_fp32"] = r.speedupVsNaiveFp32;
    j["fp32_peak_gflops"] = r.fp32PeakGflops;
  }
  return j.dump(2);
}

}  // namespace upcycle
