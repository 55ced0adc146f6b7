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
#include <QSplitter>
#include <QTimer>
#include <QSettings>
#include <QStatusBar>
#include <QVBoxLayout>
#include <QDir>
#include "qcp.h"

#include "api/pipeline.h"
#include "api/runtime.h"
#include "checkpoints_panel.h"
#include "compare_panel.h"
#include "engine_worker.h"
#include "experiment_panel.h"
#include "lineage_panel.h"
#include "routing_panel.h"
#include "run_detail.h"
#include "run_panel.h"
#include "runs_panel.h"
#include "similarity_panel.h"
#include "splitters.h"
#include "stage_model.h"
#include "store_watcher.h"
#include "store/run_store.h"
#include "workspace.h"

namespace upcycle::ui {

QString menuText(const QString& title) { return QString(title).replace(QLatin1Char('&'), QStringLiteral("&&")); }

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
  QDockWidget* exp = addPanel(m_experiment, QStringLiteral("experimentDock"), tr("Method and GA"), Qt::LeftDockWidgetArea);
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
  // The title names the file, with [*] marking unsaved edits (Qt shows it as "*").
  auto title = [this] {
    const QString f = m_experiment->currentFile();
    setWindowTitle(QStringLiteral("Upcycle Studio - %1[*]").arg(f.isEmpty() ? tr("untitled") : QFileInfo(f).fileName()));
    setWindowModified(m_experiment->isModified());
  };
  connect(m_experiment, &ExperimentPanel::fileChanged, this, [this, title](const QString& f) {
    title();
    if (!f.isEmpty() && !m_experiment->isBundledFile()) {
      addRecentFile(f);
      QSettings().setValue(QStringLiteral("experiment/last"), f);
    }
  });
  connect(m_experiment, &ExperimentPanel::modifiedChanged, this, title);
  connect(m_ws, &Workspace::runsChanged, this, &MainWindow::updateDemoButtons);
  connect(m_ws, &Workspace::compareRequested, this, [this] { showPanel(QStringLiteral("compareDock")); });
  connect(m_ws, &Workspace::checkedRunsChanged, this, [this](const QList<qint64>& ids) {
    if (!ids.isEmpty()) showPanel(QStringLiteral("compareDock"));
  });
  connect(m_ws, &Workspace::detailsRequested, this, [this](qint64 id) {
    auto* d = new RunDetailDialog(m_ws, id, this);
    d->setAttribute(Qt::WA_DeleteOnClose);
    d->show();
  });
  connect(m_ws, &Workspace::currentRunChanged, this, [this](qint64 id) {
    m_similarity->showRun(id);
    m_routing->showRun(id);
    m_lineage->showRun(id);
  });

  statusBar()->showMessage(tr("Workspace %1 - %2 runs").arg(m_ws->dbPath()).arg(m_ws->runs().size()));
  if (!m_ws->error().isEmpty()) statusBar()->showMessage(tr("Cannot open the run store: %1").arg(m_ws->error()));
  if (m_ws->runs().empty()) showPanel(QStringLiteral("startDock"));
  m_fitToScreen = !restoreLayout();
  // Reopen the experiment of the last session, when the file is still there.
  const QString last = QSettings().value(QStringLiteral("experiment/last")).toString();
  if (!last.isEmpty() && QFileInfo::exists(last) && m_experiment->loadFile(last).isEmpty())
    statusBar()->showMessage(tr("Reopened %1").arg(last), 5000);
  title();
  updateDemoButtons();
}

MainWindow::~MainWindow() = default;

