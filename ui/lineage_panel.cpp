#include "lineage_panel.h"

#include <QGraphicsEllipseItem>
#include <QGraphicsScene>
#include <QGraphicsSimpleTextItem>
#include <QGraphicsView>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QSplitter>
#include <QTableView>
#include <QVBoxLayout>
#include <algorithm>

#include "plot_frame.h"
#include "run_picker.h"
#include "table_models.h"
#include "workspace.h"

namespace upcycle::ui {

std::map<int64_t, TreeNode> layoutLineage(int64_t experts, const std::vector<LineageRow>& lineage) {
  std::map<int64_t, TreeNode> nodes;
  const int64_t fromCheckpoints = std::max<int64_t>(0, experts - static_cast<int64_t>(lineage.size()));
  for (int64_t e = 0; e < fromCheckpoints; ++e) nodes[e] = TreeNode{e, 0, static_cast<double>(e)};
  std::map<int, int> perRow;
  for (const LineageRow& l : lineage) {  // the GA appends children in order: parents come first
    const int da = nodes.count(l.parentA) ? nodes[l.parentA].depth : 0;
    const int db = nodes.count(l.parentB) ? nodes[l.parentB].depth : 0;
    TreeNode n{l.child, std::max(da, db) + 1, 0};
    n.x = perRow[n.depth]++;
    nodes[l.child] = n;
  }
  // Centre each row under the checkpoint row.
  for (auto& [e, n] : nodes) {
    if (n.depth == 0) continue;
    const double width = static_cast<double>(perRow[n.depth]);
    n.x += (static_cast<double>(fromCheckpoints) - width) / 2.0;
  }
  return nodes;
}

LineagePanel::LineagePanel(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_picker = new RunPicker(ws, [](const RunRow& r) { return r.method == "upit"; });
  m_picker->setObjectName(QStringLiteral("lineageRun"));
  bar->addWidget(new QLabel(tr("UpIT run")));
  bar->addWidget(m_picker);
  bar->addStretch(1);
  layout->addLayout(bar);
  m_note = new QLabel;
  m_note->setWordWrap(true);
  layout->addWidget(m_note);
  auto* split = new QSplitter(Qt::Vertical);
  m_scene = new QGraphicsScene(this);
  m_view = new QGraphicsView(m_scene);
  m_view->setRenderHint(QPainter::Antialiasing);
  m_view->setBackgroundBrush(Qt::white);
  m_frame = new PlotFrame(tr("GA lineage"), m_view);
  m_model = new LineageModel(this);
  m_table = new QTableView;
  m_table->setModel(m_model);
  m_table->horizontalHeader()->setStretchLastSection(true);
  m_table->verticalHeader()->hide();
  m_frame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("expert"), QStringLiteral("parent_a"), QStringLiteral("parent_b"), QStringLiteral("alpha"),
                QStringLiteral("dare_p"), QStringLiteral("distance"), QStringLiteral("merge"), QStringLiteral("mask_seed")}};
    for (const auto& l : m_model->lineage())
      t.push_back({QString::number(l.child), QString::number(l.parentA), QString::number(l.parentB), QString::number(l.alpha, 'g', 10),
                   QString::number(l.dareP, 'g', 10), QString::number(l.distance, 'g', 10), QString::fromStdString(l.mergeOp),
                   QString::number(l.maskSeed)});
    return t;
  });
  split->addWidget(m_frame);
  split->addWidget(m_table);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 1);
  layout->addWidget(split, 1);
  connect(m_picker, &RunPicker::runSelected, this, [this](qint64) { reloadRun(); });
  reloadRun();
}

void LineagePanel::showRun(qint64 id) {
  if (m_picker->selectRun(id)) reloadRun();
}

