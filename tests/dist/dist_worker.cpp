// Not a test: one rank of a data-parallel training run for tests/dist/test_dist.cpp. It trains a
// model folder on a JSONL file with the real trainer and writes, per optimizer step, the logged
// losses, the gradient norm and a checksum of every parameter's bytes (FNV-1a over the float32
// values, so two ranks agree only when their weights are bit-identical) to OUT.rank-R.json.
//   dist_worker MODEL DATA OUT STEPS BATCH ACCUM NPROC AUX_COEF Z_COEF
// NPROC > 1 starts the other ranks as copies of this program through the engine's launcher.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "api/distributed.h"
#include "api/runtime.h"
#include "data/prepare.h"
#include "model/model_io.h"
#include "train/trainer.h"

using namespace upcycle;

namespace {

uint64_t fnv1a(const torch::nn::Module& m) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& p : m.parameters()) {
    auto c = p.detach().to(torch::kCPU).contiguous();
    const auto* b = static_cast<const unsigned char*>(c.data_ptr());
    for (int64_t i = 0, n = c.numel() * static_cast<int64_t>(c.element_size()); i < n; ++i)
      h = (h ^ b[i]) * 1099511628211ull;
  }
  return h;
}

class Recorder : public TrainObserver {
 public:
  explicit Recorder(DecoderLM& m) : m_model(m) {}
  void onStep(const StepMetrics& s) override {
    steps.push_back({{"step", s.step},
                     {"loss", s.loss},
                     {"lm_loss", s.lmLoss},
                     {"aux_loss", s.auxLoss},
                     {"z_loss", s.zLoss},
                     {"grad_norm", s.gradNorm},
                     {"tokens", s.tokens},
                     {"checksum", std::to_string(fnv1a(*m_model))}});
  }
  nlohmann::json steps = nlohmann::json::array();

 private:
  DecoderLM& m_model;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 10) {
    std::fprintf(stderr,
                 "usage: dist_worker MODEL DATA OUT STEPS BATCH ACCUM NPROC AUX_COEF Z_COEF\n");
    return 2;
  }
  try {
    configureRuntime(1);  // one thread per rank: the ranks share the test machine's cores
    DistLaunch l;
    l.nproc = std::atoi(argv[7]);
    l.childArgs.assign(argv, argv + argc);
    l.childArgs[0] = std::filesystem::read_symlink("/proc/self/exe").string();
    l.device = "cpu";
    l.timeoutSeconds = 60;
    DistScope dist(l);
    try {
      DataOptions d;
      d.path = argv[2];
      d.promptTemplate = "compact";
      PreparedData data = prepareData(argv[1], d);
      DecoderLM model = loadModel(argv[1]);
      TrainOptions o;
      o.maxSteps = std::atoll(argv[4]);
      o.batchSize = std::atoll(argv[5]);
      o.gradAccum = std::atoll(argv[6]);
      o.auxLossCoef = std::atof(argv[8]);
      o.zLossCoef = std::atof(argv[9]);
      o.lr = 3e-3;
      o.warmupSteps = 2;
      o.weightDecay = 0.1;
      o.device = "cpu";
      o.seed = 7;
      o.saveFinal = false;
      Recorder rec(model);
      TrainResult r = trainDecoder(model, data.train, o, &rec, nullptr);
      const DistInfo info = distInfo();
      nlohmann::json out = {{"rank", info.rank},
                            {"world", info.world},
                            {"backend", info.backend},
                            {"steps", rec.steps},
                            {"final_loss", r.finalLoss}};
      std::ofstream(std::string(argv[3]) + ".rank-" + std::to_string(info.rank) + ".json")
          << out.dump(1) << "\n";
      return 0;
    } catch (const std::exception& e) {
      dist.fail(e.what());
      throw;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_worker: error: %s\n", e.what());
    return 1;
  }
}
