#pragma once
// UpIT's genetic expansion as a family tree (SPEC §5.2): the experts taken from SFT checkpoints on the
// top row, each generated expert below its parents, edges labelled with the merge weights (alpha for
// parent A, 1 - alpha for B) and nodes with the DARE p; the same as a table. The tree is drawn at the
// normal font size, zooms with the wheel (and the +, -, fit buttons) and pans by dragging; edge labels
// never overlap; the top row names the SFT checkpoint (its step) each expert came from.
// Thread-safety: GUI only.
#include <QWidget>
#include <map>

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
  int depth = 0;   // 0: from a checkpoint; a child is one below its deeper parent
  double x = 0;    // column within its row
};
// The layout of the tree: experts 0..E-1, the first E - |lineage| from checkpoints.
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

 private:
  void reloadRun();
  void drawTree(int64_t experts, const std::vector<LineageRow>& lineage, const QStringList& roots);
  Workspace* m_ws;
  RunPicker* m_picker;
  QLabel* m_note;
  QGraphicsScene* m_scene;
  QGraphicsView* m_view;
  PlotFrame* m_frame;
  LineageModel* m_model;
  QTableView* m_table;
};

}  // namespace upcycle::ui
