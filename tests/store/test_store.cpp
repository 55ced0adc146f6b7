// The run store: migration from a committed v1 file, interrupted runs, round trips, deletion.
#include <sys/wait.h>
#include <unistd.h>

#include "store/run_compare.h"
#include "store/run_store.h"
#include "test_util.h"

using namespace upcycle;
using upcycle::test::TempDir;

TEST(RunStore, MigratesTheVersionOneFixture) {
  TempDir dir;
  std::filesystem::copy_file(test::fixtures() / "store/v1.db", dir / "runs.db");
  RunStore store(dir / "runs.db");
  EXPECT_EQ(store.schemaVersion(), 2);
  auto runs = store.listRuns();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].name, "sparse");
  EXPECT_EQ(runs[0].experiment, "old-demo");
  EXPECT_EQ(runs[0].tags, "");  // the v2 column, filled with its default
  // latest_metrics was filled from the v1 metrics: the value at the highest step of each key.
  EXPECT_DOUBLE_EQ(runs[0].finalMetrics.at("post/loss"), 1.5);
  EXPECT_DOUBLE_EQ(runs[1].finalMetrics.at("post/loss"), 1.9);
  EXPECT_DOUBLE_EQ(runs[1].finalMetrics.at("eval/accuracy"), 0.41);
  auto d = store.run(2);
  ASSERT_EQ(d.lineage.size(), 1u);
  EXPECT_EQ(d.lineage[0].maskSeed, 123u);
  EXPECT_EQ(d.params.size(), 2u);
  EXPECT_EQ(store.integrityCheck(), "ok");
  // The store as it was before the upgrade is kept beside it, byte-identical in content: a v1 store.
  ASSERT_TRUE(std::filesystem::exists(dir / "runs.db.bak-v1"));
  {
    const std::string cmd = "sqlite3 " + (dir / "runs.db.bak-v1").string() + " 'SELECT version FROM schema_info; SELECT count(*) FROM runs;' > " +
                            (dir / "bak.txt").string();
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    EXPECT_EQ(test::readBytes(dir / "bak.txt"), "1\n2\n");
  }
  // Opening again is a no-op; a new store makes no backup.
  RunStore fresh(dir / "new.db");
  EXPECT_FALSE(std::filesystem::exists(dir / "new.db.bak-v1"));
  RunStore again(dir / "runs.db");
  EXPECT_EQ(again.schemaVersion(), 2);
  EXPECT_EQ(again.listRuns().size(), 2u);
}

TEST(RunStore, RoundTripsEverythingAndDeletesWithCascade) {
  TempDir dir;
  RunStore s(dir / "w/runs.db");
  const int64_t id = s.beginRun("upit", "exp", "upit", 5, "cpu", {{"run.experts", "8"}, {"seed", "5"}});
  s.addMetrics(id, {{"post", "loss", 1, 3.0}, {"post", "loss", 2, 2.5}, {"post", "lr", 2, 1e-3}});
  s.addEval(id, {{"", 1.2, 3.32, 0.5, 100, 40}, {"math", 1.0, 2.7, 0.75, 50, 20}});
  s.addLineage(id, {{4, 0, 1, 0.3, 0.3, 0.9, (uint64_t(1) << 53) - 1, "ties"}});
  s.addBlobs(id, {{"weight_similarity", 1, "", 2, 2, {1.0, 0.25, 0.25, 1.0}}});
  s.addArtifact(id, "model", "/tmp/model");
  s.addLog(id, "hello");
  s.setTags(id, "best");
  s.finishRun(id, "finished");
  auto runs = s.listRuns();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].status, "finished");
  EXPECT_EQ(runs[0].tags, "best");
  EXPECT_DOUBLE_EQ(runs[0].finalMetrics.at("post/loss"), 2.5);
  EXPECT_FALSE(runs[0].finished.empty());
  auto d = s.run(id);
  EXPECT_EQ(d.eval.size(), 2u);
  EXPECT_DOUBLE_EQ(d.eval[1].accuracy, 0.75);
  EXPECT_EQ(d.lineage[0].maskSeed, (uint64_t(1) << 53) - 1);
  EXPECT_EQ(d.logs.size(), 1u);
  auto b = s.blobs(id, "weight_similarity");
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].values, (std::vector<double>{1.0, 0.25, 0.25, 1.0}));
  EXPECT_EQ(s.metrics(id).size(), 3u);
  s.deleteRun(id);
  EXPECT_TRUE(s.listRuns().empty());
  EXPECT_TRUE(s.metrics(id).empty());  // cascaded
  test::expectErrorContaining([&] { s.run(id); }, {"no run 1 in"});
  test::expectErrorContaining([&] { s.deleteRun(99); }, {"no run 99"});
}

TEST(RunStore, RunsOfDeadProcessesAreInterruptedOnOpen) {
  TempDir dir;
  const auto file = dir / "runs.db";
  { RunStore s(file); }
  const pid_t child = ::fork();
  if (child == 0) {  // a process that starts a run and dies without finishing it
    RunStore s(file);
    s.beginRun("doomed", "exp", "sparse", 0, "cpu", {});
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  RunStore s(file);
  EXPECT_EQ(s.interruptedOnOpen(), 1);
  auto runs = s.listRuns();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].status, "interrupted");
  // A run of a live process (this one) stays running.
  const int64_t live = s.beginRun("live", "exp", "sparse", 0, "cpu", {});
  RunStore reader(file);
  EXPECT_EQ(reader.run(live).run.status, "running");
}

