#include "curves_view.h"

#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QMouseEvent>
#include <QSlider>
#include <QVBoxLayout>
#include "qcp.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "plots.h"
#include "workspace.h"

namespace upcycle::ui {

namespace {
std::string familyOf(const std::string& stage) { return stage.substr(0, stage.find(':')); }
}  // namespace

CurvesView::CurvesView(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* v = new QVBoxLayout(this);
  v->setContentsMargins(0, 0, 0, 0);
  auto* bar = new QHBoxLayout;
  m_stage = new QComboBox;
  m_stage->setObjectName(QStringLiteral("curveStage"));
  m_stage->addItem(tr("post-training"), QStringLiteral("post"));
  m_stage->addItem(tr("router pre-optimization"), QStringLiteral("router-preopt"));
  m_stage->addItem(tr("dense SFT"), QStringLiteral("sft"));
  m_stage->addItem(tr("pretraining"), QStringLiteral("pretrain"));
  m_metric = new QComboBox;
  m_metric->setObjectName(QStringLiteral("curveMetric"));
  for (const char* k : {"loss", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s"})
    m_metric->addItem(QString::fromLatin1(k), QString::fromLatin1(k));
  m_x = new QComboBox;
  m_x->setObjectName(QStringLiteral("curveX"));
  m_x->addItems({tr("step"), tr("tokens (derived)"), tr("wall time (derived)")});
  m_x->setToolTip(tr("Tokens and wall time are not stored per step; they are derived: tokens = step x the stage's batch size x "
                     "sequence length (exact for pretraining, an upper bound for instruction data), wall time = the sum "
                     "of each step's tokens / its recorded tokens per second."));
  m_smooth = new QSlider(Qt::Horizontal);
  m_smooth->setObjectName(QStringLiteral("smoothing"));
  m_smooth->setRange(0, 99);
  m_smooth->setMaximumWidth(160);
  m_smooth->setToolTip(tr("Exponential moving average, as TensorBoard's: each point is w x the previous average + (1 - w) x "
                          "the value, divided by 1 - w^n so the start is not pulled toward 0. The raw curve stays faint."));
  m_smoothValue = new QLabel(QStringLiteral("0.00"));
  m_log = new QCheckBox(tr("Log scale"));
  m_log->setObjectName(QStringLiteral("logScale"));
  bar->addWidget(new QLabel(tr("Stage")));
  bar->addWidget(m_stage);
  bar->addWidget(new QLabel(tr("Metric")));
  bar->addWidget(m_metric);
  bar->addWidget(new QLabel(tr("x")));
  bar->addWidget(m_x);
  bar->addWidget(new QLabel(tr("Smoothing")));
  bar->addWidget(m_smooth);
  bar->addWidget(m_smoothValue);
  bar->addWidget(m_log);
  bar->addStretch(1);
  v->addLayout(bar);
  m_frame = new PlotFrame(tr("Training curves"));
  placeLegendOutside(m_frame->plot());
  v->addWidget(m_frame, 1);
  m_readout = new QLabel;
  m_readout->setObjectName(QStringLiteral("crosshairReadout"));
  m_readout->setWordWrap(true);
  m_readout->setTextFormat(Qt::RichText);
  m_readout->setText(tr("Hover the plot for every run's value."));
  v->addWidget(m_readout);
  m_note = new QLabel;
  m_note->setWordWrap(true);
  v->addWidget(m_note);

  for (QComboBox* c : {m_stage, m_metric, m_x}) connect(c, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) { redraw(); });
  connect(m_smooth, &QSlider::valueChanged, this, [this](int v) {
    m_smoothValue->setText(QString::number(v / 100.0, 'f', 2));
    redraw();
  });
  connect(m_log, &QCheckBox::toggled, this, [this] { redraw(); });
  m_frame->plot()->setMouseTracking(true);
  connect(m_frame->plot(), &QCustomPlot::mouseMove, this, &CurvesView::onHover);
  m_frame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), m_x->currentText(), m_metric->currentData().toString(), QStringLiteral("smoothed")}};
    for (const Series& s : m_series)
      for (size_t i = 0; i < s.x.size(); ++i)
        t.push_back({s.label, QString::number(s.x[i], 'g', 10), QString::number(s.raw[i], 'g', 10), QString::number(s.shown[i], 'g', 10)});
    return t;
  });
}

void CurvesView::setRuns(const QList<qint64>& ids) {
  m_ids = ids;
  redraw();
}
void CurvesView::setStage(const QString& family) {
  const int i = m_stage->findData(family);
  if (i >= 0) m_stage->setCurrentIndex(i);
}
void CurvesView::setMetric(const QString& key) {
  const int i = m_metric->findData(key);
  if (i >= 0) m_metric->setCurrentIndex(i);
}
void CurvesView::setSmoothing(double w) { m_smooth->setValue(static_cast<int>(std::lround(std::clamp(w, 0.0, 0.99) * 100))); }
double CurvesView::smoothing() const { return m_smooth->value() / 100.0; }
void CurvesView::setLogScale(bool on) { m_log->setChecked(on); }
void CurvesView::setXAxis(XAxis x) { m_x->setCurrentIndex(x); }
QString CurvesView::note() const { return m_note->text(); }

