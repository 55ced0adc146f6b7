#pragma once
// The Run panel's stage list: one row per pipeline stage of the experiment being run (data, pretrain,
// sft, and per run the router pre-optimization and post-training), with status, progress and ETA.
// Fed from the engine's stage events and training steps. Thread-safety: GUI thread only.
#include <QAbstractTableModel>
#include <QElapsedTimer>
#include <vector>

#include "api/training.h"
#include "pipeline/experiment.h"

namespace upcycle::ui {

class StageModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { kStage, kStatus, kProgress, kEta, kColumns };
  enum class Status { Pending, Running, Done, Cancelled, Failed };
  static constexpr int kFractionRole = Qt::UserRole + 1;  // progress in [0, 1] (the delegate draws it)

  struct Row {
    QString key, title, detail;
    Status status = Status::Pending;
    int64_t step = 0, total = 0;
    double etaSeconds = -1;  // < 0: unknown
    QElapsedTimer clock;     // started at the row's first step
    int64_t firstStep = 0;
  };

  explicit StageModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}

  void plan(const Experiment& e);  // one pending row per stage the experiment will run
  void onStage(const QString& stage, const QString& detail);
  void onSteps(const std::vector<StepMetrics>& steps);
  void finish(bool ok, bool cancelled);

  const std::vector<Row>& rows() const { return m_rows; }
  int rowOf(const QString& key) const;
  // "post:NAME" -> the row key; "router-preopt" belongs to the run in progress.
  QString keyForStage(const std::string& stage) const;

  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

 private:
  void setStatus(int row, Status s);
  void completeRunningBefore(int row);
  void changed(int row);
  std::vector<Row> m_rows;
  QString m_currentRun;
};

// "1:05:09", "4:12", "12 s"
QString formatDuration(double seconds);

}  // namespace upcycle::ui
