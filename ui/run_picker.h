#pragma once
// A combo box of the workspace's runs that pass a filter (e.g. MoE runs, UpIT runs), following the
// workspace's current run when it qualifies. Thread-safety: GUI thread only.
#include <QComboBox>
#include <functional>

#include "workspace.h"

namespace upcycle::ui {

class RunPicker : public QComboBox {
  Q_OBJECT
 public:
  RunPicker(Workspace* ws, std::function<bool(const RunRow&)> filter, QWidget* parent = nullptr);
  qint64 runId() const;
  bool selectRun(qint64 id);  // false when the run is not in the list

 Q_SIGNALS:
  void runSelected(qint64 id);

 private:
  void refill();
  Workspace* m_ws;
  std::function<bool(const RunRow&)> m_filter;
  bool m_filling = false;
};

}  // namespace upcycle::ui
