#pragma once
// A run's own page, opened by double-clicking it in the Runs table or from its context menu: what it
// was (status, times, seed, device, code version, tags), its parameters, its stages (steps and losses
// from the stored metrics), its final metrics, its log, its artifacts, and its output folder with an
// action that opens it. Thread-safety: GUI thread only.
#include <QDialog>

#include "store/run_store.h"

class QLabel;
class QTabWidget;
class QTableWidget;
class QPlainTextEdit;
class QPushButton;

namespace upcycle::ui {

class Workspace;

// The folder a run wrote: its model artifact's folder, else OUT/runs/NAME (OUT/base for a base run)
// from its params, a relative OUT resolved against the workspace. Empty when none exists on disk.
QString runOutputFolder(const Workspace* ws, qint64 id);

class RunDetailDialog : public QDialog {
  Q_OBJECT
 public:
  RunDetailDialog(Workspace* ws, qint64 id, QWidget* parent = nullptr);
  qint64 runId() const { return m_id; }
  QTabWidget* tabs() const { return m_tabs; }
  QTableWidget* paramsTable() const { return m_params; }
  QTableWidget* stagesTable() const { return m_stages; }
  QTableWidget* artifactsTable() const { return m_artifacts; }
  QString logText() const;
  QString outputFolder() const { return m_folder; }

 private:
  Workspace* m_ws;
  qint64 m_id;
  QString m_folder;
  QTabWidget* m_tabs;
  QTableWidget *m_params, *m_stages, *m_metrics, *m_artifacts;
  QPlainTextEdit* m_log;
};

}  // namespace upcycle::ui
