// The panels show what the store holds: heatmap cells, diversity points, routing bars, lineage tree
// and compare curves are checked against values this test wrote by hand (and hand arithmetic).
#include <gtest/gtest.h>

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFile>
#include <QLabel>
#include <QSpinBox>
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
  // 5 nodes, 6 edges, and labels: the scene is not empty and spans three rows.
  int ellipses = 0, lines = 0;
  for (auto* item : panel.scene()->items()) {
    ellipses += item->type() == QGraphicsEllipseItem::Type;
    lines += item->type() == QGraphicsLineItem::Type;
  }
  EXPECT_EQ(ellipses, 5);
  EXPECT_EQ(lines, 6);
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
  const auto fx = test::fixtures() / "models/llama_gqa";
  for (int step : {4, 8}) {
    const auto ck = dir / ("sft/checkpoint-" + std::to_string(step));
    std::filesystem::create_directories(ck);
    for (const char* file : {"config.json", "model.safetensors"}) std::filesystem::copy_file(fx / file, ck / file);
    std::string history = "[";
    for (int s = 1; s <= step; ++s) history += (s > 1 ? "," : "") + std::string("{\"step\": ") + std::to_string(s) + ", \"loss\": " + std::to_string(3.0 - 0.25 * s) + "}";
    test::writeBytes(ck / "trainer_state.json", "{\"global_step\": " + std::to_string(step) + ", \"log_history\": " + history + "]}");
  }
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
