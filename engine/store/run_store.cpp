#include "store/run_store.h"

#include <chrono>
#include <thread>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// The version-1 schema. Later versions are reached by the steps in RunStore::migrate().
const char* kSchemaV1 = R"SQL(
CREATE TABLE schema_info(version INTEGER NOT NULL);
CREATE TABLE experiments(id INTEGER PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE runs(id INTEGER PRIMARY KEY, experiment_id INTEGER REFERENCES experiments(id), name TEXT NOT NULL,
  method TEXT NOT NULL, status TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, seed INTEGER, device TEXT,
  code_version TEXT, pid INTEGER);
CREATE TABLE params(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT,
  PRIMARY KEY(run, key));
CREATE TABLE metrics(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, stage TEXT NOT NULL,
  key TEXT NOT NULL, step INTEGER NOT NULL, value REAL, time TEXT NOT NULL);
CREATE INDEX metrics_by_run ON metrics(run, stage, key, step);
CREATE TABLE artifacts(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, kind TEXT NOT NULL,
  path TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE analysis(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, kind TEXT NOT NULL,
  layer INTEGER NOT NULL, domain TEXT NOT NULL DEFAULT '', rows INTEGER NOT NULL, cols INTEGER NOT NULL, data BLOB);
CREATE TABLE lineage(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, child INTEGER, parent_a INTEGER,
  parent_b INTEGER, alpha REAL, dare_p REAL, distance REAL, mask_seed INTEGER, merge_op TEXT);
CREATE TABLE eval(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, domain TEXT NOT NULL, loss REAL,
  perplexity REAL, accuracy REAL, tokens INTEGER, answered INTEGER);
CREATE TABLE logs(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, time TEXT NOT NULL, message TEXT);
INSERT INTO schema_info(version) VALUES (1);
)SQL";

// v1 -> v2: run tags, and a latest-metrics table so that listing runs is fast.
const char* kMigrateV2 = R"SQL(
ALTER TABLE runs ADD COLUMN tags TEXT NOT NULL DEFAULT '';
CREATE TABLE latest_metrics(run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, stage TEXT NOT NULL,
  key TEXT NOT NULL, step INTEGER NOT NULL, value REAL, PRIMARY KEY(run, stage, key));
INSERT INTO latest_metrics(run, stage, key, step, value)
  SELECT m.run, m.stage, m.key, m.step, m.value FROM metrics m
  WHERE m.rowid = (SELECT m2.rowid FROM metrics m2 WHERE m2.run = m.run AND m2.stage = m.stage AND m2.key = m.key
                   ORDER BY m2.step DESC, m2.rowid DESC LIMIT 1);
UPDATE schema_info SET version = 2;
)SQL";

// "run store FILE: " for error messages (a full disk or a read-only folder must name the file).
std::string where(sqlite3* db) {
  const char* f = sqlite3_db_filename(db, "main");
  return std::string("run store ") + (f && *f ? f : "(memory)") + ": ";
}

class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql) : m_db(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &m_s, nullptr) != SQLITE_OK)
      throw UserError(where(db) + sqlite3_errmsg(db) + " in: " + sql);
  }
  ~Stmt() { sqlite3_finalize(m_s); }
  Stmt& bind(int i, int64_t v) { return check(sqlite3_bind_int64(m_s, i, v)); }
  Stmt& bind(int i, double v) { return check(sqlite3_bind_double(m_s, i, v)); }
  Stmt& bind(int i, const std::string& v) { return check(sqlite3_bind_text(m_s, i, v.c_str(), -1, SQLITE_TRANSIENT)); }
  Stmt& bindBlob(int i, const void* p, int n) { return check(sqlite3_bind_blob(m_s, i, p, n, SQLITE_TRANSIENT)); }
  bool step() {
    const int rc = sqlite3_step(m_s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw UserError(where(m_db) + sqlite3_errmsg(m_db));
  }
  void run() {
    step();
    sqlite3_reset(m_s);
    sqlite3_clear_bindings(m_s);
  }
  int64_t i64(int c) const { return sqlite3_column_int64(m_s, c); }
  double f64(int c) const { return sqlite3_column_double(m_s, c); }
  std::string text(int c) const {
    const auto* t = sqlite3_column_text(m_s, c);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
  const void* blob(int c) const { return sqlite3_column_blob(m_s, c); }
  int bytes(int c) const { return sqlite3_column_bytes(m_s, c); }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) throw UserError(where(m_db) + sqlite3_errmsg(m_db));
    return *this;
  }
  sqlite3* m_db;
  sqlite3_stmt* m_s = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back if an exception leaves the scope.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : m_db(db) { exec("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!m_done) sqlite3_exec(m_db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec("COMMIT");
    m_done = true;
  }

 private:
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(m_db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      throw UserError(where(m_db) + msg);
    }
  }
  sqlite3* m_db;
  bool m_done = false;
};

