#include "compare_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QTabWidget>
#include <QTableView>
#include <QVBoxLayout>
#include "qcp.h"

#include <set>

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

// The stage family of a metric's stage: "post:sparse" -> "post".
QString stageFamily(const std::string& stage) { return QString::fromStdString(stage.substr(0, stage.find(':'))); }

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
                         void (ComparePanel::*redraw)()) {
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
    m_tabs->addTab(page, title);
  };

  m_curveStage = new QComboBox;
  m_curveStage->addItem(tr("post-training"), QStringLiteral("post"));
  m_curveStage->addItem(tr("router pre-optimization"), QStringLiteral("router-preopt"));
  m_curveStage->addItem(tr("dense SFT"), QStringLiteral("sft"));
  m_curveStage->addItem(tr("pretraining"), QStringLiteral("pretrain"));
  m_curveMetric = new QComboBox;
  for (const char* k : {"loss", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s"}) m_curveMetric->addItem(QString::fromLatin1(k), QString::fromLatin1(k));
  m_curvesFrame = new PlotFrame(tr("Training curves"));
  styleLegend(m_curvesFrame->plot());
  m_curvesFrame->plot()->xAxis->setLabel(tr("step"));
  plotPage(tr("Curves"), {new QLabel(tr("Stage")), m_curveStage, new QLabel(tr("Metric")), m_curveMetric}, m_curvesFrame,
           &ComparePanel::drawCurves);

  m_simKind = new QComboBox;
  m_simKind->addItem(tr("raw weights"), QStringLiteral("weight_similarity"));
  m_simKind->addItem(tr("deltas"), QStringLiteral("delta_similarity"));
  m_simKind->addItem(tr("output CKA"), QStringLiteral("output_cka"));
  m_simKind->addItem(tr("raw weights, after conversion"), QStringLiteral("converted/weight_similarity"));
  m_simLayer = new QComboBox;
  m_simFrame = new PlotFrame(tr("Expert similarity (one colour scale)"));
  m_simFrame->plot()->setInteractions(QCP::Interactions());
  plotPage(tr("Similarity"), {m_simKind, new QLabel(tr("Layer")), m_simLayer}, m_simFrame, &ComparePanel::drawSimilarity);

  m_routeLayer = new QComboBox;
  m_routeFrame = new PlotFrame(tr("Expert shares (dashed: uniform 1/E)"));
  m_routeFrame->plot()->setInteractions(QCP::Interactions());
  plotPage(tr("Routing"), {new QLabel(tr("Layer")), m_routeLayer}, m_routeFrame, &ComparePanel::drawRouting);

  // Final metrics.
  m_metrics = new MetricsCompareModel(this);
  m_tabs->addTab(makeTable(m_metrics), tr("Metrics"));

  // One experiment's runs across their seeds (needs no selection: it groups the stored runs itself).
  m_seeds = new SeedsView(ws);
  m_tabs->addTab(m_seeds, tr("Across seeds"));

  connect(ws, &Workspace::compareRequested, this, &ComparePanel::setRuns);

  m_curvesFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), QStringLiteral("stage"), QStringLiteral("step"), m_curveMetric->currentData().toString()}};
    for (const RunDetail& r : m_runs) {
      if (!m_ws->store()) break;
      for (const MetricPoint& p : m_ws->store()->metrics(r.run.id))
        if (stageFamily(p.stage) == m_curveStage->currentData().toString() && QString::fromStdString(p.key) == m_curveMetric->currentData().toString())
          t.push_back({runLabel(r), QString::fromStdString(p.stage), QString::number(p.step), QString::number(p.value, 'g', 10)});
    }
    return t;
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
void ComparePanel::setCurveMetric(const QString& key) {
  const int i = m_curveMetric->findData(key);
  if (i >= 0) m_curveMetric->setCurrentIndex(i);
}

void ComparePanel::setRuns(const QList<qint64>& ids) {
  m_runs.clear();
  if (ids.size() < 2 || ids.size() > 4) {
    m_header->setText(tr("Compare takes 2 to 4 runs; %1 selected.").arg(ids.size()));
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
                   .arg(seriesColor(static_cast<int>(i)).name(), runLabel(m_runs[i]).toHtmlEscaped());
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
  drawCurves();
  drawSimilarity();
  drawRouting();
}

void ComparePanel::drawCurves() {
  QCustomPlot* p = m_curvesFrame->plot();
  p->clearGraphs();
  const QString family = m_curveStage->currentData().toString();
  const QString key = m_curveMetric->currentData().toString();
  for (size_t i = 0; i < m_runs.size() && m_ws->store(); ++i) {
    QVector<double> x, y;
    for (const MetricPoint& pt : m_ws->store()->metrics(m_runs[i].run.id))
      if (stageFamily(pt.stage) == family && QString::fromStdString(pt.key) == key) {
        x << static_cast<double>(pt.step);
        y << pt.value;
      }
    if (x.isEmpty()) continue;
    QCPGraph* g = p->addGraph();
    g->setName(runLabel(m_runs[i]));
    g->setData(x, y);
    g->setPen(QPen(seriesColor(static_cast<int>(i)), 1.8));
  }
  p->yAxis->setLabel(key);
  p->legend->setVisible(p->graphCount() > 0);
  p->rescaleAxes();
  p->replot();
}

QCPAxisRect* ComparePanel::addRunColumn(QCustomPlot* p, int col, size_t run) const {
  auto* rect = new QCPAxisRect(p);
  p->plotLayout()->addElement(1, col, rect);
  auto* title = new QCPTextElement(p, runLabel(m_runs[run]));
  title->setTextColor(seriesColor(static_cast<int>(run)));
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

void ComparePanel::drawRouting() {
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
  if (shown.empty()) {
    p->plotLayout()->addElement(0, 0, new QCPTextElement(p, tr("No routing data for these runs.")));
    p->replot();
    return;
  }
  int col = 0;
  for (const auto& [i, b] : shown) {
    QCPAxisRect* rect = addRunColumn(p, col, i);
    QCPAxis* x = rect->axis(QCPAxis::atBottom);
    QCPAxis* y = rect->axis(QCPAxis::atLeft);
    auto* bars = new QCPBars(x, y);
    QVector<double> keys, values;
    for (int64_t e = 0; e < b.cols; ++e) {
      keys << static_cast<double>(e);
      values << b.values[e];
    }
    bars->setData(keys, values);
    bars->setBrush(seriesColor(static_cast<int>(i)));
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
