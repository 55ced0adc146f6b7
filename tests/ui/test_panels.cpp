// The panels show what the store holds: heatmap cells, diversity points, routing bars, lineage tree
// and compare curves are checked against values this test wrote by hand (and hand arithmetic).
#include <gtest/gtest.h>

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFile>
#include <QLabel>
#include <QLineEdit>
#include <QSpinBox>
#include <QTableWidget>
#include <cmath>

#include "checkpoints_panel.h"
#include "compare_panel.h"
#include "experiment_panel.h"
#include "lineage_panel.h"
#include "plot_frame.h"
#include "plots.h"
#include "qcp.h"
#include "routing_panel.h"
#include "runs_panel.h"
#include "seeds_view.h"
#include "similarity_panel.h"
#include "table_models.h"
#include "ui_test_util.h"
#include "workspace.h"

using namespace upcycle;
using namespace upcycle::ui;
using upcycle::test::TempDir;

namespace {
struct Fixture {
  TempDir dir;
  test::HandStore ids;
  std::unique_ptr<Workspace> ws;
  Fixture() {
    {
      RunStore s(dir / "runs.db");
      ids = test::fillHandStore(s);
    }
    ws = std::make_unique<Workspace>(QString::fromStdString((dir / "runs.db").string()));
  }
};
}  // namespace

TEST(Plots, ArithmeticHelpersByHand) {
  BlobRow m{"weight_similarity", 0, "", 3, 3, {1, 0.2, 0.4, 0.2, 1, 0.6, 0.4, 0.6, 1}};
  EXPECT_NEAR(diversityOf(m), 1.0 - (0.2 + 0.4 + 0.2 + 0.6 + 0.4 + 0.6) / 6.0, 1e-12);
  EXPECT_NEAR(entropyOf({0.5, 0.5}), std::log(2.0), 1e-12);
  EXPECT_NEAR(entropyOf({1.0, 0.0}), 0.0, 1e-12);
  EXPECT_NEAR(imbalanceOf({0.7, 0.3}), 1.4, 1e-12);
  EXPECT_EQ(csvField(QStringLiteral("a,b")), QStringLiteral("\"a,b\""));
  EXPECT_EQ(csvField(QStringLiteral("say \"hi\"")), QStringLiteral("\"say \"\"hi\"\"\""));
}

TEST(SimilarityPanel, HeatmapCellsAndDiversityLineMatchTheStore) {
  Fixture f;
  SimilarityPanel panel(f.ws.get());
  panel.showRun(f.ids.a);
  panel.setKind(0);
  panel.setConverted(false);
  panel.setLayer(0);
  QCPColorMapData* d = panel.colorMap()->data();
  ASSERT_EQ(d->keySize(), 2);
  ASSERT_EQ(d->valueSize(), 2);
  EXPECT_DOUBLE_EQ(d->cell(0, 0), 1.0);
  EXPECT_DOUBLE_EQ(d->cell(1, 0), 0.5);
  EXPECT_DOUBLE_EQ(d->cell(0, 1), 0.5);
  panel.setLayer(1);
  EXPECT_DOUBLE_EQ(panel.colorMap()->data()->cell(1, 0), 0.9);
  panel.setConverted(true);
  EXPECT_DOUBLE_EQ(panel.colorMap()->data()->cell(1, 0), 1.0);
  // The diversity line: 1 - 0.5 at layer 0, 1 - 0.9 at layer 1 (after post-training); 0 after conversion.
  QCustomPlot* p = panel.diversityFrame()->plot();
  ASSERT_EQ(p->graphCount(), 2);
  auto* post = p->graph(0)->data().data();
  ASSERT_EQ(post->size(), 2);
  EXPECT_DOUBLE_EQ(post->at(0)->key, 0.0);
  EXPECT_NEAR(post->at(0)->value, 0.5, 1e-12);
  EXPECT_NEAR(post->at(1)->value, 0.1, 1e-12);
  EXPECT_NEAR(p->graph(1)->data()->at(0)->value, 0.0, 1e-12);
  // Negative similarities widen the colour range below 0.
  panel.showRun(f.ids.b);
  panel.setConverted(false);
  panel.setLayer(0);
  EXPECT_DOUBLE_EQ(panel.colorMap()->dataRange().lower, -0.2);
  EXPECT_DOUBLE_EQ(panel.colorMap()->dataRange().upper, 1.0);
  panel.setLayer(1);
  panel.setFitColours(true);  // the matrix's own range: [0.1, 1]
  EXPECT_DOUBLE_EQ(panel.colorMap()->dataRange().lower, 0.1);
  EXPECT_DOUBLE_EQ(panel.colorMap()->dataRange().upper, 1.0);
  panel.setFitColours(false);
  panel.setLayer(0);
  // CSV: the shown matrix.
  const CsvTable csv = panel.heatmapFrame()->csv();
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[1], (QStringList{"E0", "1", "-0.2"}));
}

