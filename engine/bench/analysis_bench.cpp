// `upcycle bench analysis`: similarity analysis and GA merging against the memory bandwidth.
#include <torch/torch.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "analysis/analysis.h"
#include "api/bench.h"
#include "api/runtime.h"
#include "bench/timing.h"
#include "api/torch_errors.h"
#include "core/error.h"
#include "upcycle/upit.h"

namespace upcycle {


AnalysisBenchResult benchAnalysis(const AnalysisBenchOptions& o) {
  UPCYCLE_CHECK(o.dModel > 0 && o.dFf > 0 && o.layers > 0 && o.experts >= 2 && o.iterations >= 1,
                "bench sizes must be positive, with at least 2 experts");
  return withTorchErrors("bench analysis", [&] {
    torch::NoGradGuard ng;
    AnalysisBenchResult r;
    r.options = o;
    r.threads = at::get_num_threads();
    r.expertBytes = 4.0 * 3.0 * static_cast<double>(o.dModel * o.dFf * o.layers);
    torch::manual_seed(o.seed);
    // A random dense base and an MoE of it (only the FFN weights matter here).
    ModelConfig dc;
    dc.modelType = "llama";
    dc.vocabSize = 264;
    dc.hiddenSize = o.dModel;
    dc.intermediateSize = o.dFf;
    dc.numLayers = o.layers;
    dc.numHeads = 8;
    dc.numKvHeads = 8;
    dc.headDim = o.dModel / 8;
    DecoderLM base(dc);
    const ModelConfig mc = moeConfigFromDense(dc, MoeShape{o.experts, 2, 1, 0});
    DecoderLM moe(mc);
    r.analysisSeconds = medianSeconds(1, o.iterations, torch::kCPU, [&] { analyzeDecoder(*moe, base.get(), {}); });
    r.analysisGbPerS = (o.experts + 1) * r.expertBytes / r.analysisSeconds / 1e9;
    r.analysisGflops = 2.0 * 2.0 * double(o.experts * o.experts) * (r.expertBytes / 4.0) / r.analysisSeconds / 1e9;

    ExpertFfn a = ffnOf(*base), b, b0 = ffnOf(*base);
    for (auto* v : {&b.gate, &b.up, &b.down}) v->clear();
    for (size_t l = 0; l < a.gate.size(); ++l) {
      b.gate.push_back(torch::randn_like(a.gate[l]));
      b.up.push_back(torch::randn_like(a.up[l]));
      b.down.push_back(torch::randn_like(a.down[l]));
      b0.gate[l] = torch::randn_like(a.gate[l]);
      b0.up[l] = torch::randn_like(a.up[l]);
      b0.down[l] = torch::randn_like(a.down[l]);
    }
    GaConfig ga;  // linear merge, DARE p = 0.3 (SPEC defaults)
    r.mergeSeconds = medianSeconds(1, o.iterations, torch::kCPU, [&] { makeChild(a, b, b0, 0.4, ga, 1); });
    r.mergeGbPerS = 4.0 * r.expertBytes / r.mergeSeconds / 1e9;
    r.maskSeconds = medianSeconds(0, o.iterations, torch::kCPU, [&] {
      torch::Generator g = at::detail::createCPUGenerator(1);
      for (size_t l = 0; l < a.gate.size(); ++l)
        for (const auto* t : {&a.gate[l], &a.up[l], &a.down[l]}) dareKeepMask(t->sizes(), ga.dareP, g);
    });

    // Memory bandwidth: copy one expert's worth of floats (at least 256 MB), read + write.
    const int64_t n = std::max<int64_t>(64 << 20, static_cast<int64_t>(r.expertBytes / 4));
    auto src = torch::randn({n}), dst = torch::empty({n});
    const double copySeconds = medianSeconds(1, 5, torch::kCPU, [&] { dst.copy_(src); });
    r.bandwidthGbPerS = 2.0 * 4.0 * static_cast<double>(n) / copySeconds / 1e9;
    return r;
  });
}

std::string analysisBenchJson(const AnalysisBenchResult& r) {
  const auto& o = r.options;
  nlohmann::json j = {{"d_model", o.dModel}, {"d_ff", o.dFf}, {"layers", o.layers}, {"experts", o.experts},
                      {"threads", r.threads}, {"blas", runtimeInfo().blas}, {"expert_bytes", r.expertBytes}, {"analysis_seconds", r.analysisSeconds},
                      {"analysis_gb_per_s", r.analysisGbPerS}, {"merge_seconds", r.mergeSeconds},
                      {"merge_gb_per_s", r.mergeGbPerS}, {"analysis_gflops", r.analysisGflops},
                      {"dare_mask_seconds", r.maskSeconds}, {"memory_bandwidth_gb_per_s", r.bandwidthGbPerS},
                      {"analysis_fraction_of_bandwidth", r.analysisGbPerS / r.bandwidthGbPerS},
                      {"merge_fraction_of_bandwidth", r.mergeGbPerS / r.bandwidthGbPerS}};
  return j.dump(2);
}

}  // namespace upcycle
