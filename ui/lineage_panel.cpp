#include "lineage_panel.h"

#include <QGraphicsEllipseItem>
#include <QGraphicsPathItem>
#include <QPainterPath>
#include <QGraphicsScene>
#include <QGraphicsSimpleTextItem>
#include <QGraphicsView>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QSplitter>
#include <QTableView>
#include <QRegularExpression>
#include <QToolButton>
#include <QVBoxLayout>
#include <QWheelEvent>
#include <algorithm>
#include <tuple>

#include "splitters.h"
#include "plot_frame.h"
#include "run_picker.h"
#include "table_models.h"
#include "workspace.h"

namespace upcycle::ui {

std::map<int64_t, TreeNode> layoutLineage(int64_t experts, const std::vector<LineageRow>& lineage) {
  std::map<int64_t, TreeNode> nodes;
  const int64_t fromCheckpoints = std::max<int64_t>(0, experts - static_cast<int64_t>(lineage.size()));
  for (int64_t e = 0; e < fromCheckpoints; ++e) nodes[e] = TreeNode{e, 0, static_cast<double>(e)};
  std::map<int, std::vector<double>> taken;  // slots per column
  for (const auto& [e, n] : nodes) taken[0].push_back(n.x);
  for (const LineageRow& l : lineage) {  // the GA appends children in order: parents come first
    const bool hasA = nodes.count(l.parentA) > 0, hasB = nodes.count(l.parentB) > 0;
    const int da = hasA ? nodes[l.parentA].depth : 0;
    const int db = hasB ? nodes[l.parentB].depth : 0;
    double want = 0;
    if (hasA && hasB) want = (nodes[l.parentA].x + nodes[l.parentB].x) / 2.0;
    else if (hasA || hasB) want = hasA ? nodes[l.parentA].x : nodes[l.parentB].x;
    TreeNode n{l.child, std::max(da, db) + 1, want};
    // The nearest free slot: want, want +- 0.5, want +- 1, ...
    auto& column = taken[n.depth];
    for (int k = 0;; ++k) {
      const double at = want + (k % 2 == 1 ? 0.5 : -0.5) * ((k + 1) / 2);
      if (std::all_of(column.begin(), column.end(), [&](double o) { return std::abs(o - at) >= 1.0 - 1e-9; })) {
        n.x = at;
        break;
      }
    }
    column.push_back(n.x);
    nodes[l.child] = n;
  }
  return nodes;
}

QStringList checkpointExperts(const std::vector<std::string>& logs) {
  static const std::string marker = "experts from SFT checkpoints ";
  for (const std::string& line : logs) {
    const auto at = line.find(marker);
    if (at == std::string::npos) continue;
    QStringList names;
    for (const QString& n : QString::fromStdString(line.substr(at + marker.size())).split(QLatin1Char(',')))
      if (!n.trimmed().isEmpty()) names << n.trimmed();
    return names;
  }
  return {};
}

namespace {
// Wheel zooms about the mouse; dragging pans.
class ZoomView : public QGraphicsView {
 public:
  ZoomView(QGraphicsScene* scene, LineagePanel* panel) : QGraphicsView(scene), m_panel(panel) {
    setDragMode(QGraphicsView::ScrollHandDrag);
    setTransformationAnchor(QGraphicsView::AnchorUnderMouse);
  }

 protected:
  void wheelEvent(QWheelEvent* e) override { m_panel->zoomBy(e->angleDelta().y() > 0 ? 1.15 : 1 / 1.15); }
  // The tree follows the view's size until the user zooms.
  void resizeEvent(QResizeEvent* e) override {
    QGraphicsView::resizeEvent(e);
    if (!m_panel->userZoomed()) m_panel->fitTree();
  }