TEST(RoutingPanel, StackedBarsAreTheStoredSharesPerDomain) {
  Fixture f;
  RoutingPanel panel(f.ws.get());
  panel.showRun(f.ids.a);
  panel.setLayer(0);
  // Domains: "all" first, then in name order (code, math).
  ASSERT_EQ(panel.domains(), (std::vector<QString>{"all", "code", "math"}));
  ASSERT_EQ(panel.expertShares().size(), 2u);
  EXPECT_EQ(panel.expertShares()[0], (std::vector<double>{0.7, 0.4, 0.9}));
  EXPECT_EQ(panel.expertShares()[1], (std::vector<double>{0.3, 0.6, 0.1}));
  QCustomPlot* p = panel.sharesFrame()->plot();
  ASSERT_EQ(p->plottableCount(), 2);
  auto* e1 = qobject_cast<QCPBars*>(p->plottable(1));
  ASSERT_NE(e1, nullptr);
  EXPECT_EQ(e1->barBelow(), qobject_cast<QCPBars*>(p->plottable(0))) << "E1 is stacked on E0";
  EXPECT_DOUBLE_EQ(e1->data()->at(2)->value, 0.1);
  EXPECT_EQ(p->itemCount(), 1) << "one uniform boundary at 1/2";
  // Per-layer statistics: entropy, share entropy, imbalance as stored.
  QCustomPlot* s = panel.statsFrame()->plot();
  ASSERT_EQ(s->graphCount(), 3);
  EXPECT_DOUBLE_EQ(s->graph(0)->data()->at(1)->value, 0.65);
  EXPECT_NEAR(s->graph(1)->data()->at(0)->value, entropyOf({0.7, 0.3}), 1e-12);
  EXPECT_DOUBLE_EQ(s->graph(2)->data()->at(0)->value, 1.4);
  const CsvTable csv = panel.sharesFrame()->csv();
  EXPECT_EQ(csv[2], (QStringList{"code", "0.4", "0.6"}));
  // Hover: "code" is bar 1; E0 spans [0, 0.4), E1 [0.4, 1.0).
  EXPECT_EQ(panel.hoverText(1.0, 0.3), QStringLiteral("code, E0: 0.4000 of the assignments"));
  EXPECT_EQ(panel.hoverText(1.1, 0.5), QStringLiteral("code, E1: 0.6000 of the assignments"));
  EXPECT_EQ(panel.hoverText(1.5, 0.5), QString()) << "between the bars";
  EXPECT_EQ(panel.hoverText(2.0, 1.05), QString()) << "above the stack";
}

TEST(LineagePanel, TreeDepthsFollowTheParents) {
  Fixture f;
  LineagePanel panel(f.ws.get());
  panel.showRun(f.ids.upit);
  ASSERT_EQ(panel.model()->rowCount(), 3);
  const auto nodes = layoutLineage(5, f.ws->store()->run(f.ids.upit).lineage);
  ASSERT_EQ(nodes.size(), 5u);
  EXPECT_EQ(nodes.at(0).depth, 0);
  EXPECT_EQ(nodes.at(1).depth, 0);
  EXPECT_EQ(nodes.at(2).depth, 1);
  EXPECT_EQ(nodes.at(3).depth, 1);
  EXPECT_EQ(nodes.at(4).depth, 2) << "expert 4's parent 2 is itself a child";
  // 5 nodes, 6 edges, and labels: the scene is not empty and spans three columns.
  int ellipses = 0, edges = 0;
  for (auto* item : panel.scene()->items()) {
    ellipses += item->type() == QGraphicsEllipseItem::Type;
    edges += item->data(0).toString() == QLatin1String("edge");
  }
  EXPECT_EQ(ellipses, 5);
  EXPECT_EQ(edges, 6);
}

