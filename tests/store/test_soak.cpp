// The workspace soak test (issue 19 item 6): the workbench's connection pattern (tests/store/
// soak_worker.cpp, role studio) and two CLI-like processes write and read one workspace while this
// test SIGKILLs one of them at random moments (seeded) and starts it again. Afterwards the store must
// pass PRAGMA integrity_check and foreign_key_check, and hold exactly the rows of every transaction a
// writer logged as committed (the one a kill interrupted may or may not be there, whole or not at all).
// UPCYCLE_SOAK_SECONDS (default 12) and UPCYCLE_SOAK_SEED set the length and the schedule;
// scripts/soak.sh runs it for longer. Also: each program maps exactly one SQLite library.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "store/run_store.h"
#include "test_util.h"

using namespace upcycle;
using upcycle::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Worker {
  std::string role;
  uint64_t seed = 0;
  fs::path log, err;
  pid_t pid = -1;
  int64_t generation = 0;
};

void start(Worker& w, const fs::path& db) {
  ++w.generation;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::open(w.err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) ::dup2(fd, 2);
    const std::string seed = std::to_string(w.seed), gen = std::to_string(w.generation);
    ::execl(UPCYCLE_SOAK_WORKER, "soak_worker", db.c_str(), w.log.c_str(), seed.c_str(), gen.c_str(), w.role.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  w.pid = pid;
}

// What the logs say was committed, per run, by its soak.key: run ids are not identities here, since
// SQLite gives the next run the id of a deleted run that had the highest one (INTEGER PRIMARY KEY
// without AUTOINCREMENT). Each writer touches only runs it began, so its lines map ids to keys.
struct Expected {
  int64_t id = 0;                           // the id its writer logged
  int64_t metrics = 0;                      // rows committed
  std::set<int64_t> steps, pendingSteps;    // committed steps; those of an interrupted batch
  int64_t logs = 0, pendingLogs = 0;
  bool finished = false, maybeFinished = false, deleted = false, maybeDeleted = false;
  std::string name, tags;
  std::set<std::string> maybeNames, maybeTags;
};

struct LogModel {
  std::map<std::string, Expected> runs;  // by key
  std::set<std::string> maybeBegun;      // keys whose begin a kill interrupted
  int64_t committed = 0;                 // transactions logged as committed
};

void applyLog(const fs::path& log, LogModel& m) {
  std::ifstream in(log);
  std::map<int64_t, std::string> keyOfId;  // this writer's runs
  std::map<char, std::string> pending;     // thread -> its intent without a done yet
  auto run = [&](std::istringstream& s) -> Expected* {
    int64_t id = 0;
    s >> id;
    auto it = keyOfId.find(id);
    if (it == keyOfId.end()) {
      ADD_FAILURE() << log << ": a write to run " << id << " that this writer did not begin";
      return nullptr;
    }
    return &m.runs[it->second];
  };
  auto settlePending = [&] {  // a generation ended with a kill: these intents may or may not be in
    for (const auto& [t, line] : pending) {
      std::istringstream s(line);
      char th, op;
      s >> th >> op;
      if (op == 'B') {
        std::string key;
        s >> key;
        m.maybeBegun.insert(key);
        continue;
      }
      Expected* e = run(s);
      if (!e) continue;
      if (op == 'M') {
        int64_t first = 0, n = 0;
        s >> first >> n;
        for (int64_t i = 0; i < n; ++i) e->pendingSteps.insert(first + i);
      } else if (op == 'L') {
        e->pendingLogs = 1;
      } else if (op == 'F') {
        e->maybeFinished = true;
      } else if (op == 'D') {
        e->maybeDeleted = true;
      } else if (op == 'R') {
        std::string n;
        s >> n;
        e->maybeNames.insert(n);
      } else if (op == 'T') {
        std::string n;
        s >> n;
        e->maybeTags.insert(n);
      }
    }
    pending.clear();
  };
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a line without its newline: cut by the kill
    if (line.rfind("G ", 0) == 0) {
      settlePending();
      continue;
    }
    if (line.size() < 3) {
      ADD_FAILURE() << log << ": " << line;
      continue;
    }
    const char th = line[0], op = line[2];
    if (std::isupper(static_cast<unsigned char>(op))) {
      if (pending.count(th)) ADD_FAILURE() << log << ": two intents in a row on one thread: " << line;
      pending[th] = line;
      continue;
    }
    if (!pending.count(th)) {
      ADD_FAILURE() << log << ": a done without its intent: " << line;
      continue;
    }
    std::istringstream intent(pending[th]);
    pending.erase(th);
    char ith, iop;
    intent >> ith >> iop;
    if (std::tolower(iop) != op) {
      ADD_FAILURE() << log << ": " << line << " does not finish " << intent.str();
      continue;
    }
    ++m.committed;
    if (op == 'b') {
      std::istringstream done(line.substr(4));
      std::string key;
      int64_t id = 0;
      done >> key >> id;
      keyOfId[id] = key;  // a reused id now means this run
      Expected& e = m.runs[key];
      e.id = id;
      e.name = "soak-" + key;
      continue;
    }
    Expected* e = run(intent);
    if (!e) continue;
    if (op == 'm') {
      int64_t first = 0, n = 0;
      intent >> first >> n;
      e->metrics += n;
      for (int64_t i = 0; i < n; ++i) e->steps.insert(first + i);
    } else if (op == 'l') {
      ++e->logs;
    } else if (op == 'f') {
      e->finished = true;
    } else if (op == 'd') {
      e->deleted = true;
    } else if (op == 'r') {
      intent >> e->name;
    } else if (op == 't') {
      intent >> e->tags;
    }
  }
  settlePending();
}

