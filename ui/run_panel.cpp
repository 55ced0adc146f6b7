#include "run_panel.h"

#include <QApplication>
#include <QDateTime>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPainter>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSplitter>
#include <QStyledItemDelegate>
#include <QTableView>
#include <QVBoxLayout>
#include "splitters.h"
#include "qcp.h"

#include "engine_worker.h"
#include "experiment_panel.h"
#include "plots.h"
#include "stage_model.h"
#include "workspace.h"

namespace upcycle::ui {

namespace {

// Draws the Progress column as a progress bar.
class ProgressDelegate : public QStyledItemDelegate {
 public:
  using QStyledItemDelegate::QStyledItemDelegate;
  void paint(QPainter* painter, const QStyleOptionViewItem& option, const QModelIndex& index) const override {
    if (index.column() != StageModel::kProgress) return QStyledItemDelegate::paint(painter, option, index);
    QStyleOptionProgressBar bar;
    bar.rect = option.rect.adjusted(2, 3, -2, -3);
    bar.minimum = 0;
    bar.maximum = 1000;
    bar.progress = static_cast<int>(index.data(StageModel::kFractionRole).toDouble() * 1000);
    bar.text = index.data().toString();
    bar.textVisible = true;
    bar.state = option.state | QStyle::State_Horizontal;
    QApplication::style()->drawControl(QStyle::CE_ProgressBar, &bar, painter);
  }
};

const char* kCurveNames[4] = {"Loss", "Aux loss (load balancing)", "Learning rate", "Tokens / s"};

double curveValue(int plot, const StepMetrics& m) {
  switch (plot) {
    case 0: return m.loss;
    case 1: return m.auxLoss;
    case 2: return m.lr;
    default: return m.tokensPerSec;
  }
}

}  // namespace

RunPanel::RunPanel(Workspace* ws, EngineController* engine, QWidget* parent) : QWidget(parent), m_ws(ws), m_engine(engine) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_start = new QPushButton(tr("Start"));
  m_start->setObjectName(QStringLiteral("startButton"));
  m_start->setToolTip(tr("Run the experiment of the Method and GA panel on the engine thread"));
  m_cancel = new QPushButton(tr("Cancel"));
  m_cancel->setObjectName(QStringLiteral("cancelButton"));
  m_cancel->setToolTip(tr("Stop at the next training step; finished runs stay in the store, the current one is marked cancelled"));
  m_cancel->setEnabled(false);
  m_state = new QLabel(tr("Idle."));
  bar->addWidget(m_start);
  bar->addWidget(m_cancel);
  bar->addWidget(m_state, 1);
  layout->addLayout(bar);

