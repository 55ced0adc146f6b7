#include "seeds_view.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>
#include "qcp.h"

#include <cmath>
#include <set>

#include "plots.h"
#include "workspace.h"

namespace upcycle::ui {

namespace {

QString number(double v, int decimals) { return std::isnan(v) ? QStringLiteral("-") : QString::number(v, 'f', decimals); }
int decimalsOf(const QString& metric) { return metric.startsWith(QLatin1String("accuracy")) ? 1 : 4; }

// Run names on the x axis at 0, 1, 2, ...
void nameTicks(QCPAxis* x, const std::vector<RunGroupStats>& runs) {
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  for (size_t i = 0; i < runs.size(); ++i) ticker->addTick(static_cast<double>(i), QString::fromStdString(runs[i].name));
  x->setTicker(ticker);
  x->setTickLabelRotation(runs.size() > 2 ? 35 : 0);  // names side by side collide in a narrow plot
  x->setRange(-0.6, static_cast<double>(runs.size()) - 0.4);
}

}  // namespace

SeedsView::SeedsView(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_experiment = new QComboBox;
  m_experiment->setObjectName(QStringLiteral("seedsExperiment"));
  m_experiment->setSizeAdjustPolicy(QComboBox::AdjustToContents);
  m_metric = new QComboBox;
  m_metric->setObjectName(QStringLiteral("seedsMetric"));
  m_metric->addItem(tr("accuracy (%)"), QStringLiteral("accuracy"));
  m_metric->addItem(tr("eval loss"), QStringLiteral("eval_loss"));
  m_metric->addItem(tr("final train loss"), QStringLiteral("train_loss"));
  m_metric->addItem(tr("diversity"), QStringLiteral("diversity"));
  m_domain = new QComboBox;
  m_domain->setObjectName(QStringLiteral("seedsDomain"));
  m_baseline = new QComboBox;
  m_baseline->setObjectName(QStringLiteral("seedsBaseline"));
  bar->addWidget(new QLabel(tr("Experiment")));
  bar->addWidget(m_experiment);
  bar->addWidget(new QLabel(tr("Metric")));
  bar->addWidget(m_metric);
  bar->addWidget(new QLabel(tr("Domain")));
  bar->addWidget(m_domain);
  bar->addWidget(new QLabel(tr("Baseline")));
  bar->addWidget(m_baseline);
  bar->addStretch(1);
  layout->addLayout(bar);
  m_message = new QLabel;
  m_message->setWordWrap(true);
  layout->addWidget(m_message);

  m_table = new QTableWidget;
  m_table->setObjectName(QStringLiteral("seedsTable"));
  m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
  m_table->verticalHeader()->hide();
  m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  m_table->horizontalHeader()->setStretchLastSection(true);
  m_table->setMinimumHeight(90);

  m_barsFrame = new PlotFrame(tr("Mean, 95% CI"));
  m_curvesFrame = new PlotFrame(tr("Post-training loss, mean, 95% band"));
  m_pairedFrame = new PlotFrame(tr("Paired difference, 95% CI"));
  for (PlotFrame* f : {m_barsFrame, m_curvesFrame, m_pairedFrame}) f->setMinimumSize(220, 180);
  auto* plots = new QSplitter(Qt::Horizontal);
  plots->setChildrenCollapsible(false);
  plots->addWidget(m_barsFrame);
  plots->addWidget(m_curvesFrame);
  plots->addWidget(m_pairedFrame);
  // The table as tall as its rows, the plots take the rest.
  layout->addWidget(m_table);
  layout->addWidget(plots, 1);

  for (QComboBox* c : {m_experiment, m_metric, m_domain, m_baseline})
    connect(c, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int) {
      if (!m_filling) recompute();
    });
  connect(ws, &Workspace::runsChanged, this, &SeedsView::reload);

