// Issue 20: the workbench as researchers expect it. Layout (splitters that never collapse and reset
// with the layout, legends beside the data), the experiment file's life (Save as… off the bundled
// examples, invalid experiments refused, per-run seeds only when set, questions before overwriting or
// losing edits), numbers against hand arithmetic (CKA diversity, EMA, derived tokens, ties), the
// W&B-style curves, the run detail page and readable lineage trees.
#include <gtest/gtest.h>

#include <QAction>
#include <QCheckBox>
#include <QComboBox>
#include <QDockWidget>
#include <QFileInfo>
#include <QGraphicsPathItem>
#include <QGraphicsRectItem>
#include <QGraphicsScene>
#include <QGraphicsSimpleTextItem>
#include <QGraphicsView>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSettings>
#include <QSpinBox>
#include <QScrollArea>
#include <QSplitter>
#include <QHeaderView>
#include <QTableView>
#include <QStandardPaths>
#include <QTableWidget>
#include <cmath>
#include <numeric>

#include "api/pipeline.h"
#include "checkpoints_panel.h"
#include "compare_panel.h"
#include "curves_view.h"
#include "engine_worker.h"
#include "experiment_panel.h"
#include "lineage_panel.h"
#include "main_window.h"
#include "plot_frame.h"
#include "plots.h"
#include "qcp.h"
#include "run_detail.h"
#include "run_panel.h"
#include "runs_panel.h"
#include "similarity_panel.h"
#include "splitters.h"
#include "table_models.h"
#include "ui_test_util.h"
#include "workspace.h"

using namespace upcycle;
using namespace upcycle::ui;
using upcycle::test::TempDir;

namespace {

struct Store {
  TempDir dir;
  test::HandStore ids;
  int64_t dense = 0;
  std::unique_ptr<Workspace> ws;
  Store() {
    {
      RunStore s(dir / "runs.db");
      ids = test::fillHandStore(s);
      // Output CKA of run a, by hand: diversity 1 - 0.2 = 0.8 (layer 0) and 1 - 0.6 = 0.4 (layer 1);
      // after conversion 1 - 0.9 = 0.1 and 1 - 1 = 0.
      s.addBlobs(ids.a, {{"output_cka", 0, "", 2, 2, {1.0, 0.2, 0.2, 1.0}},
                         {"output_cka", 1, "", 2, 2, {1.0, 0.6, 0.6, 1.0}},
                         {"converted/output_cka", 0, "", 2, 2, {1.0, 0.9, 0.9, 1.0}},
                         {"converted/output_cka", 1, "", 2, 2, {1.0, 1.0, 1.0, 1.0}}});
      s.addLog(ids.upit, "upit: experts from SFT checkpoints checkpoint-4, checkpoint-8");
      dense = s.beginRun("delta", "hand", "dense", 1, "cpu", {{"run.method", "dense"}, {"post.batch_size", "4"}});
      s.addMetrics(dense, {{"post:delta", "loss", 1, 4.0}, {"post:delta", "loss", 2, 3.0}});
      s.finishRun(dense, "finished");
    }
    ws = std::make_unique<Workspace>(QString::fromStdString((dir / "runs.db").string()));
  }
};

// A main window on its own workspace, with every question answered by `answer` and recorded.
struct Window {
  TempDir dir;
  std::unique_ptr<MainWindow> w;
  QStringList asked;
  QMessageBox::StandardButton answer = QMessageBox::No;
  explicit Window(QSize size = QSize(1280, 800)) {
    QSettings().clear();
    w = std::make_unique<MainWindow>(QString::fromStdString((dir / "runs.db").string()));
    w->setAsker([this](const QString& title, const QString&, QMessageBox::StandardButtons) {
      asked << title;
      return answer;
    });
    w->show();
    test::waitFor([] { return false; }, 50);  // the first-start fit to the screen happens here
    w->resize(size);
    test::waitFor([] { return false; }, 50);
  }
  ~Window() {
    answer = QMessageBox::Discard;
    w->close();
    QSettings().clear();
  }
};

bool rectsOverlap(const QRect& a, const QRect& b) { return a.intersects(b); }

}  // namespace

// ------------------------------------------------------------------------------------ arithmetic

TEST(Arithmetic, EmaIsTensorBoardsDebiasedAverage) {
  // w = 0.5 over 1, 2, 3: averages 0.5, 1.25, 2.125 divided by 1 - 0.5^n (0.5, 0.75, 0.875).
  const auto s = emaSmooth({1, 2, 3}, 0.5);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_NEAR(s[0], 1.0, 1e-12);
  EXPECT_NEAR(s[1], 1.25 / 0.75, 1e-12);
  EXPECT_NEAR(s[2], 2.125 / 0.875, 1e-12);
  EXPECT_EQ(emaSmooth({4, 5}, 0.0), (std::vector<double>{4, 5})) << "weight 0 leaves the curve as it is";
  const auto n = emaSmooth({2, NAN, 4}, 0.5);
  EXPECT_TRUE(std::isnan(n[1]));
  EXPECT_NEAR(n[2], (0.5 * 1.0 + 0.5 * 4) / 0.75, 1e-12) << "a NaN neither counts nor resets the average";
}

TEST(Arithmetic, TokensPerStepFromTheParams) {
  const std::vector<std::pair<std::string, std::string>> p = {
      {"base.pretrain.batch_size", "16"}, {"base.pretrain.block", "64"}, {"sft.batch_size", "8"}, {"post.batch_size", "4"},
      {"data.max_length", "0"}};
  EXPECT_DOUBLE_EQ(nominalTokensPerStep(p, "pretrain"), 16 * 64);
  EXPECT_DOUBLE_EQ(nominalTokensPerStep(p, "sft"), 8 * 64) << "max_length 0: the base's block";
  EXPECT_DOUBLE_EQ(nominalTokensPerStep(p, "post:sparse"), 4 * 64);
  EXPECT_DOUBLE_EQ(nominalTokensPerStep({{"post.batch_size", "4"}}, "post:x"), 0) << "unknown length";
}

