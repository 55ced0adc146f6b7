#include "similarity_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QSplitter>
#include <QToolTip>
#include <algorithm>
#include <QVBoxLayout>
#include "splitters.h"
#include "qcp.h"

#include "plots.h"
#include "run_picker.h"
#include "workspace.h"

namespace upcycle::ui {

std::string SimilarityPanel::kindName(int kind, bool converted) {
  static const char* names[] = {"weight_similarity", "delta_similarity", "output_cka"};
  return std::string(converted ? "converted/" : "") + names[kind];
}

SimilarityPanel::SimilarityPanel(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_picker = new RunPicker(ws, [](const RunRow& r) { return r.finalMetrics.count("analysis/diversity") > 0; });
  m_picker->setObjectName(QStringLiteral("similarityRun"));
  m_kind = new QComboBox;
  m_kind->addItems({tr("Raw weights"), tr("Deltas from the base"), tr("Output CKA")});
  m_kind->setToolTip(tr("Raw weights: cosine similarity of the experts' flattened FFN weights. It depends on the order of the\n"
                        "neurons: Drop-Upcycling permutes each expert's neurons, so its raw-weight similarity is near 0 even\n"
                        "where experts compute the same function; output CKA compares function.\n"
                        "Deltas: the same on (expert - dense FFN); undefined for sparse upcycling (all deltas are 0).\n"
                        "Output CKA: linear CKA of the experts' outputs on the probe tokens."));
  m_when = new QComboBox;
  m_when->addItems({tr("after post-training"), tr("after conversion")});
  m_layer = new QComboBox;
  m_layer->setObjectName(QStringLiteral("similarityLayer"));
  bar->addWidget(new QLabel(tr("Run")));
  bar->addWidget(m_picker);
  bar->addWidget(m_kind);
  bar->addWidget(m_when);
  bar->addWidget(new QLabel(tr("Layer")));
  bar->addWidget(m_layer);
  m_fit = new QCheckBox(tr("Fit colours to the data"));
  m_fit->setToolTip(tr("Off: the colour scale spans [min(0, smallest value), 1], so runs compare at a glance.\n"
                       "On: it spans this matrix's own range, to see structure among near-identical experts."));
  bar->addWidget(m_fit);
  bar->addStretch(1);
  layout->addLayout(bar);
  m_note = new QLabel;
  m_note->setObjectName(QStringLiteral("similarityHeader"));
  m_note->setWordWrap(true);
  layout->addWidget(m_note);

  auto* split = makeSplitter(Qt::Horizontal, QStringLiteral("similaritySplit"), {3, 2});
  m_heatFrame = new PlotFrame(tr("Expert similarity"));
  QCustomPlot* p = m_heatFrame->plot();
  p->setInteractions(QCP::Interactions());
  m_map = new QCPColorMap(p->xAxis, p->yAxis);
  m_scale = new QCPColorScale(p);
  p->plotLayout()->addElement(0, 1, m_scale);
  m_scale->setType(QCPAxis::atRight);
  m_map->setColorScale(m_scale);
  m_map->setGradient(similarityGradient());
  m_scale->axis()->setLabel(tr("similarity"));
  auto* group = new QCPMarginGroup(p);
  p->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  m_scale->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  p->xAxis->setLabel(tr("expert"));
  p->yAxis->setLabel(tr("expert"));
  connect(p, &QCustomPlot::mouseMove, this, &SimilarityPanel::onHover);
  m_heatFrame->setCsvSource([this] {
    CsvTable t;
    QStringList h{QStringLiteral("expert")};
    for (int64_t c = 0; c < m_shown.cols; ++c) h << QStringLiteral("E%1").arg(c);
    t.push_back(h);
    for (int64_t r = 0; r < m_shown.rows; ++r) {
      QStringList row{QStringLiteral("E%1").arg(r)};
      for (int64_t c = 0; c < m_shown.cols; ++c) row << QString::number(m_shown.values[r * m_shown.cols + c], 'g', 10);
      t.push_back(row);
    }
    return t;
  });

  m_divFrame = new PlotFrame(tr("Diversity across layers"));
  QCustomPlot* d = m_divFrame->plot();
  d->xAxis->setLabel(tr("layer"));
  d->yAxis->setLabel(tr("1 - mean off-diagonal similarity"));
  placeLegendOutside(d, true);
  m_divFrame->setCsvSource([this] {
    // The kind shown (weights, deltas, CKA), named in the header row.
    const int kind = m_kind->currentIndex();
    const QString k = QString::fromStdString(kindName(kind, false));
    CsvTable t{{QStringLiteral("layer"), QStringLiteral("diversity_after_post_training_") + k, QStringLiteral("diversity_after_conversion_") + k}};
    auto post = byLayer(m_blobs[kind][0]), conv = byLayer(m_blobs[kind][1]);
    for (const auto& [layer, b] : post) {
      auto it = conv.find(layer);
      t.push_back({QString::number(layer), QString::number(diversityOf(b), 'g', 10),
                   it == conv.end() ? QString() : QString::number(diversityOf(it->second), 'g', 10)});
    }
    return t;
  });
  split->addWidget(m_heatFrame);
  split->addWidget(m_divFrame);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 2);
  layout->addWidget(split, 1);

