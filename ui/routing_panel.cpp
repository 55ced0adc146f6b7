#include "routing_panel.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QSplitter>
#include <QToolTip>
#include <QVBoxLayout>
#include "splitters.h"
#include "qcp.h"

#include <cmath>

#include "plots.h"
#include "run_picker.h"
#include "workspace.h"

namespace upcycle::ui {

RoutingPanel::RoutingPanel(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_picker = new RunPicker(ws, [](const RunRow& r) { return r.finalMetrics.count("analysis/diversity") > 0; });
  m_picker->setObjectName(QStringLiteral("routingRun"));
  m_when = new QComboBox;
  m_when->addItems({tr("after post-training"), tr("after conversion")});
  m_layer = new QComboBox;
  bar->addWidget(new QLabel(tr("Run")));
  bar->addWidget(m_picker);
  bar->addWidget(m_when);
  bar->addWidget(new QLabel(tr("Layer")));
  bar->addWidget(m_layer);
  bar->addStretch(1);
  layout->addLayout(bar);
  m_note = new QLabel;
  m_note->setWordWrap(true);
  layout->addWidget(m_note);

  auto* split = makeSplitter(Qt::Horizontal, QStringLiteral("routingSplit"), {3, 2});
  m_sharesFrame = new PlotFrame(tr("Expert shares per domain"));
  m_sharesFrame->plot()->yAxis->setLabel(tr("share of (token, slot) assignments"));
  m_sharesFrame->plot()->setInteractions(QCP::Interactions());
  {
    // The expert legend sits right of the bars, never over them.
    placeLegendOutside(m_sharesFrame->plot());
  }
  m_sharesFrame->setCsvSource([this] {
    CsvTable t;
    QStringList h{QStringLiteral("domain")};
    for (size_t e = 0; e < m_shares.size(); ++e) h << QStringLiteral("E%1").arg(e);
    t.push_back(h);
    for (size_t d = 0; d < m_domains.size(); ++d) {
      QStringList row{m_domains[d]};
      for (const auto& s : m_shares) row << QString::number(s[d], 'g', 10);
      t.push_back(row);
    }
    return t;
  });
  // Hover a bar segment for its expert, domain and share.
  m_sharesFrame->plot()->setMouseTracking(true);
  connect(m_sharesFrame->plot(), &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
    QCustomPlot* p = m_sharesFrame->plot();
    const QString text = hoverText(p->xAxis->pixelToCoord(ev->position().x()), p->yAxis->pixelToCoord(ev->position().y()));
    if (text.isEmpty()) QToolTip::hideText();
    else QToolTip::showText(ev->globalPosition().toPoint(), text, p);
  });
  m_statsFrame = new PlotFrame(tr("Router entropy and imbalance per layer"));
  QCustomPlot* s = m_statsFrame->plot();
  s->xAxis->setLabel(tr("layer"));
  s->yAxis->setLabel(tr("entropy (nats)"));
  s->yAxis2->setVisible(true);
  s->yAxis2->setLabel(tr("imbalance (max / mean share)"));
  placeLegendOutside(s, true);
  m_statsFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("layer"), QStringLiteral("router_entropy"), QStringLiteral("share_entropy"), QStringLiteral("imbalance")}};
    for (const auto& [layer, b] : byLayer(m_stats[m_when->currentIndex()]))
      t.push_back({QString::number(layer), QString::number(b.values[0], 'g', 10), QString::number(b.values[1], 'g', 10),
                   QString::number(b.values[2], 'g', 10)});
    return t;
  });
  split->addWidget(m_sharesFrame);
  split->addWidget(m_statsFrame);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 2);
  layout->addWidget(split, 1);

  connect(m_picker, &RunPicker::runSelected, this, [this](qint64) { reloadRun(); });
  connect(m_when, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) { redraw(); });
  connect(m_layer, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) { redraw(); });
  reloadRun();
}

