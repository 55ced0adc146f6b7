#include "cli/progress.h"

#include <algorithm>

namespace upcycle::cli {

namespace {
std::string clock(double secs) {
  if (!(secs >= 0) || secs > 1e7) return "--:--";
  const long s = static_cast<long>(secs + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}
}  // namespace

void ProgressPrinter::endLine() {
  if (m_lineOpen) {
    std::printf("\n");
    m_lineOpen = false;
  }
}

double StageEta::update(const std::string& stage, int64_t step, int64_t totalSteps, double nowSeconds) {
  if (m_firstStep < 0 || stage != m_stage || step <= m_lastStep) {
    m_firstStep = step;
    m_start = nowSeconds;
    m_stage = stage;
  }
  m_lastStep = step;
  if (step == m_firstStep) return -1;
  const double perStep = (nowSeconds - m_start) / double(step - m_firstStep);
  return perStep * double(std::max<int64_t>(0, totalSteps - step));
}

void ProgressPrinter::onStep(const StepMetrics& m) {
  const double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - m_origin).count();
  const double eta = m_eta.update(m.stage, m.step, m.totalSteps, now);
  if (m_terminal) {
    const int width = 24;
    const int filled = static_cast<int>(width * double(m.step) / double(std::max<int64_t>(1, m.totalSteps)));
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::printf("\r%s [%s] %lld/%lld loss %.4f aux %.3f lr %.2e %.0f tok/s ETA %s   ", m.stage.c_str(), bar.c_str(),
                static_cast<long long>(m.step), static_cast<long long>(m.totalSteps), m.loss, m.auxLoss, m.lr,
                m.tokensPerSec, clock(eta).c_str());
    std::fflush(stdout);
    m_lineOpen = true;
  } else {
    const int64_t every = std::max<int64_t>(1, m.totalSteps / 20);
    if (m.step % every == 0 || m.step == m.totalSteps || eta < 0) {
      std::printf("%s step %lld/%lld epoch %.2f loss %.4f lm %.4f aux %.4f lr %.3e grad %.3f %.0f tok/s eta %s\n",
                  m.stage.c_str(), static_cast<long long>(m.step), static_cast<long long>(m.totalSteps), m.epoch,
                  m.loss, m.lmLoss, m.auxLoss, m.lr, m.gradNorm, m.tokensPerSec, clock(eta).c_str());
      std::fflush(stdout);
    }
  }
}

void ProgressPrinter::onCheckpoint(const std::filesystem::path& folder, int64_t step) {
  if (!m_terminal) std::printf("saved %s (step %lld)\n", folder.string().c_str(), static_cast<long long>(step));
}

void ProgressPrinter::onEpochEnd(int64_t epoch, double meanLoss) {
  endLine();
  std::printf("epoch %lld done, mean loss %.4f\n", static_cast<long long>(epoch), meanLoss);
}

void ProgressPrinter::onLog(const std::string& message) {
  endLine();
  std::printf("%s\n", message.c_str());
}

void ProgressPrinter::finish() { endLine(); }

}  // namespace upcycle::cli
