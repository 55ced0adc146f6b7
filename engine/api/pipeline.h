#pragma once
// Running a whole experiment (pipeline/experiment.h): data, base, dense SFT with checkpoints, each
// run's conversion (+ UpIT's expansion and router pre-optimization), post-training with the same
// budget for every run, evaluation. Torch-free header, shared by the CLI and the GUI.
// Thread-safety: runExperiment runs on the calling thread (the engine's worker thread); observer
// callbacks come on that thread; `cancel` may be set from any thread and stops at a step boundary.
#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include "api/analysis.h"
#include "api/models.h"
#include "api/training.h"
#include "core/lineage.h"
#include "pipeline/experiment.h"

namespace upcycle {

using LineageInfo = Lineage;

struct RunSummary {
  std::string name, method;
  uint64_t seed = 0;                      // the repeat's seed (the experiment's `seeds`)
  std::filesystem::path model;            // the post-trained model (HF folder)
  EvalReport eval;                        // on the evaluation records
  int64_t steps = 0;                      // post-training steps
  double finalTrainLoss = 0;
  double seconds = 0;
  std::vector<int64_t> checkpointsUsed;   // UpIT: 1-based positions of the SFT checkpoints used
  std::vector<LineageInfo> lineage;       // UpIT: the GA children
  std::vector<int64_t> seedBuckets;       // UpIT: seed samples per expert
  AnalysisReport converted;               // MoE runs: the analysis right after conversion (before post-training)
  AnalysisReport analysis;                // MoE runs: similarity and routing on the evaluation records, after post-training
  int64_t storeId = 0;                    // the run's id in the run store (0 = not recorded)
};

struct ExperimentReport {
  std::filesystem::path out, baseModel;                // of the last repeat
  std::vector<std::filesystem::path> sftCheckpoints;  // of the last repeat
  std::vector<uint64_t> seeds;                        // the repeats run (all of them unless cancelled)
  std::vector<RunSummary> runs;                       // every (run, seed), repeat by repeat
  bool cancelled = false;
};

class PipelineObserver : public TrainObserver {
 public:
  virtual void onStage(const std::string& /*stage*/, const std::string& /*detail*/) {}
  virtual void onRunFinished(const RunSummary& /*run*/) {}
  // With several seeds: one seed's repeat is done (its runs only), before the next starts.
  virtual void onRepeatFinished(const ExperimentReport& /*repeat*/) {}
};

class RunStore;

// With a store, every run (plus one "base" run for the shared pretraining and SFT stages) is recorded:
// params, metrics, evaluation, artifacts, lineage, analysis, logs; a run that throws is marked failed,
// a cancelled one cancelled.
ExperimentReport runExperiment(const Experiment& e, PipelineObserver* observer = nullptr,
                               const std::atomic<bool>* cancel = nullptr, RunStore* store = nullptr);

// Per-domain exact-match accuracy and loss of every run, as a text table; with several seeds, the mean
// and 95% t interval across seeds of each run (run_summary.h).
std::string experimentTable(const ExperimentReport& r);

// A file shipped in resources/ (e.g. "experiments/demo.yaml"): looked up in $UPCYCLE_RESOURCES, next to
// the executable's ../share/upcycle-workbench, and in the source tree the binary was built from.
std::filesystem::path findResource(const std::string& relative);

}  // namespace upcycle
