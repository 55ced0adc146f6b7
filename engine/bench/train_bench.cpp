// `upcycle bench train`: end-to-end training-step throughput and model FLOPs utilization.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "api/bench.h"
#include "api/distributed.h"
#include "api/runtime.h"
#include "bench/timing.h"
#include "api/torch_errors.h"
#include "core/error.h"
#include "model/decoder.h"
#include "model/model_io.h"
#include "train/fused_adamw.h"
#include "train/trainer.h"

namespace upcycle {

namespace {

// Records the wall time of every optimizer step (the observer is called right after each one), and
// between steps times the matmul-peak probe, so that the step and the peak it is divided by are
// measured on the same machine state (a shared VM's clock drifts within a minute).
class StepClock : public TrainObserver {
 public:
  explicit StepClock(std::function<void()> probe) : m_probe(std::move(probe)) {}
  void onStep(const StepMetrics& m) override {
    auto now = std::chrono::steady_clock::now();
    if (m_started) seconds.push_back(std::chrono::duration<double>(now - m_last).count());
    m_started = true;
    tokens = m.tokens;
    m_probe();
    const auto after = std::chrono::steady_clock::now();
    probeSeconds.push_back(std::chrono::duration<double>(after - now).count());
    m_last = after;
  }
  std::vector<double> seconds;       // steps 2..N
  std::vector<double> probeSeconds;  // after steps 1..N; probeSeconds[i + 1] follows seconds[i]
  int64_t tokens = 0;