  m_barsFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), QStringLiteral("seed"), metricKey()}};
    if (m_summary)
      for (const auto& g : m_summary->runs)
        for (size_t i = 0; i < g.seeds.size(); ++i)
          t.push_back({QString::fromStdString(g.name), QString::number(g.seeds[i]), QString::number(g.values[i], 'g', 10)});
    return t;
  });
  m_pairedFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), QStringLiteral("baseline"), QStringLiteral("n"), QStringLiteral("mean_diff"),
                QStringLiteral("ci95_lo"), QStringLiteral("ci95_hi"), QStringLiteral("wins")}};
    if (m_summary)
      for (const auto& g : m_summary->runs)
        if (g.paired)
          t.push_back({QString::fromStdString(g.name), QString::fromStdString(g.paired->baseline), QString::number(g.paired->n),
                       QString::number(g.paired->meanDiff, 'g', 10), QString::number(g.paired->lo, 'g', 10),
                       QString::number(g.paired->hi, 'g', 10), QString::number(g.paired->wins)});
    return t;
  });
  m_curvesFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("run"), QStringLiteral("step"), QStringLiteral("seeds"), QStringLiteral("mean"),
                QStringLiteral("ci95_lo"), QStringLiteral("ci95_hi")}};
    if (!m_summary || !m_ws->store()) return t;
    for (const auto& g : m_summary->runs) {
      const CurveBand b = lossBand(g);
      for (size_t i = 0; i < b.steps.size(); ++i)
        t.push_back({QString::fromStdString(g.name), QString::number(b.steps[i]), QString::number(b.n[i]),
                     QString::number(b.mean[i], 'g', 10), QString::number(b.lo[i], 'g', 10), QString::number(b.hi[i], 'g', 10)});
    }
    return t;
  });
  reload();
}

QString SeedsView::message() const { return m_message->text(); }

CurveBand SeedsView::lossBand(const RunGroupStats& g) const {
  std::vector<std::vector<std::pair<double, double>>> curves;  // one post-training loss curve per seed
  for (int64_t id : g.runIds) {
    curves.emplace_back();
    if (m_ws->store())
      for (const MetricPoint& p : m_ws->store()->metrics(id))
        if (p.key == "loss" && p.stage.rfind("post", 0) == 0) curves.back().emplace_back(static_cast<double>(p.step), p.value);
  }
  return curveAcrossSeeds(curves);
}

QString SeedsView::metricKey() const {
  const QString base = m_metric->currentData().toString();
  const QString domain = m_domain->currentData().toString();
  return domain.isEmpty() || (base != QLatin1String("accuracy") && base != QLatin1String("eval_loss")) ? base : base + ':' + domain;
}

void SeedsView::reload() {
  m_filling = true;
  const QString keep = m_experiment->currentText();
  m_experiment->clear();
  // Experiments with finished runs, newest first; the first with several seeds is the default.
  std::vector<std::string> names;
  std::map<std::string, std::set<uint64_t>> seeds;
  for (const RunRow& r : m_ws->runs()) {
    if (r.method == "base" || r.status != "finished") continue;
    if (!seeds.count(r.experiment)) names.push_back(r.experiment);
    seeds[r.experiment].insert(r.seed);
  }
  int pick = -1;
  for (size_t i = 0; i < names.size(); ++i) {
    const size_t n = seeds[names[i]].size();
    m_experiment->addItem(QStringLiteral("%1 (%2 seed%3)").arg(QString::fromStdString(names[i])).arg(n).arg(n == 1 ? "" : "s"),
                          QString::fromStdString(names[i]));
    if (pick < 0 && n > 1) pick = static_cast<int>(i);
  }
  const int kept = m_experiment->findText(keep);
  m_experiment->setCurrentIndex(kept >= 0 ? kept : std::max(pick, names.empty() ? -1 : 0));
  m_filling = false;
  recompute();
}

bool SeedsView::setExperiment(const QString& name) {
  const int i = m_experiment->findData(name);
  if (i < 0) return false;
  m_experiment->setCurrentIndex(i);
  recompute();
  return true;
}
void SeedsView::setMetric(const QString& metric) {
  const int i = m_metric->findData(metric);
  if (i >= 0) m_metric->setCurrentIndex(i);
}
void SeedsView::setDomain(const QString& domain) {
  const int i = m_domain->findData(domain);
  if (i >= 0) m_domain->setCurrentIndex(i);
}
void SeedsView::setBaseline(const QString& run) {
  const int i = m_baseline->findData(run);
  if (i >= 0) m_baseline->setCurrentIndex(i);
}