TEST(ComparePanel, CurvesHeatmapsAndBarsShareScalesAndMatchTheStore) {
  Fixture f;
  ComparePanel panel(f.ws.get());
  panel.setRuns({f.ids.a, f.ids.b});
  ASSERT_EQ(panel.runs().size(), 2u);
  panel.setDiffOnly(true);
  ASSERT_EQ(panel.paramModel()->rowCount(), 2);  // run.method and run.ratio
  EXPECT_EQ(panel.paramModel()->index(0, 0).data().toString(), QStringLiteral("run.method"));
  panel.setCurveMetric(QStringLiteral("loss"));
  QCustomPlot* c = panel.curvesFrame()->plot();
  ASSERT_EQ(c->graphCount(), 2);
  ASSERT_EQ(c->graph(0)->dataCount(), 3);
  EXPECT_DOUBLE_EQ(c->graph(0)->data()->at(2)->value, 2.25);
  EXPECT_DOUBLE_EQ(c->graph(1)->data()->at(1)->value, 2.0);
  EXPECT_EQ(c->graph(0)->pen().color(), seriesColor(0));
  EXPECT_EQ(c->graph(1)->pen().color(), seriesColor(1));
  // Heatmaps: one per run, the same colour range [min(0, -0.2), 1] for both.
  ASSERT_EQ(panel.colorMaps().size(), 2u);
  for (auto* m : panel.colorMaps()) {
    EXPECT_DOUBLE_EQ(m->dataRange().lower, -0.2);
    EXPECT_DOUBLE_EQ(m->dataRange().upper, 1.0);
  }
  EXPECT_DOUBLE_EQ(panel.colorMaps()[1]->data()->cell(1, 0), -0.2);
  const CsvTable bars = panel.routingFrame()->csv();
  ASSERT_EQ(bars.size(), 5u);  // header + 2 experts x 2 runs
  EXPECT_EQ(bars[3][2], QStringLiteral("0.45"));
  panel.setRuns({f.ids.a});
  EXPECT_TRUE(panel.runs().empty()) << "compare needs 2 to 4 runs";
}

