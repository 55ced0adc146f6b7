#pragma once
// Routing distributions of one MoE run (SPEC §6): per layer, stacked bars of the experts' shares of
// the (token, slot) assignments for every data domain, with the uniform split (multiples of 1/E)
// marked; and per layer the router entropy, the entropy of the shares and the imbalance.
// Thread-safety: GUI thread only.
#include <QWidget>
#include <map>
#include <vector>

#include "plot_frame.h"
#include "store/run_store.h"

class QComboBox;
class QCPBars;
class QLabel;

namespace upcycle::ui {

class RunPicker;
class Workspace;

class RoutingPanel : public QWidget {
  Q_OBJECT
 public:
  explicit RoutingPanel(Workspace* ws, QWidget* parent = nullptr);
  void showRun(qint64 id);
  void setConverted(bool converted);
  void setLayer(int64_t layer);
  PlotFrame* sharesFrame() const { return m_sharesFrame; }
  PlotFrame* statsFrame() const { return m_statsFrame; }
  // What the bars show: the domains on the x axis ("all" first) and, per expert, a share per domain.
  const std::vector<QString>& domains() const { return m_domains; }
  const std::vector<std::vector<double>>& expertShares() const { return m_shares; }  // [expert][domain]
  // The hover text at plot coordinates (x: the domain's bar, y: the height in the stack), or empty.
  QString hoverText(double x, double y) const;

 private:
  void reloadRun();
  void redraw();
  Workspace* m_ws;
  RunPicker* m_picker;
  QComboBox *m_when, *m_layer;
  QLabel* m_note;
  PlotFrame *m_sharesFrame, *m_statsFrame;
  std::vector<BlobRow> m_sharesBlobs[2], m_stats[2];
  std::vector<QString> m_domains;
  std::vector<std::vector<double>> m_shares;
};

}  // namespace upcycle::ui