struct Db {
  sqlite3* db = nullptr;
  explicit Db(const fs::path& p) {
    EXPECT_EQ(sqlite3_open_v2(p.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
  }
  ~Db() { sqlite3_close(db); }
  // Every row of a query, columns joined with '|'.
  std::vector<std::string> rows(const std::string& sql) const {
    std::vector<std::string> out;
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      std::string r;
      for (int c = 0; c < sqlite3_column_count(s); ++c) {
        const auto* t = sqlite3_column_text(s, c);
        r += (c ? "|" : "") + std::string(t ? reinterpret_cast<const char*>(t) : "");
      }
      out.push_back(r);
    }
    EXPECT_EQ(rc, SQLITE_DONE) << sqlite3_errmsg(db) << " in " << sql;
    sqlite3_finalize(s);
    return out;
  }
  int64_t count(const std::string& sql) const { return std::stoll(rows(sql).at(0)); }
};

int64_t envInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoll(v) : fallback;
}

}  // namespace

TEST(WorkspaceSoak, KilledWritersLoseNoCommittedRowAndTheStoreStaysIntact) {
  TempDir dir;
  const fs::path db = dir / "workspace/runs.db";
  fs::create_directories(db.parent_path());
  const int64_t seconds = envInt("UPCYCLE_SOAK_SECONDS", 12);
  const uint64_t seed = static_cast<uint64_t>(envInt("UPCYCLE_SOAK_SEED", 19));
  std::array<Worker, 3> workers;
  for (size_t i = 0; i < workers.size(); ++i) {
    workers[i].role = i == 0 ? "studio" : "cli";
    workers[i].seed = seed * 10 + i + 1;
    workers[i].log = dir / ("worker" + std::to_string(i) + ".log");
    workers[i].err = dir / ("worker" + std::to_string(i) + ".err");
    start(workers[i], db);
  }
  std::mt19937_64 rng(seed);
  int64_t kills = 0, midChecks = 0;
  std::string failure;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (failure.empty() && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 500));
    for (auto& w : workers) {  // a worker that stopped by itself failed
      int st = 0;
      if (::waitpid(w.pid, &st, WNOHANG) == w.pid)
        failure = w.role + " worker exited by itself (status " + std::to_string(st) + "): " + test::readBytes(w.err);
    }
    if (!failure.empty()) break;
    Worker& w = workers[rng() % workers.size()];
    ::kill(w.pid, SIGKILL);
    int st = 0;
    ASSERT_EQ(::waitpid(w.pid, &st, 0), w.pid);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
      failure = w.role + " worker ended before the kill: " + test::readBytes(w.err);
      break;
    }
    ++kills;
    if (kills % 5 == 0 && fs::exists(db)) {  // while the others write: a consistent snapshot
      Db d(db);
      EXPECT_EQ(d.rows("PRAGMA integrity_check"), std::vector<std::string>{"ok"}) << "after " << kills << " kills";
      ++midChecks;
    }
    start(w, db);
  }
  for (auto& w : workers) {
    ::kill(w.pid, SIGKILL);
    ::waitpid(w.pid, nullptr, 0);
  }
  ASSERT_TRUE(failure.empty()) << failure;

  // Every writer is dead: opening the store read-write marks their unfinished runs interrupted.
  { RunStore open(db); }
  LogModel m;
  for (const auto& w : workers) applyLog(w.log, m);
  Db d(db);
  EXPECT_EQ(d.rows("PRAGMA integrity_check"), std::vector<std::string>{"ok"});
  EXPECT_TRUE(d.rows("PRAGMA foreign_key_check").empty());

  std::map<std::string, int64_t> idOf;  // every run in the store, by its soak.key param
  for (const auto& r : d.rows("SELECT r.id, coalesce(p.value, '') FROM runs r LEFT JOIN params p ON p.run = r.id AND p.key = 'soak.key'")) {
    const auto bar = r.find('|');
    EXPECT_TRUE(idOf.emplace(r.substr(bar + 1), std::stoll(r.substr(0, bar))).second) << "two runs with key " << r;
  }
  int64_t verifiedRows = 0, liveRuns = 0;
  for (const auto& [key, e] : m.runs) {
    const auto at = idOf.find(key);
    if (e.deleted) {
      EXPECT_EQ(at, idOf.end()) << "run " << key << " was deleted (committed) but is still there";
      continue;
    }
    if (at == idOf.end()) {
      EXPECT_TRUE(e.maybeDeleted) << "run " << key << " (id " << e.id << ") was committed and is gone";
      continue;
    }
    ++liveRuns;
    const int64_t id = at->second;
    EXPECT_EQ(id, e.id) << key;
    const std::string ids = std::to_string(id);
    // Metrics: exactly the committed steps, plus the interrupted batch whole or not at all.
    std::set<int64_t> steps;
    for (const auto& r : d.rows("SELECT step, value FROM metrics WHERE run = " + ids + " AND stage = 'post' AND key = 'loss'")) {
      const auto bar = r.find('|');
      const int64_t step = std::stoll(r.substr(0, bar));
      EXPECT_DOUBLE_EQ(std::stod(r.substr(bar + 1)), static_cast<double>(id) * 1e6 + static_cast<double>(step)) << "run " << key;
      EXPECT_TRUE(steps.insert(step).second) << "step " << step << " of run " << key << " stored twice";
    }
    std::set<int64_t> withPending = e.steps;
    withPending.insert(e.pendingSteps.begin(), e.pendingSteps.end());
    EXPECT_TRUE(steps == e.steps || (!e.pendingSteps.empty() && steps == withPending))
        << "run " << key << ": " << steps.size() << " metric rows, " << e.metrics << " committed, " << e.pendingSteps.size() << " pending";
    const int64_t logs = d.count("SELECT count(*) FROM logs WHERE run = " + ids);
    EXPECT_TRUE(logs == e.logs || logs == e.logs + e.pendingLogs) << "run " << key << ": " << logs << " logs, " << e.logs << " committed";
    const std::string status = d.rows("SELECT status FROM runs WHERE id = " + ids).at(0);
    if (e.finished) EXPECT_EQ(status, "finished") << "run " << key;
    else if (e.maybeFinished) EXPECT_TRUE(status == "finished" || status == "interrupted") << status;
    else EXPECT_EQ(status, "interrupted") << "run " << key << ": its writer was killed";
    const std::string name = d.rows("SELECT name FROM runs WHERE id = " + ids).at(0);
    EXPECT_TRUE(name == e.name || e.maybeNames.count(name)) << "run " << key << " is named " << name << ", logged " << e.name;
    const std::string tags = d.rows("SELECT tags FROM runs WHERE id = " + ids).at(0);
    EXPECT_TRUE(tags == e.tags || e.maybeTags.count(tags)) << "run " << key << " tags " << tags;
    verifiedRows += static_cast<int64_t>(steps.size()) + logs + 1 + d.count("SELECT count(*) FROM params WHERE run = " + ids);
  }
  // Runs nobody logged as begun: only a begin a kill interrupted, with nothing written after it.
  for (const auto& [key, id] : idOf) {
    if (m.runs.count(key)) continue;
    EXPECT_TRUE(m.maybeBegun.count(key)) << "run " << id << " (" << key << ") is in the store but no writer began it";
    EXPECT_EQ(d.count("SELECT count(*) FROM metrics WHERE run = " + std::to_string(id)), 0);
  }
  EXPECT_GE(kills, seconds);  // at least one kill a second on average: the test did kill
  EXPECT_GT(liveRuns, 0);
  std::printf("soak: %lld s, %lld kills, %lld integrity checks while writing, %lld committed transactions logged, "
              "%lld runs and %lld rows verified, %lld runs in the store\n",
              static_cast<long long>(seconds), static_cast<long long>(kills), static_cast<long long>(midChecks),
              static_cast<long long>(m.committed), static_cast<long long>(liveRuns), static_cast<long long>(verifiedRows),
              static_cast<long long>(idOf.size()));
}