TEST(SeedsView, TableBarsBandsAndPairedDifferencesByHand) {
  // Two run names over seeds 0, 1, 2 with hand-written accuracies and loss curves.
  TempDir dir;
  int64_t moeSeed0 = 0;
  {
    RunStore s(dir / "runs.db");
    // A run of another experiment first, so that no run's id is its row + 1 (colours by id, not by row).
    s.finishRun(s.beginRun("pre", "other", "dense", 0, "cpu", {}), "finished");
    const double dense[3] = {0.50, 0.40, 0.45}, moe[3] = {0.56, 0.41, 0.44};
    for (uint64_t seed = 0; seed < 3; ++seed)
      for (const auto& [name, acc] : {std::pair<std::string, double>{"dense", dense[seed]}, {"moe", moe[seed]}}) {
        const int64_t id = s.beginRun(name, "seedy", name == "dense" ? "dense" : "sparse", seed, "cpu", {});
        if (name == "moe" && seed == 0) moeSeed0 = id;
        s.addEval(id, {{"", 1.0, 2.7, acc, 10, 10}});
        // loss at steps 1, 2: (3 + seed, 2 + seed) for dense, (4 + seed, 1 + seed) for moe.
        const double off = static_cast<double>(seed) + (name == "moe" ? 1.0 : 0.0);
        s.addMetrics(id, {{"post:" + name, "loss", 1, 3 + off}, {"post:" + name, "loss", 2, name == "moe" ? 1 + seed : 2.0 + seed}});
        s.finishRun(id, "finished");
      }
    const int64_t other = s.beginRun("x", "single", "dense", 0, "cpu", {});
    s.addEval(other, {{"", 1.0, 2.7, 0.3, 10, 10}});
    s.finishRun(other, "finished");
  }
  Workspace ws(QString::fromStdString((dir / "runs.db").string()));
  SeedsView view(&ws);
  ASSERT_TRUE(view.summary().has_value()) << view.message().toStdString();
  EXPECT_EQ(view.summary()->experiment, "seedy") << "the experiment with several seeds is shown first";
  view.setBaseline(QStringLiteral("dense"));
  ASSERT_TRUE(view.summary().has_value());
  QTableWidget* t = view.table();
  ASSERT_EQ(t->rowCount(), 2);
  // dense: mean 45.0, sd 5.0, CI 45 -+ 4.3026527 * 5 / sqrt(3) = [32.6, 57.4].
  EXPECT_EQ(t->item(0, 2)->text(), "45.0");
  EXPECT_EQ(t->item(0, 3)->text(), "5.0");
  EXPECT_EQ(t->item(0, 4)->text(), "[32.6, 57.4]");
  EXPECT_EQ(t->item(0, 5)->text(), "(baseline)");
  // moe - dense: +6, +1, -1: mean +2.0, CI 2 -+ 4.3026527 * sqrt(13) / sqrt(3) = [-6.96, 10.96], wins 2/3.
  EXPECT_EQ(t->item(1, 5)->text(), "+2.0 [-7.0, 11.0]");
  EXPECT_EQ(t->item(1, 6)->text(), "2/3");

  // Bars: one per run at the mean, whiskers to the CI.
  QCustomPlot* bars = view.barsFrame()->plot();
  std::vector<double> means, ups;
  for (int i = 0; i < bars->plottableCount(); ++i) {
    if (auto* b = qobject_cast<QCPBars*>(bars->plottable(i))) means.push_back(b->data()->begin()->value);
    if (auto* e = qobject_cast<QCPErrorBars*>(bars->plottable(i))) ups.push_back(e->data()->at(0).errorPlus);
  }
  ASSERT_EQ(means.size(), 2u);
  EXPECT_NEAR(means[0], 45.0, 1e-9);
  EXPECT_NEAR(means[1], (56.0 + 41.0 + 44.0) / 3, 1e-9);
  ASSERT_EQ(ups.size(), 2u);
  EXPECT_NEAR(ups[0], 4.3026527299 * 5 / std::sqrt(3.0), 1e-6);

  // Curves: the moe mean line at step 2 is (1 + 2 + 3) / 3 = 2, its band (sd 1) 2 -+ 4.3026527 / sqrt(3).
  QCustomPlot* curves = view.curvesFrame()->plot();
  bool checked = false;
  for (int i = 0; i < curves->graphCount(); ++i) {
    QCPGraph* g = curves->graph(i);
    if (!g->name().startsWith(QLatin1String("moe"))) continue;
    EXPECT_EQ(g->name(), QStringLiteral("moe (n=3)"));
    EXPECT_NEAR(g->data()->at(1)->value, 2.0, 1e-12);
    QCPGraph* upper = curves->graph(i - 1);
    EXPECT_NEAR(upper->data()->at(1)->value, 2.0 + 4.3026527299 / std::sqrt(3.0), 1e-6);
    checked = true;
  }
  EXPECT_TRUE(checked);
  // No legend over the data: the colours are the table's, each name in its earliest run's colour (as
  // the Runs table's group row and that run's curves in Compare).
  EXPECT_FALSE(curves->legend->visible());
  EXPECT_EQ(t->item(1, 0)->foreground().color(), runColor(moeSeed0));

  // Paired chart: the moe point at +2 with its interval; CSV rows agree.
  const CsvTable paired = view.pairedFrame()->csv();
  ASSERT_EQ(paired.size(), 2u);
  EXPECT_EQ(paired[1][0], "moe");
  EXPECT_NEAR(paired[1][3].toDouble(), 2.0, 1e-9);
  EXPECT_EQ(paired[1][6], "2");

  // Eval loss: lower is better (all equal here: no wins), the domain box lists only "overall".
  view.setMetric(QStringLiteral("eval_loss"));
  ASSERT_TRUE(view.summary().has_value());
  EXPECT_FALSE(view.summary()->higherIsBetter);
  EXPECT_EQ(view.table()->item(1, 6)->text(), "0/3");
  // One seed: the other experiment says why there is no interval.
  ASSERT_TRUE(view.setExperiment(QStringLiteral("single")));
  EXPECT_TRUE(view.message().contains(QStringLiteral("One seed"))) << view.message().toStdString();
}