void SeedsView::recompute() {
  m_summary.reset();
  m_message->clear();
  const QString experiment = m_experiment->currentData().toString();
  if (!m_ws->store() || experiment.isEmpty()) {
    m_message->setText(tr("No finished runs yet. Give an experiment several seeds (seeds: [0, 1, 2] or --seeds 0-2) to "
                          "see means and confidence intervals here."));
  } else {
    try {
      m_summary = summarizeExperiment(*m_ws->store(), experiment.toStdString(), metricKey().toStdString(),
                                      m_baseline->currentData().toString().toStdString());
    } catch (const std::exception& e) {
      // E.g. the baseline has no value for this metric (diversity of a dense run): without the baseline.
      try {
        m_summary = summarizeExperiment(*m_ws->store(), experiment.toStdString(), metricKey().toStdString());
        m_message->setText(QString::fromStdString(e.what()));
      } catch (const std::exception& e2) {
        m_message->setText(QString::fromStdString(e2.what()));
      }
    }
  }
  // Domains and baselines offered: what the experiment's runs have (kept when still there).
  m_filling = true;
  if (m_summary) {
    const QString domain = m_domain->currentData().toString(), baseline = m_baseline->currentData().toString();
    std::set<std::string> domains;
    if (m_ws->store() && !m_summary->runs.empty())
      for (const EvalRow& e : m_ws->store()->run(m_summary->runs[0].runIds[0]).eval)
        if (!e.domain.empty()) domains.insert(e.domain);
    m_domain->clear();
    m_domain->addItem(tr("overall"), QString());
    for (const auto& d : domains) m_domain->addItem(QString::fromStdString(d), QString::fromStdString(d));
    m_domain->setCurrentIndex(std::max(0, m_domain->findData(domain)));
    m_domain->setEnabled(m_metric->currentData().toString() == QLatin1String("accuracy") ||
                         m_metric->currentData().toString() == QLatin1String("eval_loss"));
    m_baseline->clear();
    m_baseline->addItem(tr("(none)"), QString());
    for (const auto& g : m_summary->runs) m_baseline->addItem(QString::fromStdString(g.name), QString::fromStdString(g.name));
    m_baseline->setCurrentIndex(std::max(0, m_baseline->findData(baseline)));
    int64_t most = 0;
    for (const auto& g : m_summary->runs) most = std::max(most, g.stats.n);
    if (most < 2)
      m_message->setText(tr("One seed per run: no confidence interval. Run the experiment with several seeds "
                            "(seeds: [0, 1, 2] in the file, or the Seeds field) to see one."));
    else if (m_message->text().isEmpty())
      m_message->setText(tr("95% CI = mean ± t(0.975, n−1)·sd/√n over the seeds; %1 is better.")
                             .arg(m_summary->higherIsBetter ? tr("higher") : tr("lower")));
  }
  m_filling = false;
  fillTable();
  drawBars();
  drawCurves();
  drawPaired();
}