void LineagePanel::reloadRun() {
  const qint64 id = m_picker->runId();
  std::vector<LineageRow> lineage;
  int64_t experts = 0;
  if (id > 0 && m_ws->store()) {
    try {
      RunDetail d = m_ws->store()->run(id);
      lineage = d.lineage;
      for (const auto& [k, v] : d.params)
        if (k == "run.experts") experts = std::stoll(v);
    } catch (const std::exception& e) {
      m_note->setText(QString::fromStdString(e.what()));
    }
  }
  m_model->setLineage(lineage);
  if (id == 0) m_note->setText(tr("No UpIT run in this workspace yet."));
  else if (lineage.empty())
    m_note->setText(tr("Every expert of this run came from an SFT checkpoint: the GA grew none."));
  else
    m_note->setText(tr("%1 experts from SFT checkpoints (top row), %2 grown by merging two parents and a DARE mutation.")
                        .arg(experts - static_cast<int64_t>(lineage.size()))
                        .arg(lineage.size()));
  drawTree(experts, lineage);
}

void LineagePanel::drawTree(int64_t experts, const std::vector<LineageRow>& lineage) {
  m_scene->clear();
  const auto nodes = layoutLineage(experts, lineage);
  constexpr double kDx = 110, kDy = 120, kR = 24;
  auto centre = [&](int64_t e) {
    const TreeNode& n = nodes.at(e);
    return QPointF(n.x * kDx + kR, n.depth * kDy + kR);
  };
  QFont small = m_view->font();
  small.setPointSizeF(small.pointSizeF() * 0.85);
  for (const LineageRow& l : lineage) {
    if (!nodes.count(l.parentA) || !nodes.count(l.parentB) || !nodes.count(l.child)) continue;
    const QPointF c = centre(l.child);
    int which = 0;
    for (int64_t parent : {l.parentA, l.parentB}) {
      const QPointF p = centre(parent);
      const double w = which == 0 ? l.alpha : 1.0 - l.alpha;
      auto* edge = m_scene->addLine(QLineF(p + QPointF(0, kR), c - QPointF(0, kR)),
                                    QPen(seriesColor(which == 0 ? 0 : 1), 1.0 + 4.0 * w));
      edge->setZValue(-1);
      auto* label = m_scene->addSimpleText(QStringLiteral("%1").arg(w, 0, 'f', 2), small);
      const QPointF mid = (p + c) / 2.0 + QPointF(which == 0 ? -30 : 6, 0);
      label->setPos(mid);
      label->setBrush(seriesColor(which == 0 ? 0 : 1).darker(130));
      ++which;
    }
  }
  std::map<int64_t, const LineageRow*> byChild;
  for (const auto& l : lineage) byChild[l.child] = &l;
  for (const auto& [e, n] : nodes) {
    const QPointF c = centre(e);
    const bool grown = n.depth > 0;
    auto* circle = m_scene->addEllipse(QRectF(c.x() - kR, c.y() - kR, 2 * kR, 2 * kR), QPen(QColor(60, 60, 60), 1.5),
                                       grown ? QColor(255, 236, 179) : QColor(204, 229, 255));
    circle->setToolTip(grown ? tr("E%1 = merge(alpha E%2, (1 - alpha) E%3), alpha %4, DARE p %5")
                                   .arg(e)
                                   .arg(byChild[e]->parentA)
                                   .arg(byChild[e]->parentB)
                                   .arg(byChild[e]->alpha, 0, 'f', 3)
                                   .arg(byChild[e]->dareP, 0, 'f', 2)
                             : tr("E%1: from an SFT checkpoint").arg(e));
    auto* text = m_scene->addSimpleText(QStringLiteral("E%1").arg(e));
    text->setPos(c - QPointF(text->boundingRect().width() / 2, text->boundingRect().height() / 2));
    if (grown) {
      auto* sub = m_scene->addSimpleText(QStringLiteral("p=%1").arg(byChild[e]->dareP, 0, 'f', 2), small);
      sub->setPos(c + QPointF(-sub->boundingRect().width() / 2, kR + 2));
    } else {
      auto* sub = m_scene->addSimpleText(tr("checkpoint"), small);
      sub->setPos(c + QPointF(-sub->boundingRect().width() / 2, kR + 2));
    }
  }
  m_scene->setSceneRect(m_scene->itemsBoundingRect().adjusted(-20, -20, 20, 20));
  m_view->fitInView(m_scene->sceneRect(), Qt::KeepAspectRatio);
}

}  // namespace upcycle::ui
