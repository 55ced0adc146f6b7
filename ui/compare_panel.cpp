#include "compare_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QTabWidget>
#include <QTableView>
#include <QToolTip>
#include <QVBoxLayout>
#include "qcp.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "curves_view.h"
#include "plots.h"
#include "seeds_view.h"
#include "table_models.h"
#include "workspace.h"

namespace upcycle::ui {

namespace {

QTableView* makeTable(QAbstractItemModel* model) {
  auto* t = new QTableView;
  t->setModel(model);
  t->verticalHeader()->hide();
  t->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  t->horizontalHeader()->setStretchLastSection(true);
  t->setAlternatingRowColors(true);
  return t;
}

QString runLabel(const RunDetail& r) { return QStringLiteral("#%1 %2").arg(r.run.id).arg(QString::fromStdString(r.run.name)); }


}  // namespace

ComparePanel::ComparePanel(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  m_header = new QLabel(tr("Select 2 to 4 runs in the Runs panel and press Compare."));
  m_header->setWordWrap(true);
  layout->addWidget(m_header);
  m_tabs = new QTabWidget;
  layout->addWidget(m_tabs, 1);

  // Parameters.
  auto* paramsPage = new QWidget;
  auto* pl = new QVBoxLayout(paramsPage);
  m_diffOnly = new QCheckBox(tr("Only the parameters that differ"));
  m_diffOnly->setObjectName(QStringLiteral("diffOnly"));
  m_params = new ParamDiffModel(this);
  pl->addWidget(m_diffOnly);
  pl->addWidget(makeTable(m_params), 1);
  m_tabs->addTab(paramsPage, tr("Parameters"));
  connect(m_diffOnly, &QCheckBox::toggled, m_params, &ParamDiffModel::setDiffOnly);

  // A plot page: a row of controls (labels and combo boxes; a combo redraws the page when it changes)
  // above the frame.
  auto plotPage = [this](const QString& title, std::initializer_list<QWidget*> controls, PlotFrame* frame,
                         void (ComparePanel::*redraw)(), QLabel* note) {
    auto* page = new QWidget;
    auto* v = new QVBoxLayout(page);
    auto* bar = new QHBoxLayout;
    for (QWidget* c : controls) {
      bar->addWidget(c);
      if (auto* combo = qobject_cast<QComboBox*>(c))
        connect(combo, qOverload<int>(&QComboBox::currentIndexChanged), this, [this, redraw](int) { (this->*redraw)(); });
    }
    bar->addStretch(1);
    v->addLayout(bar);
    v->addWidget(frame, 1);
    if (note) {
      note->setWordWrap(true);
      v->addWidget(note);
    }
    m_tabs->addTab(page, title);
  };

  // Curves: a view of its own (W&B-style overlay of any number of runs), so other views (across
  // seeds, ...) can sit beside it as tabs.
  m_curves = new CurvesView(ws);
  m_curves->setObjectName(QStringLiteral("curvesView"));
  m_tabs->addTab(m_curves, tr("Curves"));

  m_simKind = new QComboBox;
  m_simKind->addItem(tr("raw weights"), QStringLiteral("weight_similarity"));
  m_simKind->addItem(tr("deltas"), QStringLiteral("delta_similarity"));
  m_simKind->addItem(tr("output CKA"), QStringLiteral("output_cka"));
  m_simKind->addItem(tr("raw weights, after conversion"), QStringLiteral("converted/weight_similarity"));
  m_simLayer = new QComboBox;
  m_simFrame = new PlotFrame(tr("Expert similarity (one colour scale)"));
  m_simFrame->plot()->setInteractions(QCP::Interactions());
  m_simNote = new QLabel;
  m_simNote->setObjectName(QStringLiteral("similarityNote"));
  plotPage(tr("Similarity"), {m_simKind, new QLabel(tr("Layer")), m_simLayer}, m_simFrame, &ComparePanel::drawSimilarity, m_simNote);

  m_routeLayer = new QComboBox;
  m_routeFrame = new PlotFrame(tr("Expert shares (dashed: uniform 1/E)"));
  m_routeFrame->plot()->setInteractions(QCP::Interactions());
  m_routeFrame->plot()->setMouseTracking(true);
  connect(m_routeFrame->plot(), &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
    const QString text = routingHoverAt(ev->position());
    if (text.isEmpty()) QToolTip::hideText();
    else QToolTip::showText(ev->globalPosition().toPoint(), text, m_routeFrame->plot());
  });
  m_routeNote = new QLabel;
  m_routeNote->setObjectName(QStringLiteral("routingNote"));
  plotPage(tr("Routing"), {new QLabel(tr("Layer")), m_routeLayer}, m_routeFrame, &ComparePanel::drawRouting, m_routeNote);