void SeedsView::fillTable() {
  const QStringList header = {tr("run"), tr("n"), tr("mean"), tr("sd"), tr("95% CI"), tr("paired Δ [95% CI]"), tr("wins")};
  m_table->clear();
  m_table->setColumnCount(header.size());
  m_table->setHorizontalHeaderLabels(header);
  m_table->setRowCount(m_summary ? static_cast<int>(m_summary->runs.size()) : 0);
  // As tall as its rows (no empty band above the plots), at least the header and two rows.
  const int rows = std::max(2, m_table->rowCount());
  m_table->setMaximumHeight(m_table->horizontalHeader()->sizeHint().height() + rows * m_table->verticalHeader()->defaultSectionSize() +
                            2 * m_table->frameWidth() + 2);
  if (!m_summary) return;
  const int dp = decimalsOf(QString::fromStdString(m_summary->metric));
  for (int i = 0; i < m_table->rowCount(); ++i) {
    const RunGroupStats& g = m_summary->runs[i];
    auto set = [&](int col, const QString& text) {
      auto* item = new QTableWidgetItem(text);
      if (col > 0) item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
      m_table->setItem(i, col, item);
    };
    set(0, QString::fromStdString(g.name));
    m_table->item(i, 0)->setForeground(groupColor(g.runIds));
    set(1, QString::number(g.stats.n));
    set(2, number(g.stats.mean, dp));
    set(3, g.stats.n >= 2 ? number(g.stats.sd, dp) : QStringLiteral("-"));
    set(4, g.stats.n >= 2 ? QStringLiteral("[%1, %2]").arg(number(g.stats.lo, dp), number(g.stats.hi, dp)) : QStringLiteral("-"));
    if (g.paired) {
      const auto& p = *g.paired;
      set(5, QStringLiteral("%1%2 [%3, %4]").arg(p.meanDiff >= 0 ? "+" : "").arg(number(p.meanDiff, dp)).arg(number(p.lo, dp), number(p.hi, dp)));
      set(6, QStringLiteral("%1/%2").arg(p.wins).arg(p.n));
    } else {
      set(5, m_baseline->currentData().toString() == QString::fromStdString(g.name) ? tr("(baseline)") : QString());
      set(6, QString());
    }
  }
}

void SeedsView::drawBars() {
  QCustomPlot* p = m_barsFrame->plot();
  p->clearPlottables();
  p->legend->setVisible(false);
  if (!m_summary) {
    p->replot();
    return;
  }
  double lo = 0, hi = 0;
  for (size_t i = 0; i < m_summary->runs.size(); ++i) {
    const RunGroupStats& g = m_summary->runs[i];
    auto* bars = new QCPBars(p->xAxis, p->yAxis);
    bars->setData(QVector<double>{static_cast<double>(i)}, QVector<double>{g.stats.mean});
    bars->setWidth(0.6);
    QColor fill = groupColor(m_summary->runs[i].runIds);
    fill.setAlpha(150);
    bars->setBrush(fill);
    bars->setPen(QPen(groupColor(m_summary->runs[i].runIds), 1));
    bars->setName(QString::fromStdString(g.name));
    if (g.stats.n >= 2) {
      auto* err = new QCPErrorBars(p->xAxis, p->yAxis);
      err->setDataPlottable(bars);
      err->setData(QVector<double>{g.stats.mean - g.stats.lo}, QVector<double>{g.stats.hi - g.stats.mean});
      err->setPen(QPen(QColor(30, 30, 30), 1.4));
      err->setWhiskerWidth(10);
      lo = std::min(lo, g.stats.lo);
      hi = std::max(hi, g.stats.hi);
    }
    // Each seed's value as a dot beside the bar.
    auto* dots = p->addGraph();
    QVector<double> x, y;
    for (size_t k = 0; k < g.values.size(); ++k) {
      x << static_cast<double>(i) + 0.12 * (static_cast<double>(k) - 0.5 * static_cast<double>(g.values.size() - 1)) /
                                        std::max<double>(1.0, static_cast<double>(g.values.size()) / 2);
      y << g.values[k];
      lo = std::min(lo, g.values[k]);
      hi = std::max(hi, g.values[k]);
    }
    dots->setData(x, y);
    dots->setLineStyle(QCPGraph::lsNone);
    dots->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QColor(30, 30, 30), QColor(255, 255, 255), 5));
  }
  nameTicks(p->xAxis, m_summary->runs);
  p->yAxis->setLabel(m_metric->currentText() + (m_domain->currentData().toString().isEmpty() ? QString() : " · " + m_domain->currentText()));
  const double pad = 0.08 * std::max(1e-9, hi - lo);
  p->yAxis->setRange(std::min(0.0, lo - pad), hi + pad);
  p->replot();
}

