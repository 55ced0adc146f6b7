// A writer of the workspace soak test (tests/store/test_soak.cpp), killed with SIGKILL at random
// moments by the test and started again. It uses the RunStore API exactly as its role's program does:
//   cli     one connection per command, as `upcycle run` / `upcycle runs ...` open and close the store
//           (reading verbs read-only);
//   studio  the workbench's pattern: an engine thread with its own long-lived connection that records
//           runs and metrics, and a GUI thread with another that lists, shows, renames, tags and deletes.
// Before each write it appends an intent line to its log, after the commit a done line (one write(2)
// each, O_APPEND), so the checker knows every committed transaction and the one a kill interrupted.
// Lines: "<thread> B key" / "b key id" (begin), "M id first n" / "m id" (n metrics), "L id" / "l id"
// (a log line), "F id" / "f id" (finished), "R id name" / "r id" (rename), "T id tags" / "t id",
// "D id" / "d id" (delete). A metric's value is id * 1e6 + step, so the checker can verify each row.
// It also checks, after every command, that the process holds no descriptor of a deleted workspace
// file (what a process whose POSIX locks were lost ends up holding, as in ../shared/evidence) and
// that one SQLite library is mapped. Any failure exits non-zero with a line on stderr.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "store/run_store.h"

using upcycle::RunStore;
namespace fs = std::filesystem;