QString RoutingPanel::hoverText(double x, double y) const {
  const long d = std::lround(x);
  if (d < 0 || d >= static_cast<long>(m_domains.size()) || std::fabs(x - static_cast<double>(d)) > 0.35 || y < 0) return {};
  // The segments stack in expert order from 0: the first whose top is above y.
  double top = 0;
  for (size_t e = 0; e < m_shares.size(); ++e) {
    top += m_shares[e][static_cast<size_t>(d)];
    if (y < top)
      return tr("%1, E%2: %3 of the assignments").arg(m_domains[static_cast<size_t>(d)]).arg(e).arg(m_shares[e][static_cast<size_t>(d)], 0, 'f', 4);
  }
  return {};
}

void RoutingPanel::showRun(qint64 id) {
  if (m_picker->selectRun(id)) reloadRun();
}
void RoutingPanel::setConverted(bool converted) { m_when->setCurrentIndex(converted ? 1 : 0); }
void RoutingPanel::setLayer(int64_t layer) {
  const int i = m_layer->findData(static_cast<qlonglong>(layer));
  if (i >= 0) m_layer->setCurrentIndex(i);
}

void RoutingPanel::reloadRun() {
  for (int c = 0; c < 2; ++c) {
    m_sharesBlobs[c].clear();
    m_stats[c].clear();
  }
  const qint64 id = m_picker->runId();
  if (id > 0 && m_ws->store()) {
    m_sharesBlobs[0] = m_ws->store()->blobs(id, "routing_shares");
    m_sharesBlobs[1] = m_ws->store()->blobs(id, "converted/routing_shares");
    m_stats[0] = m_ws->store()->blobs(id, "routing_stats");
    m_stats[1] = m_ws->store()->blobs(id, "converted/routing_stats");
  }
  const QVariant keep = m_layer->currentData();
  m_layer->blockSignals(true);
  m_layer->clear();
  for (const auto& [layer, b] : byLayer(m_sharesBlobs[0])) m_layer->addItem(QString::number(layer), static_cast<qlonglong>(layer));
  const int i = m_layer->findData(keep);
  m_layer->setCurrentIndex(i >= 0 ? i : 0);
  m_layer->blockSignals(false);
  redraw();
}