TEST(RunsPanel, RenameTagDeleteWriteTheStore) {
  Fixture f;
  RunsPanel panel(f.ws.get());
  ASSERT_EQ(panel.model()->rowCount(), 3);
  EXPECT_TRUE(panel.renameRun(f.ids.a, QStringLiteral("renamed")));
  EXPECT_TRUE(panel.tagRun(f.ids.a, QStringLiteral("best, keep")));
  {
    RunStore other((f.dir / "runs.db"));  // a second connection sees the writes
    EXPECT_EQ(other.run(f.ids.a).run.name, "renamed");
    EXPECT_EQ(other.run(f.ids.a).run.tags, "best, keep");
  }
  panel.setFilter(QStringLiteral("keep"));
  EXPECT_EQ(panel.proxy()->rowCount(), 1);
  panel.setFilter(QString());
  panel.selectRuns({f.ids.a, f.ids.b});
  EXPECT_EQ(panel.selectedRuns(), (QList<qint64>{f.ids.a, f.ids.b}));
  QSignalSpy compare(f.ws.get(), &Workspace::compareRequested);
  panel.findChild<QPushButton*>(QStringLiteral("compareButton"))->click();
  ASSERT_EQ(compare.count(), 1);
  EXPECT_TRUE(panel.deleteRun(f.ids.b));
  EXPECT_EQ(panel.model()->rowCount(), 2);
  EXPECT_EQ(f.ws->store()->listRuns().size(), 2u);
}

TEST(RunsPanel, GroupsSeedsIntoOneRowWithMeanAndIntervalAndExpands) {
  TempDir dir;
  {
    RunStore s(dir / "runs.db");
    // "moe" over seeds 0, 1, 2 with accuracies 0.56, 0.41, 0.44 and losses 1, 2, 3; a one-seed run stays a row.
    const double acc[3] = {0.56, 0.41, 0.44};
    for (uint64_t seed = 0; seed < 3; ++seed) {
      const int64_t id = s.beginRun("moe", "seedy", "sparse", seed, "cpu", {});
      s.addMetrics(id, {{"eval", "accuracy", 0, acc[seed]}, {"eval", "loss", 0, 1.0 + seed}});
      s.finishRun(id, "finished");
    }
    s.finishRun(s.beginRun("alone", "seedy", "dense", 0, "cpu", {}), "finished");
  }
  Workspace ws(QString::fromStdString((dir / "runs.db").string()));
  RunsPanel panel(&ws);
  ASSERT_EQ(panel.model()->rowCount(), 4);
  panel.setGroupSeeds(true);
  ASSERT_EQ(panel.model()->rowCount(), 2) << "one group row and the one-seed run";
  auto cell = [&](int row, int col) { return panel.proxy()->index(row, col).data().toString(); };
  int group = cell(0, RunsTableModel::kName) == "moe" ? 0 : 1;
  EXPECT_EQ(cell(group, RunsTableModel::kId), QStringLiteral("▸ 3 seeds"));
  // accuracy (%): mean 47.0, sd sqrt(((9)^2 + 6^2 + 3^2) / 2) = sqrt(63), half-width 4.3026527 * sqrt(63 / 3) = 19.7.
  EXPECT_EQ(cell(group, RunsTableModel::kAccuracy), QStringLiteral("47.0 ± 19.7%"));
  // loss: mean 2, sd 1, half-width 4.3026527 / sqrt(3) = 2.4841.
  EXPECT_EQ(cell(group, RunsTableModel::kEvalLoss), QStringLiteral("2.0000 ± 2.4841"));
  EXPECT_EQ(cell(group, RunsTableModel::kStatus), QStringLiteral("3 of 3 finished"));
  // The group's swatch: its seed-0 run's colour (run 1), as in the Across seeds view.
  EXPECT_EQ(panel.proxy()->index(group, RunsTableModel::kName).data(Qt::DecorationRole).value<QColor>(), runColor(1));
  EXPECT_FALSE(panel.model()->flags(panel.model()->index(group, RunsTableModel::kId)) & Qt::ItemIsUserCheckable);
  // A click on the group shows its seeds under it, in seed order; another hides them.
  panel.toggleGroup(QStringLiteral("seedy"), QStringLiteral("moe"));
  ASSERT_EQ(panel.model()->rowCount(), 5);
  group = cell(0, RunsTableModel::kName) == "moe" ? 0 : 1;
  EXPECT_EQ(cell(group, RunsTableModel::kId), QStringLiteral("▾ 3 seeds"));
  for (int k = 0; k < 3; ++k) EXPECT_EQ(cell(group + 1 + k, RunsTableModel::kName), QStringLiteral("    ↳ moe (seed %1)").arg(k));
  panel.selectRuns({});
  panel.toggleGroup(QStringLiteral("seedy"), QStringLiteral("moe"));
  EXPECT_EQ(panel.model()->rowCount(), 2);
  panel.setGroupSeeds(false);
  EXPECT_EQ(panel.model()->rowCount(), 4);
}