TEST(Arithmetic, LastExperimentDurationFromTheStoreTimes) {
  auto row = [](int64_t id, const char* exp, const char* method, const char* status, const char* a, const char* b) {
    RunRow r;
    r.id = id;
    r.experiment = exp;
    r.method = method;
    r.status = status;
    r.started = a;
    r.finished = b;
    return r;
  };
  std::vector<RunRow> runs = {row(1, "demo-quick", "base", "finished", "2026-01-01 10:00:00", "2026-01-01 10:00:30"),
                              row(2, "demo-quick", "sparse", "finished", "2026-01-01 10:00:30", "2026-01-01 10:01:05"),
                              row(3, "other", "base", "finished", "2026-01-01 11:00:00", "2026-01-01 11:00:01"),
                              row(4, "demo-quick", "base", "finished", "2026-01-01 12:00:00", "2026-01-01 12:00:10"),
                              row(5, "demo-quick", "sparse", "cancelled", "2026-01-01 12:00:10", "2026-01-01 12:00:20")};
  EXPECT_DOUBLE_EQ(lastExperimentSeconds(runs, "demo-quick"), 65.0) << "the cancelled execution does not count";
  EXPECT_DOUBLE_EQ(lastExperimentSeconds(runs, "demo"), -1.0);
  EXPECT_DOUBLE_EQ(storeSecondsBetween("2026-01-01 23:59:50", "2026-01-02 00:00:10"), 20.0);
}

// ---------------------------------------------------------------------------------- similarity

TEST(SimilarityPanel, DiversityLineAndCsvFollowTheChosenKindLikeTheHeader) {
  Store f;
  SimilarityPanel panel(f.ws.get());
  panel.showRun(f.ids.a);
  panel.setKind(2);  // output CKA
  panel.setLayer(0);
  QCustomPlot* d = panel.diversityFrame()->plot();
  ASSERT_EQ(d->graphCount(), 2);
  EXPECT_NEAR(d->graph(0)->data()->at(0)->value, 0.8, 1e-12);
  EXPECT_NEAR(d->graph(0)->data()->at(1)->value, 0.4, 1e-12);
  EXPECT_NEAR(d->graph(1)->data()->at(0)->value, 0.1, 1e-12) << "after conversion";
  const QString header = panel.findChild<QLabel*>(QStringLiteral("similarityHeader"))->text();
  EXPECT_TRUE(header.contains(QStringLiteral("diversity 0.8000"))) << header.toStdString();
  const CsvTable csv = panel.diversityFrame()->csv();
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_TRUE(csv[0][1].contains(QStringLiteral("output_cka")));
  EXPECT_NEAR(csv[1][1].toDouble(), 0.8, 1e-12);
  EXPECT_NEAR(csv[2][1].toDouble(), 0.4, 1e-12);
  panel.setKind(0);  // raw weights: 1 - 0.5 and 1 - 0.9
  EXPECT_NEAR(d->graph(0)->data()->at(0)->value, 0.5, 1e-12);
  EXPECT_NEAR(d->graph(0)->data()->at(1)->value, 0.1, 1e-12);
}

// ----------------------------------------------------------------------------------- the files

TEST(ExperimentPanel, SaveAsOffersTheUsersFolderNotTheBundledExample) {
  ExperimentPanel panel;
  const QString bundled = QString::fromStdString(findResource("experiments/demo-quick.yaml").string());
  ASSERT_EQ(panel.loadFile(bundled), QString());
  EXPECT_TRUE(panel.isBundledFile());
  const QString suggested = panel.suggestedSavePath();
  EXPECT_NE(QFileInfo(suggested).absolutePath(), QFileInfo(bundled).absolutePath()) << suggested.toStdString();
  const QString docs = QStandardPaths::writableLocation(QStandardPaths::DocumentsLocation);
  EXPECT_TRUE(QFileInfo(suggested).absolutePath() == QFileInfo(docs).absoluteFilePath() ||
              QFileInfo(suggested).absolutePath() == QDir::homePath())
      << suggested.toStdString();
  EXPECT_EQ(QFileInfo(suggested).fileName(), QStringLiteral("demo-quick.yaml"));
  // A file of the user's own is proposed as it is.
  TempDir dir;
  const QString mine = QString::fromStdString((dir / "mine.yaml").string());
  ASSERT_EQ(panel.saveFile(mine), QString());
  EXPECT_FALSE(panel.isBundledFile());
  EXPECT_EQ(panel.suggestedSavePath(), mine);
}