  connect(m_picker, &RunPicker::runSelected, this, [this](qint64) { reloadRun(); });
  connect(m_kind, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) { redraw(); });
  connect(m_when, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) { redraw(); });
  connect(m_layer, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) { redraw(); });
  connect(m_fit, &QCheckBox::toggled, this, [this] { redraw(); });
  reloadRun();
}

void SimilarityPanel::showRun(qint64 id) {
  if (!m_picker->selectRun(id) || m_picker->runId() != id) return;
  reloadRun();
}
void SimilarityPanel::setKind(int kind) { m_kind->setCurrentIndex(kind); }
void SimilarityPanel::setConverted(bool converted) { m_when->setCurrentIndex(converted ? 1 : 0); }
void SimilarityPanel::setFitColours(bool fit) { m_fit->setChecked(fit); }
void SimilarityPanel::setLayer(int64_t layer) {
  const int i = m_layer->findData(static_cast<qlonglong>(layer));
  if (i >= 0) m_layer->setCurrentIndex(i);
}

void SimilarityPanel::reloadRun() {
  for (auto& k : m_blobs)
    for (auto& v : k) v.clear();
  const qint64 id = m_picker->runId();
  if (id > 0 && m_ws->store()) {
    for (int k = 0; k < 3; ++k)
      for (int c = 0; c < 2; ++c) m_blobs[k][c] = m_ws->store()->blobs(id, kindName(k, c == 1));
  }
  const QVariant keep = m_layer->currentData();
  m_layer->blockSignals(true);
  m_layer->clear();
  for (const auto& [layer, b] : byLayer(m_blobs[0][0])) m_layer->addItem(QString::number(layer), static_cast<qlonglong>(layer));
  const int i = m_layer->findData(keep);
  m_layer->setCurrentIndex(i >= 0 ? i : 0);
  m_layer->blockSignals(false);

  redraw();
}