  // Final metrics.
  m_metrics = new MetricsCompareModel(this);
  QTableView* metrics = makeTable(m_metrics);
  // The metric names take the spare width; the runs' columns stay as wide as their numbers.
  metrics->horizontalHeader()->setStretchLastSection(false);
  metrics->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
  m_tabs->addTab(metrics, tr("Metrics"));

  // One experiment's runs across their seeds (needs no selection: it groups the stored runs itself).
  m_seeds = new SeedsView(ws);
  m_tabs->addTab(m_seeds, tr("Across seeds"));

  // Compare ticks its runs first (Workspace::requestCompare), which already showed them below.
  connect(ws, &Workspace::compareRequested, this, [this](const QList<qint64>& ids) {
    if (sortedIds(ids) != shownIds() || m_runs.empty()) setRuns(ids);
  });
  // The ticked runs are the compared runs: ticking in the Runs table overlays their curves at once;
  // 2 to 4 ticked runs fill every tab, and the header always names what the tabs show.
  connect(ws, &Workspace::checkedRunsChanged, this, [this](const QList<qint64>& ids) {
    if (ids.isEmpty()) return;
    m_curves->setRuns(ids);
    if (sortedIds(ids) != shownIds() || m_runs.empty()) setRuns(ids);
  });

  m_simFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), QStringLiteral("row"), QStringLiteral("col"), QStringLiteral("value")}};
    for (size_t i = 0; i < m_runs.size() && m_ws->store(); ++i)
      for (const BlobRow& b : m_ws->store()->blobs(m_runs[i].run.id, m_simKind->currentData().toString().toStdString()))
        if (b.layer == m_simLayer->currentData().toLongLong())
          for (int64_t r = 0; r < b.rows; ++r)
            for (int64_t c = 0; c < b.cols; ++c)
              t.push_back({runLabel(m_runs[i]), QString::number(r), QString::number(c), QString::number(b.values[r * b.cols + c], 'g', 10)});
    return t;
  });
  m_routeFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), QStringLiteral("expert"), QStringLiteral("share")}};
    for (size_t i = 0; i < m_runs.size() && m_ws->store(); ++i)
      for (const BlobRow& b : m_ws->store()->blobs(m_runs[i].run.id, "routing_shares"))
        if (b.layer == m_routeLayer->currentData().toLongLong() && b.domain.empty())
          for (int64_t e = 0; e < b.cols; ++e) t.push_back({runLabel(m_runs[i]), QString::number(e), QString::number(b.values[e], 'g', 10)});
    return t;
  });
}

void ComparePanel::setDiffOnly(bool on) { m_diffOnly->setChecked(on); }
void ComparePanel::setCurveMetric(const QString& key) { m_curves->setMetric(key); }
PlotFrame* ComparePanel::curvesFrame() const { return m_curves->frame(); }

QString ComparePanel::headerText() const { return m_header->text(); }

QList<qint64> ComparePanel::sortedIds(QList<qint64> ids) {
  std::sort(ids.begin(), ids.end());
  return ids;
}

QList<qint64> ComparePanel::shownIds() const {
  QList<qint64> ids;
  for (const RunDetail& r : m_runs) ids << r.run.id;
  return sortedIds(ids);
}

