#pragma once
// Across seeds (issue 14): one experiment's runs, each run name's seeds taken together. A table of n,
// mean, sd, the 95% t interval and (against a chosen baseline) the paired difference and wins, all from
// the engine's summarizeExperiment (the numbers `upcycle runs summary` prints); bars of the means with
// 95% CI whiskers; training curves as the mean across seeds with a 95% CI band; and the paired
// differences with their intervals around a zero line. Thread-safety: GUI thread only.
#include <QWidget>
#include <optional>

#include "plot_frame.h"
#include "store/run_summary.h"

class QComboBox;
class QLabel;
class QTableWidget;

namespace upcycle::ui {

class Workspace;

class SeedsView : public QWidget {
  Q_OBJECT
 public:
  explicit SeedsView(Workspace* ws, QWidget* parent = nullptr);
  // Selects an experiment (and redraws); false when the workspace has none of that name.
  bool setExperiment(const QString& name);
  void setMetric(const QString& metric);  // "accuracy", "eval_loss", "train_loss", "diversity"
  void setDomain(const QString& domain);  // "" = overall
  void setBaseline(const QString& run);   // "" = none
  const std::optional<ExperimentSummary>& summary() const { return m_summary; }
  QTableWidget* table() const { return m_table; }
  PlotFrame* barsFrame() const { return m_barsFrame; }
  PlotFrame* curvesFrame() const { return m_curvesFrame; }
  PlotFrame* pairedFrame() const { return m_pairedFrame; }
  QString message() const;

 public Q_SLOTS:
  void reload();  // the workspace's runs changed: refill the experiment list, keep the choice

 private:
  void recompute();
  void fillTable();
  void drawBars();
  void drawCurves();
  void drawPaired();
  QString metricKey() const;  // "accuracy:math" etc.
  Workspace* m_ws;
  QComboBox *m_experiment, *m_metric, *m_domain, *m_baseline;
  QLabel* m_message;
  QTableWidget* m_table;
  PlotFrame *m_barsFrame, *m_curvesFrame, *m_pairedFrame;
  std::optional<ExperimentSummary> m_summary;
  bool m_filling = false;
};

}  // namespace upcycle::ui