TEST(RunStore, AReadOnlyOpenShowsADeadProcesssRunInterruptedWithoutWriting) {
  // A full disk stops a run and also the marking of it (scripts/disk_full.sh found one left
  // "running"); a read-only open cannot write either. Both show what is true: interrupted.
  TempDir dir;
  const auto file = dir / "runs.db";
  { RunStore s(file); }
  const pid_t child = ::fork();
  if (child == 0) {
    RunStore s(file);
    s.beginRun("doomed", "exp", "sparse", 0, "cpu", {});
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  const auto before = test::readBytes(file);
  {
    RunStore reader(file, RunStore::ReadOnly{});
    const auto runs = reader.listRuns();
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].status, "interrupted");
    EXPECT_EQ(reader.run(runs[0].id).run.status, "interrupted");
  }
  EXPECT_EQ(test::readBytes(file), before) << "a read-only open wrote the store";
  // The row itself still says running until a read-write open marks it.
  RunStore s(file);
  EXPECT_EQ(s.interruptedOnOpen(), 1);
}

TEST(RunStore, FlattenYamlGivesSortedKeyPaths) {
  auto f = flattenYaml("b: 1\na: {x: [1, {y: 2}]}\n");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0], (std::pair<std::string, std::string>{"a.x[0]", "1"}));
  EXPECT_EQ(f[1], (std::pair<std::string, std::string>{"a.x[1].y", "2"}));
  EXPECT_EQ(f[2], (std::pair<std::string, std::string>{"b", "1"}));
}

TEST(RunStore, ParamsAloneEqualTheRecordsParams) {
  upcycle::test::TempDir dir;
  RunStore s(dir / "runs.db");
  const int64_t id = s.beginRun("r", "e", "drop", 1, "cpu", {{"run.ratio", "0.5"}, {"a.b", "x"}});
  EXPECT_EQ(s.params(id), (std::vector<std::pair<std::string, std::string>>{{"a.b", "x"}, {"run.ratio", "0.5"}}));
  EXPECT_EQ(s.params(id), s.run(id).params);
  EXPECT_TRUE(s.params(id + 1).empty());
}

TEST(RunCompare, UnionOfKeysWithMissingValuesAndDiffOnly) {
  RunDetail a, b, c;
  a.params = {{"lr", "0.001"}, {"method", "sparse"}, {"seed", "0"}};
  b.params = {{"lr", "0.001"}, {"method", "drop"}, {"ratio", "0.5"}, {"seed", "0"}};
  c.params = {{"lr", "0.001"}, {"method", "drop"}, {"seed", "0"}};
  auto all = compareParams({a, b, c});
  ASSERT_EQ(all.size(), 4u);  // lr, method, ratio, seed: sorted
  EXPECT_EQ(all[0].key, "lr");
  EXPECT_FALSE(all[0].differs);
  EXPECT_EQ(all[1].key, "method");
  EXPECT_TRUE(all[1].differs);
  EXPECT_EQ(all[1].values, (std::vector<std::string>{"sparse", "drop", "drop"}));
  EXPECT_EQ(all[2].key, "ratio");
  EXPECT_EQ(all[2].values, (std::vector<std::string>{"-", "0.5", "-"}));  // a key only one run has differs
  EXPECT_TRUE(all[2].differs);
  auto diff = compareParams({a, b, c}, true);
  ASSERT_EQ(diff.size(), 2u);
  EXPECT_EQ(diff[0].key, "method");
  EXPECT_EQ(diff[1].key, "ratio");
  EXPECT_TRUE(compareParams({a, a}, true).empty());
}

TEST(RunStore, NewerSchemaIsRefusedClearly) {
  TempDir dir;
  { RunStore s(dir / "runs.db"); }
  {
    std::string cmd = "sqlite3 " + (dir / "runs.db").string() + " 'UPDATE schema_info SET version = 9'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  test::expectErrorContaining([&] { RunStore s(dir / "runs.db"); }, {"schema version 9 is newer"});
}

// A version that is not a positive integer is a damaged store, not a newer one.
TEST(RunStore, InvalidSchemaVersionsAreCalledInvalid) {
  for (const std::string v : {"0", "-1", "'two'", "1.5"}) {
    TempDir dir;
    { RunStore s(dir / "runs.db"); }
    const std::string cmd = "sqlite3 " + (dir / "runs.db").string() + " \"UPDATE schema_info SET version = " + v + "\"";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    test::expectErrorContaining([&] { RunStore s(dir / "runs.db"); }, {"schema version", "is not valid"});
    test::expectErrorContaining([&] { RunStore s(dir / "runs.db", RunStore::ReadOnly{}); }, {"is not valid"});
  }
}

// Reading never writes: a missing store is an error (no folder, no file made), and a store in a
// folder nobody may write to (chmod 0555, as a read-only mount; root, as in CI, ignores the mode) is
// still readable.
TEST(RunStore, ReadOnlyOpenCreatesNothingAndReadsAReadOnlyFolder) {
  TempDir dir;
  test::expectErrorContaining([&] { RunStore s(dir / "no" / "such" / "runs.db", RunStore::ReadOnly{}); }, {"no run store at"});
  EXPECT_FALSE(std::filesystem::exists(dir / "no"));
  const auto ro = dir / "ro";
  std::filesystem::create_directories(ro);
  int64_t id = 0;
  {
    RunStore s(ro / "runs.db");
    id = s.beginRun("r", "e", "sparse", 1, "cpu", {{"k", "v"}});
    s.finishRun(id, "finished");
  }
  std::filesystem::permissions(ro, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec |
                                       std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  {
    RunStore s(ro / "runs.db", RunStore::ReadOnly{});
    const auto runs = s.listRuns();
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].name, "r");
    EXPECT_EQ(runs[0].status, "finished");
  }
  std::filesystem::permissions(ro, std::filesystem::perms::owner_all);
}