TEST(ExperimentPanel, FormsRoundTripYamlAndNameBadFields) {
  TempDir dir;
  const std::string yaml = test::tinyExperiment(dir / "out", 7,
                                                "  - {name: s, method: sparse, experts: 4, top_k: 2}\n"
                                                "  - {name: u, method: upit, experts: 6, top_k: 2, checkpoints: 2, ga: {dare_p: 0.2, alpha: [0.1, 0.9]}, "
                                                "router: {a: 0.7, min_seed: 8}}\n");
  test::writeBytes(dir / "e.yaml", yaml);
  ExperimentPanel panel;
  ASSERT_EQ(panel.loadFile(QString::fromStdString((dir / "e.yaml").string())), QString());
  EXPECT_TRUE(panel.validationError().isEmpty()) << panel.validationError().toStdString();
  panel.selectRun(1);
  EXPECT_DOUBLE_EQ(qobject_cast<QDoubleSpinBox*>(panel.field("ga.dare_p"))->value(), 0.2);
  EXPECT_DOUBLE_EQ(qobject_cast<QDoubleSpinBox*>(panel.field("router.a"))->value(), 0.7);
  EXPECT_EQ(qobject_cast<QSpinBox*>(panel.field("pretrain.steps"))->value(), 7);
  EXPECT_FALSE(panel.field("ga.dare_p")->toolTip().isEmpty()) << "every parameter explains itself";
  // Edit through the form; the experiment follows.
  qobject_cast<QDoubleSpinBox*>(panel.field("ga.dare_p"))->setValue(0.45);
  qobject_cast<QComboBox*>(panel.field("ga.merge"))->setCurrentText(QStringLiteral("ties"));
  EXPECT_DOUBLE_EQ(panel.experiment().runs[1].dareP, 0.45);
  EXPECT_EQ(panel.experiment().runs[1].mergeOp, "ties");
  EXPECT_EQ(panel.experiment().nproc, 1);
  qobject_cast<QSpinBox*>(panel.field("nproc"))->setValue(3);  // data-parallel processes
  EXPECT_EQ(panel.experiment().nproc, 3);
  EXPECT_EQ(panel.experiment().precision, "auto");
  qobject_cast<QComboBox*>(panel.field("precision"))->setCurrentText(QStringLiteral("bf16"));
  EXPECT_EQ(panel.experiment().precision, "bf16");
  // Seeds: a list or a range; a bad entry is named; saved and read back.
  auto* seeds = qobject_cast<QLineEdit*>(panel.field("seeds"));
  ASSERT_NE(seeds, nullptr);
  seeds->setText(QStringLiteral("0-2, 7"));
  Q_EMIT seeds->editingFinished();
  EXPECT_EQ(panel.experiment().seeds, (std::vector<uint64_t>{0, 1, 2, 7}));
  seeds->setText(QStringLiteral("0, x"));
  Q_EMIT seeds->editingFinished();
  EXPECT_TRUE(panel.validationError().contains(QStringLiteral("\"x\" is not a seed"))) << panel.validationError().toStdString();
  seeds->setText(QStringLiteral("3,4"));
  Q_EMIT seeds->editingFinished();
  EXPECT_TRUE(panel.validationError().isEmpty()) << panel.validationError().toStdString();
  // A bad combination is named by its field, as the CLI names it.
  qobject_cast<QSpinBox*>(panel.field("runs.top_k"))->setValue(7);
  EXPECT_TRUE(panel.validationError().contains(QStringLiteral("run \"u\": top_k"))) << panel.validationError().toStdString();
  qobject_cast<QSpinBox*>(panel.field("runs.top_k"))->setValue(2);
  EXPECT_TRUE(panel.validationError().isEmpty());
  // Save, then parse with the engine's own reader: the same experiment.
  ASSERT_EQ(panel.saveFile(QString::fromStdString((dir / "saved.yaml").string())), QString());
  EXPECT_FALSE(std::filesystem::exists(dir / ".saved.yaml.tmp"));
  Experiment again = loadExperiment(dir / "saved.yaml");
  ASSERT_EQ(again.runs.size(), 2u);
  EXPECT_DOUBLE_EQ(again.runs[1].dareP, 0.45);
  EXPECT_EQ(again.runs[1].mergeOp, "ties");
  EXPECT_DOUBLE_EQ(again.runs[1].alphaMin, 0.1);
  EXPECT_EQ(again.runs[1].minSeed, 8);
  EXPECT_EQ(again.pretrainSteps, 7);
  EXPECT_EQ(again.nproc, 3);
  EXPECT_EQ(again.precision, "bf16");
  EXPECT_EQ(again.seeds, (std::vector<uint64_t>{3, 4}));
  EXPECT_FALSE(again.runs[0].seedSet) << "runs without their own seed are saved without one";
  // Presets: the papers' defaults on the selected run.
  panel.selectRun(0);
  panel.applyPreset(1);
  EXPECT_EQ(panel.experiment().runs[0].method, "drop");
  EXPECT_DOUBLE_EQ(panel.experiment().runs[0].ratio, 0.5);
  EXPECT_EQ(panel.experiment().runs[0].experts, 8);
  EXPECT_EQ(panel.experiment().runs[0].name, "s");
  // A broken file is refused with its name; the form keeps the previous experiment.
  test::writeBytes(dir / "bad.yaml", "name: x\nruns:\n  - {method: drop, ratio: 2}\n");
  const QString err = panel.loadFile(QString::fromStdString((dir / "bad.yaml").string()));
  EXPECT_TRUE(err.contains(QStringLiteral("bad.yaml"))) << err.toStdString();
  EXPECT_EQ(panel.experiment().runs[0].method, "drop");
}