 private:
  LineagePanel* m_panel;
};
}  // namespace

LineagePanel::LineagePanel(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_picker = new RunPicker(ws, [](const RunRow& r) { return r.method == "upit" || r.method == "upit_lora"; });
  m_picker->setObjectName(QStringLiteral("lineageRun"));
  bar->addWidget(new QLabel(tr("UpIT run")));
  bar->addWidget(m_picker);
  bar->addStretch(1);
  for (const auto& [text, tip, factor] : {std::tuple<const char*, const char*, double>{"+", "Zoom in (or the mouse wheel)", 1.25},
                                          {"-", "Zoom out", 0.8}, {"Fit", "Show the whole tree", 0.0}}) {
    auto* b = new QToolButton;
    b->setText(QString::fromLatin1(text));
    b->setToolTip(tr(tip));
    connect(b, &QToolButton::clicked, this, [this, f = factor] {
      if (f > 0) return zoomBy(f);
      m_userZoomed = false;
      fitTree();
    });
    bar->addWidget(b);
  }
  layout->addLayout(bar);
  m_note = new QLabel;
  m_note->setWordWrap(true);
  layout->addWidget(m_note);
  auto* split = makeSplitter(Qt::Vertical, QStringLiteral("lineageSplit"), {3, 1});
  m_scene = new QGraphicsScene(this);
  m_view = new ZoomView(m_scene, this);
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
  QStringList roots;
  if (id > 0 && m_ws->store()) {
    try {
      RunDetail d = m_ws->store()->run(id);
      lineage = d.lineage;
      roots = checkpointExperts(d.logs);
      if (const RunRow* r = m_ws->findRun(id)) m_frame->setRunNames({QStringLiteral("#%1 %2").arg(id).arg(QString::fromStdString(r->name))});
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
    m_note->setText(tr("%1 experts from SFT checkpoints (left column), %2 grown by merging two parents and a DARE mutation.")
                        .arg(experts - static_cast<int64_t>(lineage.size()))
                        .arg(lineage.size()));
  drawTree(experts, lineage, roots);
}

void LineagePanel::zoomBy(double factor) {
  m_userZoomed = true;
  const double now = m_view->transform().m11();
  const double next = std::clamp(now * factor, 0.2, 5.0);
  m_view->scale(next / now, next / now);
}

void LineagePanel::fitTree() {
  // The whole tree when it fits at a readable size; otherwise readable, and the view scrolls.
  const QRectF r = m_scene->sceneRect();
  const QSize v = m_view->viewport()->size();
  double s = r.isEmpty() || v.isEmpty() ? 1.0 : std::min(v.width() / r.width(), v.height() / r.height());
  s = std::clamp(s, 0.8, 1.5);
  m_view->setTransform(QTransform::fromScale(s, s));
  // Centred when it fits; otherwise from the checkpoints (top left) on.
  const double halfW = v.width() / (2 * s), halfH = v.height() / (2 * s);
  m_view->centerOn(r.width() <= 2 * halfW ? r.center().x() : r.left() + halfW,
                   r.height() <= 2 * halfH ? r.center().y() : r.top() + halfH);
}

QPainterPath LineagePanel::edgePath(const QPointF& from, const QPointF& to, const std::vector<QRectF>& avoid) {
  // A horizontal S-curve from the parent's right side to the child's left side. An edge that spans
  // columns and would cross a node on the way bows above or below it: the control points move
  // up or down in steps until no sampled point of the curve falls in a node it does not join.
  auto curve = [&](double bow) {
    const double dx = (to.x() - from.x()) / 2.0;
    QPainterPath path(from);
    path.cubicTo(from + QPointF(dx, bow), to - QPointF(dx, -bow), to);
    return path;
  };
  auto clear = [&](const QPainterPath& path) {
    for (int i = 1; i < 40; ++i) {
      const QPointF q = path.pointAtPercent(i / 40.0);
      for (const QRectF& r : avoid)
        if (r.contains(q)) return false;
    }
    return true;
  };
  const double step = std::max(20.0, std::abs(to.y() - from.y()) / 4.0 + 12.0);
  for (int k = 0; k < 24; ++k) {
    const double bow = (k % 2 == 1 ? -1.0 : 1.0) * ((k + 1) / 2) * step;
    QPainterPath path = curve(bow);
    if (clear(path)) return path;
  }
  return curve(0);
}

void LineagePanel::drawTree(int64_t experts, const std::vector<LineageRow>& lineage, const QStringList& roots) {
  m_scene->clear();
  m_userZoomed = false;
  const auto nodes = layoutLineage(experts, lineage);
  const QFont font = m_view->font();  // labels at the normal size, never smaller
  const QFontMetricsF fm(font);
  QFont boldFont = font;
  boldFont.setBold(true);
  const double kR = std::max(17.0, QFontMetricsF(boldFont).horizontalAdvance(QStringLiteral("E00")) * 0.5 + 6);
  // Columns far enough apart for two edge labels side by side; slots just taller than a node and its
  // caption, so four checkpoint experts fit the dock's height at 1280x800.
  const double kDx = std::max(170.0, fm.horizontalAdvance(QStringLiteral("0.00")) * 4 + 2 * kR + 40);
  const double kDy = 2 * kR + fm.height() + 12;
  auto centre = [&](int64_t e) {
    const TreeNode& n = nodes.at(e);
    return QPointF(n.depth * kDx + kR, n.x * kDy + kR);
  };
  auto nodeRect = [&](int64_t e) {  // the circle and its caption below
    const QPointF c = centre(e);
    return QRectF(c.x() - kR, c.y() - kR, 2 * kR, 2 * kR + fm.height() + 4);
  };
  std::vector<QRectF> taken;  // node circles and their captions, and labels placed so far
  for (const auto& [e, n] : nodes) taken.push_back(nodeRect(e));
  auto freeAt = [&](const QRectF& r) {
    for (const QRectF& t : taken)
      if (t.intersects(r)) return false;
    return true;
  };
  for (const LineageRow& l : lineage) {
    if (!nodes.count(l.parentA) || !nodes.count(l.parentB) || !nodes.count(l.child)) continue;
    const QPointF c = centre(l.child) - QPointF(kR, 0);
    int which = 0;
    for (int64_t parent : {l.parentA, l.parentB}) {
      const QPointF p = centre(parent) + QPointF(kR, 0);
      std::vector<QRectF> avoid;
      for (const auto& [e, n] : nodes)
        if (e != parent && e != l.child) avoid.push_back(nodeRect(e).adjusted(-4, -4, 4, 4));
      const QPainterPath path = edgePath(p, c, avoid);
      const double w = which == 0 ? l.alpha : 1.0 - l.alpha;
      const QColor colour = seriesColor(which == 0 ? 0 : 1);
      auto* edge = m_scene->addPath(path, QPen(colour, 1.0 + 4.0 * w));
      edge->setData(0, QStringLiteral("edge"));
      edge->setData(1, QVariant::fromValue<qint64>(parent));
      edge->setData(2, QVariant::fromValue<qint64>(l.child));
      edge->setZValue(-2);
      // The label on its edge, at the first spot along it that no node or other label takes.
      const QString text = QStringLiteral("%1").arg(w, 0, 'f', 2);
      const QSizeF size(fm.horizontalAdvance(text) + 6, fm.height() + 2);
      QRectF place;
      for (double t : {0.5, 0.35, 0.65, 0.22, 0.78, 0.12, 0.88}) {
        const QPointF at = path.pointAtPercent(t);
        const QRectF r(at - QPointF(size.width() / 2, size.height() / 2), size);
        if (freeAt(r)) {
          place = r;
          break;
        }
      }
      if (place.isNull()) {  // every spot taken: beside the edge's middle, pushed down until free
        QRectF r(path.pointAtPercent(0.5) - QPointF(size.width() / 2, size.height() / 2), size);
        while (!freeAt(r)) r.translate(0, size.height());
        place = r;
      }
      taken.push_back(place);
      auto* box = m_scene->addRect(place, QPen(colour.lighter(130), 1), QColor(255, 255, 255, 235));
      box->setZValue(-1);
      auto* label = m_scene->addSimpleText(text, font);
      label->setData(0, QStringLiteral("edgeLabel"));
      label->setPos(place.topLeft() + QPointF(3, 1));
      label->setBrush(colour.darker(140));
      label->setToolTip(which == 0 ? tr("alpha: the weight of parent A") : tr("1 - alpha: the weight of parent B"));
      ++which;
    }
  }
  std::map<int64_t, const LineageRow*> byChild;
  for (const auto& l : lineage) byChild[l.child] = &l;
  for (const auto& [e, n] : nodes) {
    const QPointF c = centre(e);
    const bool grown = n.depth > 0;
    // A top-row expert's checkpoint, by name and step ("checkpoint-66" -> "step 66").
    const QString root = !grown && e < roots.size() ? roots[static_cast<int>(e)] : QString();
    QString step = root;
    if (const auto m = QRegularExpression(QStringLiteral("checkpoint-(\\d+)$")).match(root); m.hasMatch())
      step = tr("step %1").arg(m.captured(1));
    auto* circle = m_scene->addEllipse(QRectF(c.x() - kR, c.y() - kR, 2 * kR, 2 * kR), QPen(QColor(60, 60, 60), 1.5),
                                       grown ? QColor(255, 236, 179) : QColor(204, 229, 255));
    circle->setData(0, QStringLiteral("node"));
    circle->setData(1, QVariant::fromValue<qint64>(e));
    circle->setToolTip(grown ? tr("E%1 = merge(alpha E%2, (1 - alpha) E%3), alpha %4, DARE p %5")
                                   .arg(e)
                                   .arg(byChild[e]->parentA)
                                   .arg(byChild[e]->parentB)
                                   .arg(byChild[e]->alpha, 0, 'f', 3)
                                   .arg(byChild[e]->dareP, 0, 'f', 2)
                             : root.isEmpty() ? tr("E%1: from an SFT checkpoint").arg(e)
                                              : tr("E%1: from the SFT checkpoint %2").arg(e).arg(root));
    QFont bold = font;
    bold.setBold(true);
    auto* text = m_scene->addSimpleText(QStringLiteral("E%1").arg(e), bold);
    text->setPos(c - QPointF(text->boundingRect().width() / 2, text->boundingRect().height() / 2));
    auto* sub = m_scene->addSimpleText(grown ? QStringLiteral("p=%1").arg(byChild[e]->dareP, 0, 'f', 2)
                                             : (step.isEmpty() ? tr("checkpoint") : step),
                                       font);
    sub->setData(0, QStringLiteral("nodeCaption"));
    sub->setPos(c + QPointF(-sub->boundingRect().width() / 2, kR + 2));
  }
  m_scene->setSceneRect(m_scene->itemsBoundingRect().adjusted(-8, -8, 8, 8));
  fitTree();
}

}  // namespace upcycle::ui
