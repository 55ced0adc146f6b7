#pragma once
// The engine on a worker thread (HOUSE-STYLE §4, Tiled's worker pattern). EngineController lives on
// the GUI thread and owns a QThread with an EngineWorker moved onto it. Requests go in as queued
// signals; the worker adapts PipelineObserver to queued signals. Training steps are the one high-rate
// event: the worker appends them to a buffer under a mutex and emits stepsAvailable() without a payload
// (only when the buffer was empty), and the GUI takes the whole buffer when its 40 ms coalescing timer
// fires (PlotJuggler's pattern).
// Thread rules: EngineController is GUI-thread only, except that cancel() only sets an atomic flag.
// EngineWorker::run executes on the worker thread; takeSteps() may be called from any thread. No
// exception crosses the thread: the worker catches and reports it in finished().
#include <QObject>
#include <QString>
#include <QThread>
#include <atomic>
#include <mutex>
#include <vector>

#include "api/training.h"

namespace upcycle::ui {

class EngineWorker : public QObject {
  Q_OBJECT
 public:
  explicit EngineWorker(std::atomic<bool>* cancel) : m_cancel(cancel) {}
  std::vector<StepMetrics> takeSteps();  // thread-safe: swaps the buffer out
  void pushStep(const StepMetrics& m);   // called by the observer on the worker thread

 public Q_SLOTS:
  // Parses `yaml` (named `source` in messages), opens the store at `db` on this thread and runs the
  // experiment. A relative `out` resolves against `workDir`.
  void run(const QString& yaml, const QString& source, const QString& db, const QString& workDir);

 Q_SIGNALS:
  void started(const QString& name);
  void stepsAvailable();
  void stage(const QString& stage, const QString& detail);
  void log(const QString& message);
  void checkpoint(const QString& folder, qint64 step);
  void runFinished(qint64 storeId, const QString& name);
  void finished(bool ok, bool cancelled, const QString& message);

 private:
  std::atomic<bool>* m_cancel;
  std::mutex m_mutex;
  std::vector<StepMetrics> m_steps;  // guarded by m_mutex
};

class EngineController : public QObject {
  Q_OBJECT
 public:
  explicit EngineController(QObject* parent = nullptr);
  ~EngineController() override;  // cancels a running experiment and joins the thread

  bool busy() const { return m_busy; }
  EngineWorker* worker() const { return m_worker; }
  std::vector<StepMetrics> takeSteps() { return m_worker->takeSteps(); }

 public Q_SLOTS:
  // Returns at once; the run's events arrive as the worker's signals. Ignored while busy.
  void start(const QString& yaml, const QString& source, const QString& db, const QString& workDir);
  void cancel();

 Q_SIGNALS:
  void requestRun(const QString& yaml, const QString& source, const QString& db, const QString& workDir);
  void busyChanged(bool busy);

 private:
  QThread m_thread;
  EngineWorker* m_worker;
  std::atomic<bool> m_cancel{false};
  bool m_busy = false;
};

}  // namespace upcycle::ui