  auto* split = makeSplitter(Qt::Vertical, QStringLiteral("runSplit"), {300, 560});
  auto* top = makeSplitter(Qt::Horizontal, QStringLiteral("runTopSplit"), {5, 3});
  m_stages = new StageModel(this);
  m_table = new QTableView;
  m_table->setObjectName(QStringLiteral("stageTable"));
  m_table->setModel(m_stages);
  m_table->setItemDelegate(new ProgressDelegate(m_table));
  m_table->verticalHeader()->hide();
  // Full stage names; the ETA column takes what is left. At least four rows stay visible.
  m_table->horizontalHeader()->setSectionResizeMode(StageModel::kStage, QHeaderView::ResizeToContents);
  m_table->horizontalHeader()->setSectionResizeMode(StageModel::kStatus, QHeaderView::ResizeToContents);
  m_table->horizontalHeader()->resizeSection(StageModel::kProgress, 110);
  m_table->horizontalHeader()->setSectionResizeMode(StageModel::kEta, QHeaderView::ResizeToContents);
  m_table->horizontalHeader()->setStretchLastSection(true);
  m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 8);
  m_table->setMinimumHeight(m_table->horizontalHeader()->sizeHint().height() + 4 * (m_table->fontMetrics().height() + 8) + 4);
  m_table->setWordWrap(false);
  m_table->setSelectionMode(QAbstractItemView::NoSelection);
  top->addWidget(m_table);
  m_log = new QPlainTextEdit;
  m_log->setObjectName(QStringLiteral("runLog"));
  m_log->setReadOnly(true);
  m_log->setMaximumBlockCount(5000);
  m_log->setLineWrapMode(QPlainTextEdit::NoWrap);
  m_log->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  top->addWidget(m_log);
  top->setStretchFactor(0, 5);  // the stage table's columns first, the log beside it
  top->setStretchFactor(1, 3);
  split->addWidget(top);

  auto* plots = new QWidget;
  auto* grid = new QGridLayout(plots);
  grid->setContentsMargins(0, 0, 0, 0);
  for (int i = 0; i < 4; ++i) {
    m_frames[i] = new PlotFrame(tr(kCurveNames[i]));
    QCustomPlot* p = m_frames[i]->plot();
    p->xAxis->setLabel(tr("optimizer step (all stages)"));
    p->setNoAntialiasingOnDrag(true);
    if (i == 0) placeLegendOutside(p);  // one entry per stage: beside the curves, never over them
    if (i == 3) p->yAxis->setNumberFormat(QStringLiteral("gb"));
    m_frames[i]->setCsvSource([this, i] {
      CsvTable t{{QStringLiteral("stage"), QStringLiteral("step"), QString::fromLatin1(kCurveNames[i]).toLower()}};
      for (const StepMetrics& m : m_history)
        t.push_back({QString::fromStdString(m.stage), QString::number(m.step), QString::number(curveValue(i, m), 'g', 10)});
      return t;
    });
    grid->addWidget(m_frames[i], i / 2, i % 2);
  }
  split->addWidget(plots);
  split->setStretchFactor(0, 2);
  split->setStretchFactor(1, 3);
  split->setSizes({300, 560});  // the default proportions (also View → Reset layout's)
  layout->addWidget(split, 1);

  m_coalesce.setSingleShot(true);
  m_coalesce.setInterval(kCoalesceMs);
  connect(&m_coalesce, &QTimer::timeout, this, &RunPanel::drain);
  EngineWorker* w = engine->worker();
  connect(w, &EngineWorker::stepsAvailable, this, &RunPanel::onStepsAvailable);
  connect(w, &EngineWorker::stage, this, [this](const QString& s, const QString& d) {
    m_stages->onStage(s, d);
    appendLog(QStringLiteral("[%1] %2").arg(s, d));
    m_state->setText(tr("Running: %1").arg(d));
  });
  connect(w, &EngineWorker::log, this, &RunPanel::appendLog);
  connect(w, &EngineWorker::checkpoint, this, [this](const QString& f, qint64 step) {
    appendLog(tr("checkpoint at step %1: %2").arg(step).arg(f));
  });
  connect(w, &EngineWorker::runFinished, this, [this](qint64 id, const QString& name) {
    appendLog(tr("run %1 finished (store id %2)").arg(name).arg(id));
    m_ws->reload();  // the new run appears in the Runs, Similarity and Routing panels at once
  });
  connect(w, &EngineWorker::finished, this, &RunPanel::onFinished);
  connect(engine, &EngineController::busyChanged, this, [this](bool busy) {
    m_start->setEnabled(!busy);
    m_cancel->setEnabled(busy);
  });
  connect(m_start, &QPushButton::clicked, this, &RunPanel::startRequested);
  connect(m_cancel, &QPushButton::clicked, this, &RunPanel::cancel);
}

bool RunPanel::start(const Experiment& e, const QString& source) {
  if (m_engine->busy()) {
    appendLog(tr("The engine is busy; cancel the current run first."));
    return false;
  }
  try {
    validateExperiment(e);
  } catch (const std::exception& ex) {
    refuse(describeExperimentError(e, QString::fromStdString(ex.what())));
    return false;
  }
  m_history.clear();
  m_graphs.clear();
  m_stageIndex.clear();
  m_lastStage.clear();
  m_lastStep = 0;
  m_segments.clear();
  m_x = 0;
  for (auto* f : m_frames) {
    // A new run starts from empty axes: a plot that gets no data (the aux loss of dense stages)
    // must not keep the previous run's range.
    f->plot()->clearGraphs();
    f->plot()->xAxis->setRange(0, 1);
    f->plot()->yAxis->setRange(0, 1);
    f->plot()->replot();
  }
  m_log->clear();
  m_stages->plan(e);
  appendLog(tr("Starting %1 (%2)").arg(QString::fromStdString(e.name), source));
  m_clock.start();
  m_expectedSeconds = lastExperimentSeconds(m_ws->runs(), e.name);
  m_state->setText(tr("Starting…"));
  m_engine->start(QString::fromStdString(experimentYaml(e)), source, m_ws->dbPath(), m_ws->workDir());
  return true;
}