// Two copies of SQLite in one process each keep their own POSIX locks, and one copy's close() drops
// the other's (the SQLite docs' "how to corrupt" 2.2.1): the programs must map exactly one. A copy
// carries the header string "SQLite format 3" and SQLite's own error texts whatever its symbol
// visibility, so every library a program links (ldd; 288 for the CLI, LibTorch pulls GDAL in) is
// searched for both. Either alone has false positives: GDAL detects SQLite files by the header
// string (and links libsqlite3), libgpg-error carries SQLite's error texts, and our salvage code
// checks the header string.
namespace {
std::vector<std::string> librariesWithSqlite(const std::string& program) {
  TempDir dir;
  const std::string cmd = "ldd " + program + " > " + (dir / "ldd.txt").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::vector<std::string> found;
  std::istringstream in(test::readBytes(dir / "ldd.txt"));
  std::vector<std::string> files{program};
  for (std::string line; std::getline(in, line);) {
    const auto arrow = line.find("=> /");
    if (arrow != std::string::npos) files.push_back(line.substr(arrow + 3, line.find(" (", arrow) - arrow - 3));
  }
  EXPECT_GT(files.size(), 3u) << "ldd listed no libraries for " << program;
  static const char kMagic[] = "SQLite format 3", kError[] = "database disk image is malformed";
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) continue;
    struct stat st {};
    ::fstat(fd, &st);
    void* p = st.st_size ? ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    ::close(fd);
    if (p == MAP_FAILED) continue;
    if (::memmem(p, static_cast<size_t>(st.st_size), kMagic, sizeof kMagic - 1) &&
        ::memmem(p, static_cast<size_t>(st.st_size), kError, sizeof kError - 1))
      found.push_back(f);
    ::munmap(p, static_cast<size_t>(st.st_size));
  }
  return found;
}
}  // namespace

TEST(WorkspaceSoak, EachProgramLinksExactlyOneSqlite) {
  for (const std::string& program : {std::string(UPCYCLE_CLI), std::string(UPCYCLE_STUDIO), std::string(UPCYCLE_SOAK_WORKER)}) {
    if (program.empty()) continue;  // no GUI in this build
    const auto libs = librariesWithSqlite(program);
    ASSERT_EQ(libs.size(), 1u) << program << " carries " << libs.size() << " copies of SQLite";
    EXPECT_NE(fs::path(libs[0]).filename().string().find("libsqlite3"), std::string::npos) << libs[0];
  }
  // And this process, as it runs (what dlopen added included).
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> mapped;
  for (std::string line; std::getline(maps, line);)
    if (line.find("libsqlite3") != std::string::npos) mapped.insert(line.substr(line.find('/')));
  EXPECT_EQ(mapped.size(), 1u);
}