TEST(CheckpointsPanel, TrainerOutputGivesStepsLossCurveAndTheExperimentsChoice) {
  TempDir dir;
  // A Trainer output folder: two checkpoints (copies of a fixture model) with trainer_state.json.
  const auto fx = test::fixtures() / "models/llama_gqa";  // the checkpoints' model
  test::writeTrainerOutput(dir.path(), [](int step) {
    std::string history = "[";
    for (int s = 1; s <= step; ++s) history += (s > 1 ? "," : "") + std::string("{\"step\": ") + std::to_string(s) + ", \"loss\": " + std::to_string(3.0 - 0.25 * s) + "}";
    return history + "]";
  });
  CheckpointsPanel panel;
  ASSERT_EQ(panel.addPath(QString::fromStdString((dir / "sft").string())), QString());
  ASSERT_EQ(panel.model()->rowCount(), 2);
  EXPECT_EQ(panel.model()->entries()[1].step, 8);
  EXPECT_DOUBLE_EQ(panel.model()->entries()[1].loss, 1.0);  // 3 - 0.25 * 8
  ASSERT_EQ(panel.lossHistory().size(), 8u);
  QCustomPlot* p = panel.lossFrame()->plot();
  ASSERT_EQ(p->graphCount(), 3);  // the curve, checked markers, unchecked markers
  EXPECT_EQ(p->graph(0)->dataCount(), 8);
  ASSERT_EQ(p->graph(1)->dataCount(), 2) << "one marker per checked checkpoint";
  EXPECT_DOUBLE_EQ(p->graph(1)->data()->at(0)->value, 2.0);  // 3 - 0.25 * 4
  EXPECT_EQ(panel.setBase(QString::fromStdString(fx.string())), QString());
  EXPECT_FALSE(panel.setBase(QString::fromStdString((test::fixtures() / "models/mixtral_hub").string())).isEmpty())
      << "an MoE is refused as the dense base";
  panel.setBase(QString::fromStdString(fx.string()));
  // "Use checked as UpIT experts" hands base and checkpoints to the experiment.
  QSignalSpy chosen(&panel, &CheckpointsPanel::checkpointsChosen);
  panel.findChild<QPushButton*>(QStringLiteral("useCheckpoints"))->click();
  ASSERT_EQ(chosen.count(), 1);
  const QStringList cks = chosen.at(0).at(1).toStringList();
  ASSERT_EQ(cks.size(), 2);
  ExperimentPanel exp;
  exp.useCheckpoints(chosen.at(0).at(0).toString(), cks);
  EXPECT_FALSE(exp.experiment().pretrain);
  EXPECT_EQ(exp.experiment().sftCheckpoints.size(), 2u);
  ASSERT_EQ(exp.experiment().runs.back().method, "upit");
  EXPECT_EQ(exp.experiment().runs.back().checkpoints, 2);
  EXPECT_TRUE(exp.validationError().isEmpty()) << exp.validationError().toStdString();
}