void RunPanel::refuse(const QString& why) {
  appendLog(tr("Not started: %1").arg(why));
  m_state->setText(tr("Not started: %1 (fix it in Method and GA)").arg(why));
}

void RunPanel::cancel() {
  if (!m_engine->busy()) return;
  m_engine->cancel();
  m_state->setText(tr("Cancelling at the next step…"));
  appendLog(tr("Cancel requested."));
}

void RunPanel::onStepsAvailable() {
  if (!m_coalesce.isActive()) m_coalesce.start();
}

QCPGraph* RunPanel::graphFor(int plot, const std::string& stage) {
  const int segment = m_segments[stage];
  auto key = std::make_tuple(plot, stage, segment);
  auto it = m_graphs.find(key);
  if (it != m_graphs.end()) return it->second;
  if (!m_stageIndex.count(stage)) {
    const int n = static_cast<int>(m_stageIndex.size());
    m_stageIndex[stage] = n;
  }
  QCustomPlot* p = m_frames[plot]->plot();
  QCPGraph* g = p->addGraph();
  g->setName(QString::fromStdString(stage));
  g->setPen(QPen(seriesColor(m_stageIndex[stage]), 1.5));
  g->setAdaptiveSampling(true);
  if (segment > 0) g->removeFromLegend();  // one legend entry per stage name
  m_graphs[key] = g;
  return g;
}

void RunPanel::drain() {
  const std::vector<StepMetrics> steps = m_engine->takeSteps();
  if (steps.empty()) return;
  m_stages->onSteps(steps);
  for (const StepMetrics& m : steps) {
    m_x += 1;
    // A stage that begins again opens new graphs in its colour: after another stage (the next seed's
    // sft after seed 0's post stages), or right after itself when its step count restarts (the same
    // post:NAME stage of consecutive seeds when the SFT is shared and skipped).
    if (m.stage != m_lastStage || m.step <= m_lastStep) {
      if (m_segments.count(m.stage)) ++m_segments[m.stage];
      else m_segments[m.stage] = 0;
      m_lastStage = m.stage;
    }
    m_lastStep = m.step;
    for (int i = 0; i < 4; ++i) {
      if (i == 1 && m.auxLoss == 0.0) continue;  // dense stages have no load-balancing loss
      graphFor(i, m.stage)->addData(m_x, curveValue(i, m));
    }
    m_history.push_back(m);
  }
  for (auto* f : m_frames) {
    f->plot()->rescaleAxes();
    f->plot()->replot(QCustomPlot::rpQueuedReplot);
  }
  ++m_redraws;
  const StepMetrics& last = steps.back();
  // The whole experiment's ETA: the last complete run of it on this machine, less the time spent.
  QString total;
  if (m_expectedSeconds > 0) {
    const double left = m_expectedSeconds - m_clock.elapsed() / 1000.0;
    total = left > 0 ? tr("; experiment: about %1 left (last time %2)").arg(formatDuration(left), formatDuration(m_expectedSeconds))
                     : tr("; experiment: longer than last time (%1)").arg(formatDuration(m_expectedSeconds));
  }
  m_state->setText(tr("%1: step %2 / %3, loss %4, %5 tokens/s%6")
                       .arg(QString::fromStdString(last.stage))
                       .arg(last.step)
                       .arg(last.totalSteps)
                       .arg(last.loss, 0, 'f', 4)
                       .arg(last.tokensPerSec, 0, 'f', 0)
                       .arg(total));
}

void RunPanel::appendLog(const QString& line) {
  m_log->appendPlainText(QDateTime::currentDateTime().toString(QStringLiteral("HH:mm:ss  ")) + line);
}

QString RunPanel::logText() const { return m_log->toPlainText(); }

void RunPanel::onFinished(bool ok, bool cancelled, const QString& message) {
  drain();
  m_stages->finish(ok, cancelled);
  if (!ok) {
    appendLog(tr("FAILED: %1").arg(message));
    m_state->setText(tr("Failed: %1").arg(message));
  } else if (cancelled) {
    appendLog(tr("Cancelled. Finished runs are in the store; the interrupted one is marked cancelled."));
    m_state->setText(tr("Cancelled."));
  } else {
    appendLog(message);
    m_state->setText(tr("Finished. Results are in the Runs, Similarity, Routing and Compare panels."));
  }
  m_ws->reload();
}

}  // namespace upcycle::ui
