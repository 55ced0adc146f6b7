// `upcycle runs check` and salvage (issue 19 item 6): a store written here with known rows is damaged
// deterministically (pages overwritten with seeded garbage; page 1 overwritten, as in the workspace
// found unreadable), and the salvage must bring back every row that was not on a damaged page, with
// its exact values. Which rows sat on a damaged page is decided from the original file's bytes: each
// row carries a unique marker text, looked for in the damaged pages' original table-leaf content.
#include <sqlite3.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <random>
#include <set>

#include "store/run_store.h"
#include "store/store_check.h"
#include "test_util.h"

using namespace upcycle;
using upcycle::test::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr int kRuns = 30, kMetrics = 60, kLogs = 2, kBlobValues = 700;  // a blob of 5600 bytes overflows a page

std::string fmt(const char* f, int a, int b = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}
double blobValue(int run, int i) { return run * 1e4 + i + 0.5; }

// Writes the store; run r (1-based ids) has name run-RRR, param p = PRRR, metrics kRRR_III = r * 1000 + i,
// logs log-RRR-J, and every third run a blob.
void writeStore(const fs::path& db) {
  RunStore s(db);
  for (int r = 1; r <= kRuns; ++r) {
    const int64_t id = s.beginRun(fmt("run-%03d", r), "check", "sparse", static_cast<uint64_t>(r), "cpu", {{"p", fmt("P%03d", r)}});
    EXPECT_EQ(id, r);
    std::vector<MetricPoint> pts;
    for (int i = 0; i < kMetrics; ++i) pts.push_back({"post", fmt("k%03d_%03d", r, i), i, r * 1000.0 + i});
    s.addMetrics(id, pts);
    for (int j = 0; j < kLogs; ++j) s.addLog(id, fmt("log-%03d-%d", r, j));
    if (r % 3 == 0) {
      std::vector<double> v(kBlobValues);
      for (int i = 0; i < kBlobValues; ++i) v[static_cast<size_t>(i)] = blobValue(r, i);
      s.addBlobs(id, {{"weight_similarity", 0, "", 1, kBlobValues, v}});
    }
    s.finishRun(id, "finished");
  }
}

