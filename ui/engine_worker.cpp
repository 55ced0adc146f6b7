#include "engine_worker.h"

#include <filesystem>

#include "api/pipeline.h"
#include "store/run_store.h"

namespace upcycle::ui {

namespace {

// PipelineObserver -> queued signals. Runs on the worker thread.
class SignalObserver : public PipelineObserver {
 public:
  explicit SignalObserver(EngineWorker* w) : m_w(w) {}
  void onStep(const StepMetrics& m) override { m_w->pushStep(m); }
  void onCheckpoint(const std::filesystem::path& folder, int64_t step) override {
    Q_EMIT m_w->checkpoint(QString::fromStdString(folder.string()), step);
  }
  void onLog(const std::string& message) override { Q_EMIT m_w->log(QString::fromStdString(message)); }
  void onStage(const std::string& stage, const std::string& detail) override {
    Q_EMIT m_w->stage(QString::fromStdString(stage), QString::fromStdString(detail));
  }
  void onRunFinished(const RunSummary& r) override {
    Q_EMIT m_w->runFinished(r.storeId, QString::fromStdString(r.name));
  }

 private:
  EngineWorker* m_w;
};

}  // namespace

std::vector<StepMetrics> EngineWorker::takeSteps() {
  std::vector<StepMetrics> out;
  std::lock_guard<std::mutex> lock(m_mutex);
  out.swap(m_steps);
  return out;
}

void EngineWorker::pushStep(const StepMetrics& m) {
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> lock(m_mutex);
    wasEmpty = m_steps.empty();
    m_steps.push_back(m);
  }
  if (wasEmpty) Q_EMIT stepsAvailable();  // one wake-up per batch, however fast steps come
}

void EngineWorker::run(const QString& yaml, const QString& source, const QString& db, const QString& workDir) {
  bool ok = false, cancelled = false;
  QString message;
  try {
    Experiment e = parseExperiment(yaml.toStdString(), source.toStdString());
    e.sourceFile = source.toStdString();
    if (e.out.is_relative() && !workDir.isEmpty()) e.out = std::filesystem::path(workDir.toStdString()) / e.out;
    Q_EMIT started(QString::fromStdString(e.name));
    Q_EMIT log(QStringLiteral("output folder: %1").arg(QString::fromStdString(e.out.string())));
    SignalObserver observer(this);
    RunStore store(db.toStdString());  // this thread's own connection (one RunStore per thread)
    ExperimentReport report = runExperiment(e, &observer, m_cancel, &store);
    cancelled = report.cancelled;
    ok = true;
    message = cancelled ? QStringLiteral("cancelled") : QString::fromStdString(experimentTable(report));
  } catch (const std::exception& ex) {
    message = QString::fromStdString(ex.what());
  } catch (...) {
    message = QStringLiteral("unknown error in the engine");
  }
  Q_EMIT finished(ok, cancelled, message);
}

EngineController::EngineController(QObject* parent) : QObject(parent), m_worker(new EngineWorker(&m_cancel)) {
  m_thread.setObjectName(QStringLiteral("engine"));
  m_worker->moveToThread(&m_thread);
  connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
  connect(this, &EngineController::requestRun, m_worker, &EngineWorker::run, Qt::QueuedConnection);
  connect(m_worker, &EngineWorker::finished, this, [this] {
    m_busy = false;
    Q_EMIT busyChanged(false);
  });
  m_thread.start();
}

EngineController::~EngineController() {
  m_cancel = true;
  m_thread.requestInterruption();
  m_thread.quit();
  m_thread.wait();
}

void EngineController::start(const QString& yaml, const QString& source, const QString& db, const QString& workDir) {
  if (m_busy) return;
  m_cancel = false;
  m_busy = true;
  Q_EMIT busyChanged(true);
  Q_EMIT requestRun(yaml, source, db, workDir);
}

void EngineController::cancel() { m_cancel = true; }

}  // namespace upcycle::ui
