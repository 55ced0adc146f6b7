#pragma once
// Terminal progress for training: a one-line bar with steps, loss, tokens/s and ETA on a terminal,
// plain log lines otherwise (CI, pipes).
#include <chrono>
#include <cstdio>
#include <string>

#include "api/training.h"

namespace upcycle::cli {

// Seconds left in the current training stage, from the mean step time since the stage's first step
// seen. One printer serves every stage of a pipeline, so a new stage name or a step counter that went
// back starts a new reference. Negative until two steps of the stage have been seen.
class StageEta {
 public:
  double update(const std::string& stage, int64_t step, int64_t totalSteps, double nowSeconds);

 private:
  int64_t m_firstStep = -1, m_lastStep = -1;
  double m_start = 0;
  std::string m_stage;
};

class ProgressPrinter : public TrainObserver {
 public:
  explicit ProgressPrinter(bool terminal) : m_terminal(terminal) {}
  void onStep(const StepMetrics& m) override;
  void onCheckpoint(const std::filesystem::path& folder, int64_t step) override;
  void onEpochEnd(int64_t epoch, double meanLoss) override;
  void onLog(const std::string& message) override;
  void finish();

 private:
  bool m_terminal;
  bool m_lineOpen = false;
  StageEta m_eta;
  const std::chrono::steady_clock::time_point m_origin = std::chrono::steady_clock::now();
  void endLine();
};

}  // namespace upcycle::cli