void CurvesView::redraw() {
  QCustomPlot* p = m_frame->plot();
  p->clearGraphs();
  p->clearItems();
  m_cross = nullptr;
  m_series.clear();
  m_missing.clear();
  const std::string family = m_stage->currentData().toString().toStdString();
  const std::string key = m_metric->currentData().toString().toStdString();
  const int xAxis = m_x->currentIndex();
  const double w = smoothing();
  const bool log = m_log->isChecked();
  QStringList names;
  for (qint64 id : m_ids) {
    const RunRow* row = m_ws->findRun(id);
    if (!row || !m_ws->store()) continue;
    const QString label = QStringLiteral("#%1 %2").arg(id).arg(QString::fromStdString(row->name));
    names << label;
    std::map<int64_t, double> values, tps;
    std::string stage;
    for (const MetricPoint& pt : m_ws->store()->metrics(id)) {
      if (familyOf(pt.stage) != family) continue;
      if (pt.key == key) {
        values[pt.step] = pt.value;
        stage = pt.stage;
      }
      if (pt.key == "tokens_per_s") tps[pt.step] = pt.value;
    }
    if (values.empty()) {
      m_missing << tr("%1 has no %2 in this stage").arg(label, m_metric->currentText());
      continue;
    }
    const double perStep = xAxis == kStep ? 1.0 : nominalTokensPerStep(m_ws->store()->params(id), stage);
    if (perStep <= 0) {
      m_missing << tr("%1: its params do not give the tokens per step").arg(label);
      continue;
    }
    Series s;
    s.id = id;
    s.label = label;
    double seconds = 0;
    for (const auto& [step, value] : values) {
      double x = static_cast<double>(step);
      if (xAxis == kTokens) x = static_cast<double>(step) * perStep;
      if (xAxis == kWallTime) {
        auto it = tps.find(step);
        if (it != tps.end() && it->second > 0) seconds += perStep / it->second;
        x = seconds;
      }
      if (log && value <= 0) continue;  // nothing to draw on a log axis
      s.x.push_back(x);
      s.raw.push_back(value);
    }
    s.shown = w > 0 ? emaSmooth(s.raw, w) : s.raw;
    const QColor c = runColor(id);
    QVector<double> qx(s.x.begin(), s.x.end());
    if (w > 0) {  // the raw curve faint behind the smoothed one, as W&B and TensorBoard draw it
      QCPGraph* raw = p->addGraph();
      QColor faint = c;
      faint.setAlpha(60);
      raw->setPen(QPen(faint, 1.0));
      raw->setData(qx, QVector<double>(s.raw.begin(), s.raw.end()), true);
      raw->removeFromLegend();
    }
    QCPGraph* g = p->addGraph();
    g->setName(label);
    g->setPen(QPen(c, 1.8));
    g->setData(qx, QVector<double>(s.shown.begin(), s.shown.end()), true);
    m_series.push_back(std::move(s));
  }
  static const char* xLabels[] = {"step", "tokens (derived: steps x batch x length)", "wall time, s (derived: tokens / tokens per s)"};
  p->xAxis->setLabel(tr(xLabels[xAxis]));
  p->yAxis->setLabel(m_metric->currentText() + (w > 0 ? tr(" (smoothed %1)").arg(w, 0, 'f', 2) : QString()));
  if (log) {
    p->yAxis->setScaleType(QCPAxis::stLogarithmic);
    p->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
  } else {
    p->yAxis->setScaleType(QCPAxis::stLinear);
    p->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
  }
  p->legend->setVisible(p->graphCount() > 0);
  p->rescaleAxes();
  m_frame->setTitle(tr("%1, %2").arg(m_metric->currentText(), m_stage->currentText()));
  m_frame->setRunNames(names);
  m_note->setText(m_missing.isEmpty() ? QString() : tr("Not shown: %1.").arg(m_missing.join(QStringLiteral("; "))));
  m_cross = new QCPItemStraightLine(p);
  m_cross->setPen(QPen(QColor(90, 90, 90), 1, Qt::DotLine));
  m_cross->setVisible(false);
  p->replot();
}

QString CurvesView::readoutAt(double x) const {
  QStringList parts;
  for (const Series& s : m_series) {
    if (s.x.empty()) continue;
    // The point nearest to x (x is sorted).
    auto it = std::lower_bound(s.x.begin(), s.x.end(), x);
    size_t i = static_cast<size_t>(it - s.x.begin());
    if (i == s.x.size() || (i > 0 && x - s.x[i - 1] < s.x[i] - x)) i = i == 0 ? 0 : i - 1;
    parts << QStringLiteral("<span style='color:%1'>&#9632;</span> %2: <b>%3</b> at %4")
                 .arg(runColor(s.id).name(), s.label.toHtmlEscaped(), QString::number(s.shown[i], 'g', 5), QString::number(s.x[i], 'g', 6));
  }
  return parts.join(QStringLiteral("&nbsp;&nbsp; "));
}

void CurvesView::onHover(QMouseEvent* ev) {
  QCustomPlot* p = m_frame->plot();
  if (m_series.empty() || !m_cross || !p->axisRect()->rect().contains(ev->pos())) return;
  const double x = p->xAxis->pixelToCoord(ev->position().x());
  m_cross->point1->setCoords(x, 1);  // positive, so a log axis has them too
  m_cross->point2->setCoords(x, 2);
  m_cross->setVisible(true);
  m_readout->setText(readoutAt(x));
  p->replot(QCustomPlot::rpQueuedReplot);
}

}  // namespace upcycle::ui
