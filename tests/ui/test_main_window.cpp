// The main window and the engine thread: starting and cancelling the worker through signals, live
// curves fed from the coalesced step buffer (checked against the store), docks and the saved layout.
#include <gtest/gtest.h>

#include <QAbstractItemModelTester>
#include <QDockWidget>
#include <QLabel>
#include <QRegularExpression>
#include <QSettings>
#include <QSignalSpy>

#include "engine_worker.h"
#include "experiment_panel.h"
#include "main_window.h"
#include "qcp.h"
#include "run_panel.h"
#include "runs_panel.h"
#include "stage_model.h"
#include "table_models.h"
#include "ui_test_util.h"
#include "workspace.h"

using namespace upcycle;
using namespace upcycle::ui;
using upcycle::test::TempDir;

TEST(EngineController, RunsAnExperimentOnItsThreadAndReportsThroughSignals) {
  TempDir dir;
  EngineController engine;
  QSignalSpy finished(engine.worker(), &EngineWorker::finished);
  QSignalSpy stages(engine.worker(), &EngineWorker::stage);
  QSignalSpy runs(engine.worker(), &EngineWorker::runFinished);
  QSignalSpy steps(engine.worker(), &EngineWorker::stepsAvailable);
  EXPECT_NE(engine.worker()->thread(), QThread::currentThread()) << "the worker lives on the engine thread";
  const QString db = QString::fromStdString((dir / "runs.db").string());
  engine.start(QString::fromStdString(test::tinyExperiment("out", 6)), QStringLiteral("tiny.yaml"), db,
               QString::fromStdString(dir.path().string()));
  EXPECT_TRUE(engine.busy());
  ASSERT_TRUE(finished.wait(180000));
  EXPECT_FALSE(engine.busy());
  EXPECT_TRUE(finished.at(0).at(0).toBool()) << finished.at(0).at(2).toString().toStdString();
  EXPECT_FALSE(finished.at(0).at(1).toBool());
  EXPECT_GE(steps.count(), 1);
  QStringList names;
  for (const auto& s : stages) names << s.at(0).toString();
  EXPECT_TRUE(names.contains(QStringLiteral("pretrain")));
  EXPECT_TRUE(names.contains(QStringLiteral("sft")));
  ASSERT_EQ(runs.count(), 1);
  EXPECT_EQ(runs.at(0).at(1).toString(), QStringLiteral("sparse"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/experiment.yaml")) << "a relative out resolves against the workspace folder";
  RunStore store(dir / "runs.db");
  auto all = store.listRuns();
  ASSERT_EQ(all.size(), 2u);  // base + sparse
  EXPECT_EQ(all[1].status, "finished");
  EXPECT_EQ(all[1].id, runs.at(0).at(0).toLongLong());
}

TEST(EngineController, CancelStopsAtAStepAndTheStoreSaysCancelled) {
  TempDir dir;
  EngineController engine;
  QSignalSpy finished(engine.worker(), &EngineWorker::finished);
  // Cancel from the GUI thread as soon as the first training step is reported.
  QObject::connect(engine.worker(), &EngineWorker::stepsAvailable, &engine, [&engine] { engine.cancel(); });
  engine.start(QString::fromStdString(test::tinyExperiment(dir / "out", 100000)), QStringLiteral("long.yaml"),
               QString::fromStdString((dir / "runs.db").string()), QString());
  ASSERT_TRUE(finished.wait(180000));
  EXPECT_TRUE(finished.at(0).at(0).toBool()) << finished.at(0).at(2).toString().toStdString();
  EXPECT_TRUE(finished.at(0).at(1).toBool()) << "reported as cancelled";
  RunStore store(dir / "runs.db");
  auto all = store.listRuns();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].status, "cancelled");
  EXPECT_LT(store.metrics(all[0].id).size(), 8u * 50) << "stopped long before 100000 steps";
}

TEST(EngineController, BadExperimentFailsWithTheFieldAndNoThreadCrash) {
  TempDir dir;
  EngineController engine;
  QSignalSpy finished(engine.worker(), &EngineWorker::finished);
  engine.start(QStringLiteral("name: x\nbase: {pretrain: {steps: 2}}\nruns:\n  - {method: sparse, experts: 2, top_k: 3}\n"),
               QStringLiteral("bad.yaml"), QString::fromStdString((dir / "runs.db").string()), QString());
  ASSERT_TRUE(finished.wait(30000));
  EXPECT_FALSE(finished.at(0).at(0).toBool());
  EXPECT_TRUE(finished.at(0).at(2).toString().contains(QStringLiteral("runs[0].top_k"))) << finished.at(0).at(2).toString().toStdString();
}

