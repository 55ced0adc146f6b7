#pragma once
// UpIT's genetic expansion as a family tree (SPEC §5.2), left to right: the experts taken from SFT
// checkpoints in the left column, each generated expert right of its parents at their mean height,
// edges curved around any node they do not join and labelled with the merge weights (alpha for parent
// A, 1 - alpha for B), nodes with the DARE p; the same as a table. The tree is drawn at the normal font
// size, fits the view until the user zooms (wheel, +, -; Fit returns), pans by dragging; edge labels
// never overlap; the left column names the SFT checkpoint (its step) each expert came from.
// Thread-safety: GUI only.
#include <QPainterPath>
#include <QPointF>
#include <QRectF>
#include <QWidget>
#include <map>
#include <vector>

#include "plot_frame.h"
#include "store/run_store.h"

class QGraphicsScene;
class QGraphicsView;
class QLabel;
class QTableView;

namespace upcycle::ui {

class LineageModel;
class RunPicker;
class Workspace;

struct TreeNode {
  int64_t expert = 0;
  int depth = 0;   // the column, left to right: 0 from a checkpoint; a child is one right of its deeper parent
  double x = 0;    // the slot within its column, top to bottom (checkpoint e at e; a child near its parents)
};
// The layout of the tree: experts 0..E-1, the first E - |lineage| from checkpoints. The tree grows
// left to right (the panel is wider than tall); a child sits at its parents' mean slot, moved to the
// nearest slot at least 1 from every node already in its column.
std::map<int64_t, TreeNode> layoutLineage(int64_t experts, const std::vector<LineageRow>& lineage);
// The checkpoint names of the experts taken from SFT checkpoints, in expert order, from the run's log
// line "upit: experts from SFT checkpoints checkpoint-33, checkpoint-66" (empty when not logged).
QStringList checkpointExperts(const std::vector<std::string>& logs);

class LineagePanel : public QWidget {
  Q_OBJECT
 public:
  explicit LineagePanel(Workspace* ws, QWidget* parent = nullptr);
  void showRun(qint64 id);
  LineageModel* model() const { return m_model; }
  QGraphicsScene* scene() const { return m_scene; }
  PlotFrame* treeFrame() const { return m_frame; }
  QGraphicsView* view() const { return m_view; }
  void zoomBy(double factor);
  void fitTree();  // the whole tree, never below a readable scale (scroll for the rest)
  bool userZoomed() const { return m_userZoomed; }

 private:
  void reloadRun();
  static QPainterPath edgePath(const QPointF& from, const QPointF& to, const std::vector<QRectF>& avoid);
  void drawTree(int64_t experts, const std::vector<LineageRow>& lineage, const QStringList& roots);
  Workspace* m_ws;
  RunPicker* m_picker;
  QLabel* m_note;
  QGraphicsScene* m_scene;
  QGraphicsView* m_view;
  PlotFrame* m_frame;
  LineageModel* m_model;
  QTableView* m_table;
  bool m_userZoomed = false;  // + / - / the wheel used since the tree was drawn: no refit on resize
};

}  // namespace upcycle::ui
