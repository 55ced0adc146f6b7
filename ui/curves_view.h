#pragma once
// Training curves of any number of runs overlaid, as W&B and TensorBoard users expect: one colour per
// run (runColor), an EMA smoothing slider (TensorBoard's, debiased; the raw curve stays faint behind),
// a log-scale toggle, the x axis by step, tokens or wall time, the legend beside the plot, and a
// crosshair whose readout (below the plot, never over the data) gives every run's value at that x.
//
// Tokens and wall time are not stored per step; they are derived from what the store has: tokens at
// step s are s x nominalTokensPerStep(params, stage) (exact for pretraining, an upper bound for
// instruction data), and wall time adds each step's tokens / its recorded tokens_per_s.
// Thread-safety: GUI thread only.
#include <QWidget>
#include <vector>

#include "plot_frame.h"
#include "store/run_store.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QMouseEvent;
class QSlider;
class QCPGraph;
class QCPItemStraightLine;

namespace upcycle::ui {

class Workspace;

class CurvesView : public QWidget {
  Q_OBJECT
 public:
  enum XAxis { kStep, kTokens, kWallTime };
  explicit CurvesView(Workspace* ws, QWidget* parent = nullptr);
  void setRuns(const QList<qint64>& ids);
  QList<qint64> runs() const { return m_ids; }
  void setStage(const QString& family);  // "post", "router-preopt", "sft", "pretrain"
  void setMetric(const QString& key);    // "loss", "aux_loss", "lr", "tokens_per_s", ...
  void setSmoothing(double weight);      // [0, 0.99]
  double smoothing() const;
  void setLogScale(bool on);
  void setXAxis(XAxis x);
  PlotFrame* frame() const { return m_frame; }
  // The plotted series of a run: x, raw y and shown (smoothed) y; nullptr when the run has no points.
  struct Series {
    qint64 id = 0;
    QString label;
    std::vector<double> x, raw, shown;
  };
  const std::vector<Series>& series() const { return m_series; }
  // The crosshair's readout at x: for each run, its point nearest to x ("#3 sparse: 2.2500 at step 3").
  QString readoutAt(double x) const;
  QLabel* readout() const { return m_readout; }
  // Why runs are missing from the plot (no points for this stage and metric), or empty.
  QString note() const;

 private:
  void redraw();
  void onHover(QMouseEvent* ev);
  Workspace* m_ws;
  QList<qint64> m_ids;
  std::vector<Series> m_series;
  QStringList m_missing;
  QComboBox *m_stage, *m_metric, *m_x;
  QSlider* m_smooth;
  QLabel *m_smoothValue, *m_readout, *m_note;
  QCheckBox* m_log;
  PlotFrame* m_frame;
  QCPItemStraightLine* m_cross = nullptr;
};

}  // namespace upcycle::ui