void SeedsView::drawCurves() {
  QCustomPlot* p = m_curvesFrame->plot();
  p->clearGraphs();
  // No legend: the runs' colours are the table's and the bars' (a legend took half of this narrow plot).
  p->legend->setVisible(false);
  if (!m_summary || !m_ws->store()) {
    p->replot();
    return;
  }
  for (size_t i = 0; i < m_summary->runs.size(); ++i) {
    const RunGroupStats& g = m_summary->runs[i];
    const CurveBand b = lossBand(g);
    if (b.steps.empty()) continue;
    const QColor c = groupColor(m_summary->runs[i].runIds);
    const QVector<double> x(b.steps.begin(), b.steps.end());
    auto* lower = p->addGraph();
    lower->setData(x, QVector<double>(b.lo.begin(), b.lo.end()));
    lower->setPen(Qt::NoPen);
    lower->removeFromLegend();
    auto* upper = p->addGraph();
    upper->setData(x, QVector<double>(b.hi.begin(), b.hi.end()));
    upper->setPen(Qt::NoPen);
    QColor band = c;
    band.setAlpha(45);
    upper->setBrush(band);
    upper->setChannelFillGraph(lower);
    upper->removeFromLegend();
    auto* mean = p->addGraph();
    mean->setData(x, QVector<double>(b.mean.begin(), b.mean.end()));
    mean->setPen(QPen(c, 1.8));
    mean->setName(QStringLiteral("%1 (n=%2)").arg(QString::fromStdString(g.name)).arg(g.stats.n));
  }
  p->xAxis->setLabel(tr("step"));
  p->yAxis->setLabel(tr("loss"));
  p->rescaleAxes();
  p->replot();
}

void SeedsView::drawPaired() {
  QCustomPlot* p = m_pairedFrame->plot();
  p->clearPlottables();
  p->clearItems();
  const bool any = m_summary && std::any_of(m_summary->runs.begin(), m_summary->runs.end(),
                                            [](const RunGroupStats& g) { return g.paired.has_value(); });
  if (!any) {
    m_pairedFrame->setTitle(tr("Paired difference (choose a baseline)"));
    p->replot();
    return;
  }
  QString baseline;
  double lo = 0, hi = 0;
  for (size_t i = 0; i < m_summary->runs.size(); ++i) {
    const RunGroupStats& g = m_summary->runs[i];
    if (!g.paired) continue;
    baseline = QString::fromStdString(g.paired->baseline);
    auto* point = p->addGraph();
    point->setData(QVector<double>{static_cast<double>(i)}, QVector<double>{g.paired->meanDiff});
    point->setLineStyle(QCPGraph::lsNone);
    point->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, groupColor(m_summary->runs[i].runIds), 9));
    if (g.paired->n >= 2) {
      auto* err = new QCPErrorBars(p->xAxis, p->yAxis);
      err->setDataPlottable(point);
      err->setData(QVector<double>{g.paired->meanDiff - g.paired->lo}, QVector<double>{g.paired->hi - g.paired->meanDiff});
      err->setPen(QPen(groupColor(m_summary->runs[i].runIds), 1.6));
      err->setWhiskerWidth(10);
      lo = std::min(lo, g.paired->lo);
      hi = std::max(hi, g.paired->hi);
    }
    lo = std::min(lo, g.paired->meanDiff);
    hi = std::max(hi, g.paired->meanDiff);
  }
  auto* zero = new QCPItemStraightLine(p);
  zero->point1->setCoords(0, 0);
  zero->point2->setCoords(1, 0);
  zero->setPen(QPen(QColor(60, 60, 60), 1, Qt::DashLine));
  nameTicks(p->xAxis, m_summary->runs);
  p->yAxis->setLabel(tr("run − %1").arg(baseline));
  const double pad = 0.1 * std::max(1e-9, hi - lo);
  p->yAxis->setRange(lo - pad, hi + pad);
  m_pairedFrame->setTitle(tr("Δ to %1, 95% CI (%2 better)").arg(baseline, m_summary->higherIsBetter ? tr("above 0") : tr("below 0")));
  p->replot();
}

}  // namespace upcycle::ui