void ComparePanel::setRuns(const QList<qint64>& ids) {
  m_runs.clear();
  if (ids.size() < 2 || ids.size() > 4) {
    m_header->setText(ids.size() > 4 ? tr("%1 runs ticked: Curves overlays them all; the other tabs compare 2 to 4 runs.").arg(ids.size())
                                     : tr("Compare takes 2 to 4 runs; %1 ticked.").arg(ids.size()));
  } else if (m_ws->store()) {
    try {
      for (qint64 id : ids) m_runs.push_back(m_ws->store()->run(id));
    } catch (const std::exception& e) {
      m_runs.clear();
      m_header->setText(QString::fromStdString(e.what()));
    }
  }
  if (!m_runs.empty()) {
    QStringList names;
    for (size_t i = 0; i < m_runs.size(); ++i)
      names << QStringLiteral("<span style='color:%1'>&#9632;</span> %2")
                   .arg(runColor(m_runs[i].run.id).name(), runLabel(m_runs[i]).toHtmlEscaped());
    m_header->setText(tr("Comparing %1").arg(names.join(QStringLiteral(", "))));
  }
  m_params->setRuns(m_runs);
  m_metrics->setRuns(m_runs);
  // Layers that every compared run has.
  std::set<int64_t> layers;
  for (size_t i = 0; i < m_runs.size() && m_ws->store(); ++i)
    for (const BlobRow& b : m_ws->store()->blobs(m_runs[i].run.id, "weight_similarity")) layers.insert(b.layer);
  for (QComboBox* c : {m_simLayer, m_routeLayer}) {
    c->blockSignals(true);
    c->clear();
    for (int64_t l : layers) c->addItem(QString::number(l), static_cast<qlonglong>(l));
    c->blockSignals(false);
  }
  QStringList labels;
  QList<qint64> ids2;
  for (const RunDetail& r : m_runs) {
    labels << runLabel(r);
    ids2 << r.run.id;
  }
  for (PlotFrame* f : {m_simFrame, m_routeFrame}) f->setRunNames(labels);
  if (!m_runs.empty()) m_curves->setRuns(ids2);
  drawSimilarity();
  drawRouting();
}

QString ComparePanel::whyAbsent(const RunDetail& r, const QString& what) const {
  if (r.run.method == "dense" || r.run.method == "base")
    return tr("%1 is a dense model: it has no experts, so no %2").arg(runLabel(r), what);
  return tr("%1 has no %2 for this layer in the store").arg(runLabel(r), what);
}

QCPAxisRect* ComparePanel::addRunColumn(QCustomPlot* p, int col, size_t run) const {
  auto* rect = new QCPAxisRect(p);
  p->plotLayout()->addElement(1, col, rect);
  auto* title = new QCPTextElement(p, runLabel(m_runs[run]));
  title->setTextColor(runColor(m_runs[run].run.id));
  p->plotLayout()->addElement(0, col, title);
  return rect;
}

void ComparePanel::drawSimilarity() {
  QCustomPlot* p = m_simFrame->plot();
  p->clearPlottables();
  p->plotLayout()->clear();
  m_maps.clear();
  const std::string kind = m_simKind->currentData().toString().toStdString();
  const int64_t layer = m_simLayer->currentData().toLongLong();
  std::vector<std::pair<size_t, BlobRow>> shown;
  for (size_t i = 0; i < m_runs.size() && m_ws->store(); ++i)
    for (const BlobRow& b : m_ws->store()->blobs(m_runs[i].run.id, kind))
      if (b.layer == layer) shown.emplace_back(i, b);
  // Say why a run is missing (a dense run has no experts) instead of dropping it silently.
  QStringList absent;
  for (size_t i = 0; i < m_runs.size(); ++i)
    if (std::none_of(shown.begin(), shown.end(), [i](const auto& s) { return s.first == i; }))
      absent << whyAbsent(m_runs[i], tr("%1 matrices").arg(m_simKind->currentText()));
  m_simNote->setText(absent.isEmpty() ? QString() : tr("Not shown: %1.").arg(absent.join(QStringLiteral("; "))));
  if (shown.empty()) {
    p->plotLayout()->addElement(0, 0, new QCPTextElement(p, tr("No %1 matrices for these runs.").arg(m_simKind->currentText())));
    p->replot();
    return;
  }
  double lo = 0;  // one colour range for every heatmap: [min(0, smallest value), 1]
  for (const auto& [i, b] : shown)
    for (double v : b.values) lo = std::min(lo, v);
  auto* scale = new QCPColorScale(p);
  scale->setType(QCPAxis::atRight);
  scale->setGradient(similarityGradient());
  scale->setDataRange(QCPRange(lo, 1.0));
  scale->axis()->setLabel(tr("similarity"));
  auto* group = new QCPMarginGroup(p);
  int col = 0;
  for (const auto& [i, b] : shown) {
    QCPAxisRect* rect = addRunColumn(p, col, i);
    rect->setMarginGroup(QCP::msBottom | QCP::msTop, group);
    auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
    map->setColorScale(scale);
    map->setGradient(similarityGradient());
    showMatrix(map, b);
    map->setDataRange(QCPRange(lo, 1.0));
    m_maps.push_back(map);
    ++col;
  }
  p->plotLayout()->addElement(1, col, scale);
  scale->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  p->replot();
}