struct Query {
  sqlite3* db = nullptr;
  explicit Query(const fs::path& p) { EXPECT_EQ(sqlite3_open_v2(p.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK); }
  ~Query() { sqlite3_close(db); }
  std::map<std::string, std::string> map(const std::string& sql) const {  // first column -> second
    std::map<std::string, std::string> out;
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    while (sqlite3_step(s) == SQLITE_ROW) {
      auto col = [&](int i) {
        const auto* t = sqlite3_column_text(s, i);
        return std::string(t ? reinterpret_cast<const char*>(t) : "");
      };
      out[col(0)] = col(1);
    }
    sqlite3_finalize(s);
    return out;
  }
};

struct Damage {
  std::string original;     // the healthy file
  std::set<size_t> pages;   // 1-based pages overwritten
  bool onDamagedLeaf(const std::string& marker) const {
    for (size_t p : pages) {
      const std::string page = original.substr((p - 1) * 4096, 4096);
      if (static_cast<uint8_t>(page[p == 1 ? 100 : 0]) == 0x0d && page.find(marker) != std::string::npos) return true;
    }
    return false;
  }
  bool blobOnDamagedPage(int run) const {  // a blob spans a leaf and overflow pages: any 8-byte value found
    for (size_t p : pages) {
      const std::string page = original.substr((p - 1) * 4096, 4096);
      for (int i = 0; i < kBlobValues; ++i) {
        const double v = blobValue(run, i);
        if (page.find(std::string(reinterpret_cast<const char*>(&v), 8)) != std::string::npos) return true;
      }
    }
    return false;
  }
};

Damage damage(const fs::path& healthy, const fs::path& damaged, const std::set<size_t>& pages, uint64_t seed) {
  Damage d{test::readBytes(healthy), pages};
  std::string bytes = d.original;
  std::mt19937_64 rng(seed);
  for (size_t p : pages)
    for (size_t i = 0; i < 4096; ++i) bytes[(p - 1) * 4096 + i] = static_cast<char>(rng() & 0xff);
  test::writeBytes(damaged, bytes);
  return d;
}

// Compares the salvaged store with what writeStore wrote: every row off the damaged pages is there
// with its values, none has a wrong value. Returns the rows that were expected.
int64_t expectSalvaged(const fs::path& out, const Damage& d) {
  Query q(out);
  const auto runs = q.map("SELECT id, name FROM runs");
  const auto params = q.map("SELECT run, value FROM params WHERE key = 'p'");
  const auto metrics = q.map("SELECT key, value FROM metrics");
  const auto logs = q.map("SELECT message, run FROM logs");
  const auto blobs = q.map("SELECT run, length(data) FROM analysis");
  int64_t expected = 0;
  for (int r = 1; r <= kRuns; ++r) {
    const std::string id = std::to_string(r);
    if (!d.onDamagedLeaf(fmt("run-%03d", r))) {
      ++expected;
      EXPECT_EQ(runs.count(id) ? runs.at(id) : "(missing)", fmt("run-%03d", r)) << "run " << r;
    } else if (runs.count(id)) {
      EXPECT_EQ(runs.at(id), "salvaged run " + id) << "a lost run row comes back only as a placeholder";
    }
    if (!d.onDamagedLeaf(fmt("P%03d", r))) {
      ++expected;
      EXPECT_EQ(params.count(id) ? params.at(id) : "(missing)", fmt("P%03d", r));
    }
    for (int i = 0; i < kMetrics; ++i) {
      const std::string key = fmt("k%03d_%03d", r, i);
      auto it = metrics.find(key);
      if (it != metrics.end()) {
        EXPECT_DOUBLE_EQ(std::stod(it->second), r * 1000.0 + i) << key;
      }
      if (d.onDamagedLeaf(key)) continue;
      ++expected;
      EXPECT_NE(it, metrics.end()) << "metric " << key << " was on an undamaged page and is lost";
    }
    for (int j = 0; j < kLogs; ++j) {
      const std::string msg = fmt("log-%03d-%d", r, j);
      auto it = logs.find(msg);
      if (it != logs.end()) {
        EXPECT_EQ(it->second, id);
      }
      if (d.onDamagedLeaf(msg)) continue;
      ++expected;
      EXPECT_NE(it, logs.end()) << msg;
    }
    if (r % 3 == 0 && !d.blobOnDamagedPage(r)) {
      ++expected;
      EXPECT_EQ(blobs.count(id) ? blobs.at(id) : "(missing)", std::to_string(kBlobValues * 8)) << "blob of run " << r;
    }
  }
  // Blob contents, value by value, for the blobs that came back.
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(q.db, "SELECT run, data FROM analysis", -1, &s, nullptr);
  while (sqlite3_step(s) == SQLITE_ROW) {
    const int run = sqlite3_column_int(s, 0);
    const auto* v = static_cast<const double*>(sqlite3_column_blob(s, 1));
    if (sqlite3_column_bytes(s, 1) != kBlobValues * 8) {
      ADD_FAILURE() << "blob of run " << run << " has " << sqlite3_column_bytes(s, 1) << " bytes";
      continue;
    }
    int wrong = 0;
    for (int i = 0; i < kBlobValues; ++i) wrong += v[i] != blobValue(run, i);
    EXPECT_EQ(wrong, 0) << "blob of run " << run;
  }
  sqlite3_finalize(s);
  return expected;
}

int runCli(const std::string& args, const fs::path& output) {
  const std::string cmd = std::string(UPCYCLE_CLI) + " " + args + " > " + output.string() + " 2>&1";
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

TEST(StoreCheck, HealthyStoreIsOkAndCounted) {
  TempDir dir;
  writeStore(dir / "runs.db");
  const auto c = checkStore(dir / "runs.db");
  EXPECT_TRUE(c.ok);
  EXPECT_TRUE(c.problems.empty());
  std::map<std::string, int64_t> rows(c.tableRows.begin(), c.tableRows.end());
  EXPECT_EQ(rows["runs"], kRuns);
  EXPECT_EQ(rows["metrics"], kRuns * kMetrics);
  EXPECT_EQ(rows["logs"], kRuns * kLogs);
  EXPECT_EQ(rows["analysis"], kRuns / 3);
  EXPECT_EQ(runCli("runs check --db " + (dir / "runs.db").string(), dir / "out.txt"), 0) << test::readBytes(dir / "out.txt");
  EXPECT_NE(test::readBytes(dir / "out.txt").find(": ok"), std::string::npos);
}

TEST(StoreCheck, SalvageRecoversEveryRowOffTheDamagedPages) {
  TempDir dir;
  writeStore(dir / "runs.db");
  const std::string healthy = test::readBytes(dir / "runs.db");
  ASSERT_EQ(healthy.size() % 4096, 0u);
  const size_t pages = healthy.size() / 4096;
  ASSERT_GT(pages, 40u);
  // Damage: two table leaves holding metrics, one holding runs, and a table-interior page (which
  // hides every leaf below it from SQLite); chosen from the healthy file's page types.
  std::vector<size_t> metricLeaves, runLeaves, interiors;
  for (size_t p = 2; p <= pages; ++p) {
    const std::string page = healthy.substr((p - 1) * 4096, 4096);
    if (page[0] == 0x0d && page.find("k010_") != std::string::npos) metricLeaves.push_back(p);
    if (page[0] == 0x0d && page.find("run-0") != std::string::npos) runLeaves.push_back(p);
    if (page[0] == 0x05) interiors.push_back(p);
  }
  ASSERT_FALSE(metricLeaves.empty());
  ASSERT_FALSE(runLeaves.empty());
  ASSERT_FALSE(interiors.empty());
  std::set<size_t> bad(metricLeaves.begin(), metricLeaves.end());  // metrics and latest_metrics
  bad.insert(runLeaves.front());
  bad.insert(interiors.front());
  for (size_t p = 2; p <= pages; ++p)  // and a leaf of metrics of a later run
    if (healthy[(p - 1) * 4096] == 0x0d && healthy.substr((p - 1) * 4096, 4096).find("k025_") != std::string::npos) {
      bad.insert(p);
      break;
    }
  const Damage d = damage(dir / "runs.db", dir / "damaged.db", bad, 19);
  ASSERT_GE(d.pages.size(), 3u);

  const auto c = checkStore(dir / "damaged.db");
  EXPECT_FALSE(c.ok);
  EXPECT_FALSE(c.problems.empty());
  const auto r = salvageStore(dir / "damaged.db", dir / "salvaged.db");
  EXPECT_TRUE(r.pageScan);
  EXPECT_EQ(r.pageSize, 4096);
  const int64_t expected = expectSalvaged(dir / "salvaged.db", d);
  int64_t lost = 0, total = 0;
  for (const auto& t : r.tables)
    if (t.table == "runs" || t.table == "params" || t.table == "metrics" || t.table == "logs" || t.table == "analysis") total += t.rows;
  lost = kRuns * (2 + kMetrics + kLogs) + kRuns / 3 - expected;
  EXPECT_GT(lost, 0) << "the damage hit no row: the test would prove nothing";
  EXPECT_GE(total, expected);
  const auto after = checkStore(dir / "salvaged.db");
  EXPECT_TRUE(after.ok) << (after.problems.empty() ? "" : after.problems[0]);
  // The damaged file is untouched; no temporary is left beside the salvage.
  EXPECT_EQ(test::readBytes(dir / "damaged.db").size(), healthy.size());
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  // The CLI: exit 3 for damage, the report per table, and a refusal to overwrite.
  EXPECT_EQ(runCli("runs check --db " + (dir / "damaged.db").string() + " --salvage " + (dir / "cli.db").string(), dir / "out.txt"), 3);
  const std::string text = test::readBytes(dir / "out.txt");
  EXPECT_NE(text.find("DAMAGED"), std::string::npos) << text;
  EXPECT_NE(text.find("metrics"), std::string::npos) << text;
  EXPECT_EQ(expectSalvaged(dir / "cli.db", d), expected);
  EXPECT_EQ(runCli("runs check --db " + (dir / "damaged.db").string() + " --salvage " + (dir / "cli.db").string(), dir / "out.txt"), 1);
  EXPECT_NE(test::readBytes(dir / "out.txt").find("already exists"), std::string::npos);
}

TEST(StoreCheck, PageOneOverwrittenIsNotADatabaseYetEveryRowComesBack) {
  TempDir dir;
  writeStore(dir / "runs.db");
  const Damage d = damage(dir / "runs.db", dir / "damaged.db", {1}, 7);
  const auto c = checkStore(dir / "damaged.db");
  EXPECT_FALSE(c.ok);
  ASSERT_FALSE(c.problems.empty());
  EXPECT_NE(c.problems[0].find("not a database"), std::string::npos) << c.problems[0];
  const auto r = salvageStore(dir / "damaged.db", dir / "salvaged.db");
  EXPECT_TRUE(r.pageScan);
  EXPECT_EQ(r.pageSize, 4096) << "detected from the pages, the header being garbage";
  EXPECT_NE(r.sqliteError.find("not a database"), std::string::npos) << r.sqliteError;
  // Page 1 holds only the schema table here, so every row of every table is recovered.
  EXPECT_EQ(expectSalvaged(dir / "salvaged.db", d), kRuns * (2 + kMetrics + kLogs) + kRuns / 3);
  EXPECT_EQ(r.placeholderRuns, 0);
  EXPECT_TRUE(checkStore(dir / "salvaged.db").ok);
  // The salvaged file is a run store the workbench opens as it is.
  RunStore s(dir / "salvaged.db", RunStore::ReadOnly{});
  EXPECT_EQ(s.listRuns().size(), static_cast<size_t>(kRuns));
  EXPECT_EQ(s.metrics(7).size(), static_cast<size_t>(kMetrics));
}

// A store file replaced (renamed over) while a connection is open: SQLite leaves the old store's WAL
// at the path when that connection closes, and the next connection replays it into the new file.
// RunStore empties its WAL before closing a moved file; the new file must read as itself.
TEST(StoreReplaced, ClosingAConnectionToAReplacedFileLeavesTheNewFileAlone) {
  TempDir dir;
  auto fill = [](RunStore& s, const std::string& prefix, int n) {
    for (int i = 0; i < n; ++i) {
      const int64_t id = s.beginRun(prefix + std::to_string(i), "e", "sparse", 1, "cpu", {});
      std::vector<MetricPoint> pts;
      for (int k = 0; k < 200; ++k) pts.push_back({"post", "loss", k, i * 1000.0 + k});
      s.addMetrics(id, pts);
    }
  };
  auto open = std::make_unique<RunStore>(dir / "runs.db");
  fill(*open, "old-", 20);  // stays in the WAL: this connection is open, nothing checkpointed yet
  ASSERT_GT(fs::file_size(dir / "runs.db-wal"), 0u);
  {
    RunStore other(dir / "other.db");
    fill(other, "new-", 3);
  }
  fs::rename(dir / "other.db", dir / "runs.db");
  open.reset();
  const auto c = checkStore(dir / "runs.db");
  EXPECT_TRUE(c.ok) << (c.problems.empty() ? "" : c.problems[0]);
  RunStore s(dir / "runs.db", RunStore::ReadOnly{});
  const auto runs = s.listRuns();
  ASSERT_EQ(runs.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(runs[static_cast<size_t>(i)].name, "new-" + std::to_string(i));
  EXPECT_EQ(s.metrics(3).size(), 200u);
}