// The process that began a run (runs.pid) no longer exists on this machine.
bool processGone(int64_t pid) { return pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH); }

}  // namespace

RunStore::RunStore(const fs::path& file) : m_path(file) {
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  if (sqlite3_open_v2(file.c_str(), &m_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
    std::string msg = m_db ? sqlite3_errmsg(m_db) : "out of memory";
    sqlite3_close(m_db);
    m_db = nullptr;
    throw UserError("cannot open run store " + file.string() + ": " + msg);
  }
  sqlite3_busy_timeout(m_db, 10000);
  // Opening is retried for up to 10 s while SQLite answers "database is locked": while another process
  // is creating the file or switching it to WAL, `PRAGMA journal_mode` and the first read can get
  // SQLITE_BUSY without the busy handler being called (the soak test saw it: three processes opening
  // a new store at once). Every step below is idempotent.
  const auto giveUp = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    try {
      setUp();
      return;
    } catch (const UserError&) {
      const int rc = sqlite3_errcode(m_db) & 0xff;
      if ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && std::chrono::steady_clock::now() < giveUp) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      sqlite3_close(m_db);
      m_db = nullptr;
      throw;
    } catch (...) {
      sqlite3_close(m_db);
      m_db = nullptr;
      throw;
    }
  }
}

void RunStore::setUp() {
  {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA foreign_keys=ON");
    exec("PRAGMA synchronous=NORMAL");
    migrate();
    // Runs whose process died are interrupted, not running. The look and the change happen in one
    // write transaction, and only a row still 'running' changes: read outside it, a run whose process
    // finished it and then died (between our read and our write) was marked interrupted over its
    // 'finished' (the soak test caught one in 19,657 runs).
    auto deadRuns = [&] {
      std::vector<int64_t> dead;
      Stmt s(m_db, "SELECT id, pid FROM runs WHERE status = 'running'");
      while (s.step())
        if (processGone(s.i64(1))) dead.push_back(s.i64(0));
      return dead;
    };
    if (!deadRuns().empty()) {  // the common case, nothing to mark, takes no write lock
      Transaction t(m_db);
      const std::vector<int64_t> dead = deadRuns();
      Stmt u(m_db, "UPDATE runs SET status = 'interrupted', finished = datetime('now') WHERE id = ? AND status = 'running'");
      for (int64_t id : dead) u.bind(1, id).run();
      t.commit();
      m_interrupted = static_cast<int64_t>(dead.size());
    }
  }
}

