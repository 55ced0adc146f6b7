#pragma once
// Runs side by side, one tab per view: their parameters (with a diff-only toggle), the training curves
// of every ticked run overlaid (CurvesView: smoothing, log scale, x by step/tokens/time, crosshair),
// similarity heatmaps of 2-4 runs on one shared colour scale, routing bars on one shared axis, and the
// final metrics. Every run keeps its colour (runColor). A run a view cannot show (a dense run has no
// experts) is named under it with the reason. More views are added as tabs (tabs()), e.g. Across seeds (seeds_view.h).
// Thread-safety: GUI thread only.
#include <QWidget>
#include <vector>

#include "plot_frame.h"
#include "store/run_store.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QTabWidget;
class QCPAxisRect;
class QCPColorMap;
class QCustomPlot;

namespace upcycle::ui {

class CurvesView;
class MetricsCompareModel;
class ParamDiffModel;
class SeedsView;
class Workspace;

class ComparePanel : public QWidget {
  Q_OBJECT
 public:
  explicit ComparePanel(Workspace* ws, QWidget* parent = nullptr);
  void setRuns(const QList<qint64>& ids);  // 2-4 run ids; others are refused with a message
  QString headerText() const;

 private:
  static QList<qint64> sortedIds(QList<qint64> ids);
  QList<qint64> shownIds() const;  // the runs the tabs show, ascending

 public:
  const std::vector<RunDetail>& runs() const { return m_runs; }
  ParamDiffModel* paramModel() const { return m_params; }
  MetricsCompareModel* metricsModel() const { return m_metrics; }
  void setDiffOnly(bool on);
  void setCurveMetric(const QString& key);  // "loss", "aux_loss", "lr", "tokens_per_s", ...
  PlotFrame* curvesFrame() const;
  CurvesView* curves() const { return m_curves; }
  QLabel* similarityNote() const { return m_simNote; }
  QLabel* routingNote() const { return m_routeNote; }
  PlotFrame* similarityFrame() const { return m_simFrame; }
  PlotFrame* routingFrame() const { return m_routeFrame; }
  QTabWidget* tabs() const { return m_tabs; }
  SeedsView* seedsView() const { return m_seeds; }
  const std::vector<QCPColorMap*>& colorMaps() const { return m_maps; }
  // The routing tab's hover text at a pixel of its plot: the run, the expert and its share, or empty.
  QString routingHoverAt(const QPointF& pixel) const;

 private:
  void drawSimilarity();
  QString whyAbsent(const RunDetail& r, const QString& what) const;
  void drawRouting();
  // A column of the side-by-side plots: the run's name in its colour above a new axis rect.
  QCPAxisRect* addRunColumn(QCustomPlot* p, int col, size_t run) const;
  Workspace* m_ws;
  std::vector<RunDetail> m_runs;
  QLabel* m_header;
  QTabWidget* m_tabs;
  ParamDiffModel* m_params;
  MetricsCompareModel* m_metrics;
  QCheckBox* m_diffOnly;
  QComboBox *m_simKind, *m_simLayer, *m_routeLayer;
  CurvesView* m_curves;
  QLabel *m_simNote, *m_routeNote;
  PlotFrame *m_simFrame, *m_routeFrame;
  std::vector<QCPColorMap*> m_maps;
  SeedsView* m_seeds = nullptr;
  struct RouteColumn {
    QCPAxisRect* rect;
    size_t run;
    std::vector<double> shares;
  };
  std::vector<RouteColumn> m_routeColumns;
};

}  // namespace upcycle::ui