 private:
  std::function<void()> m_probe;
  bool m_started = false;
  std::chrono::steady_clock::time_point m_last;
};

}  // namespace

TrainBenchResult benchTrain(const TrainBenchOptions& o) {
  UPCYCLE_CHECK(o.dModel > 0 && o.dFf > 0 && o.layers > 0 && o.seqLen > 1 && o.batch > 0, "bench sizes must be positive");
  UPCYCLE_CHECK(o.dModel % o.heads == 0 && o.heads % o.kvHeads == 0, "d-model must be a multiple of heads, heads of kv-heads");
  UPCYCLE_CHECK(o.experts == 0 || (o.topK >= 1 && o.topK <= o.experts), "top-k (", o.topK, ") must be between 1 and experts (",
                o.experts, ")");
  UPCYCLE_CHECK(o.steps >= 2 && o.warmup >= 0, "steps must be at least 2");
  return withTorchErrors("bench train", [&] {
    TrainBenchResult r;
    r.options = o;
    r.threads = at::get_num_threads();
    ModelConfig c;
    c.modelType = o.experts > 0 ? "mixtral" : "llama";
    c.vocabSize = 264;
    c.hiddenSize = o.dModel;
    c.intermediateSize = o.dFf;
    c.numLayers = o.layers;
    c.numHeads = o.heads;
    c.numKvHeads = o.kvHeads;
    c.headDim = o.dModel / o.heads;
    c.maxPositionEmbeddings = std::max<int64_t>(2048, o.seqLen);
    if (o.experts > 0) {
      c.numExperts = o.experts;
      c.topK = o.topK;
      c.expertIntermediateSize = o.dFf;
      c.moeLayers.assign(o.layers, true);
    }
    torch::manual_seed(o.seed);
    DecoderLM model(c);
    // Parameters: total, and active per token (k of the E experts).
    const int64_t D = o.dModel, F = o.dFf, hd = D / o.heads;
    const int64_t attn = D * (o.heads * hd) + 2 * D * (o.kvHeads * hd) + (o.heads * hd) * D;
    const int64_t ffnActive = (o.experts > 0 ? o.topK : 1) * 3 * D * F + (o.experts > 0 ? D * o.experts : 0);
    const int64_t head = c.vocabSize * D;
    for (const auto& p : model->parameters()) r.totalParams += p.numel();
    const int64_t matmulActive = o.layers * (attn + ffnActive) + head;
    r.activeParams = r.totalParams - (o.experts > 0 ? o.layers * (o.experts - o.topK) * 3 * D * F : 0);
    const double forward = 2.0 * static_cast<double>(matmulActive) + 2.0 * static_cast<double>(o.layers * o.seqLen * D);
    r.flopsPerToken = 3.0 * forward;

    // Random tokens; every position is predicted.
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<int64_t> tok(0, 255);
    std::vector<TokenRecord> data(static_cast<size_t>(o.batch * (o.warmup + o.steps + 1)));
    for (auto& rec : data) {
      rec.inputIds.resize(o.seqLen);
      for (auto& t : rec.inputIds) t = tok(rng);
    }
    TrainOptions t;
    t.batchSize = o.batch;
    t.maxSteps = o.warmup + o.steps;
    t.lr = 1e-4;
    t.device = o.device;
    t.precision = o.precision;
    t.seed = o.seed;
    t.saveFinal = false;
    t.fusedAdamW = o.fusedAdamW;
    t.stage = "bench";
    // The matmul peak at the model's largest GEMM: (batch x seq) x D times D x F.
    const torch::Device dev = resolveDevice(o.device);
    // In bf16 the peak is the bf16 matmul's (the precision in use); the float32 peak is reported beside.
    r.precision = resolvePrecision(o.precision, dev.is_cuda(), "--precision");
    const bool bf16 = r.precision == "bf16";
    auto a = torch::randn({o.batch * o.seqLen, D}).to(dev), w = torch::randn({D, F}).to(dev);
    auto ab = a.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
    StepClock clock([&] {
      torch::matmul(bf16 ? ab : a, bf16 ? wb : w);
      if (dev.is_cuda()) torch::cuda::synchronize();
    });
    trainDecoder(model, data, t, &clock, nullptr);
    const size_t first = std::min<size_t>(clock.seconds.size() - 1, o.warmup);
    const std::vector<double> measured(clock.seconds.begin() + first, clock.seconds.end());
    const std::vector<double> probes(clock.probeSeconds.begin() + first + 1, clock.probeSeconds.end());
    const double tokens = static_cast<double>(o.batch * (o.seqLen - 1));
    const double peakFlops = 2.0 * static_cast<double>(o.batch * o.seqLen * D * F);
    std::vector<double> mfu;  // per step, against the probe right after it
    for (size_t i = 0; i < measured.size(); ++i) mfu.push_back(r.flopsPerToken * tokens / measured[i] / (peakFlops / probes[i]));
    // Data-parallel: the batch is the global one and every rank has its own cores, so the peak the
    // step is measured against is world x one rank's.
    r.world = std::max(1, distInfo().world);
    for (auto& m : mfu) m /= r.world;
    r.secondsPerStep = median(measured);
    r.tokensPerS = tokens / r.secondsPerStep;
    r.achievedGflops = r.flopsPerToken * r.tokensPerS / 1e9;
    r.matmulPeakGflops = r.world * peakFlops / median(probes) / 1e9;
    if (bf16) r.fp32PeakGflops = r.world * peakFlops / medianSeconds(2, 5, dev, [&] { torch::matmul(a, w); }) / 1e9;
    r.mfu = median(mfu);
    return r;
  });
}

std::string trainBenchJson(const TrainBenchResult& r) {
  const auto& o = r.options;
  nlohmann::json j = {{"d_model", o.dModel}, {"d_ff", o.dFf}, {"layers", o.layers}, {"heads", o.heads},
                      {"kv_heads", o.kvHeads}, {"experts", o.experts}, {"top_k", o.topK}, {"seq_len", o.seqLen},
                      {"batch", o.batch}, {"device", o.device}, {"optimizer", o.fusedAdamW ? "fused" : "torch"}, {"threads", r.threads}, {"world", r.world}, {"precision", r.precision},
                      {"fp32_peak_gflops", r.fp32PeakGflops}, {"blas", runtimeInfo().blas},
                      {"total_params", r.totalParams}, {"active_params", r.activeParams},
                      {"flops_per_token", r.flopsPerToken}, {"seconds_per_step", r.secondsPerStep},
                      {"tokens_per_s", r.tokensPerS}, {"achieved_gflops", r.achievedGflops},
                      {"matmul_peak_gflops", r.matmulPeakGflops}, {"mfu", r.mfu}};
  return j.dump(2);
}

AdamWBenchResult benchAdamW(const AdamWBenchOptions& o) {
  UPCYCLE_CHECK(o.dModel > 0 && o.dFf > 0 && o.layers > 0 && o.experts >= 0, "bench sizes must be positive");
  UPCYCLE_CHECK(o.rounds >= 1, "rounds must be at least 1");
  return withTorchErrors("bench adamw", [&] {
    AdamWBenchResult r;
    r.options = o;
    r.threads = at::get_num_threads();
    // The decoder's parameter shapes: per layer q, k, v, o (k, v at half width as with 2 KV heads of
    // 4), two norms, the FFN or E experts and a router; embeddings and the final norm.
    const int64_t D = o.dModel, F = o.dFf, V = 264;
    std::vector<std::vector<int64_t>> shapes = {{V, D}, {V, D}, {D}};
    for (int64_t l = 0; l < o.layers; ++l) {
      for (auto s : std::vector<std::vector<int64_t>>{{D, D}, {D / 2, D}, {D / 2, D}, {D, D}, {D}, {D}}) shapes.push_back(s);
      const int64_t E = std::max<int64_t>(o.experts, 1);
      for (int i = 0; i < 2; ++i) shapes.push_back({E, F, D});
      shapes.push_back({E, D, F});
      if (o.experts > 0) shapes.push_back({o.experts, D});
    }
    torch::manual_seed(o.seed);
    std::vector<torch::Tensor> pa, pb, matA, vecA, matB, vecB;
    for (const auto& s : shapes) {
      auto p = torch::randn(s) * 0.02;
      pa.push_back(p.clone().set_requires_grad(true));
      pb.push_back(p.clone().set_requires_grad(true));
      (s.size() >= 2 ? matA : vecA).push_back(pa.back());
      (s.size() >= 2 ? matB : vecB).push_back(pb.back());
      const auto g = torch::randn(s) * 1e-3;
      pa.back().mutable_grad() = g;
      pb.back().mutable_grad() = g.clone();
      r.params += p.numel();
    }
    // The trainer's groups: weight decay on matrices, none on vectors.
    auto base = torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8);
    auto groups = [&](const std::vector<torch::Tensor>& mats, const std::vector<torch::Tensor>& vecs) {
      std::vector<torch::optim::OptimizerParamGroup> g;
      g.emplace_back(mats, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).weight_decay(0.1)));
      g.emplace_back(vecs, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).weight_decay(0.0)));
      return g;
    };
    torch::optim::AdamW libtorch(groups(matB, vecB), base);
    FusedAdamW fused(groups(matA, vecA), base);
    const torch::Device cpu(torch::kCPU);
    const auto t = interleavedSeconds(2, o.rounds, cpu, {[&] { libtorch.step(); }, [&] { fused.step(); }});
    r.torchSeconds = median(t[0]);
    r.fusedSeconds = median(t[1]);
    std::vector<double> ratio;
    for (size_t i = 0; i < t[0].size(); ++i) ratio.push_back(t[0][i] / t[1][i]);
    r.speedup = median(ratio);
    r.fusedGbPerS = 28.0 * static_cast<double>(r.params) / r.fusedSeconds / 1e9;
    for (size_t i = 0; i < pa.size(); ++i) {
      // The largest difference relative to the tensor's largest value.
      auto d = (pa[i].detach() - pb[i].detach()).abs().max() / pb[i].detach().abs().max();
      r.maxRelDiff = std::max(r.maxRelDiff, d.item<double>());
    }
    return r;
  });
}

std::string adamWBenchJson(const AdamWBenchResult& r) {
  const auto& o = r.options;
  nlohmann::json j = {{"d_model", o.dModel}, {"d_ff", o.dFf}, {"layers", o.layers}, {"experts", o.experts},
                      {"threads", r.threads}, {"params", r.params}, {"torch_seconds", r.torchSeconds},
                      {"fused_seconds", r.fusedSeconds}, {"speedup", r.speedup}, {"fused_gb_per_s", r.fusedGbPerS},
                      {"max_rel_diff", r.maxRelDiff}};
  return j.dump(2);
}

}  // namespace upcycle