RunStore::RunStore(const fs::path& file, ReadOnly) : m_path(file) {
  UPCYCLE_CHECK(fs::exists(file), "no run store at ", file.string());
  UPCYCLE_CHECK(fs::is_regular_file(file), file.string(), " is not a regular file");
  auto open = [&](const std::string& name, int flags) {
    if (sqlite3_open_v2(name.c_str(), &m_db, flags, nullptr) == SQLITE_OK) {
      sqlite3_busy_timeout(m_db, 10000);  // before the first read: a writer may hold the WAL index
      return true;
    }
    sqlite3_close(m_db);
    m_db = nullptr;
    return false;
  };
  int failure = SQLITE_OK;
  auto readable = [&] {
    try {
      Stmt s(m_db, "SELECT count(*) FROM sqlite_master");
      s.step();
      return true;
    } catch (const std::exception&) {
      failure = sqlite3_errcode(m_db);
      return false;
    }
  };
  if (!open(file.string(), SQLITE_OPEN_READONLY) || !readable()) {
    // A store busy with a writer is not a reason to read around the writer: an immutable read
    // ignores the WAL and would show a stale (or torn) store. Say so instead.
    if (failure == SQLITE_BUSY || failure == SQLITE_LOCKED) {
      const std::string msg = sqlite3_errmsg(m_db);
      sqlite3_close(m_db);
      m_db = nullptr;
      throw UserError("cannot read run store " + file.string() + ": " + msg);
    }
    // A WAL store in a folder we cannot write (no -shm to create): read it as an immutable file.
    if (m_db) sqlite3_close(m_db);
    m_db = nullptr;
    std::string uri = "file:";
    for (char c : fs::absolute(file).string()) uri += (c == '?' || c == '#' || c == '%') ? "%" + std::to_string(int(c)) : std::string(1, c);
    UPCYCLE_CHECK(open(uri + "?immutable=1", SQLITE_OPEN_READONLY | SQLITE_OPEN_URI) && readable(), "cannot read run store ",
                  file.string(), m_db ? std::string(": ") + sqlite3_errmsg(m_db) : std::string());
  }
  sqlite3_busy_timeout(m_db, 10000);
  try {
    int v = 0;
    {
      Stmt s(m_db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'");
      s.step();
      UPCYCLE_CHECK(s.i64(0) == 1, file.string(), " is not a run store (no schema_info table)");
    }
    v = schemaVersion();
    UPCYCLE_CHECK(v >= 1, file.string(), ": run store schema version ", v, " is not valid (a damaged store?)");
    UPCYCLE_CHECK(v <= kSchemaVersion, file.string(), ": run store schema version ", v,
                  " is newer than this workbench understands (", kSchemaVersion, ")");
    UPCYCLE_CHECK(v == kSchemaVersion, file.string(), ": run store schema version ", v,
                  " is older; open it once with a verb that records (run, demo, runs tag) to upgrade it");
  } catch (...) {
    sqlite3_close(m_db);
    m_db = nullptr;
    throw;
  }
}

RunStore::~RunStore() {
  if (!m_db) return;
  // The file was renamed over (a backup restored, a copy moved in) or deleted while this connection
  // was open. Its -wal and -shm still sit beside the path, and SQLite leaves the WAL there on close:
  // the next connection to the file now at the path would replay this store's frames into it, mixing
  // pages of two databases (what the workspace of issue 19 looked like). Emptying the WAL first (its
  // frames go into the old file, which is where they belong) leaves nothing to replay.
  int moved = 0;
  if (sqlite3_file_control(m_db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved)
    sqlite3_exec(m_db, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  sqlite3_close(m_db);
}

void RunStore::exec(const std::string& sql) const {
  char* err = nullptr;
  if (sqlite3_exec(m_db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw UserError("run store " + m_path.string() + ": " + msg);
  }
}

int RunStore::schemaVersion() const {
  // typeof: a version stored as text or a real is not a version (it read as 0 before).
  Stmt s(m_db, "SELECT CASE WHEN typeof(version) = 'integer' THEN version ELSE -1 END FROM schema_info");
  return s.step() ? static_cast<int>(std::clamp<int64_t>(s.i64(0), -1, 1000000)) : 0;
}

void RunStore::migrate() {
  // Each step checks and changes the schema inside one IMMEDIATE transaction, so two processes
  // opening a new or old file at the same moment cannot both create or upgrade it.
  bool fresh = false;
  {
    Transaction t(m_db);
    {
      Stmt s(m_db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'");
      s.step();
      fresh = s.i64(0) == 0;
    }
    if (fresh) exec(kSchemaV1);
    t.commit();
  }
  {
    const int v = schemaVersion();
    UPCYCLE_CHECK(v >= 1, m_path.string(), ": run store schema version ", v, " is not valid (a damaged store?)");
    UPCYCLE_CHECK(v <= kSchemaVersion, m_path.string(), ": run store schema version ", v,
                  " is newer than this workbench understands (", kSchemaVersion, ")");
    // Before an upgrade, a copy of the store as it was: runs.db.bak-vN, made with SQLite's backup API
    // (a consistent snapshot even while another process writes), kept if it already exists.
    const fs::path backup = m_path.string() + ".bak-v" + std::to_string(v);
    if (!fresh && v < kSchemaVersion && !fs::exists(backup)) {
      sqlite3* dst = nullptr;
      const std::string tmp = backup.string() + ".tmp-" + std::to_string(::getpid());
      bool ok = sqlite3_open(tmp.c_str(), &dst) == SQLITE_OK;
      if (ok) {
        sqlite3_backup* b = sqlite3_backup_init(dst, "main", m_db, "main");
        ok = b && sqlite3_backup_step(b, -1) == SQLITE_DONE;
        ok = (b && sqlite3_backup_finish(b) == SQLITE_OK) && ok;
      }
      sqlite3_close(dst);
      std::error_code ec;
      if (ok) fs::rename(tmp, backup, ec);
      if (!ok || ec) {
        fs::remove(tmp, ec);
        throw UserError("cannot back up " + m_path.string() + " to " + backup.string() +
                        " before upgrading its schema; nothing was changed");
      }
    }
  }
  Transaction t(m_db);
  const int v = schemaVersion();
  UPCYCLE_CHECK(v >= 1 && v <= kSchemaVersion, m_path.string(), ": run store schema version ", v, " changed while opening");
  if (v < 2) exec(kMigrateV2);
  t.commit();
}

int64_t RunStore::beginRun(const std::string& name, const std::string& experiment, const std::string& method,
                           uint64_t seed, const std::string& device,
                           const std::vector<std::pair<std::string, std::string>>& params) {
  Transaction t(m_db);
  int64_t exp = 0;
  {
    Stmt s(m_db, "SELECT id FROM experiments WHERE name = ? ORDER BY id DESC LIMIT 1");
    s.bind(1, experiment);
    if (s.step()) exp = s.i64(0);
  }
  if (exp == 0) {
    Stmt s(m_db, "INSERT INTO experiments(name, created) VALUES (?, datetime('now'))");
    s.bind(1, experiment).run();
    exp = sqlite3_last_insert_rowid(m_db);
  }
  Stmt s(m_db,
         "INSERT INTO runs(experiment_id, name, method, status, started, seed, device, code_version, pid) "
         "VALUES (?, ?, ?, 'running', datetime('now'), ?, ?, ?, ?)");
  s.bind(1, exp).bind(2, name).bind(3, method).bind(4, static_cast<int64_t>(seed)).bind(5, device)
      .bind(6, std::string(UPCYCLE_VERSION)).bind(7, static_cast<int64_t>(::getpid())).run();
  const int64_t id = sqlite3_last_insert_rowid(m_db);
  Stmt p(m_db, "INSERT OR REPLACE INTO params(run, key, value) VALUES (?, ?, ?)");
  for (const auto& [k, v] : params) p.bind(1, id).bind(2, k).bind(3, v).run();
  t.commit();
  return id;
}

void RunStore::finishRun(int64_t run, const std::string& status) {
  Transaction t(m_db);
  Stmt s(m_db, "UPDATE runs SET status = ?, finished = datetime('now') WHERE id = ?");
  s.bind(1, status).bind(2, run).run();
  t.commit();
}

void RunStore::addMetrics(int64_t run, const std::vector<MetricPoint>& points) {
  if (points.empty()) return;
  Transaction t(m_db);
  Stmt s(m_db, "INSERT INTO metrics(run, stage, key, step, value, time) VALUES (?, ?, ?, ?, ?, datetime('now'))");
  Stmt l(m_db, "INSERT OR REPLACE INTO latest_metrics(run, stage, key, step, value) VALUES (?, ?, ?, ?, ?)");
  for (const auto& p : points) {
    s.bind(1, run).bind(2, p.stage).bind(3, p.key).bind(4, p.step).bind(5, p.value).run();
    l.bind(1, run).bind(2, p.stage).bind(3, p.key).bind(4, p.step).bind(5, p.value).run();
  }
  t.commit();
}

void RunStore::addEval(int64_t run, const std::vector<EvalRow>& rows) {
  Transaction t(m_db);
  Stmt s(m_db, "INSERT INTO eval(run, domain, loss, perplexity, accuracy, tokens, answered) VALUES (?, ?, ?, ?, ?, ?, ?)");
  for (const auto& r : rows)
    s.bind(1, run).bind(2, r.domain).bind(3, r.loss).bind(4, r.perplexity).bind(5, r.accuracy).bind(6, r.tokens)
        .bind(7, r.answered).run();
  t.commit();
}

void RunStore::addArtifact(int64_t run, const std::string& kind, const std::string& path) {
  Transaction t(m_db);
  Stmt s(m_db, "INSERT INTO artifacts(run, kind, path, created) VALUES (?, ?, ?, datetime('now'))");
  s.bind(1, run).bind(2, kind).bind(3, path).run();
  t.commit();
}

void RunStore::addLineage(int64_t run, const std::vector<LineageRow>& rows) {
  Transaction t(m_db);
  Stmt s(m_db, "INSERT INTO lineage(run, child, parent_a, parent_b, alpha, dare_p, distance, mask_seed, merge_op) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  for (const auto& r : rows)
    s.bind(1, run).bind(2, r.child).bind(3, r.parentA).bind(4, r.parentB).bind(5, r.alpha).bind(6, r.dareP)
        .bind(7, r.distance).bind(8, static_cast<int64_t>(r.maskSeed)).bind(9, r.mergeOp).run();
  t.commit();
}

void RunStore::addBlobs(int64_t run, const std::vector<BlobRow>& rows) {
  Transaction t(m_db);
  Stmt s(m_db, "INSERT INTO analysis(run, kind, layer, domain, rows, cols, data) VALUES (?, ?, ?, ?, ?, ?, ?)");
  for (const auto& r : rows) {
    UPCYCLE_ASSERT(static_cast<int64_t>(r.values.size()) == r.rows * r.cols, "blob shape");
    s.bind(1, run).bind(2, r.kind).bind(3, r.layer).bind(4, r.domain).bind(5, r.rows).bind(6, r.cols)
        .bindBlob(7, r.values.data(), static_cast<int>(r.values.size() * sizeof(double))).run();
  }
  t.commit();
}

void RunStore::addLog(int64_t run, const std::string& message) {
  Transaction t(m_db);
  Stmt s(m_db, "INSERT INTO logs(run, time, message) VALUES (?, datetime('now'), ?)");
  s.bind(1, run).bind(2, message).run();
  t.commit();
}

void RunStore::setName(int64_t run, const std::string& name) {
  Transaction t(m_db);
  Stmt(m_db, "UPDATE runs SET name = ? WHERE id = ?").bind(1, name).bind(2, run).run();
  t.commit();
}

void RunStore::setTags(int64_t run, const std::string& tags) {
  Transaction t(m_db);
  Stmt(m_db, "UPDATE runs SET tags = ? WHERE id = ?").bind(1, tags).bind(2, run).run();
  t.commit();
}

std::vector<RunRow> RunStore::listRuns() const { return rows(0); }

std::vector<RunRow> RunStore::rows(int64_t only) const {
  std::vector<RunRow> out;
  Stmt s(m_db,
         "SELECT r.id, r.name, coalesce(e.name, ''), r.method, r.status, r.started, coalesce(r.finished, ''), "
         "coalesce(r.device, ''), coalesce(r.code_version, ''), r.tags, coalesce(r.seed, 0), coalesce(r.pid, 0) "
         "FROM runs r LEFT JOIN experiments e ON e.id = r.experiment_id WHERE ?1 = 0 OR r.id = ?1 ORDER BY r.id");
  s.bind(1, only);
  while (s.step()) {
    RunRow r;
    r.id = s.i64(0);
    r.name = s.text(1);
    r.experiment = s.text(2);
    r.method = s.text(3);
    r.status = s.text(4);
    r.started = s.text(5);
    r.finished = s.text(6);
    r.device = s.text(7);
    r.codeVersion = s.text(8);
    r.tags = s.text(9);
    r.seed = static_cast<uint64_t>(s.i64(10));
    // A run whose process died is interrupted even where the store could not be written to say so
    // (a read-only open, or a full disk that stopped both the run and the marking).
    if (r.status == "running" && processGone(s.i64(11))) r.status = "interrupted";
    out.push_back(std::move(r));
  }
  std::map<int64_t, RunRow*> byId;
  for (auto& r : out) byId[r.id] = &r;
  Stmt m(m_db, "SELECT run, stage, key, value FROM latest_metrics WHERE ?1 = 0 OR run = ?1");
  m.bind(1, only);
  while (m.step()) {
    auto it = byId.find(m.i64(0));
    if (it != byId.end()) it->second->finalMetrics[m.text(1) + "/" + m.text(2)] = m.f64(3);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> RunStore::params(int64_t run) const {
  std::vector<std::pair<std::string, std::string>> out;
  Stmt p(m_db, "SELECT key, value FROM params WHERE run = ? ORDER BY key");
  p.bind(1, run);
  while (p.step()) out.emplace_back(p.text(0), p.text(1));
  return out;
}

RunDetail RunStore::run(int64_t id) const {
  RunDetail d;
  auto one = id > 0 ? rows(id) : std::vector<RunRow>{};
  UPCYCLE_CHECK(!one.empty(), "no run ", id, " in ", m_path.string());
  d.run = std::move(one.front());
  d.params = params(id);
  Stmt e(m_db, "SELECT domain, loss, perplexity, accuracy, tokens, answered FROM eval WHERE run = ? ORDER BY domain");
  e.bind(1, id);
  while (e.step()) d.eval.push_back({e.text(0), e.f64(1), e.f64(2), e.f64(3), e.i64(4), e.i64(5)});
  Stmt a(m_db, "SELECT kind, path FROM artifacts WHERE run = ? ORDER BY rowid");
  a.bind(1, id);
  while (a.step()) d.artifacts.emplace_back(a.text(0), a.text(1));
  Stmt l(m_db, "SELECT child, parent_a, parent_b, alpha, dare_p, distance, mask_seed, merge_op FROM lineage WHERE run = ? ORDER BY child");
  l.bind(1, id);
  while (l.step())
    d.lineage.push_back({l.i64(0), l.i64(1), l.i64(2), l.f64(3), l.f64(4), l.f64(5), static_cast<uint64_t>(l.i64(6)), l.text(7)});
  Stmt g(m_db, "SELECT time, message FROM logs WHERE run = ? ORDER BY rowid");
  g.bind(1, id);
  while (g.step()) d.logs.push_back(g.text(0) + " " + g.text(1));
  return d;
}

std::vector<MetricPoint> RunStore::metrics(int64_t run) const {
  std::vector<MetricPoint> out;
  Stmt s(m_db, "SELECT stage, key, step, value FROM metrics WHERE run = ? ORDER BY rowid");
  s.bind(1, run);
  while (s.step()) out.push_back({s.text(0), s.text(1), s.i64(2), s.f64(3)});
  return out;
}

std::vector<BlobRow> RunStore::blobs(int64_t run, const std::string& kind) const {
  std::vector<BlobRow> out;
  Stmt s(m_db, "SELECT kind, layer, domain, rows, cols, data FROM analysis WHERE run = ? AND (? = '' OR kind = ?) ORDER BY rowid");
  s.bind(1, run).bind(2, kind).bind(3, kind);
  while (s.step()) {
    BlobRow b{s.text(0), s.i64(1), s.text(2), s.i64(3), s.i64(4), {}};
    const size_t n = static_cast<size_t>(s.bytes(5)) / sizeof(double);
    UPCYCLE_CHECK(static_cast<int64_t>(n) == b.rows * b.cols, m_path.string(), ": analysis blob of run ", run,
                  " has ", n, " values for shape ", b.rows, "x", b.cols);
    b.values.resize(n);
    if (n) std::memcpy(b.values.data(), s.blob(5), n * sizeof(double));
    out.push_back(std::move(b));
  }
  return out;
}

void RunStore::deleteRun(int64_t id) {
  Transaction t(m_db);
  Stmt s(m_db, "DELETE FROM runs WHERE id = ?");
  s.bind(1, id).run();
  UPCYCLE_CHECK(sqlite3_changes(m_db) == 1, "no run ", id, " in ", m_path.string());
  t.commit();
}

std::string RunStore::integrityCheck() const {
  Stmt s(m_db, "PRAGMA integrity_check");
  return s.step() ? s.text(0) : "no answer";
}

int64_t RunStore::dataVersion() const {
  Stmt s(m_db, "PRAGMA data_version");
  return s.step() ? s.i64(0) : 0;
}

fs::path RunStore::defaultPath() {
  if (const char* db = std::getenv("UPCYCLE_DB"); db && *db) return db;
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) return fs::path(xdg) / "upcycle-workbench/runs.db";
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : ".") / ".local/share/upcycle-workbench/runs.db";
}

namespace {
void flatten(const YAML::Node& n, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) flatten(n[i], prefix + "[" + std::to_string(i) + "]", out);
  } else if (n.IsScalar()) {
    out.emplace_back(prefix, n.as<std::string>());
  } else {
    out.emplace_back(prefix, "");
  }
}
}  // namespace

std::vector<std::pair<std::string, std::string>> flattenYaml(const std::string& yaml) {
  std::vector<std::pair<std::string, std::string>> out;
  flatten(YAML::Load(yaml), "", out);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace upcycle