TEST(CheckpointsPanel, ShowsTheTokenizerAndChatTemplateOfRealModelFolders) {
  // A Qwen3 model folder as the Hub ships it: weights, tokenizer.json and tokenizer_config.json
  // with a chat template; and the same weights without any tokenizer.
  TempDir dir;
  std::filesystem::create_directories(dir / "qwen3");
  std::filesystem::create_directories(dir / "bare");
  for (const char* f : {"config.json", "model.safetensors"}) {
    std::filesystem::copy_file(test::fixtures() / "models/qwen3_qknorm" / f, dir / "qwen3" / f);
    std::filesystem::copy_file(test::fixtures() / "models/qwen3_qknorm" / f, dir / "bare" / f);
  }
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(test::hfTokenizers() / "qwen3" / f, dir / "qwen3" / f);
  CheckpointsPanel panel;
  const QString qwen = QString::fromStdString((dir / "qwen3").string());
  ASSERT_EQ(panel.setBase(qwen), QString());
  const QString status = panel.findChild<QLabel*>(QStringLiteral("baseStatus"))->text();
  EXPECT_TRUE(status.contains(QStringLiteral("tokenizer.json (BPE), 151,669 tokens; chat template"))) << status.toStdString();
  ASSERT_EQ(panel.addPath(qwen), QString());
  ASSERT_EQ(panel.addPath(QString::fromStdString((dir / "bare").string())), QString());
  EXPECT_EQ(panel.model()->index(0, CheckpointTableModel::kTokenizer).data().toString(),
            QStringLiteral("tokenizer.json (BPE), 151,669 tokens; chat template"));
  EXPECT_EQ(panel.model()->index(1, CheckpointTableModel::kTokenizer).data().toString(), QStringLiteral("none"));
  // The experiment form says the same about its base folder.
  ExperimentPanel exp;
  exp.useCheckpoints(qwen, {qwen});
  const QString info = exp.findChild<QLabel*>(QStringLiteral("baseInfo"))->text();
  EXPECT_TRUE(info.contains(QStringLiteral("qwen3")) && info.contains(QStringLiteral("chat template"))) << info.toStdString();
}

TEST(PlotFrame, ExportsPngPdfAndCsvAtomically) {
  TempDir dir;
  PlotFrame frame(QStringLiteral("Test plot"));
  frame.resize(400, 300);
  QCPGraph* g = frame.plot()->addGraph();
  g->setData({1, 2, 3}, {3, 1, 2});
  frame.setCsvSource([] { return CsvTable{{"x", "y"}, {"1", "3"}, {"2", "1,5"}}; });
  const QString png = QString::fromStdString((dir / "p.png").string());
  const QString pdf = QString::fromStdString((dir / "p.pdf").string());
  const QString csv = QString::fromStdString((dir / "p.csv").string());
  ASSERT_TRUE(frame.exportPng(png));
  ASSERT_TRUE(frame.exportPdf(pdf));
  ASSERT_TRUE(frame.exportCsv(csv));
  EXPECT_EQ(test::readBytes(dir / "p.png").substr(1, 3), "PNG");
  EXPECT_EQ(test::readBytes(dir / "p.pdf").substr(0, 5), "%PDF-");
  EXPECT_EQ(test::readBytes(dir / "p.csv"), "x,y\n1,3\n2,\"1,5\"\n");
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().extension() == ".tmp", false) << e.path();
  // An unwritable target fails cleanly and leaves the old file alone.
  QString error;
  EXPECT_FALSE(frame.exportCsv(QString::fromStdString((dir / "no/such/dir/p.csv").string()), &error));
  EXPECT_TRUE(error.contains(QStringLiteral("p.csv")));
}
