#pragma once
// Terminal progress for training: a one-line bar with steps, loss, tokens/s and ETA on a terminal,
// plain log lines otherwise (CI, pipes).
#include <chrono>
#include <cstdio>
#include <string>

#include "api/training.h"

namespace upcycle::cli {

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
  int64_t m_firstStep = -1;
  std::chrono::steady_clock::time_point m_start;
  void endLine();
};

}  // namespace upcycle::cli
