#include "main_window.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDockWidget>
#include <QFileDialog>
#include <QFileInfo>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QPushButton>
#include <QScreen>
#include <QShowEvent>
#include <QTimer>
#include <QSettings>
#include <QStatusBar>
#include <QVBoxLayout>
#include "qcp.h"

#include "api/pipeline.h"
#include "api/runtime.h"
#include "checkpoints_panel.h"
#include "compare_panel.h"
#include "engine_worker.h"
#include "experiment_panel.h"
#include "lineage_panel.h"
#include "routing_panel.h"
#include "run_panel.h"
#include "runs_panel.h"
#include "similarity_panel.h"
#include "store_watcher.h"
#include "store/run_store.h"
#include "workspace.h"

namespace upcycle::ui {

MainWindow::MainWindow(const QString& dbPath, QWidget* parent) : QMainWindow(parent) {
  setObjectName(QStringLiteral("MainWindow"));
  setWindowTitle(QStringLiteral("Upcycle Studio"));
  setDockNestingEnabled(true);
  setDockOptions(QMainWindow::AnimatedDocks | QMainWindow::AllowTabbedDocks | QMainWindow::AllowNestedDocks);
  const QString db = dbPath.isEmpty() ? QString::fromStdString(RunStore::defaultPath().string()) : dbPath;
  m_ws = new Workspace(db, this);
  new StoreWatcher(m_ws, this);  // a store deleted, replaced or written underneath: reopen, reload or say so
  m_engine = new EngineController(this);

  m_experiment = new ExperimentPanel;
  m_checkpoints = new CheckpointsPanel;
  m_run = new RunPanel(m_ws, m_engine);
  m_similarity = new SimilarityPanel(m_ws);
  m_routing = new RoutingPanel(m_ws);
  m_lineage = new LineagePanel(m_ws);
  m_runs = new RunsPanel(m_ws);
  m_compare = new ComparePanel(m_ws);
  buildStartPage();

  // Left: configuration. Right: watching and inspecting. Bottom: the store.
  QDockWidget* start = addPanel(m_startPage, QStringLiteral("startDock"), tr("Start"), Qt::RightDockWidgetArea);
  QDockWidget* exp = addPanel(m_experiment, QStringLiteral("experimentDock"), tr("Method & GA"), Qt::LeftDockWidgetArea);
  QDockWidget* cks = addPanel(m_checkpoints, QStringLiteral("checkpointsDock"), tr("Checkpoints"), Qt::LeftDockWidgetArea);
  QDockWidget* run = addPanel(m_run, QStringLiteral("runDock"), tr("Run"), Qt::RightDockWidgetArea);
  QDockWidget* sim = addPanel(m_similarity, QStringLiteral("similarityDock"), tr("Expert similarity"), Qt::RightDockWidgetArea);
  QDockWidget* rou = addPanel(m_routing, QStringLiteral("routingDock"), tr("Routing"), Qt::RightDockWidgetArea);
  QDockWidget* lin = addPanel(m_lineage, QStringLiteral("lineageDock"), tr("GA lineage"), Qt::RightDockWidgetArea);
  QDockWidget* cmp = addPanel(m_compare, QStringLiteral("compareDock"), tr("Compare"), Qt::RightDockWidgetArea);
  QDockWidget* runs = addPanel(m_runs, QStringLiteral("runsDock"), tr("Runs"), Qt::BottomDockWidgetArea);
  tabifyDockWidget(exp, cks);
  tabifyDockWidget(start, run);
  tabifyDockWidget(run, sim);
  tabifyDockWidget(sim, rou);
  tabifyDockWidget(rou, lin);
  tabifyDockWidget(lin, cmp);
  resizeDocks({exp, start}, {520, 900}, Qt::Horizontal);
  resizeDocks({start, runs}, {600, 220}, Qt::Vertical);
  exp->raise();
  start->raise();
  buildMenus();
  m_defaultState = saveState();

  connect(m_run, &RunPanel::startRequested, this, &MainWindow::startExperiment);
  connect(m_checkpoints, &CheckpointsPanel::checkpointsChosen, this, [this](const QString& base, const QStringList& cks) {
    m_experiment->useCheckpoints(base, cks);
    showPanel(QStringLiteral("experimentDock"));
    statusBar()->showMessage(tr("%1 checkpoints set as the UpIT experts' source").arg(cks.size()), 5000);
  });
  connect(m_experiment, &ExperimentPanel::fileChanged, this, [this](const QString& f) {
    setWindowTitle(QStringLiteral("Upcycle Studio - %1").arg(QFileInfo(f).fileName()));
  });
  connect(m_ws, &Workspace::compareRequested, this, [this] { showPanel(QStringLiteral("compareDock")); });
  connect(m_ws, &Workspace::currentRunChanged, this, [this](qint64 id) {
    m_similarity->showRun(id);
    m_routing->showRun(id);
    m_lineage->showRun(id);
  });

  statusBar()->showMessage(tr("Workspace %1 - %2 runs").arg(m_ws->dbPath()).arg(m_ws->runs().size()));
  if (!m_ws->error().isEmpty()) statusBar()->showMessage(tr("Cannot open the run store: %1").arg(m_ws->error()));
  if (m_ws->runs().empty()) showPanel(QStringLiteral("startDock"));
  m_fitToScreen = !restoreLayout();
}

MainWindow::~MainWindow() = default;

QDockWidget* MainWindow::addPanel(QWidget* panel, const QString& name, const QString& title, Qt::DockWidgetArea area) {
  auto* d = new QDockWidget(title, this);
  d->setObjectName(name);
  d->setWidget(panel);
  d->setFeatures(QDockWidget::DockWidgetMovable | QDockWidget::DockWidgetFloatable | QDockWidget::DockWidgetClosable);
  addDockWidget(area, d);
  m_docks << d;
  return d;
}

QDockWidget* MainWindow::dock(const QString& objectName) const {
  for (QDockWidget* d : m_docks)
    if (d->objectName() == objectName) return d;
  return nullptr;
}

void MainWindow::showPanel(const QString& dockName) {
  if (QDockWidget* d = dock(dockName)) {
    d->show();
    d->raise();
  }
}

void MainWindow::buildStartPage() {
  m_startPage = new QWidget;
  auto* v = new QVBoxLayout(m_startPage);
  v->addStretch(1);
  auto* title = new QLabel(tr("<h1>Upcycle Workbench</h1>"
                              "<p style='font-size:12pt'>Turn a dense LLM checkpoint into a Mixture-of-Experts model, "
                              "by sparse upcycling, Drop-Upcycling or UpIT, and see what you made.</p>"));
  title->setObjectName(QStringLiteral("welcomeLabel"));
  title->setWordWrap(true);
  title->setAlignment(Qt::AlignCenter);
  v->addWidget(title);
  auto* demo = new QPushButton(tr("Run the built-in demo"));
  demo->setObjectName(QStringLiteral("demoButton"));
  demo->setMinimumHeight(48);
  demo->setToolTip(tr("Pretrains a tiny Llama, instruction-tunes it with checkpoints, and builds dense, sparse, Drop-Upcycling "
                      "and UpIT models from it; about 5 minutes on 2 CPU cores"));
  auto* quick = new QPushButton(tr("Quick demo (about 10 seconds)"));
  quick->setObjectName(QStringLiteral("quickDemoButton"));
  auto* open = new QPushButton(tr("Open an experiment file…"));
  for (auto* b : {demo, quick, open}) {
    b->setMaximumWidth(420);
    v->addWidget(b, 0, Qt::AlignHCenter);
  }
  auto* hint = new QLabel(tr("<p>Everything runs on this machine; nothing is downloaded. Every run is stored in "
                             "the workspace's SQLite file, and the same experiment files run headless with "
                             "<tt>upcycle run FILE</tt>.</p>"));
  hint->setWordWrap(true);
  hint->setAlignment(Qt::AlignCenter);
  v->addWidget(hint);
  v->addStretch(2);
  connect(demo, &QPushButton::clicked, this, [this] { runDemo(false); });
  connect(quick, &QPushButton::clicked, this, [this] { runDemo(true); });
  connect(open, &QPushButton::clicked, this, [this] {
    const QString path = QFileDialog::getOpenFileName(this, tr("Open experiment"), QString(), tr("Experiments (*.yaml *.yml)"));
    if (path.isEmpty()) return;
    const QString err = openExperiment(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot open the experiment"), err);
  });
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  file->addAction(tr("&Open experiment…"), QKeySequence::Open, this, [this] {
    const QString path = QFileDialog::getOpenFileName(this, tr("Open experiment"), QString(), tr("Experiments (*.yaml *.yml)"));
    if (path.isEmpty()) return;
    const QString err = openExperiment(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot open the experiment"), err);
  });
  file->addAction(tr("&Save experiment as…"), QKeySequence::SaveAs, this, [this] {
    const QString path = QFileDialog::getSaveFileName(this, tr("Save experiment"), m_experiment->currentFile(), tr("Experiments (*.yaml)"));
    if (path.isEmpty()) return;
    const QString err = m_experiment->saveFile(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot save the experiment"), err);
  });
  file->addSeparator();
  file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);

  QMenu* run = menuBar()->addMenu(tr("&Run"));
  run->addAction(tr("&Start"), QKeySequence(Qt::CTRL | Qt::Key_R), this, &MainWindow::startExperiment);
  run->addAction(tr("&Cancel"), QKeySequence(Qt::CTRL | Qt::Key_Period), m_run, &RunPanel::cancel);
  run->addSeparator();
  run->addAction(tr("Run the built-in &demo"), this, [this] { runDemo(false); });
  run->addAction(tr("&Quick demo"), this, [this] { runDemo(true); });

  QMenu* view = menuBar()->addMenu(tr("&View"));
  for (QDockWidget* d : m_docks) view->addAction(d->toggleViewAction());
  view->addSeparator();
  view->addAction(tr("&Reset layout"), this, [this] {
    restoreState(m_defaultState);
    for (QDockWidget* d : m_docks) d->show();
  });
  view->addAction(tr("Re&load runs"), QKeySequence::Refresh, m_ws, &Workspace::reload);

  QMenu* help = menuBar()->addMenu(tr("&Help"));
  help->addAction(tr("&About Upcycle Studio"), this, [this] { QMessageBox::about(this, tr("About Upcycle Studio"), aboutText()); });
}

QString MainWindow::aboutText() const {
  const RuntimeInfo rt = runtimeInfo();
  return tr("<h3>Upcycle Studio %1</h3>"
            "<p>Turn dense LLM checkpoints into Mixture-of-Experts models.</p>"
            "<table>"
            "<tr><td>Version</td><td>%1</td></tr>"
            "<tr><td>LibTorch</td><td>%2 (%3 intra-op threads%4)</td></tr>"
            "<tr><td>BLAS</td><td>%9</td></tr>"
            "<tr><td>Qt</td><td>%5 (built with %6)</td></tr>"
            "<tr><td>QCustomPlot</td><td>%7</td></tr>"
            "<tr><td>Workspace</td><td>%8</td></tr>"
            "</table>")
      .arg(QStringLiteral(UPCYCLE_VERSION), QString::fromStdString(rt.torchVersion))
      .arg(rt.intraOpThreads)
      .arg(rt.cudaAvailable ? tr(", CUDA") : QString())
      .arg(QString::fromLatin1(qVersion()), QStringLiteral(QT_VERSION_STR), QStringLiteral(QCUSTOMPLOT_VERSION_STR),
           m_ws->dbPath().toHtmlEscaped())
      .arg(QString::fromStdString(rt.blas).toHtmlEscaped());
}

QString MainWindow::openExperiment(const QString& path) {
  const QString err = m_experiment->loadFile(path);
  if (err.isEmpty()) {
    showPanel(QStringLiteral("experimentDock"));
    statusBar()->showMessage(tr("Opened %1").arg(path), 5000);
  }
  return err;
}

QString MainWindow::runDemo(bool quick) {
  const std::filesystem::path file = findResource(quick ? "experiments/demo-quick.yaml" : "experiments/demo.yaml");
  const QString err = openExperiment(QString::fromStdString(file.string()));
  if (!err.isEmpty()) {
    QMessageBox::warning(this, tr("Cannot load the demo"), err);
    return err;
  }
  startExperiment();
  return {};
}

void MainWindow::startExperiment() {
  const QString source = m_experiment->currentFile().isEmpty() ? QStringLiteral("studio") : m_experiment->currentFile();
  m_run->start(m_experiment->experiment(), source);  // on refusal the Run panel's log says why
  showPanel(QStringLiteral("runDock"));
}

bool MainWindow::restoreLayout() {
  QSettings s;
  const QByteArray geometry = s.value(QStringLiteral("mainWindow/geometry")).toByteArray();
  const QByteArray state = s.value(QStringLiteral("mainWindow/state")).toByteArray();
  if (!state.isEmpty()) restoreState(state);
  return !geometry.isEmpty() && restoreGeometry(geometry);
}

void MainWindow::saveLayout() {
  QSettings s;
  s.setValue(QStringLiteral("mainWindow/geometry"), saveGeometry());
  s.setValue(QStringLiteral("mainWindow/state"), saveState());
}

void MainWindow::showEvent(QShowEvent* event) {
  QMainWindow::showEvent(event);
  if (!m_fitToScreen) return;
  m_fitToScreen = false;
  // First start: most of the screen, never more. Done once shown: before that the dock layout's
  // minimum is stale and resize() would clamp to it.
  QTimer::singleShot(0, this, [this] {
    const QRect avail = screen() ? screen()->availableGeometry() : QRect(0, 0, 1400, 900);
    resize(std::min(1400, avail.width()), std::min(900, avail.height()));
  });
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (m_engine->busy() &&
      QMessageBox::question(this, tr("A run is in progress"),
                            tr("Cancel the running experiment and quit? Finished runs stay in the store; the current one "
                               "is recorded as cancelled.")) != QMessageBox::Yes) {
    event->ignore();
    return;
  }
  m_engine->cancel();
  saveLayout();
  event->accept();
}

}  // namespace upcycle::ui