QDockWidget* MainWindow::addPanel(QWidget* panel, const QString& name, const QString& title, Qt::DockWidgetArea area) {
  auto* d = new QDockWidget(title, this);
  d->setObjectName(name);
  d->setWidget(panel);
  d->setFeatures(QDockWidget::DockWidgetMovable | QDockWidget::DockWidgetFloatable | QDockWidget::DockWidgetClosable);
  addDockWidget(area, d);
  // The View menu shows the title as typed: "&" would be a mnemonic ("Method _GA").
  d->toggleViewAction()->setText(menuText(title));
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
                      "and UpIT models from it"));
  auto* quick = new QPushButton(tr("Quick demo"));
  quick->setObjectName(QStringLiteral("quickDemoButton"));
  m_demoButton = demo;
  m_quickButton = quick;
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
    if (!maybeSaveChanges()) return;
    const QString path = QFileDialog::getOpenFileName(this, tr("Open experiment"), QString(), tr("Experiments (*.yaml *.yml)"));
    if (path.isEmpty()) return;
    const QString err = openExperiment(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot open the experiment"), err);
  });
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  file->addAction(tr("&New experiment"), QKeySequence::New, this, &MainWindow::newExperiment);
  file->addAction(tr("&Open experiment…"), QKeySequence::Open, this, [this] {
    if (!maybeSaveChanges()) return;
    const QString path = QFileDialog::getOpenFileName(this, tr("Open experiment"), QString(), tr("Experiments (*.yaml *.yml)"));
    if (path.isEmpty()) return;
    const QString err = openExperiment(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot open the experiment"), err);
  });
  m_recentMenu = file->addMenu(tr("Open &recent"));
  m_recentMenu->setObjectName(QStringLiteral("recentMenu"));
  rebuildRecentMenu();
  file->addAction(tr("&Save experiment"), QKeySequence::Save, this, &MainWindow::save);
  file->addAction(tr("Save experiment &as…"), QKeySequence::SaveAs, this, &MainWindow::saveAs);
  file->addSeparator();
  file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);

  QMenu* run = menuBar()->addMenu(tr("&Run"));
  run->addAction(tr("&Start"), QKeySequence(Qt::CTRL | Qt::Key_R), this, &MainWindow::startExperiment);
  run->addAction(tr("&Cancel"), QKeySequence(Qt::CTRL | Qt::Key_Period), m_run, &RunPanel::cancel);
  run->addSeparator();
  run->addAction(tr("Run the built-in &demo"), this, [this] { runDemo(false); });
  run->addAction(tr("&Quick demo"), this, [this] { runDemo(true); });

  QMenu* view = menuBar()->addMenu(tr("&View"));
  view->setObjectName(QStringLiteral("viewMenu"));
  for (QDockWidget* d : m_docks) view->addAction(d->toggleViewAction());
  view->addSeparator();
  view->addAction(tr("&Reset layout"), this, &MainWindow::resetLayout);
  view->addAction(tr("Re&load runs"), QKeySequence::Refresh, m_ws, &Workspace::reload);

  QMenu* help = menuBar()->addMenu(tr("&Help"));
  help->addAction(tr("&About Upcycle Studio"), this, [this] { QMessageBox::about(this, tr("About Upcycle Studio"), aboutText()); });
}

QMessageBox::StandardButton MainWindow::ask(const QString& title, const QString& text, QMessageBox::StandardButtons buttons) {
  if (m_ask) return m_ask(title, text, buttons);
  return QMessageBox::question(this, title, text, buttons);
}

bool MainWindow::maybeSaveChanges() {
  if (!m_experiment->isModified()) return true;
  const auto answer = ask(tr("Unsaved changes"), tr("The experiment has changes that are not saved. Save them first?"),
                          QMessageBox::Save | QMessageBox::Discard | QMessageBox::Cancel);
  if (answer == QMessageBox::Save) return save();
  return answer == QMessageBox::Discard;
}

void MainWindow::newExperiment() {
  if (!maybeSaveChanges()) return;
  m_experiment->newExperiment();
  showPanel(QStringLiteral("experimentDock"));
}

bool MainWindow::save() {
  if (m_experiment->currentFile().isEmpty() || m_experiment->isBundledFile()) return saveAs();
  const QString err = m_experiment->saveFile(m_experiment->currentFile());
  if (!err.isEmpty()) {
    QMessageBox::warning(this, tr("Cannot save the experiment"), err);
    return false;
  }
  statusBar()->showMessage(tr("Saved %1").arg(m_experiment->currentFile()), 5000);
  return true;
}

bool MainWindow::saveAs() {
  if (!m_experiment->validationError().isEmpty()) {
    showPanel(QStringLiteral("experimentDock"));
    QMessageBox::warning(this, tr("Cannot save the experiment"),
                         tr("The experiment is not valid, so it was not saved: %1").arg(m_experiment->validationError()));
    return false;
  }
  const QString path = QFileDialog::getSaveFileName(this, tr("Save experiment"), m_experiment->suggestedSavePath(), tr("Experiments (*.yaml)"));
  if (path.isEmpty()) return false;
  const QString err = m_experiment->saveFile(path);
  if (!err.isEmpty()) {
    QMessageBox::warning(this, tr("Cannot save the experiment"), err);
    return false;
  }
  return true;
}

QStringList MainWindow::recentFiles() const { return QSettings().value(QStringLiteral("experiment/recent")).toStringList(); }

