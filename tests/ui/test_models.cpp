// Every table model under QAbstractItemModelTester, and the Compare view's diff logic.
#include <gtest/gtest.h>

#include <QAbstractItemModelTester>
#include <QSortFilterProxyModel>
#include <cmath>

#include "stage_model.h"
#include "table_models.h"
#include "ui_test_util.h"

using namespace upcycle;
using namespace upcycle::ui;
using upcycle::test::TempDir;

namespace {
void tester(QAbstractItemModel* m) {
  new QAbstractItemModelTester(m, QAbstractItemModelTester::FailureReportingMode::Fatal, m);
}
}  // namespace

TEST(Models, RunsTableSortsNumericallyAndFilters) {
  TempDir dir;
  RunStore store(dir / "runs.db");
  test::fillHandStore(store);
  RunsTableModel model;
  tester(&model);
  QSortFilterProxyModel proxy;
  proxy.setSourceModel(&model);
  proxy.setSortRole(kSortRole);
  proxy.setFilterKeyColumn(-1);
  proxy.setFilterCaseSensitivity(Qt::CaseInsensitive);
  tester(&proxy);
  std::vector<RunsTableModel::Entry> entries;
  for (const RunRow& r : store.listRuns()) entries.push_back({r, keyParams(store.run(r.id).params)});
  model.setEntries(entries);
  ASSERT_EQ(model.rowCount(), 3);
  EXPECT_EQ(model.index(0, RunsTableModel::kAccuracy).data().toString(), QStringLiteral("40.0%"));
  EXPECT_EQ(model.index(1, RunsTableModel::kParams).data().toString(), QStringLiteral("E2 k1 r=0.5"));
  EXPECT_EQ(model.index(2, RunsTableModel::kParams).data().toString(), QStringLiteral("E5 k2 M=2 p=0.3 linear"));
  EXPECT_EQ(model.index(2, RunsTableModel::kAccuracy).data().toString(), QStringLiteral("-"));
  // Accuracy descending: beta (55%), alpha (40%), gamma (none, sorted as -1).
  proxy.sort(RunsTableModel::kAccuracy, Qt::DescendingOrder);
  EXPECT_EQ(proxy.index(0, RunsTableModel::kName).data().toString(), QStringLiteral("beta"));
  EXPECT_EQ(proxy.index(1, RunsTableModel::kName).data().toString(), QStringLiteral("alpha"));
  EXPECT_EQ(proxy.index(2, RunsTableModel::kName).data().toString(), QStringLiteral("gamma"));
  proxy.setFilterFixedString(QStringLiteral("DROP"));
  ASSERT_EQ(proxy.rowCount(), 1);
  EXPECT_EQ(proxy.index(0, RunsTableModel::kName).data().toString(), QStringLiteral("beta"));
}

TEST(Models, ParamDiffMarksAndHidesByToggle) {
  RunDetail a, b;
  a.run.id = 1;
  a.run.name = "a";
  b.run.id = 2;
  b.run.name = "b";
  a.params = {{"post.lr", "0.001"}, {"run.method", "sparse"}, {"seed", "0"}};
  b.params = {{"post.lr", "0.001"}, {"run.method", "drop"}, {"run.ratio", "0.5"}, {"seed", "0"}};
  ParamDiffModel m;
  tester(&m);
  m.setRuns({a, b});
  ASSERT_EQ(m.rowCount(), 4);
  ASSERT_EQ(m.columnCount(), 3);
  EXPECT_EQ(m.headerData(1, Qt::Horizontal, Qt::DisplayRole).toString(), QStringLiteral("#1 a"));
  EXPECT_EQ(m.index(0, 0).data().toString(), QStringLiteral("post.lr"));
  EXPECT_FALSE(m.index(0, 0).data(Qt::FontRole).isValid()) << "equal rows are not bold";
  EXPECT_TRUE(m.index(1, 0).data(Qt::FontRole).value<QFont>().bold());
  EXPECT_EQ(m.index(2, 1).data().toString(), QStringLiteral("-"));  // a has no ratio
  m.setDiffOnly(true);
  ASSERT_EQ(m.rowCount(), 2);
  EXPECT_EQ(m.index(0, 0).data().toString(), QStringLiteral("run.method"));
  EXPECT_EQ(m.index(1, 0).data().toString(), QStringLiteral("run.ratio"));
  EXPECT_EQ(m.index(0, 2).data().toString(), QStringLiteral("drop"));
  m.setDiffOnly(false);
  EXPECT_EQ(m.rowCount(), 4);
}

TEST(Models, MetricsCompareBoldsTheBestValue) {
  TempDir dir;
  RunStore store(dir / "runs.db");
  auto h = test::fillHandStore(store);
  MetricsCompareModel m;
  tester(&m);
  m.setRuns({store.run(h.a), store.run(h.b)});
  int overall = -1, loss = -1;
  for (int r = 0; r < m.rowCount(); ++r) {
    if (m.index(r, 0).data().toString() == QStringLiteral("eval accuracy: overall")) overall = r;
    if (m.index(r, 0).data().toString() == QStringLiteral("eval loss: math")) loss = r;
  }
  ASSERT_EQ(overall, 0) << "the overall evaluation comes first";
  ASSERT_GE(loss, 0);
  EXPECT_EQ(m.index(overall, 1).data().toString(), QStringLiteral("40.0%"));
  EXPECT_EQ(m.index(overall, 2).data().toString(), QStringLiteral("55.0%"));
  EXPECT_TRUE(m.index(overall, 2).data(Qt::FontRole).value<QFont>().bold()) << "higher accuracy is better";
  EXPECT_FALSE(m.index(overall, 1).data(Qt::FontRole).isValid());
  EXPECT_TRUE(m.index(loss, 2).data(Qt::FontRole).value<QFont>().bold()) << "lower loss (1.0 < 1.2) is better";
  // Each run's own post-training stage ("post:alpha", "post:beta") shares one row.
  int post = -1;
  for (int r = 0; r < m.rowCount(); ++r)
    if (m.index(r, 0).data().toString() == QStringLiteral("post-training/loss")) post = r;
  ASSERT_GE(post, 0);
  // One precision per row: four significant digits of the row's largest value (2.25).
  EXPECT_EQ(m.index(post, 1).data().toString(), QStringLiteral("2.250"));
  EXPECT_EQ(m.index(post, 2).data().toString(), QStringLiteral("2.000"));
}