namespace {

int g_log = -1;
std::string g_db;

void logLine(const std::string& line) {
  const std::string l = line + "\n";
  if (::write(g_log, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
    std::perror("soak_worker: log write");
    std::_Exit(4);
  }
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "soak_worker %d: %s\n", ::getpid(), what.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

// Descriptors of the database, its -wal or -shm that point at a deleted file, and the count of
// distinct SQLite libraries mapped (by file name), read from /proc/self.
void checkProcess() {
  const std::string base = fs::path(g_db).filename().string();
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = fs::read_symlink(e.path(), ec).string();
    if (ec) continue;
    if (target.find(base) != std::string::npos && target.find("(deleted)") != std::string::npos)
      fail("holds a descriptor of a deleted workspace file: " + target);
  }
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string file = line.substr(slash);
    if (fs::path(file).filename().string().find("sqlite") != std::string::npos) libs.insert(file);
  }
  if (libs.size() != 1) fail("expected one SQLite library mapped, found " + std::to_string(libs.size()));
}

struct Runs {
  std::mutex m;
  std::vector<int64_t> finished;  // this process's finished runs: the ones its GUI thread may change
};

// One recorded run: begin, a few metric batches and log lines, finish (or a kill on the way).
void recordRun(RunStore& s, std::mt19937_64& rng, const std::string& who, int64_t gen, int64_t& serial, Runs& runs,
               bool reopenEachWrite) {
  const std::string key = who + "-g" + std::to_string(gen) + "-" + std::to_string(serial++);
  logLine(who[0] + std::string(" B ") + key);
  const int64_t id = s.beginRun("soak-" + key, "soak", "sparse", rng() % 1000, "cpu",
                                {{"soak.key", key}, {"run.experts", std::to_string(2 + rng() % 6)}, {"seed", "1"}});
  logLine(who[0] + std::string(" b ") + key + " " + std::to_string(id));
  const int batches = 1 + static_cast<int>(rng() % 6);
  int64_t step = 0;
  std::unique_ptr<RunStore> own;
  for (int b = 0; b < batches; ++b) {
    RunStore* w = &s;
    if (reopenEachWrite) {  // the CLI's `upcycle run` keeps one connection; a flaky one reopens
      own = std::make_unique<RunStore>(g_db);
      w = own.get();
    }
    const int n = 1 + static_cast<int>(rng() % 40);
    std::vector<upcycle::MetricPoint> pts;
    for (int i = 0; i < n; ++i) pts.push_back({"post", "loss", step + i, static_cast<double>(id) * 1e6 + static_cast<double>(step + i)});
    logLine(who[0] + std::string(" M ") + std::to_string(id) + " " + std::to_string(step) + " " + std::to_string(n));
    w->addMetrics(id, pts);
    logLine(who[0] + std::string(" m ") + std::to_string(id));
    step += n;
    if (rng() % 3 == 0) {
      logLine(who[0] + std::string(" L ") + std::to_string(id));
      w->addLog(id, "step " + std::to_string(step));
      logLine(who[0] + std::string(" l ") + std::to_string(id));
    }
  }
  logLine(who[0] + std::string(" F ") + std::to_string(id));
  s.finishRun(id, "finished");
  logLine(who[0] + std::string(" f ") + std::to_string(id));
  std::lock_guard<std::mutex> g(runs.m);
  runs.finished.push_back(id);
}

// Reads (list, show) and changes (rename, tag, delete) of this process's finished runs.
void browse(RunStore& s, std::mt19937_64& rng, char who, Runs& runs, bool mayWrite) {
  const auto all = s.listRuns();
  if (!all.empty()) {
    const auto& r = all[rng() % all.size()];
    try {
      auto d = s.run(r.id);
      s.metrics(r.id);
      if (d.run.id != r.id) fail("run " + std::to_string(r.id) + " read back as " + std::to_string(d.run.id));
    } catch (const upcycle::UserError& e) {
      // Deleted by another process between the list and the show: the CLI says "no run N".
      if (std::string(e.what()).find("no run ") == std::string::npos) throw;
    }
  }
  if (!mayWrite) return;
  int64_t id = 0;
  {
    std::lock_guard<std::mutex> g(runs.m);
    if (runs.finished.empty()) return;
    const size_t i = rng() % runs.finished.size();
    id = runs.finished[i];
    if (rng() % 4 == 0) {  // delete
      runs.finished.erase(runs.finished.begin() + static_cast<std::ptrdiff_t>(i));
      logLine(who + std::string(" D ") + std::to_string(id));
      s.deleteRun(id);
      logLine(who + std::string(" d ") + std::to_string(id));
      return;
    }
  }
  const std::string text = "n" + std::to_string(rng() % 100000);
  if (rng() % 2) {
    logLine(who + std::string(" R ") + std::to_string(id) + " " + text);
    s.setName(id, text);
    logLine(who + std::string(" r ") + std::to_string(id));
  } else {
    logLine(who + std::string(" T ") + std::to_string(id) + " " + text);
    s.setTags(id, text);
    logLine(who + std::string(" t ") + std::to_string(id));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: soak_worker DB LOG SEED GENERATION cli|studio\n");
    return 2;
  }
  g_db = argv[1];
  g_log = ::open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (g_log < 0) fail(std::string("cannot open log ") + argv[2]);
  const uint64_t seed = std::stoull(argv[3]);
  const int64_t gen = std::stoll(argv[4]);
  const std::string role = argv[5];
  const std::string who = role + std::to_string(seed % 1000);
  logLine("G " + std::to_string(gen));
  Runs runs;
  try {
    if (role == "cli") {
      std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(gen));
      int64_t serial = 0;
      for (;;) {
        const unsigned what = rng() % 10;
        if (what < 4) {  // upcycle run
          RunStore s(g_db);
          recordRun(s, rng, who, gen, serial, runs, rng() % 4 == 0);
        } else if (what < 8) {  // upcycle runs list / show
          RunStore s(g_db, RunStore::ReadOnly{});
          browse(s, rng, 'c', runs, false);
        } else {  // upcycle runs rename / tag / delete
          RunStore s(g_db);
          browse(s, rng, 'c', runs, true);
        }
        checkProcess();
      }
    }
    if (role == "studio") {
      std::atomic<bool> stop{false};
      std::string engineError;
      std::thread engine([&] {  // EngineWorker: its own connection per experiment, a few runs each
        try {
          std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(gen) + 17);
          int64_t serial = 0;
          while (!stop) {
            RunStore s(g_db);
            const int n = 1 + static_cast<int>(rng() % 3);
            for (int i = 0; i < n && !stop; ++i) recordRun(s, rng, "e" + who, gen, serial, runs, false);
          }
        } catch (const std::exception& e) {
          engineError = e.what();
          stop = true;
        }
      });
      {  // Workspace: one read-write connection for the window's life; reloads and the Runs panel
        RunStore ws(g_db);
        std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(gen) + 29);
        while (!stop) {
          browse(ws, rng, 'g', runs, true);
          if (rng() % 8 == 0) {  // `runs list` from the same process (a read-only second connection)
            RunStore ro(g_db, RunStore::ReadOnly{});
            ro.listRuns();
          }
          checkProcess();
          std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
        }
      }
      engine.join();
      fail("engine thread: " + engineError);
    }
  } catch (const std::exception& e) {
    fail(e.what());
  }
  fail("unknown role " + role);
}