TEST(ExperimentPanel, AnInvalidExperimentIsNotSavedAndItsErrorNamesTheRunAndField) {
  TempDir dir;
  test::writeBytes(dir / "e.yaml", test::tinyExperiment(dir / "out", 3, "  - {name: first, method: sparse, experts: 4, top_k: 2}\n"
                                                                         "  - {name: wide, method: sparse, experts: 4, top_k: 2}\n"));
  ExperimentPanel panel;
  ASSERT_EQ(panel.loadFile(QString::fromStdString((dir / "e.yaml").string())), QString());
  panel.selectRun(1);
  qobject_cast<QSpinBox*>(panel.field("runs.top_k"))->setValue(7);
  const QString err = panel.validationError();
  EXPECT_TRUE(err.startsWith(QStringLiteral("run \"wide\": top_k"))) << err.toStdString();
  EXPECT_FALSE(err.contains(QStringLiteral("e.yaml"))) << "no file path in front";
  EXPECT_EQ(panel.errorField(), QStringLiteral("runs.top_k"));
  EXPECT_FALSE(panel.field("runs.top_k")->styleSheet().isEmpty()) << "the field is outlined";
  EXPECT_TRUE(panel.findChild<QLabel*>(QStringLiteral("validation"))->text().contains(QStringLiteral("wide")));
  const auto target = dir / "invalid.yaml";
  EXPECT_FALSE(panel.saveFile(QString::fromStdString(target.string())).isEmpty());
  EXPECT_FALSE(std::filesystem::exists(target)) << "nothing written";
  panel.selectRun(0);
  EXPECT_TRUE(panel.field("runs.top_k")->styleSheet().isEmpty()) << "the other run's field is not outlined";
  panel.selectRun(1);
  qobject_cast<QSpinBox*>(panel.field("runs.top_k"))->setValue(2);
  EXPECT_TRUE(panel.field("runs.top_k")->styleSheet().isEmpty());
  EXPECT_EQ(panel.saveFile(QString::fromStdString(target.string())), QString());
}

TEST(ExperimentPanel, SavingWritesARunSeedOnlyWhenTheRunHasItsOwn) {
  TempDir dir;
  test::writeBytes(dir / "e.yaml", test::tinyExperiment(dir / "out", 3, "  - {name: shared, method: sparse, experts: 4, top_k: 2}\n"
                                                                         "  - {name: own, method: sparse, experts: 4, top_k: 2, seed: 77}\n"));
  ExperimentPanel panel;
  ASSERT_EQ(panel.loadFile(QString::fromStdString((dir / "e.yaml").string())), QString());
  ASSERT_EQ(panel.saveFile(QString::fromStdString((dir / "saved.yaml").string())), QString());
  const std::string text = test::readBytes(dir / "saved.yaml");
  size_t seeds = 0;
  for (size_t at = text.find("seed:"); at != std::string::npos; at = text.find("seed:", at + 1))
    if (at == 0 || text[at - 1] == ' ' || text[at - 1] == '\n' || text[at - 1] == '{') ++seeds;
  EXPECT_EQ(seeds, 2u) << "the experiment's and run \"own\"'s, nothing for \"shared\":\n" << text;
  EXPECT_NE(text.find("seed: 77"), std::string::npos);
  // Reopened, the shared run follows a new experiment seed; the own one keeps 77.
  test::writeBytes(dir / "reseeded.yaml", [&] {
    std::string t = text;
    t.replace(t.find("seed: 5"), 7, "seed: 9");
    return t;
  }());
  const Experiment e = loadExperiment(dir / "reseeded.yaml");
  ASSERT_EQ(e.runs.size(), 2u);
  EXPECT_FALSE(e.runs[0].seedSet);
  EXPECT_EQ(e.runs[0].seed, 9u);
  EXPECT_TRUE(e.runs[1].seedSet);
  EXPECT_EQ(e.runs[1].seed, 77u);
}

TEST(MainWindow, AsksBeforeOverwritingAnOutputFolderAndBeforeLosingEdits) {
  Window win;
  MainWindow& w = *win.w;
  // An output folder with a file in it.
  const auto out = win.dir / "out";
  std::filesystem::create_directories(out);
  test::writeBytes(out / "experiment.yaml", "old");
  test::writeBytes(win.dir / "e.yaml", test::tinyExperiment(out, 3));
  ASSERT_EQ(w.openExperiment(QString::fromStdString((win.dir / "e.yaml").string())), QString());
  win.answer = QMessageBox::No;
  EXPECT_FALSE(w.startExperiment());
  ASSERT_EQ(win.asked.size(), 1);
  EXPECT_EQ(test::readBytes(out / "experiment.yaml"), "old") << "not overwritten";
  EXPECT_FALSE(w.engine()->busy());
  // Unsaved edits: closing asks; Cancel keeps the window.
  qobject_cast<QSpinBox*>(w.experimentPanel()->field("seed"))->setValue(11);
  EXPECT_TRUE(w.experimentPanel()->isModified());
  EXPECT_TRUE(w.windowTitle().contains(QStringLiteral("e.yaml")));
  win.answer = QMessageBox::Cancel;
  EXPECT_FALSE(w.close());
  EXPECT_EQ(win.asked.size(), 2);
  EXPECT_TRUE(w.isVisible());
  // The file is remembered: recent files, and reopened by the next window.
  EXPECT_EQ(w.recentFiles().value(0), QFileInfo(QString::fromStdString((win.dir / "e.yaml").string())).absoluteFilePath());
  {
    MainWindow again(QString::fromStdString((win.dir / "runs.db").string()));
    EXPECT_EQ(QFileInfo(again.experimentPanel()->currentFile()).fileName(), QStringLiteral("e.yaml"));
    again.setAsker([](const QString&, const QString&, QMessageBox::StandardButtons) { return QMessageBox::Discard; });
  }
}