TEST(Models, LineageRowsAsStored) {
  TempDir dir;
  RunStore store(dir / "runs.db");
  auto h = test::fillHandStore(store);
  LineageModel m;
  tester(&m);
  m.setLineage(store.run(h.upit).lineage);
  ASSERT_EQ(m.rowCount(), 3);
  EXPECT_EQ(m.index(2, LineageModel::kChild).data().toLongLong(), 4);
  EXPECT_EQ(m.index(2, LineageModel::kParentA).data().toLongLong(), 2);
  EXPECT_EQ(m.index(0, LineageModel::kAlpha).data().toString(), QStringLiteral("0.250"));
  EXPECT_EQ(m.index(1, LineageModel::kMaskSeed).data().toString(), QStringLiteral("12"));
}

TEST(Models, CheckpointsValidateAndFlagMismatches) {
  CheckpointTableModel m;
  tester(&m);
  const auto fx = test::fixtures() / "models";
  TempDir dir;
  std::filesystem::create_directories(dir / "broken");
  test::writeBytes(dir / "broken/config.json", "{not json");
  m.addFolders({QString::fromStdString((fx / "llama_gqa").string()), QString::fromStdString((fx / "mistral_window").string()),
                QString::fromStdString((dir / "broken").string()), QString::fromStdString((fx / "llama_gqa").string())},
               {10, 20, 30, 5}, {2.0, 1.5, 1.0, 2.5});
  ASSERT_EQ(m.rowCount(), 4);
  const auto& e = m.entries();
  EXPECT_TRUE(e[0].valid);
  EXPECT_FALSE(e[0].mismatch);
  EXPECT_TRUE(e[1].mismatch) << "mistral_window's architecture differs from llama_gqa's";
  EXPECT_TRUE(m.index(1, CheckpointTableModel::kStatus).data().toString().contains(QStringLiteral("architecture differs")));
  EXPECT_FALSE(e[2].valid);
  EXPECT_TRUE(m.index(2, CheckpointTableModel::kStatus).data().toString().contains(QStringLiteral("config.json")))
      << m.index(2, CheckpointTableModel::kStatus).data().toString().toStdString();
  EXPECT_FALSE(m.flags(m.index(2, 0)) & Qt::ItemIsUserCheckable);
  // Chosen: valid, matching, checked; in step order (5 before 10).
  auto chosen = m.chosen();
  ASSERT_EQ(chosen.size(), 2u);
  EXPECT_EQ(m.entries()[3].step, 5);
  EXPECT_TRUE(m.setData(m.index(0, 0), Qt::Unchecked, Qt::CheckStateRole));
  EXPECT_EQ(m.chosen().size(), 1u);
  EXPECT_FALSE(m.setData(m.index(1, 0), Qt::Checked, Qt::CheckStateRole)) << "a mismatched checkpoint cannot be chosen";
  EXPECT_EQ(m.index(0, CheckpointTableModel::kSize).data().toString().isEmpty(), false);
}

TEST(Models, StageModelFollowsStagesStepsAndFinish) {
  Experiment e;
  e.pretrain = true;
  RunSpec s;
  s.name = "sparse";
  s.method = "sparse";
  RunSpec u;
  u.name = "up";
  u.method = "upit";
  e.runs = {s, u};
  StageModel m;
  tester(&m);
  m.plan(e);
  // data, pretrain, sft, post:sparse, router-preopt:up, post:up
  ASSERT_EQ(m.rowCount(), 6);
  EXPECT_EQ(m.rows()[4].key, QStringLiteral("router-preopt:up"));
  m.onStage("data", "written");
  EXPECT_EQ(m.rows()[0].status, StageModel::Status::Done);
  m.onStage("pretrain", "tiny");
  StepMetrics st;
  st.stage = "pretrain";
  st.step = 5;
  st.totalSteps = 20;
  m.onSteps({st});
  EXPECT_EQ(m.index(1, StageModel::kProgress).data().toString(), QStringLiteral("5 / 20"));
  EXPECT_DOUBLE_EQ(m.index(1, StageModel::kProgress).data(StageModel::kFractionRole).toDouble(), 0.25);
  st.stage = "sft";
  st.step = 1;
  m.onSteps({st});
  EXPECT_EQ(m.rows()[1].status, StageModel::Status::Done) << "a later stage's step completes the earlier ones";
  m.onStage("run", "up (upit)");
  st.stage = "router-preopt";
  m.onSteps({st});
  EXPECT_EQ(m.rows()[4].status, StageModel::Status::Running) << "router-preopt belongs to the run in progress";
  EXPECT_EQ(m.rows()[3].status, StageModel::Status::Done);
  m.finish(true, true);
  EXPECT_EQ(m.rows()[4].status, StageModel::Status::Cancelled);
  EXPECT_EQ(m.rows()[5].status, StageModel::Status::Pending);
  EXPECT_EQ(formatDuration(3725), QStringLiteral("1:02:05"));
  EXPECT_EQ(formatDuration(65), QStringLiteral("1:05"));
}
