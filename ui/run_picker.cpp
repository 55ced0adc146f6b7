#include "run_picker.h"

namespace upcycle::ui {

RunPicker::RunPicker(Workspace* ws, std::function<bool(const RunRow&)> filter, QWidget* parent)
    : QComboBox(parent), m_ws(ws), m_filter(std::move(filter)) {
  setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  setMinimumContentsLength(14);
  connect(ws, &Workspace::runsChanged, this, &RunPicker::refill);
  connect(ws, &Workspace::currentRunChanged, this, [this](qint64 id) { selectRun(id); });
  connect(this, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) {
    if (!m_filling) Q_EMIT runSelected(runId());
  });
  refill();
}

qint64 RunPicker::runId() const { return currentIndex() >= 0 ? currentData().toLongLong() : 0; }

bool RunPicker::selectRun(qint64 id) {
  const int i = findData(id);
  if (i < 0) return false;
  setCurrentIndex(i);
  return true;
}

void RunPicker::refill() {
  const qint64 keep = runId();
  m_filling = true;
  clear();
  const auto& runs = m_ws->runs();
  for (auto it = runs.rbegin(); it != runs.rend(); ++it)  // newest first
    if (!m_filter || m_filter(*it))
      addItem(QStringLiteral("#%1 %2 (%3)").arg(it->id).arg(QString::fromStdString(it->name), QString::fromStdString(it->method)),
              static_cast<qlonglong>(it->id));
  int i = findData(keep);
  if (i < 0) i = findData(m_ws->currentRun());
  setCurrentIndex(i >= 0 ? i : (count() > 0 ? 0 : -1));
  m_filling = false;
  if (runId() != keep) Q_EMIT runSelected(runId());
}

}  // namespace upcycle::ui
