#pragma once
// Picking the dense base and the intermediate checkpoints that become UpIT's experts: from a folder,
// a Hugging Face Trainer output folder (checkpoint-STEP/ subfolders) or files. Every checkpoint is
// validated (config.json and safetensors headers; no tensor is read), architectures that differ from
// the first are flagged, and the dense run's loss curve is drawn with the checkpoints marked.
// Thread-safety: GUI thread only.
#include <QWidget>
#include <vector>

#include "formats/trainer_outputs.h"
#include "plot_frame.h"

class QLabel;
class QLineEdit;
class QTableView;

namespace upcycle::ui {

class CheckpointTableModel;

class CheckpointsPanel : public QWidget {
  Q_OBJECT
 public:
  explicit CheckpointsPanel(QWidget* parent = nullptr);
  // A Trainer output folder, a checkpoint folder, or a file inside one. Returns a message on failure.
  QString addPath(const QString& path);
  QString setBase(const QString& folder);
  QString base() const;
  CheckpointTableModel* model() const { return m_model; }
  PlotFrame* lossFrame() const { return m_lossFrame; }
  const std::vector<LossPoint>& lossHistory() const { return m_loss; }

 Q_SIGNALS:
  // The user chose: the base (may be empty: keep the experiment's) and the expert checkpoints.
  void checkpointsChosen(const QString& base, const QStringList& checkpoints);

 private:
  void drawLoss();
  CheckpointTableModel* m_model;
  QLineEdit* m_base;
  QLabel* m_baseStatus;
  QLabel* m_summary;
  QTableView* m_table;
  PlotFrame* m_lossFrame;
  std::vector<LossPoint> m_loss;
};

}  // namespace upcycle::ui