TEST(MainWindow, InvalidExperimentIsRefusedInTheFormAndTheViewMenuShowsTitlesAsTyped) {
  Window win;
  MainWindow& w = *win.w;
  qobject_cast<QSpinBox*>(w.experimentPanel()->field("runs.top_k"))->setValue(9);
  EXPECT_FALSE(w.startExperiment());
  EXPECT_TRUE(w.dock(QStringLiteral("experimentDock"))->isVisible());
  EXPECT_TRUE(w.runPanel()->logText().contains(QStringLiteral("run \"sparse\": top_k"))) << w.runPanel()->logText().toStdString();
  // The View menu shows each dock's title as typed: an "&" would be a mnemonic there.
  EXPECT_EQ(menuText(QStringLiteral("Method & GA")), QStringLiteral("Method && GA"));
  EXPECT_EQ(menuText(QStringLiteral("/data/R&D/e.yaml")), QStringLiteral("/data/R&&D/e.yaml"));
  for (const char* name : {"experimentDock", "checkpointsDock", "runDock", "compareDock"}) {
    const QString title = w.dock(QString::fromLatin1(name))->windowTitle();
    const QString text = w.dock(QString::fromLatin1(name))->toggleViewAction()->text();
    EXPECT_EQ(QString(text).replace(QStringLiteral("&&"), QStringLiteral("&")), title);
    EXPECT_EQ(text.count(QLatin1Char('&')), 2 * title.count(QLatin1Char('&'))) << text.toStdString();
  }
}

// ------------------------------------------------------------------------------------- layout

TEST(Layout, SplittersCannotCollapseAViewAndResetLayoutRestoresThem) {
  Window win;
  MainWindow& w = *win.w;
  const auto splitters = w.findChildren<QSplitter*>();
  ASSERT_GE(splitters.size(), 8);
  for (QSplitter* s : splitters) {
    EXPECT_FALSE(s->childrenCollapsible()) << s->objectName().toStdString();
    const QList<int> before = s->sizes();
    const int total = std::accumulate(before.begin(), before.end(), 0);
    if (total <= 0 || !s->isVisible()) continue;
    QList<int> squash(s->count(), 0);
    squash.back() = total;  // drag every handle to the far start
    s->setSizes(squash);
    for (int i = 0; i < s->count(); ++i) EXPECT_GT(s->sizes()[i], 0) << s->objectName().toStdString() << " child " << i;
  }
  // At 1280 x 800 the Run panel's stage table keeps its four rows above the plots.
  w.showPanel(QStringLiteral("runDock"));
  w.resetLayout();
  w.showPanel(QStringLiteral("runDock"));
  test::waitFor([] { return false; }, 50);
  auto* run = w.findChild<QSplitter*>(QStringLiteral("runSplit"));
  ASSERT_NE(run, nullptr);
  EXPECT_GE(run->sizes()[0], w.runPanel()->stageTable()->minimumHeight());
}

TEST(Layout, ResetLayoutRestoresTheSplitters) {
  Window win(QSize(1920, 1080));
  MainWindow& w = *win.w;
  // The Run panel's table/plots splitter, dragged; View → Reset layout puts 300 : 560 back.
  w.resetLayout();  // the docks in proportion to this window
  w.showPanel(QStringLiteral("runDock"));
  test::waitFor([] { return false; }, 50);
  auto* run = w.findChild<QSplitter*>(QStringLiteral("runSplit"));
  ASSERT_NE(run, nullptr);
  const QList<int> now = run->sizes();
  const int total = now[0] + now[1];
  ASSERT_GT(total, 0);
  run->setSizes({total - 10, 10});
  ASSERT_GT(run->sizes()[0], total / 2);
  w.resetLayout();
  const QList<int> reset = run->sizes();
  EXPECT_NEAR(static_cast<double>(reset[0]) / (reset[0] + reset[1]), 300.0 / 860.0, 0.02) << reset[0] << " + " << reset[1];
  // And Method and GA's columns: equal halves.
  auto* exp = w.findChild<QSplitter*>(QStringLiteral("experimentSplit"));
  exp->setSizes({10, 1000});
  w.resetLayout();
  EXPECT_NEAR(static_cast<double>(exp->sizes()[0]) / (exp->sizes()[0] + exp->sizes()[1]), 0.5, 0.02);
}

TEST(Layout, LegendsSitBesideTheData) {
  Store f;
  // The Run panel's loss legend, one entry per stage.
  EngineController engine;
  RunPanel run(f.ws.get(), &engine);
  run.resize(900, 700);
  run.show();
  QCustomPlot* loss = run.curve(0)->plot();
  for (int i = 0; i < 6; ++i) {
    QCPGraph* g = loss->addGraph();
    g->setName(QStringLiteral("a stage with a long name %1").arg(i));
    g->setData({0, 1, 2}, {3.0 - i * 0.1, 2, 1});
  }
  loss->rescaleAxes();
  loss->replot();
  ASSERT_TRUE(loss->legend->visible());
  EXPECT_FALSE(rectsOverlap(loss->legend->outerRect(), loss->axisRect()->rect()))
      << "legend " << loss->legend->outerRect().x() << " axis rect right " << loss->axisRect()->rect().right();
  EXPECT_GE(loss->legend->outerRect().left(), loss->axisRect()->rect().right());
  // Below the data where the plot is narrow: the diversity line's legend.
  SimilarityPanel sim(f.ws.get());
  sim.resize(900, 500);
  sim.show();
  sim.showRun(f.ids.a);
  QCustomPlot* div = sim.diversityFrame()->plot();
  div->replot();
  ASSERT_TRUE(div->legend->visible());
  EXPECT_FALSE(rectsOverlap(div->legend->outerRect(), div->axisRect()->rect()));
  EXPECT_GE(div->legend->outerRect().top(), div->axisRect()->rect().bottom());
  // And the Compare curves.
  ComparePanel cmp(f.ws.get());
  cmp.resize(900, 600);
  cmp.show();
  cmp.setRuns({f.ids.a, f.ids.b});
  cmp.tabs()->setCurrentIndex(1);
  QCustomPlot* c = cmp.curvesFrame()->plot();
  c->replot();
  ASSERT_EQ(c->graphCount(), 2);
  EXPECT_FALSE(rectsOverlap(c->legend->outerRect(), c->axisRect()->rect()));
  // Hover values on the routing bars: alpha's E1 at layer 0 has 0.3 of the assignments.
  cmp.tabs()->setCurrentIndex(3);
  QCustomPlot* r = cmp.routingFrame()->plot();
  r->replot();
  auto* first = r->axisRects().value(0);
  ASSERT_NE(first, nullptr);
  const QPointF e1(first->axis(QCPAxis::atBottom)->coordToPixel(1.0), first->rect().center().y());
  EXPECT_EQ(cmp.routingHoverAt(e1), QStringLiteral("#%1 alpha, E1: share 0.3000 (uniform 0.5000)").arg(f.ids.a));
  const QPointF gap(first->axis(QCPAxis::atBottom)->coordToPixel(0.5), first->rect().center().y());
  EXPECT_EQ(cmp.routingHoverAt(gap), QString());
}