void MainWindow::addRecentFile(const QString& path) {
  QStringList files = recentFiles();
  const QString abs = QFileInfo(path).absoluteFilePath();
  files.removeAll(abs);
  files.prepend(abs);
  while (files.size() > 8) files.removeLast();
  QSettings().setValue(QStringLiteral("experiment/recent"), files);
  rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu() {
  if (!m_recentMenu) return;
  m_recentMenu->clear();
  const QStringList files = recentFiles();
  for (const QString& f : files) {
    QAction* a = m_recentMenu->addAction(menuText(f));
    connect(a, &QAction::triggered, this, [this, f] {
      if (!maybeSaveChanges()) return;
      const QString err = openExperiment(f);
      if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot open the experiment"), err);
    });
  }
  m_recentMenu->setEnabled(!files.isEmpty());
}

QList<QSplitter*> MainWindow::splitters() const { return findChildren<QSplitter*>(); }

void MainWindow::fitDocks() {
  // The dock areas in proportion to the window: the forms get about 40% of the width, the Runs
  // table a fifth of the height (at least three rows, at most what the plots above can spare).
  QDockWidget* exp = dock(QStringLiteral("experimentDock"));
  QDockWidget* start = dock(QStringLiteral("startDock"));
  QDockWidget* runs = dock(QStringLiteral("runsDock"));
  resizeDocks({exp, start}, {width() * 2 / 5, width() * 3 / 5}, Qt::Horizontal);
  const int runsHeight = std::clamp(height() / 5, 150, 260);
  resizeDocks({start, runs}, {height() - runsHeight, runsHeight}, Qt::Vertical);
}

void MainWindow::resetLayout() {
  restoreState(m_defaultState);
  for (QDockWidget* d : m_docks) d->show();
  fitDocks();
  m_docks.front()->raise();  // the Start page and Method and GA on top, as on first start
  dock(QStringLiteral("experimentDock"))->raise();
  for (QSplitter* s : splitters()) resetSplitter(s);
}

void MainWindow::updateDemoButtons() {
  // A measured time from this machine's last complete demo, never a promise.
  auto label = [this](QPushButton* b, const QString& text, const char* experiment) {
    const double s = lastExperimentSeconds(m_ws->runs(), experiment);
    b->setText(s >= 0 ? tr("%1 (took %2 here last time)").arg(text, formatDuration(s)) : text);
  };
  if (m_demoButton) label(m_demoButton, tr("Run the built-in demo"), "demo");
  if (m_quickButton) label(m_quickButton, tr("Quick demo: every stage at toy size"), "demo-quick");
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
  if (!maybeSaveChanges()) return tr("cancelled");
  const QString err = openExperiment(QString::fromStdString(file.string()));
  if (!err.isEmpty()) {
    QMessageBox::warning(this, tr("Cannot load the demo"), err);
    return err;
  }
  startExperiment();
  return {};
}

bool MainWindow::startExperiment() {
  const QString error = m_experiment->validationError();
  if (!error.isEmpty()) {
    // Said where it can be fixed: the form, with the field outlined; the Run panel's log keeps it too.
    showPanel(QStringLiteral("experimentDock"));
    m_run->refuse(error);
    statusBar()->showMessage(tr("Not started: %1").arg(error), 10000);
    return false;
  }
  const Experiment& e = m_experiment->experiment();
  const QString out = QDir(m_ws->workDir()).absoluteFilePath(QString::fromStdString(e.out.string()));
  if (!m_engine->busy() && QDir(out).exists() && !QDir(out).isEmpty(QDir::AllEntries | QDir::NoDotAndDotDot | QDir::Hidden) &&
      ask(tr("Output folder exists"),
          tr("%1 already has files from an earlier run. Start anyway and overwrite them? (Its runs in the store are kept.)").arg(out),
          QMessageBox::Yes | QMessageBox::No) != QMessageBox::Yes)
    return false;
  const QString source = m_experiment->currentFile().isEmpty() ? QStringLiteral("studio") : m_experiment->currentFile();
  const bool started = m_run->start(e, source);  // on refusal the Run panel's log says why
  showPanel(QStringLiteral("runDock"));
  return started;
}

bool MainWindow::restoreLayout() {
  QSettings s;
  const QByteArray geometry = s.value(QStringLiteral("mainWindow/geometry")).toByteArray();
  const QByteArray state = s.value(QStringLiteral("mainWindow/state")).toByteArray();
  if (!state.isEmpty()) restoreState(state);
  for (QSplitter* sp : splitters()) {
    const QByteArray st = s.value(QStringLiteral("splitters/") + sp->objectName()).toByteArray();
    if (!sp->objectName().isEmpty() && !st.isEmpty()) sp->restoreState(st);
  }
  return !geometry.isEmpty() && restoreGeometry(geometry);
}

void MainWindow::saveLayout() {
  QSettings s;
  s.setValue(QStringLiteral("mainWindow/geometry"), saveGeometry());
  s.setValue(QStringLiteral("mainWindow/state"), saveState());
  for (QSplitter* sp : splitters())
    if (!sp->objectName().isEmpty()) s.setValue(QStringLiteral("splitters/") + sp->objectName(), sp->saveState());
}

void MainWindow::showEvent(QShowEvent* event) {
  QMainWindow::showEvent(event);
  if (!m_fitToScreen) return;
  m_fitToScreen = false;
  // First start: most of the screen, never more. Done once shown: before that the dock layout's
  // minimum is stale and resize() would clamp to it.
  QTimer::singleShot(0, this, [this] {
    // 90% of the screen (1728 x 972 on a 1920 x 1080 one), at least 1280 x 800 where it fits.
    const QRect avail = screen() ? screen()->availableGeometry() : QRect(0, 0, 1400, 900);
    resize(std::min(avail.width(), std::max(1280, avail.width() * 9 / 10)), std::min(avail.height(), std::max(800, avail.height() * 9 / 10)));
    fitDocks();
  });
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (m_engine->busy() &&
      ask(tr("A run is in progress"),
                            tr("Cancel the running experiment and quit? Finished runs stay in the store; the current one "
                               "is recorded as cancelled."),
          QMessageBox::Yes | QMessageBox::No) != QMessageBox::Yes) {
    event->ignore();
    return;
  }
  if (!maybeSaveChanges()) {
    event->ignore();
    return;
  }
  m_engine->cancel();
  saveLayout();
  event->accept();
}

}  // namespace upcycle::ui