QString ComparePanel::routingHoverAt(const QPointF& pixel) const {
  for (const RouteColumn& c : m_routeColumns) {
    if (!c.rect->rect().contains(pixel.toPoint())) continue;
    const double x = c.rect->axis(QCPAxis::atBottom)->pixelToCoord(pixel.x());
    const long e = std::lround(x);
    if (e < 0 || e >= static_cast<long>(c.shares.size()) || std::fabs(x - static_cast<double>(e)) > 0.4) return {};
    return tr("%1, E%2: share %3 (uniform %4)")
        .arg(runLabel(m_runs[c.run]))
        .arg(e)
        .arg(c.shares[static_cast<size_t>(e)], 0, 'f', 4)
        .arg(1.0 / static_cast<double>(c.shares.size()), 0, 'f', 4);
  }
  return {};
}

void ComparePanel::drawRouting() {
  m_routeColumns.clear();
  QCustomPlot* p = m_routeFrame->plot();
  p->clearPlottables();
  p->clearItems();
  p->plotLayout()->clear();
  const int64_t layer = m_routeLayer->currentData().toLongLong();
  std::vector<std::pair<size_t, BlobRow>> shown;
  double top = 0;
  for (size_t i = 0; i < m_runs.size() && m_ws->store(); ++i)
    for (const BlobRow& b : m_ws->store()->blobs(m_runs[i].run.id, "routing_shares"))
      if (b.layer == layer && b.domain.empty()) {
        shown.emplace_back(i, b);
        for (double v : b.values) top = std::max(top, v);
      }
  QStringList absent;
  for (size_t i = 0; i < m_runs.size(); ++i)
    if (std::none_of(shown.begin(), shown.end(), [i](const auto& s) { return s.first == i; }))
      absent << whyAbsent(m_runs[i], tr("routing data"));
  m_routeNote->setText(absent.isEmpty() ? QString() : tr("Not shown: %1.").arg(absent.join(QStringLiteral("; "))));
  if (shown.empty()) {
    p->plotLayout()->addElement(0, 0, new QCPTextElement(p, tr("No routing data for these runs.")));
    p->replot();
    return;
  }
  int col = 0;
  for (const auto& [i, b] : shown) {
    QCPAxisRect* rect = addRunColumn(p, col, i);
    m_routeColumns.push_back({rect, i, b.values});
    QCPAxis* x = rect->axis(QCPAxis::atBottom);
    QCPAxis* y = rect->axis(QCPAxis::atLeft);
    auto* bars = new QCPBars(x, y);
    QVector<double> keys, values;
    for (int64_t e = 0; e < b.cols; ++e) {
      keys << static_cast<double>(e);
      values << b.values[e];
    }
    bars->setData(keys, values);
    bars->setBrush(runColor(m_runs[i].run.id));
    bars->setPen(Qt::NoPen);
    auto* uniform = new QCPItemStraightLine(p);
    uniform->setClipAxisRect(rect);
    uniform->point1->setAxes(x, y);
    uniform->point2->setAxes(x, y);
    uniform->point1->setCoords(0, 1.0 / static_cast<double>(b.cols));
    uniform->point2->setCoords(1, 1.0 / static_cast<double>(b.cols));
    uniform->setPen(QPen(QColor(40, 40, 40), 1, Qt::DashLine));
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    for (int64_t e = 0; e < b.cols; ++e) ticker->addTick(static_cast<double>(e), QStringLiteral("E%1").arg(e));
    x->setTicker(ticker);
    x->setRange(-0.6, static_cast<double>(b.cols) - 0.4);
    y->setRange(0, top * 1.15);  // one y axis for all: shares compare directly
    if (col == 0) y->setLabel(tr("share"));
    ++col;
  }
  p->replot();
}

}  // namespace upcycle::ui