void RoutingPanel::redraw() {
  const int when = m_when->currentIndex();
  const int64_t layer = m_layer->currentData().toLongLong();
  m_domains.clear();
  m_shares.clear();
  // Overall first, then the domains in name order.
  std::vector<const BlobRow*> rows;
  for (const auto& b : m_sharesBlobs[when])
    if (b.layer == layer && b.domain.empty()) rows.push_back(&b);
  std::map<std::string, const BlobRow*> domains;
  for (const auto& b : m_sharesBlobs[when])
    if (b.layer == layer && !b.domain.empty()) domains[b.domain] = &b;
  for (const auto& [d, b] : domains) rows.push_back(b);
  const int64_t E = rows.empty() ? 0 : rows.front()->cols;
  for (const BlobRow* b : rows) m_domains.push_back(b->domain.empty() ? tr("all") : QString::fromStdString(b->domain));
  m_shares.assign(E, std::vector<double>(rows.size(), 0.0));
  for (size_t d = 0; d < rows.size(); ++d)
    for (int64_t e = 0; e < E && e < rows[d]->cols; ++e) m_shares[e][d] = rows[d]->values[e];

  QCustomPlot* p = m_sharesFrame->plot();
  p->clearPlottables();
  p->clearItems();
  QCPBars* below = nullptr;
  for (int64_t e = 0; e < E; ++e) {
    auto* bars = new QCPBars(p->xAxis, p->yAxis);
    bars->setName(QStringLiteral("E%1").arg(e));
    bars->setWidth(0.7);
    bars->setPen(QPen(Qt::white, 0.5));
    bars->setBrush(seriesColor(static_cast<int>(e)));
    QVector<double> x, y;
    for (size_t d = 0; d < rows.size(); ++d) {
      x << static_cast<double>(d);
      y << m_shares[e][d];
    }
    bars->setData(x, y);
    if (below) bars->moveAbove(below);
    below = bars;
  }
  // The uniform split: each boundary of a balanced router lies on a multiple of 1/E.
  for (int64_t k = 1; k < E; ++k) {
    auto* line = new QCPItemStraightLine(p);
    line->point1->setCoords(-1, static_cast<double>(k) / E);
    line->point2->setCoords(1, static_cast<double>(k) / E);
    line->setPen(QPen(QColor(40, 40, 40, 140), 1, Qt::DashLine));
  }
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  for (size_t d = 0; d < m_domains.size(); ++d) ticker->addTick(static_cast<double>(d), m_domains[d]);
  p->xAxis->setTicker(ticker);
  p->xAxis->setTickLabelRotation(m_domains.size() > 5 ? 30 : 0);
  p->xAxis->setRange(-0.6, static_cast<double>(m_domains.size()) - 0.4);
  p->yAxis->setRange(0, 1.0);
  p->legend->setVisible(E > 0 && E <= 16);
  m_sharesFrame->setTitle(tr("Expert shares per domain, layer %1 (dashed: the uniform split, multiples of 1/%2)").arg(layer).arg(E));
  p->replot();

  QCustomPlot* s = m_statsFrame->plot();
  s->clearGraphs();
  s->clearItems();
  QVector<double> x, ent, shareEnt, imb;
  for (const auto& [l, b] : byLayer(m_stats[when])) {
    x << static_cast<double>(l);
    ent << b.values[0];
    shareEnt << b.values[1];
    imb << b.values[2];
  }
  auto graph = [&](const QString& name, const QVector<double>& y, int color, QCPAxis* axis, Qt::PenStyle style) {
    QCPGraph* g = s->addGraph(s->xAxis, axis);
    g->setName(name);
    g->setData(x, y);
    g->setPen(QPen(seriesColor(color), 2, style));
    g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 6));
  };
  graph(tr("router entropy (per token)"), ent, 0, s->yAxis, Qt::SolidLine);
  graph(tr("entropy of the shares"), shareEnt, 2, s->yAxis, Qt::SolidLine);
  graph(tr("imbalance (right axis)"), imb, 5, s->yAxis2, Qt::DashLine);
  if (E > 0) {
    auto* maxLine = new QCPItemStraightLine(s);
    maxLine->point1->setCoords(0, std::log(static_cast<double>(E)));
    maxLine->point2->setCoords(1, std::log(static_cast<double>(E)));
    maxLine->setPen(QPen(QColor(120, 120, 120), 1, Qt::DotLine));
  }
  s->xAxis->setRange(x.isEmpty() ? 0 : x.front() - 0.5, x.isEmpty() ? 1 : x.back() + 0.5);
  QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
  fixed->setTickStep(1);
  s->xAxis->setTicker(fixed);
  s->yAxis->setRange(0, E > 0 ? std::log(static_cast<double>(E)) * 1.1 : 1);
  double imbMax = 1;
  for (double v : imb) imbMax = std::max(imbMax, v);
  s->yAxis2->setRange(0, imbMax * 1.2);
  s->replot();

  if (E == 0) m_note->setText(m_picker->runId() == 0 ? tr("No MoE run in this workspace yet.") : tr("This run has no routing data."));
  else {
    auto st = byLayer(m_stats[when]);
    auto it = st.find(layer);
    m_note->setText(it == st.end() ? QString()
                                   : tr("Layer %1: router entropy %2 nats (max log %3 = %4), imbalance %5 (1 = balanced).")
                                         .arg(layer)
                                         .arg(it->second.values[0], 0, 'f', 3)
                                         .arg(E)
                                         .arg(std::log(static_cast<double>(E)), 0, 'f', 3)
                                         .arg(it->second.values[2], 0, 'f', 3));
  }
}

}  // namespace upcycle::ui
