#pragma once
// Expert similarity of one MoE run (SPEC §6): an E x E heatmap per layer with a colour scale and
// values on hover, a choice of raw weights / deltas from the base / output CKA, after conversion or
// after post-training, and the diversity across layers as a line. Thread-safety: GUI thread only.
#include <QWidget>

#include "plot_frame.h"
#include "store/run_store.h"

class QCheckBox;
class QComboBox;
class QCPColorMap;
class QCPColorScale;
class QLabel;

namespace upcycle::ui {

class RunPicker;
class Workspace;

class SimilarityPanel : public QWidget {
  Q_OBJECT
 public:
  explicit SimilarityPanel(Workspace* ws, QWidget* parent = nullptr);
  // For tests and the screenshots: select what is shown.
  void showRun(qint64 id);
  void setKind(int kind);       // 0 weights, 1 deltas, 2 output CKA
  void setConverted(bool converted);
  void setLayer(int64_t layer);
  void setFitColours(bool fit);  // colour range: [min(0, smallest), 1] (default) or the data's own range
  QCPColorMap* colorMap() const { return m_map; }
  PlotFrame* heatmapFrame() const { return m_heatFrame; }
  PlotFrame* diversityFrame() const { return m_divFrame; }
  const BlobRow& shownMatrix() const { return m_shown; }
  static std::string kindName(int kind, bool converted);  // the store's blob kind

 private:
  void reloadRun();
  void redraw();
  void drawDiversity();
  void onHover(QMouseEvent* ev);
  Workspace* m_ws;
  RunPicker* m_picker;
  QComboBox *m_kind, *m_when, *m_layer;
  QCheckBox* m_fit;
  QLabel* m_note;
  PlotFrame *m_heatFrame, *m_divFrame;
  QCPColorMap* m_map;
  QCPColorScale* m_scale;
  std::vector<BlobRow> m_blobs[3][2];  // [kind][converted]
  BlobRow m_shown;
};

}  // namespace upcycle::ui