TEST(RunPanel, AStageThatBeginsAgainInTheNextSeedIsANewLineNotAJoin) {
  Store f;
  EngineController engine;
  RunPanel run(f.ws.get(), &engine);
  run.resize(900, 700);
  run.show();
  // Seed 0's sft, its post stage, then seed 1's sft: steps 1-3, 4-5, 6-7 on the x axis.
  auto push = [&](const char* stage, int n, double loss) {
    for (int i = 0; i < n; ++i) {
      StepMetrics m;
      m.stage = stage;
      m.step = i + 1;
      m.totalSteps = n;
      m.loss = loss - 0.1 * i;
      m.lr = 1e-3;
      m.tokensPerSec = 100;
      engine.worker()->pushStep(m);
    }
  };
  push("sft", 3, 3.0);
  push("post:dense", 2, 2.0);
  push("sft", 2, 2.9);
  // Then the same post stage twice in a row (a shared SFT skipped in the next seed): steps 8-9, 10-11.
  push("post:dense", 2, 1.9);
  push("post:dense", 2, 1.8);
  QCustomPlot* loss = run.curve(0)->plot();
  test::waitFor([&] { return loss->graphCount() >= 5; }, 5000);
  ASSERT_EQ(loss->graphCount(), 5);
  // Each line holds one stretch of steps: seed 1's sft starts at step 6, not joined to step 3.
  std::vector<std::vector<double>> keys;
  for (int g = 0; g < loss->graphCount(); ++g) {
    std::vector<double> k;
    for (auto it = loss->graph(g)->data()->constBegin(); it != loss->graph(g)->data()->constEnd(); ++it) k.push_back(it->key);
    keys.push_back(k);
  }
  EXPECT_EQ(keys[0], (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(keys[1], (std::vector<double>{4, 5}));
  EXPECT_EQ(keys[2], (std::vector<double>{6, 7}));
  EXPECT_EQ(keys[3], (std::vector<double>{8, 9}));
  EXPECT_EQ(keys[4], (std::vector<double>{10, 11}));
  // Both sft lines in one colour, one legend entry per stage name.
  EXPECT_EQ(loss->graph(0)->pen().color(), loss->graph(2)->pen().color());
  EXPECT_NE(loss->graph(0)->pen().color(), loss->graph(1)->pen().color());
  EXPECT_EQ(loss->legend->itemCount(), 2);
}

TEST(Layout, EveryDockFitsA1280x800Window) {
  Window win(QSize(1280, 800));
  MainWindow& w = *win.w;
  EXPECT_LE(w.minimumSizeHint().width(), 1280);
  EXPECT_LE(w.minimumSizeHint().height(), 800);
  EXPECT_LE(w.width(), 1280);
  // The Runs table shows at least three rows; the stage table at least four.
  auto* runs = w.runsPanel()->table();
  EXPECT_GE(runs->height() - runs->horizontalHeader()->height(), 3 * runs->verticalHeader()->defaultSectionSize());
  auto* stages = w.runPanel()->stageTable();
  EXPECT_GE(stages->minimumHeight() - stages->horizontalHeader()->sizeHint().height(), 4 * stages->verticalHeader()->defaultSectionSize());
}

// ------------------------------------------------------------------------------------ compare

TEST(ComparePanel, TickedRunsOverlayWithSmoothingLogScaleAndACrosshairReadout) {
  Store f;
  RunsPanel runs(f.ws.get());
  ComparePanel cmp(f.ws.get());
  // Tick a and b in the ID column: their curves overlay at once.
  for (int r = 0; r < runs.proxy()->rowCount(); ++r) {
    const QModelIndex i = runs.proxy()->index(r, RunsTableModel::kId);
    const qint64 id = i.data(kRunIdRole).toLongLong();
    if (id == f.ids.a || id == f.ids.b) runs.proxy()->setData(i, Qt::Checked, Qt::CheckStateRole);
  }
  EXPECT_EQ(f.ws->checkedRuns(), (QList<qint64>{f.ids.a, f.ids.b}));
  CurvesView* v = cmp.curves();
  ASSERT_EQ(v->series().size(), 2u);
  EXPECT_EQ(v->series()[0].raw, (std::vector<double>{3.0, 2.5, 2.25}));
  QCustomPlot* p = v->frame()->plot();
  EXPECT_EQ(p->graph(0)->pen().color(), runColor(f.ids.a));
  EXPECT_EQ(p->graph(1)->pen().color(), runColor(f.ids.b));
  // The crosshair at step 2 gives both runs' values.
  const QString readout = v->readoutAt(2.0);
  EXPECT_TRUE(readout.contains(QStringLiteral("#%1 alpha: <b>2.5</b>").arg(f.ids.a))) << readout.toStdString();
  EXPECT_TRUE(readout.contains(QStringLiteral("#%1 beta: <b>2</b>").arg(f.ids.b))) << readout.toStdString();
  // Smoothing 0.5: the shown curve is the debiased EMA (3, (0.75 + 1.25) / 0.75, ...), raw faint behind.
  v->setSmoothing(0.5);
  ASSERT_EQ(p->graphCount(), 4);
  EXPECT_NEAR(v->series()[0].shown[1], (0.5 * 1.5 + 0.5 * 2.5) / 0.75, 1e-12);
  EXPECT_NEAR(p->graph(1)->data()->at(1)->value, (0.5 * 1.5 + 0.5 * 2.5) / 0.75, 1e-12);
  v->setLogScale(true);
  EXPECT_EQ(p->yAxis->scaleType(), QCPAxis::stLogarithmic);
  // A dense run ticked with them is drawn too; Similarity names why it has no heatmap.
  f.ws->setCheckedRuns({f.ids.a, f.dense});
  v->setSmoothing(0);
  EXPECT_EQ(v->series().size(), 2u);
  EXPECT_TRUE(cmp.similarityNote()->text().contains(QStringLiteral("dense"))) << cmp.similarityNote()->text().toStdString();
  EXPECT_TRUE(cmp.routingNote()->text().contains(QStringLiteral("#%1 delta").arg(f.dense)));
  // x by tokens: post.batch_size 4, but no sequence length in this run's params: not drawn, and said.
  v->setXAxis(CurvesView::kTokens);
  EXPECT_TRUE(v->note().contains(QStringLiteral("tokens per step"))) << v->note().toStdString();
  // Exported figures name their runs; default file names include them.
  EXPECT_TRUE(v->frame()->defaultFileName(QStringLiteral("png")).contains(QStringLiteral("delta")))
      << v->frame()->defaultFileName(QStringLiteral("png")).toStdString();
}

TEST(ComparePanel, TheComparedRunsAreTheTickedRunsInEveryTabAndTheHeader) {
  Store f;
  RunsPanel runs(f.ws.get());
  ComparePanel cmp(f.ws.get());
  f.ws->setCheckedRuns({f.dense, f.ids.a, f.ids.b, f.ids.upit});
  EXPECT_EQ(cmp.curves()->series().size(), 3u) << "alpha, beta and delta have loss curves; gamma none";
  // Compare on a selection of two: the ticks, the header and the curves follow it.
  f.ws->requestCompare({f.ids.a, f.ids.b});
  EXPECT_EQ(f.ws->checkedRuns(), (QList<qint64>{f.ids.a, f.ids.b}));
  EXPECT_EQ(cmp.curves()->series().size(), 2u);
  EXPECT_TRUE(cmp.headerText().contains(QStringLiteral("#%1 alpha").arg(f.ids.a))) << cmp.headerText().toStdString();
  EXPECT_FALSE(cmp.headerText().contains(QStringLiteral("delta")));
  int ticked = 0;
  for (int r = 0; r < runs.proxy()->rowCount(); ++r)
    ticked += runs.proxy()->index(r, RunsTableModel::kId).data(Qt::CheckStateRole).toInt() == Qt::Checked;
  EXPECT_EQ(ticked, 2);
  // Five ticked: the header says the other tabs take 2 to 4, never names runs they do not show.
  f.ws->setCheckedRuns({f.dense, f.ids.a, f.ids.b, f.ids.upit, f.ids.a + 1000});
  EXPECT_TRUE(cmp.headerText().contains(QStringLiteral("2 to 4"))) << cmp.headerText().toStdString();
}

TEST(Models, MetricsCompareBoldsOnlyAUniqueBest) {
  RunDetail a, b, c;
  a.run.id = 1;
  b.run.id = 2;
  c.run.id = 3;
  a.eval = {{"", 1.5, 4.4, 0.0, 10, 5}};
  b.eval = {{"", 1.25, 3.4, 0.0, 10, 5}};
  c.eval = {{"", 1.25, 3.4, 0.5, 10, 5}};
  MetricsCompareModel tie;
  tie.setRuns({a, b});
  ASSERT_EQ(tie.index(0, 0).data().toString(), QStringLiteral("eval accuracy: overall"));
  EXPECT_FALSE(tie.index(0, 1).data(Qt::FontRole).isValid()) << "0.0% and 0.0%: a tie, no bold";
  EXPECT_FALSE(tie.index(0, 2).data(Qt::FontRole).isValid());
  EXPECT_TRUE(tie.index(1, 2).data(Qt::FontRole).value<QFont>().bold()) << "loss 1.25 < 1.5";
  EXPECT_EQ(tie.index(1, 1).data().toString(), QStringLiteral("1.500")) << "one precision per row";
  EXPECT_EQ(tie.index(1, 2).data().toString(), QStringLiteral("1.250"));
  MetricsCompareModel three;
  three.setRuns({a, b, c});
  EXPECT_TRUE(three.index(0, 3).data(Qt::FontRole).value<QFont>().bold());
  EXPECT_FALSE(three.index(1, 2).data(Qt::FontRole).isValid()) << "1.25 twice: a tie";
  // Diversities -0.0 and -1e-9 beside 0.25 (four decimals: 3 - floor(log10 0.25)) read "0.0000", never "-0.0000".
  RunDetail d, e, g;
  d.run.finalMetrics["analysis/diversity"] = -0.0;
  e.run.finalMetrics["analysis/diversity"] = -1e-9;
  g.run.finalMetrics["analysis/diversity"] = 0.25;
  MetricsCompareModel zero;
  zero.setRuns({d, e, g});
  ASSERT_EQ(zero.index(0, 0).data().toString(), QStringLiteral("analysis/diversity"));
  EXPECT_EQ(zero.index(0, 1).data().toString(), QStringLiteral("0.0000"));
  EXPECT_EQ(zero.index(0, 2).data().toString(), QStringLiteral("0.0000"));
  EXPECT_EQ(zero.index(0, 3).data().toString(), QStringLiteral("0.2500"));
}

TEST(RunDetail, ShowsTheRunsParamsLogAndStages) {
  Store f;
  RunDetailDialog d(f.ws.get(), f.ids.upit);
  EXPECT_EQ(d.paramsTable()->rowCount(), 6) << "the six params gamma was stored with";
  EXPECT_TRUE(d.logText().contains(QStringLiteral("checkpoint-4, checkpoint-8")));
  RunDetailDialog a(f.ws.get(), f.ids.a);
  ASSERT_EQ(a.stagesTable()->rowCount(), 1);
  EXPECT_EQ(a.stagesTable()->item(0, 0)->text(), QStringLiteral("post:alpha"));
  EXPECT_EQ(a.stagesTable()->item(0, 1)->text(), QStringLiteral("3"));
  EXPECT_EQ(a.stagesTable()->item(0, 3)->text(), QStringLiteral("2.2500"));
  // Double-clicking a run in the Runs table asks for this page.
  RunsPanel runs(f.ws.get());
  QSignalSpy details(f.ws.get(), &Workspace::detailsRequested);
  const QModelIndex name = runs.proxy()->index(0, RunsTableModel::kName);
  Q_EMIT runs.table()->doubleClicked(name);
  ASSERT_EQ(details.count(), 1);
  EXPECT_EQ(details.at(0).at(0).toLongLong(), name.data(kRunIdRole).toLongLong());
}

// ----------------------------------------------------------------------------- lineage, checkpoints

TEST(LineagePanel, ReadableLabelsThatNeverOverlapAndRootsNameTheirStep) {
  Store f;
  LineagePanel panel(f.ws.get());
  panel.resize(700, 600);
  panel.show();
  panel.showRun(f.ids.upit);
  std::vector<QRectF> labels;
  QStringList captions;
  const double normal = panel.view()->font().pointSizeF();
  for (QGraphicsItem* item : panel.scene()->items()) {
    auto* text = dynamic_cast<QGraphicsSimpleTextItem*>(item);
    if (!text) continue;
    EXPECT_GE(text->font().pointSizeF(), normal) << text->text().toStdString();
    if (text->data(0).toString() == QLatin1String("edgeLabel")) labels.push_back(text->sceneBoundingRect());
    if (text->data(0).toString() == QLatin1String("nodeCaption")) captions << text->text();
  }
  ASSERT_EQ(labels.size(), 6u);
  for (size_t i = 0; i < labels.size(); ++i)
    for (size_t j = i + 1; j < labels.size(); ++j) EXPECT_FALSE(labels[i].intersects(labels[j])) << i << " and " << j;
  EXPECT_TRUE(captions.contains(QStringLiteral("step 4")));
  EXPECT_TRUE(captions.contains(QStringLiteral("step 8")));
  EXPECT_GE(panel.view()->transform().m11(), 0.8) << "never drawn below a readable scale";
  const double before = panel.view()->transform().m11();
  panel.zoomBy(1.25);
  EXPECT_NEAR(panel.view()->transform().m11(), before * 1.25, 1e-9);
}

TEST(LineagePanel, TheDemosEightExpertTreeFitsA1280ViewAndNoEdgeCrossesANode) {
  // The demo's shape: 4 checkpoint experts and a chain of 4 children, each from the last child and
  // an older expert, so a straight edge E3 -> E6 would run through E4 or E5.
  TempDir dir;
  {
    RunStore s(dir / "runs.db");
    const int64_t id = s.beginRun("upit", "demo", "upit", 0, "cpu", {{"run.method", "upit"}, {"run.experts", "8"}});
    s.addLineage(id, {{4, 0, 3, 0.918, 0.3, 0.18, 1, "linear"}, {5, 3, 4, 0.709, 0.3, 0.29, 2, "linear"},
                      {6, 4, 5, 0.913, 0.3, 0.30, 3, "linear"}, {7, 3, 6, 0.6, 0.3, 0.31, 4, "linear"}});
    s.finishRun(id, "finished");
  }
  // Slots by hand: each child at its parents' mean slot, one column right of its deeper parent.
  {
    RunStore s(dir / "runs.db");
    const auto nodes = layoutLineage(8, s.run(1).lineage);
    EXPECT_DOUBLE_EQ(nodes.at(4).x, 1.5);                // (0 + 3) / 2
    EXPECT_DOUBLE_EQ(nodes.at(5).x, 2.25);               // (3 + 1.5) / 2
    EXPECT_DOUBLE_EQ(nodes.at(6).x, 1.875);              // (1.5 + 2.25) / 2
    EXPECT_DOUBLE_EQ(nodes.at(7).x, 2.4375);             // (3 + 1.875) / 2
    EXPECT_EQ(nodes.at(7).depth, 4);
    // Two children of the same parents: the second moves to the nearest slot 1 away.
    const auto twins = layoutLineage(4, {{2, 0, 1, 0.5, 0.3, 0.1, 1, "linear"}, {3, 0, 1, 0.5, 0.3, 0.1, 2, "linear"}});
    EXPECT_DOUBLE_EQ(twins.at(2).x, 0.5);
    EXPECT_DOUBLE_EQ(twins.at(3).x, 1.5);
  }
  Workspace ws(QString::fromStdString((dir / "runs.db").string()));
  LineagePanel panel(&ws);
  panel.resize(790, 470);  // the dock's size in a 1280x800 window
  panel.show();
  test::waitFor([] { return false; }, 50);
  std::map<qint64, QRectF> nodes;
  std::vector<QGraphicsPathItem*> edges;
  for (QGraphicsItem* item : panel.scene()->items()) {
    if (item->data(0).toString() == QLatin1String("node")) nodes[item->data(1).toLongLong()] = item->sceneBoundingRect();
    if (item->data(0).toString() == QLatin1String("edge")) edges.push_back(static_cast<QGraphicsPathItem*>(item));
  }
  ASSERT_EQ(nodes.size(), 8u);
  ASSERT_EQ(edges.size(), 8u);
  // Every node in sight at a readable scale.
  EXPECT_GE(panel.view()->transform().m11(), 0.8);
  const QRect viewport = panel.view()->viewport()->rect();
  for (const auto& [e, r] : nodes)
    EXPECT_TRUE(viewport.contains(panel.view()->mapFromScene(r).boundingRect())) << "E" << e << " is cut off";
  // No edge runs through a node it does not join (sampled along the curve).
  for (QGraphicsPathItem* edge : edges) {
    const qint64 from = edge->data(1).toLongLong(), to = edge->data(2).toLongLong();
    for (int i = 1; i < 100; ++i) {
      const QPointF q = edge->path().pointAtPercent(i / 100.0);
      for (const auto& [e, r] : nodes)
        if (e != from && e != to) {
          EXPECT_FALSE(r.contains(q)) << "E" << from << " -> E" << to << " crosses E" << e;
        }
    }
  }
}

TEST(CheckpointsPanel, WithoutABaseTheEarliestCheckedCheckpointIsTheBaseAndMarkersShowTheChecks) {
  TempDir dir;
  test::writeTrainerOutput(dir.path(), [](int) { return std::string("[{\"step\": 4, \"loss\": 2.0}, {\"step\": 8, \"loss\": 1.0}]"); });
  CheckpointsPanel panel;
  ASSERT_EQ(panel.addPath(QString::fromStdString((dir / "sft").string())), QString());
  QCustomPlot* p = panel.lossFrame()->plot();
  ASSERT_EQ(p->graphCount(), 3);
  EXPECT_EQ(p->graph(1)->dataCount(), 2) << "both checked";
  EXPECT_EQ(p->graph(2)->dataCount(), 0);
  panel.model()->setData(panel.model()->index(1, CheckpointTableModel::kUse), Qt::Unchecked, Qt::CheckStateRole);
  ASSERT_EQ(p->graph(1)->dataCount(), 1);
  EXPECT_DOUBLE_EQ(p->graph(1)->data()->at(0)->key, 4.0);
  ASSERT_EQ(p->graph(2)->dataCount(), 1) << "the unchecked one, hollow";
  EXPECT_DOUBLE_EQ(p->graph(2)->data()->at(0)->key, 8.0);
  panel.model()->setData(panel.model()->index(1, CheckpointTableModel::kUse), Qt::Checked, Qt::CheckStateRole);
  QSignalSpy chosen(&panel, &CheckpointsPanel::checkpointsChosen);
  panel.findChild<QPushButton*>(QStringLiteral("useCheckpoints"))->click();
  ASSERT_EQ(chosen.count(), 1);
  EXPECT_EQ(chosen.at(0).at(0).toString(), QString::fromStdString((dir / "sft/checkpoint-4").string()));
  ExperimentPanel exp;
  exp.useCheckpoints(chosen.at(0).at(0).toString(), chosen.at(0).at(1).toStringList());
  EXPECT_FALSE(exp.experiment().pretrain) << "the base is the user's folder now";
}

TEST(MainWindow, DemoButtonsSayHowLongTheDemoTookHere) {
  Window win;
  EXPECT_FALSE(win.w->quickDemoButton()->text().contains(QStringLiteral("second"))) << "no promised time";
  {
    RunStore s(win.dir / "runs.db");
    const int64_t base = s.beginRun("demo-quick:base", "demo-quick", "base", 0, "cpu", {});
    s.finishRun(base, "finished");
    const int64_t run = s.beginRun("sparse", "demo-quick", "sparse", 0, "cpu", {});
    s.finishRun(run, "finished");
  }
  win.w->workspace()->reload();
  EXPECT_TRUE(win.w->quickDemoButton()->text().contains(QStringLiteral("here last time"))) << win.w->quickDemoButton()->text().toStdString();
}

TEST(Layout, MethodFormsStackWhenNarrowRunsFirst) {
  ExperimentPanel panel;
  panel.resize(1000, 700);
  panel.show();
  test::waitFor([] { return false; }, 30);
  auto* split = panel.findChild<QSplitter*>(QStringLiteral("experimentSplit"));
  ASSERT_NE(split, nullptr);
  auto* runs = panel.findChild<QWidget*>(QStringLiteral("runList"));
  EXPECT_EQ(split->orientation(), Qt::Horizontal);
  EXPECT_TRUE(split->widget(1)->isAncestorOf(runs)) << "wide: the experiment left, the runs right";
  panel.resize(600, 700);
  test::waitFor([] { return false; }, 30);
  EXPECT_EQ(split->orientation(), Qt::Vertical);
  EXPECT_TRUE(split->widget(0)->isAncestorOf(runs)) << "narrow: the runs and the method first";
  // Stacked, a form is as tall as its content: the page scrolls, not a sliver of each form.
  auto* page = panel.findChild<QScrollArea*>(QStringLiteral("experimentPage"));
  ASSERT_NE(page, nullptr);
  EXPECT_GT(split->sizeHint().height(), page->viewport()->height());
}