TEST(MainWindow, RunPanelCurvesAreTheStepsTheStoreRecorded) {
  TempDir dir;
  MainWindow w(QString::fromStdString((dir / "runs.db").string()));
  w.show();
  new QAbstractItemModelTester(w.runPanel()->stages(), QAbstractItemModelTester::FailureReportingMode::Fatal, &w);
  EXPECT_TRUE(w.dock(QStringLiteral("startDock"))->isVisible()) << "an empty workspace opens on the Start page";
  test::writeBytes(dir / "tiny.yaml", test::tinyExperiment("out", 12));
  ASSERT_EQ(w.openExperiment(QString::fromStdString((dir / "tiny.yaml").string())), QString());
  QSignalSpy finished(w.engine()->worker(), &EngineWorker::finished);
  w.startExperiment();
  ASSERT_TRUE(finished.wait(180000));
  QCoreApplication::processEvents();
  ASSERT_TRUE(finished.at(0).at(0).toBool()) << finished.at(0).at(2).toString().toStdString();
  // Every step reached the plots, in order, through at most one redraw per step.
  const auto& history = w.runPanel()->history();
  RunStore store(dir / "runs.db");
  std::vector<MetricPoint> losses;
  for (const RunRow& r : store.listRuns())
    for (const MetricPoint& p : store.metrics(r.id))
      if (p.key == "loss" && p.stage != "eval") losses.push_back(p);  // eval/loss is the evaluation, not a step
  ASSERT_EQ(history.size(), losses.size());
  for (size_t i = 0; i < history.size(); ++i) {
    EXPECT_EQ(history[i].stage, losses[i].stage) << i;
    EXPECT_EQ(history[i].step, losses[i].step) << i;
    EXPECT_DOUBLE_EQ(history[i].loss, losses[i].value) << i;
  }
  EXPECT_GE(w.runPanel()->redraws(), 1);
  EXPECT_LE(w.runPanel()->redraws(), static_cast<int>(history.size()));
  QCustomPlot* loss = w.runPanel()->curve(0)->plot();
  int points = 0;
  for (int g = 0; g < loss->graphCount(); ++g) points += loss->graph(g)->dataCount();
  EXPECT_EQ(points, static_cast<int>(history.size()));
  EXPECT_EQ(loss->graph(0)->name(), QStringLiteral("pretrain"));
  // Stages all done; the new runs are in the Runs table.
  for (const auto& row : w.runPanel()->stages()->rows()) EXPECT_EQ(row.status, StageModel::Status::Done) << row.key.toStdString();
  EXPECT_EQ(w.runsPanel()->model()->rowCount(), 2);
  EXPECT_TRUE(w.runPanel()->logText().contains(QStringLiteral("sparse")));
}

TEST(MainWindow, DocksLayoutSettingsAndAbout) {
  TempDir dir;
  QSettings().clear();
  const QString db = QString::fromStdString((dir / "runs.db").string());
  {
    MainWindow w(db);
    w.show();
    for (const char* name : {"startDock", "experimentDock", "checkpointsDock", "runDock", "similarityDock", "routingDock",
                             "lineageDock", "compareDock", "runsDock"})
      EXPECT_NE(w.dock(QString::fromLatin1(name)), nullptr) << name;
    w.dock(QStringLiteral("lineageDock"))->close();
    w.close();  // saves the layout
  }
  {
    MainWindow w(db);
    w.show();
    EXPECT_FALSE(w.dock(QStringLiteral("lineageDock"))->isVisible()) << "the closed dock stays closed";
    const QString about = w.aboutText();
    EXPECT_TRUE(about.contains(QStringLiteral(UPCYCLE_VERSION)));
    EXPECT_TRUE(about.contains(QString::fromLatin1(qVersion())));
    EXPECT_TRUE(about.contains(QRegularExpression(QStringLiteral("LibTorch</td><td>[0-9]+\\.[0-9]+")))) << about.toStdString();
    w.close();
  }
  QSettings().clear();
}
