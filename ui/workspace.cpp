#include "workspace.h"

#include <QDateTime>
#include <QDir>
#include <algorithm>
#include <QFileInfo>

namespace upcycle::ui {

Workspace::Workspace(const QString& dbPath, QObject* parent) : QObject(parent), m_dbPath(dbPath) {
  try {
    QDir().mkpath(QFileInfo(dbPath).absolutePath());
    m_store = std::make_unique<RunStore>(dbPath.toStdString());
  } catch (const std::exception& e) {
    m_error = QString::fromStdString(e.what());
  }
  reload();
}

Workspace::~Workspace() = default;

QString Workspace::workDir() const { return QFileInfo(m_dbPath).absolutePath(); }

void Workspace::reload() {
  m_runs.clear();
  if (m_store) {
    try {
      m_runs = m_store->listRuns();
    } catch (const std::exception& e) {
      m_error = QString::fromStdString(e.what());
    }
  }
  // Ticks of deleted runs go with them.
  QList<qint64> kept;
  for (qint64 id : m_checked)
    if (findRun(id)) kept << id;
  Q_EMIT runsChanged();
  setCheckedRuns(kept);
}

void Workspace::reopen(bool create) {
  m_store.reset();
  m_error.clear();
  if (create || QFileInfo::exists(m_dbPath)) {
    try {
      m_store = std::make_unique<RunStore>(m_dbPath.toStdString());
    } catch (const std::exception& e) {
      m_error = QString::fromStdString(e.what());
    }
  }
  reload();
}

const RunRow* Workspace::findRun(qint64 id) const {
  for (const auto& r : m_runs)
    if (r.id == id) return &r;
  return nullptr;
}

std::vector<RunRow> Workspace::moeRuns() const {
  std::vector<RunRow> out;
  for (auto it = m_runs.rbegin(); it != m_runs.rend(); ++it)
    if (it->finalMetrics.count("analysis/diversity")) out.push_back(*it);
  return out;
}

void Workspace::setCheckedRuns(const QList<qint64>& ids) {
  QList<qint64> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  if (sorted == m_checked) return;
  m_checked = sorted;
  Q_EMIT checkedRunsChanged(m_checked);
}

void Workspace::setCurrentRun(qint64 id) {
  if (id == m_current) return;
  m_current = id;
  Q_EMIT currentRunChanged(id);
}

double storeSecondsBetween(const std::string& from, const std::string& to) {
  const QString fmt = QStringLiteral("yyyy-MM-dd HH:mm:ss");
  QDateTime a = QDateTime::fromString(QString::fromStdString(from), fmt);
  QDateTime b = QDateTime::fromString(QString::fromStdString(to), fmt);
  if (!a.isValid() || !b.isValid()) return -1;
  a.setTimeSpec(Qt::UTC);
  b.setTimeSpec(Qt::UTC);
  return static_cast<double>(a.secsTo(b));
}

double lastExperimentSeconds(const std::vector<RunRow>& runs, const std::string& experiment) {
  // One execution: its "base" run, then the method runs up to the next base run of the experiment.
  std::vector<std::vector<const RunRow*>> executions;
  for (const RunRow& r : runs) {
    if (r.experiment != experiment) continue;
    if (r.method == "base") executions.emplace_back();
    if (!executions.empty()) executions.back().push_back(&r);
  }
  for (auto it = executions.rbegin(); it != executions.rend(); ++it) {
    if (it->size() < 2) continue;  // the base alone: the runs never started
    bool complete = true;
    for (const RunRow* r : *it) complete = complete && r->status == "finished";
    if (!complete) continue;
    const double s = storeSecondsBetween(it->front()->started, it->back()->finished);
    if (s >= 0) return s;
  }
  return -1;
}

}  // namespace upcycle::ui
