#include "stage_model.h"

#include <cmath>

namespace upcycle::ui {

QString formatDuration(double seconds) {
  if (seconds < 0) return QStringLiteral("-");
  const auto s = static_cast<long long>(std::llround(seconds));
  if (s < 60) return QStringLiteral("%1 s").arg(s);
  if (s < 3600) return QStringLiteral("%1:%2").arg(s / 60).arg(s % 60, 2, 10, QLatin1Char('0'));
  return QStringLiteral("%1:%2:%3").arg(s / 3600).arg((s / 60) % 60, 2, 10, QLatin1Char('0')).arg(s % 60, 2, 10, QLatin1Char('0'));
}

void StageModel::plan(const Experiment& e) {
  beginResetModel();
  m_rows.clear();
  m_currentRun.clear();
  auto add = [&](const QString& key, const QString& title) {
    Row r;
    r.key = key;
    r.title = title;
    m_rows.push_back(std::move(r));
  };
  if (e.generateData) add(QStringLiteral("data"), tr("Data"));
  if (e.pretrain) add(QStringLiteral("pretrain"), tr("Pretrain the base"));
  if (e.sft) add(QStringLiteral("sft"), e.sftCheckpoints.empty() ? tr("Dense instruction tuning") : tr("SFT checkpoints (given)"));
  for (const RunSpec& r : e.runs) {
    const QString name = QString::fromStdString(r.name);
    if ((r.method == "upit" || r.method == "upit_lora") && r.preoptimize)
      add(QStringLiteral("router-preopt:") + name, tr("%1: router pre-optimization").arg(name));
    add(QStringLiteral("post:") + name, tr("%1 (%2): build and post-train").arg(name, QString::fromStdString(r.method)));
  }
  endResetModel();
}

int StageModel::rowOf(const QString& key) const {
  for (size_t i = 0; i < m_rows.size(); ++i)
    if (m_rows[i].key == key) return static_cast<int>(i);
  return -1;
}

QString StageModel::keyForStage(const std::string& stage) const {
  const QString s = QString::fromStdString(stage);
  if (s == QLatin1String("router-preopt")) return QStringLiteral("router-preopt:") + m_currentRun;
  return s;
}

void StageModel::changed(int row) { Q_EMIT dataChanged(index(row, 0), index(row, kColumns - 1)); }

void StageModel::setStatus(int row, Status s) {
  if (row < 0 || m_rows[row].status == s) return;
  m_rows[row].status = s;
  if (s == Status::Done) {
    m_rows[row].etaSeconds = 0;
    if (m_rows[row].total > 0) m_rows[row].step = m_rows[row].total;
  }
  changed(row);
}

void StageModel::completeRunningBefore(int row) {
  for (int i = 0; i < row; ++i)
    if (m_rows[i].status == Status::Running || m_rows[i].status == Status::Pending) setStatus(i, Status::Done);
}

void StageModel::onStage(const QString& stage, const QString& detail) {
  QString key = stage;
  if (stage == QLatin1String("run")) {
    m_currentRun = detail.section(QLatin1Char(' '), 0, 0);
    const int pre = rowOf(QStringLiteral("router-preopt:") + m_currentRun);
    key = pre >= 0 ? m_rows[pre].key : QStringLiteral("post:") + m_currentRun;
  } else if (stage == QLatin1String("upit") || stage == QLatin1String("upit_lora")) {
    key = QStringLiteral("router-preopt:") + m_currentRun;
    if (rowOf(key) < 0) key = QStringLiteral("post:") + m_currentRun;
  }
  const int row = rowOf(key);
  if (row < 0) return;
  completeRunningBefore(row);
  m_rows[row].detail = detail;
  // "data" is reported once the records are written: that stage is complete.
  setStatus(row, stage == QLatin1String("data") ? Status::Done : Status::Running);
  changed(row);
}

void StageModel::onSteps(const std::vector<StepMetrics>& steps) {
  int last = -1;
  for (const StepMetrics& m : steps) {
    const int row = rowOf(keyForStage(m.stage));
    if (row < 0) continue;
    if (row != last) completeRunningBefore(row);
    Row& r = m_rows[row];
    if (!r.clock.isValid()) {
      r.clock.start();
      r.firstStep = m.step;
    }
    r.status = Status::Running;
    r.step = m.step;
    r.total = m.totalSteps;
    const int64_t done = m.step - r.firstStep;
    if (done > 0 && r.total > 0) {
      const double perStep = static_cast<double>(r.clock.elapsed()) / 1000.0 / static_cast<double>(done);
      r.etaSeconds = perStep * static_cast<double>(r.total - m.step);
    }
    if (row != last && last >= 0) changed(last);
    last = row;
  }
  if (last >= 0) changed(last);
}

void StageModel::finish(bool ok, bool cancelled) {
  const Status s = !ok ? Status::Failed : cancelled ? Status::Cancelled : Status::Done;
  for (size_t i = 0; i < m_rows.size(); ++i) {
    if (m_rows[i].status == Status::Running) setStatus(static_cast<int>(i), s);
    else if (ok && !cancelled && m_rows[i].status == Status::Pending) setStatus(static_cast<int>(i), Status::Done);
  }
}

int StageModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : static_cast<int>(m_rows.size()); }
int StageModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : kColumns; }

QVariant StageModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= static_cast<int>(m_rows.size())) return {};
  const Row& r = m_rows[index.row()];
  const double fraction = r.status == Status::Done ? 1.0 : r.total > 0 ? static_cast<double>(r.step) / r.total : 0.0;
  if (role == kFractionRole) return fraction;
  if (role == Qt::ToolTipRole) return r.detail.isEmpty() ? r.title : r.detail;
  if (role != Qt::DisplayRole) return {};
  switch (index.column()) {
    case kStage: return r.title;
    case kStatus: {
      static const char* names[] = {"pending", "running", "done", "cancelled", "failed"};
      return tr(names[static_cast<int>(r.status)]);
    }
    case kProgress: return r.total > 0 ? QStringLiteral("%1 / %2").arg(r.step).arg(r.total) : QString();
    case kEta: return r.status == Status::Running ? formatDuration(r.etaSeconds) : QString();
    default: return {};
  }
}

QVariant StageModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"Stage", "Status", "Progress", "ETA"};
  return section >= 0 && section < kColumns ? tr(names[section]) : QVariant();
}

}  // namespace upcycle::ui
