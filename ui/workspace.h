#pragma once
// The open workspace: its run-store file, the GUI thread's own read connection to it (the engine
// writes through its own), and the run the user has selected. Panels listen to runsChanged() and
// currentRunChanged(). Thread-safety: GUI thread only.
#include <QObject>
#include <QString>
#include <memory>
#include <vector>

#include "store/run_store.h"

namespace upcycle::ui {

class Workspace : public QObject {
  Q_OBJECT
 public:
  // Opens (or creates) the store; a store that cannot be opened leaves store() null and error() set.
  explicit Workspace(const QString& dbPath, QObject* parent = nullptr);
  ~Workspace() override;

  QString dbPath() const { return m_dbPath; }
  QString workDir() const;  // where relative experiment outputs go: the store's folder
  RunStore* store() const { return m_store.get(); }
  QString error() const { return m_error; }
  const std::vector<RunRow>& runs() const { return m_runs; }
  const RunRow* findRun(qint64 id) const;
  qint64 currentRun() const { return m_current; }
  // Runs that carry analysis blobs (MoE runs), newest first.
  std::vector<RunRow> moeRuns() const;
  // The runs ticked in the Runs table: their curves overlay in Compare at once.
  QList<qint64> checkedRuns() const { return m_checked; }

 public Q_SLOTS:
  void reload();
  // Closes the connection and opens the file again (StoreWatcher: it was replaced or came back);
  // when no file is there, stays closed (store() null, no runs) unless `create`.
  void reopen(bool create);
  void setCurrentRun(qint64 id);
  // The compared runs are the ticked runs: Compare ticks exactly `ids` (so the header, every tab and
  // the Runs table's ticks agree), then shows the panel.
  void requestCompare(const QList<qint64>& ids) {
    setCheckedRuns(ids);
    Q_EMIT compareRequested(ids);
  }
  void setCheckedRuns(const QList<qint64>& ids);
  // The run detail page (parameters, stages, log, output folder, artifacts) for a run.
  void requestDetails(qint64 id) { Q_EMIT detailsRequested(id); }

 Q_SIGNALS:
  void runsChanged();
  void currentRunChanged(qint64 id);
  void compareRequested(const QList<qint64>& ids);
  void checkedRunsChanged(const QList<qint64>& ids);
  void detailsRequested(qint64 id);

 private:
  QString m_dbPath, m_error;
  std::unique_ptr<RunStore> m_store;
  std::vector<RunRow> m_runs;
  qint64 m_current = 0;
  QList<qint64> m_checked;
};

// How long the last complete execution of `experiment` took on this machine, in seconds, from its
// `base` run's start to its last run's end (every run of it finished); -1 when there is none. `runs`
// in id order, as RunStore::listRuns gives them. The Start page's demo buttons and the Run panel's
// total ETA use it: a measured time, not a promise.
double lastExperimentSeconds(const std::vector<RunRow>& runs, const std::string& experiment);
// Seconds between two store times ("YYYY-MM-DD HH:MM:SS", UTC); -1 when either does not parse.
double storeSecondsBetween(const std::string& from, const std::string& to);

}  // namespace upcycle::ui
