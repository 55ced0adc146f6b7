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

 public Q_SLOTS:
  void reload();
  // Closes the connection and opens the file again (StoreWatcher: it was replaced or came back);
  // when no file is there, stays closed (store() null, no runs) unless `create`.
  void reopen(bool create);
  void setCurrentRun(qint64 id);
  void requestCompare(const QList<qint64>& ids) { Q_EMIT compareRequested(ids); }

 Q_SIGNALS:
  void runsChanged();
  void currentRunChanged(qint64 id);
  void compareRequested(const QList<qint64>& ids);

 private:
  QString m_dbPath, m_error;
  std::unique_ptr<RunStore> m_store;
  std::vector<RunRow> m_runs;
  qint64 m_current = 0;
};

}  // namespace upcycle::ui