void SimilarityPanel::drawDiversity() {
  // The diversity line (one point per layer), after post-training and after conversion, of the
  // matrix kind the header shows: raw weights, deltas or output CKA.
  const int kind = m_kind->currentIndex();
  QCustomPlot* d = m_divFrame->plot();
  d->clearGraphs();
  const QString names[2] = {tr("after post-training"), tr("after conversion")};
  for (int c = 0; c < 2; ++c) {
    QVector<double> x, y;
    for (const auto& [layer, b] : byLayer(m_blobs[kind][c])) {
      x << static_cast<double>(layer);
      y << diversityOf(b);
    }
    if (x.isEmpty()) continue;
    QCPGraph* g = d->addGraph();
    g->setName(names[c]);
    g->setData(x, y);
    g->setPen(QPen(seriesColor(c), 2, c == 1 ? Qt::DashLine : Qt::SolidLine));
    g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 6));
  }
  d->yAxis->setLabel(tr("1 - mean off-diagonal (%1)").arg(m_kind->currentText().toLower()));
  m_divFrame->setTitle(tr("Diversity across layers: %1").arg(m_kind->currentText().toLower()));
  d->rescaleAxes();
  d->yAxis->setRange(std::min(0.0, d->yAxis->range().lower), std::max(0.05, d->yAxis->range().upper * 1.15));
  d->xAxis->setRange(d->xAxis->range().lower - 0.5, d->xAxis->range().upper + 0.5);
  QSharedPointer<QCPAxisTickerFixed> ticker(new QCPAxisTickerFixed);
  ticker->setTickStep(1);
  d->xAxis->setTicker(ticker);
  d->replot();
}

void SimilarityPanel::redraw() {
  drawDiversity();
  const int kind = m_kind->currentIndex();
  const bool converted = m_when->currentIndex() == 1;
  const auto layers = byLayer(m_blobs[kind][converted ? 1 : 0]);
  const int64_t layer = m_layer->currentData().toLongLong();
  auto it = layers.find(layer);
  QCustomPlot* p = m_heatFrame->plot();
  if (it == layers.end()) {
    m_shown = BlobRow{};
    m_map->data()->clear();
    m_note->setText(m_picker->runId() == 0 ? tr("No MoE run in this workspace yet: run an experiment first.")
                                           : tr("This run has no %1 matrix (deltas need a dense base; CKA needs probe data).")
                                                 .arg(m_kind->currentText().toLower()));
    p->replot();
    return;
  }
  m_shown = it->second;
  showMatrix(m_map, m_shown);
  // Colour range: [min(0, smallest), 1], so 1 (identical experts) is always the brightest colour.
  double lo = 0, hi = 1.0;
  for (double v : m_shown.values) lo = std::min(lo, v);
  if (m_fit->isChecked()) {
    lo = *std::min_element(m_shown.values.begin(), m_shown.values.end());
    hi = *std::max_element(m_shown.values.begin(), m_shown.values.end());
    if (hi - lo < 1e-12) hi = lo + 1e-12;
  }
  m_map->setDataRange(QCPRange(lo, hi));
  const RunRow* run = m_ws->findRun(m_picker->runId());
  const bool permuted = run && (run->method == "drop" || run->method == "noise") && kind < 2;
  m_note->setText(tr("Layer %1: diversity %2 (1 - mean off-diagonal). Hover a cell for its value.%3")
                      .arg(layer)
                      .arg(diversityOf(m_shown), 0, 'f', 4)
                      .arg(permuted ? tr(" This method permutes each expert's neurons, so weight cosine is near 0 "
                                         "even for identical functions: compare output CKA.")
                                    : QString()));
  m_heatFrame->setTitle(tr("Expert similarity: %1, layer %2, %3").arg(m_kind->currentText(), QString::number(layer), m_when->currentText()));
  p->replot();
}

void SimilarityPanel::onHover(QMouseEvent* ev) {
  if (m_shown.values.empty()) return;
  QCustomPlot* p = m_heatFrame->plot();
  const double x = p->xAxis->pixelToCoord(ev->position().x());
  const double y = p->yAxis->pixelToCoord(ev->position().y());
  const int c = static_cast<int>(std::lround(x)), r = static_cast<int>(std::lround(y));
  if (c < 0 || r < 0 || c >= m_shown.cols || r >= m_shown.rows) {
    QToolTip::hideText();
    return;
  }
  QToolTip::showText(ev->globalPosition().toPoint(),
                     tr("E%1 vs E%2: %3").arg(r).arg(c).arg(m_shown.values[r * m_shown.cols + c], 0, 'f', 4), p);
}

}  // namespace upcycle::ui
