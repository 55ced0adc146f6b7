#include "workspace.h"

#include <QDir>
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
  Q_EMIT runsChanged();
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

void Workspace::setCurrentRun(qint64 id) {
  if (id == m_current) return;
  m_current = id;
  Q_EMIT currentRunChanged(id);
}

}  // namespace upcycle::ui
