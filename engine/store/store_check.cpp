#include "store/store_check.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "core/error.h"
#include "store/run_store.h"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// The tables of the current schema, columns in their on-disk order. `alias`: the first column is
// INTEGER PRIMARY KEY, stored as the rowid (a NULL in the record).
struct TableSpec {
  const char* name;
  std::vector<const char*> cols;
  bool alias;
};
const std::vector<TableSpec>& tables() {
  static const std::vector<TableSpec> t = {
      {"experiments", {"id", "name", "created"}, true},
      {"runs",
       {"id", "experiment_id", "name", "method", "status", "started", "finished", "seed", "device", "code_version", "pid", "tags"},
       true},
      {"params", {"run", "key", "value"}, false},
      {"metrics", {"run", "stage", "key", "step", "value", "time"}, false},
      {"artifacts", {"run", "kind", "path", "created"}, false},
      {"analysis", {"run", "kind", "layer", "domain", "rows", "cols", "data"}, false},
      {"lineage", {"run", "child", "parent_a", "parent_b", "alpha", "dare_p", "distance", "mask_seed", "merge_op"}, false},
      {"eval", {"run", "domain", "loss", "perplexity", "accuracy", "tokens", "answered"}, false},
      {"logs", {"run", "time", "message"}, false},
      {"latest_metrics", {"run", "stage", "key", "step", "value"}, false},
  };
  return t;
}

struct Conn {
  sqlite3* db = nullptr;
  ~Conn() { sqlite3_close(db); }
};

// ---- Pass 2: b-tree leaf pages read by hand (https://www.sqlite.org/fileformat2.html) ----

struct Value {
  int type = 0;  // SQLITE_NULL, SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB
  int64_t i = 0;
  double f = 0;
  std::string s;
};

bool readVarint(const uint8_t*& p, const uint8_t* end, uint64_t& v) {
  v = 0;
  for (int i = 0; i < 9; ++i) {
    if (p >= end) return false;
    const uint8_t b = *p++;
    if (i == 8) {
      v = (v << 8) | b;
      return true;
    }
    v = (v << 7) | (b & 0x7f);
    if (!(b & 0x80)) return true;
  }
  return true;
}

bool decodeRecord(const std::string& payload, std::vector<Value>& out) {
  const auto* p = reinterpret_cast<const uint8_t*>(payload.data());
  const uint8_t* end = p + payload.size();
  uint64_t headerSize = 0;
  const uint8_t* h = p;
  if (!readVarint(h, end, headerSize) || headerSize > payload.size() || headerSize < 1) return false;
  const uint8_t* hend = p + headerSize;
  const uint8_t* body = hend;
  out.clear();
  while (h < hend) {
    uint64_t t = 0;
    if (!readVarint(h, hend, t) || out.size() > 64) return false;
    Value v;
    size_t n = 0;
    if (t == 0) {
      v.type = SQLITE_NULL;
    } else if (t <= 6 || t == 8 || t == 9) {
      static const size_t sizes[] = {0, 1, 2, 3, 4, 6, 8};
      n = t <= 6 ? sizes[t] : 0;
      if (body + n > end) return false;
      int64_t x = 0;
      if (n) {
        x = static_cast<int8_t>(body[0]);  // sign from the first byte, big-endian
        for (size_t k = 1; k < n; ++k) x = static_cast<int64_t>(static_cast<uint64_t>(x) << 8 | body[k]);
      }
      v.type = SQLITE_INTEGER;
      v.i = t == 8 ? 0 : t == 9 ? 1 : x;
    } else if (t == 7) {
      n = 8;
      if (body + n > end) return false;
      uint64_t bits = 0;
      for (size_t k = 0; k < 8; ++k) bits = bits << 8 | body[k];
      v.type = SQLITE_FLOAT;
      std::memcpy(&v.f, &bits, 8);
    } else if (t >= 12) {
      n = static_cast<size_t>((t - 12) / 2);
      if (n > static_cast<size_t>(end - body)) return false;
      v.type = (t % 2) ? SQLITE_TEXT : SQLITE_BLOB;
      v.s.assign(reinterpret_cast<const char*>(body), n);
    } else {
      return false;  // 10, 11: reserved
    }
    body += n;
    out.push_back(std::move(v));
  }
  return body == end;
}

bool isTime(const Value& v) {  // datetime('now'): "YYYY-MM-DD HH:MM:SS"
  if (v.type != SQLITE_TEXT || v.s.size() != 19) return false;
  for (size_t i = 0; i < 19; ++i) {
    const char c = v.s[i];
    const bool digit = c >= '0' && c <= '9';
    if ((i == 4 || i == 7) ? c != '-' : i == 10 ? c != ' ' : (i == 13 || i == 16) ? c != ':' : !digit) return false;
  }
  return true;
}
bool isNum(const Value& v) { return v.type == SQLITE_INTEGER || v.type == SQLITE_FLOAT || v.type == SQLITE_NULL; }
bool isText(const Value& v) { return v.type == SQLITE_TEXT; }
bool isTextOrNull(const Value& v) { return v.type == SQLITE_TEXT || v.type == SQLITE_NULL; }
bool isInt(const Value& v) { return v.type == SQLITE_INTEGER; }

// The table a record of a table leaf belongs to, by its columns; "" when it is none of ours.
std::string classify(const std::vector<Value>& v) {
  const size_t n = v.size();
  if (n == 3 && v[0].type == SQLITE_NULL && isText(v[1]) && isText(v[2])) return "experiments";
  if ((n == 11 || n == 12) && v[0].type == SQLITE_NULL && isText(v[2]) && isText(v[3]) && isText(v[4]) && isText(v[5]))
    return "runs";
  if (n == 3 && isInt(v[0]) && isText(v[1]) && isTextOrNull(v[2])) return isTime(v[1]) ? "logs" : "params";
  if (n == 4 && isInt(v[0]) && isText(v[1]) && isText(v[2]) && isTime(v[3])) return "artifacts";
  if (n == 5 && isInt(v[0]) && isText(v[1]) && isText(v[2]) && isInt(v[3]) && isNum(v[4])) return "latest_metrics";
  if (n == 6 && isInt(v[0]) && isText(v[1]) && isText(v[2]) && isInt(v[3]) && isNum(v[4]) && isTime(v[5])) return "metrics";
  if (n == 7 && isInt(v[0]) && isText(v[1]) && isText(v[3]) && isInt(v[2]) && isInt(v[4]) && isInt(v[5])) return "analysis";
  if (n == 7 && isInt(v[0]) && isText(v[1]) && isNum(v[2]) && isNum(v[3]) && isNum(v[4])) return "eval";
  if (n == 9 && isInt(v[0]) && isTextOrNull(v[8])) return "lineage";
  return "";
}

struct PageRecord {
  std::string table;
  int64_t rowid = 0;
  std::vector<Value> values;
};

// Every record of every table leaf page, assuming `pageSize` and `reserved` bytes per page.
std::vector<PageRecord> scanPages(const std::string& file, size_t pageSize, size_t reserved) {
  std::vector<PageRecord> out;
  const size_t pages = file.size() / pageSize;
  const size_t usable = pageSize - reserved;
  if (usable < 480) return out;
  auto page = [&](uint64_t no) -> const uint8_t* {
    return no >= 1 && no <= pages ? reinterpret_cast<const uint8_t*>(file.data()) + (no - 1) * pageSize : nullptr;
  };
  for (size_t no = 1; no <= pages; ++no) {
    const uint8_t* pg = page(no);
    // Page 1 starts with the file header, unless that was overwritten (by a whole page, as in the
    // workspace of issue 19, whose page 1 held a table leaf).
    const bool header = file.compare(0, 16, std::string("SQLite format 3\0", 16)) == 0;
    const size_t hdr = no == 1 && header ? 100 : 0;
    if (pg[hdr] != 0x0d) continue;         // table b-tree leaf
    const size_t cells = static_cast<size_t>(pg[hdr + 3]) << 8 | pg[hdr + 4];
    if (hdr + 8 + 2 * cells > usable) continue;
    for (size_t c = 0; c < cells; ++c) {
      const size_t off = static_cast<size_t>(pg[hdr + 8 + 2 * c]) << 8 | pg[hdr + 9 + 2 * c];
      if (off < hdr + 8 || off >= usable) continue;
      const uint8_t* p = pg + off;
      const uint8_t* end = pg + usable;
      uint64_t payloadSize = 0, rowid = 0;
      if (!readVarint(p, end, payloadSize) || !readVarint(p, end, rowid) || payloadSize > (1u << 30)) continue;
      // How much of the payload sits on the page (the format's formula), the rest in an overflow chain.
      const uint64_t x = usable - 35, m = ((usable - 12) * 32 / 255) - 23;
      uint64_t local = payloadSize;
      if (payloadSize > x) {
        const uint64_t k = m + (payloadSize - m) % (usable - 4);
        local = k <= x ? k : m;
      }
      if (p + local + (local < payloadSize ? 4 : 0) > end) continue;
      std::string payload(reinterpret_cast<const char*>(p), local);
      bool whole = true;
      if (local < payloadSize) {
        const uint8_t* q = p + local;
        uint64_t next = uint64_t(q[0]) << 24 | uint64_t(q[1]) << 16 | uint64_t(q[2]) << 8 | q[3];
        size_t hops = 0;
        while (payload.size() < payloadSize) {
          const uint8_t* ov = page(next);
          if (!ov || ++hops > pages) {
            whole = false;
            break;
          }
          const size_t take = std::min<uint64_t>(usable - 4, payloadSize - payload.size());
          payload.append(reinterpret_cast<const char*>(ov + 4), take);
          next = uint64_t(ov[0]) << 24 | uint64_t(ov[1]) << 16 | uint64_t(ov[2]) << 8 | ov[3];
        }
      }
      PageRecord r;
      if (!whole || !decodeRecord(payload, r.values)) continue;
      r.table = classify(r.values);
      if (r.table.empty()) continue;
      r.rowid = static_cast<int64_t>(rowid);
      out.push_back(std::move(r));
    }
  }
  return out;
}

// The page size from a valid header, else the candidate under which the most records parse.
std::vector<PageRecord> scanFile(const fs::path& path, int64_t& pageSize) {
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), {});
  if (file.size() >= 100 && file.compare(0, 16, std::string("SQLite format 3\0", 16)) == 0) {
    size_t ps = static_cast<size_t>(static_cast<uint8_t>(file[16])) << 8 | static_cast<uint8_t>(file[17]);
    if (ps == 1) ps = 65536;
    const size_t reserved = static_cast<uint8_t>(file[20]);
    if (ps >= 512 && ps <= 65536 && (ps & (ps - 1)) == 0) {
      pageSize = static_cast<int64_t>(ps);
      return scanPages(file, ps, reserved);
    }
  }
  std::vector<PageRecord> best;
  for (size_t ps = 512; ps <= 65536; ps *= 2) {
    auto r = scanPages(file, ps, 0);
    if (r.size() > best.size()) {
      best = std::move(r);
      pageSize = static_cast<int64_t>(ps);
    }
  }
  return best;
}

void bindValue(sqlite3_stmt* s, int i, const Value& v) {
  switch (v.type) {
    case SQLITE_INTEGER: sqlite3_bind_int64(s, i, v.i); break;
    case SQLITE_FLOAT: sqlite3_bind_double(s, i, v.f); break;
    case SQLITE_TEXT: sqlite3_bind_text(s, i, v.s.data(), static_cast<int>(v.s.size()), SQLITE_TRANSIENT); break;
    case SQLITE_BLOB: sqlite3_bind_blob(s, i, v.s.data(), static_cast<int>(v.s.size()), SQLITE_TRANSIENT); break;
    default: sqlite3_bind_null(s, i);
  }
}

void execOrThrow(sqlite3* db, const std::string& sql, const fs::path& file) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw UserError("salvage into " + file.string() + ": " + msg);
  }
}

}  // namespace

StoreCheck checkStore(const fs::path& file) {
  StoreCheck r;
  UPCYCLE_CHECK(fs::exists(file), "no run store at ", file.string());
  UPCYCLE_CHECK(fs::is_regular_file(file), file.string(), " is not a regular file");
  Conn c;
  if (sqlite3_open_v2(file.c_str(), &c.db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    r.problems.push_back(c.db ? sqlite3_errmsg(c.db) : "cannot open");
    return r;
  }
  sqlite3_busy_timeout(c.db, 10000);
  auto query = [&](const char* sql, const std::function<void(sqlite3_stmt*)>& row) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(c.db, sql, -1, &s, nullptr);
    if (rc == SQLITE_OK)
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) row(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? std::string() : std::string(sqlite3_errmsg(c.db));
  };
  auto text = [](sqlite3_stmt* s, int i) {
    const auto* t = sqlite3_column_text(s, i);
    return std::string(t ? reinterpret_cast<const char*>(t) : "");
  };
  std::vector<std::string> integrity;
  std::string err = query("PRAGMA integrity_check(100)", [&](sqlite3_stmt* s) { integrity.push_back(text(s, 0)); });
  if (!err.empty()) {
    // A store that cannot be read here is not a damaged store: a full file system (SQLite cannot
    // grow the -shm it reads a WAL store through), another process holding it, no memory. Say so
    // instead of calling it damaged (a copy of such a file elsewhere checks ok).
    const int ext = sqlite3_extended_errcode(c.db), rc = ext & 0xff;
    const bool environment = rc == SQLITE_FULL || rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_CANTOPEN ||
                             rc == SQLITE_NOMEM || ext == SQLITE_IOERR_SHMSIZE || ext == SQLITE_IOERR_SHMMAP ||
                             ext == SQLITE_IOERR_SHMOPEN || ext == SQLITE_IOERR_SHMLOCK || ext == SQLITE_IOERR_WRITE ||
                             ext == SQLITE_IOERR_TRUNCATE || ext == SQLITE_IOERR_FSYNC || ext == SQLITE_IOERR_NOMEM;
    if (environment)
      throw UserError("cannot check run store " + file.string() + ": " + err + " (SQLite code " + std::to_string(ext) +
                      "; is its file system full?)");
    r.problems.push_back(err);  // not even the schema could be read ("file is not a database")
    return r;
  }
  for (const auto& l : integrity)
    if (l != "ok") r.problems.push_back(l);
  err = query("PRAGMA foreign_key_check", [&](sqlite3_stmt* s) {
    r.problems.push_back("foreign key: " + text(s, 0) + " row " + text(s, 1) + " refers to a missing " + text(s, 2) + " row");
  });
  if (!err.empty()) r.problems.push_back(err);
  for (const auto& t : tables()) {
    int64_t n = -1;
    err = query((std::string("SELECT count(*) FROM ") + t.name).c_str(), [&](sqlite3_stmt* s) { n = sqlite3_column_int64(s, 0); });
    if (err.empty()) r.tableRows.emplace_back(t.name, n);
  }
  r.ok = r.problems.empty() && integrity == std::vector<std::string>{"ok"};
  return r;
}

SalvageReport salvageStore(const fs::path& damaged, const fs::path& out) {
  UPCYCLE_CHECK(fs::is_regular_file(damaged), "no run store at ", damaged.string());
  UPCYCLE_CHECK(!fs::exists(out), out.string(), " already exists; salvage writes a new file");
  std::error_code ec;
  UPCYCLE_CHECK(!fs::equivalent(damaged, out, ec), "the salvage must go to another file than ", damaged.string());
  SalvageReport report;
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  struct Cleanup {  // no partial file under any name if anything below throws
    fs::path tmp;
    bool done = false;
    ~Cleanup() {
      if (done) return;
      std::error_code e;
      for (const char* s : {"", "-wal", "-shm"}) fs::remove(tmp.string() + s, e);
    }
  } cleanup{tmp};
  { RunStore created(tmp); }  // the current schema, then closed
  Conn dst;
  UPCYCLE_CHECK(sqlite3_open_v2(tmp.c_str(), &dst.db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK, "cannot write ",
                tmp.string());
  execOrThrow(dst.db, "PRAGMA foreign_keys=OFF; BEGIN IMMEDIATE", tmp);
  std::map<std::string, SalvagedTable> per;
  for (const auto& t : tables()) per[t.name].table = t.name;

  auto insertSql = [](const TableSpec& t, const std::vector<std::string>& cols) {
    std::string sql = std::string("INSERT OR IGNORE INTO ") + t.name + "(rowid";
    for (const auto& c : cols) sql += ", " + c;
    sql += ") VALUES (?";
    for (size_t i = 0; i < cols.size(); ++i) sql += ", ?";
    return sql + ")";
  };

  // Pass 1: through SQLite.
  std::set<std::string> needPages;
  Conn src;
  bool schemaReadable = sqlite3_open_v2(damaged.c_str(), &src.db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK;
  if (schemaReadable) {
    sqlite3_busy_timeout(src.db, 10000);
    sqlite3_stmt* s = nullptr;
    schemaReadable = sqlite3_prepare_v2(src.db, "SELECT name FROM sqlite_master", -1, &s, nullptr) == SQLITE_OK;
    int rc = SQLITE_DONE;
    while (schemaReadable && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    }
    schemaReadable = schemaReadable && rc == SQLITE_DONE;
    sqlite3_finalize(s);
  }
  if (!schemaReadable) report.sqliteError = src.db ? sqlite3_errmsg(src.db) : "cannot open";
  for (const auto& t : tables()) {
    if (!schemaReadable) {
      needPages.insert(t.name);
      continue;
    }
    // The columns this file's table has (a v1 store has no runs.tags, no latest_metrics).
    std::vector<std::string> cols;
    {
      sqlite3_stmt* s = nullptr;
      if (sqlite3_prepare_v2(src.db, (std::string("PRAGMA table_info(") + t.name + ")").c_str(), -1, &s, nullptr) == SQLITE_OK)
        while (sqlite3_step(s) == SQLITE_ROW) {
          const std::string c = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
          for (size_t i = t.alias ? 1 : 0; i < t.cols.size(); ++i)
            if (c == t.cols[i]) cols.push_back(c);
        }
      sqlite3_finalize(s);
    }
    if (cols.empty()) continue;  // not in this file
    std::string select = "SELECT rowid";
    for (const auto& c : cols) select += ", " + c;
    select += std::string(" FROM ") + t.name + " WHERE rowid >= ?1 ORDER BY rowid";
    sqlite3_stmt* ins = nullptr;
    UPCYCLE_CHECK(sqlite3_prepare_v2(dst.db, insertSql(t, cols).c_str(), -1, &ins, nullptr) == SQLITE_OK, "salvage: ",
                  sqlite3_errmsg(dst.db));
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> insGuard(ins, sqlite3_finalize);
    // The first readable rowid >= from, or nothing; false when the seek itself fails.
    auto firstFrom = [&](int64_t from, std::optional<int64_t>& found) {
      sqlite3_stmt* s = nullptr;
      found.reset();
      if (sqlite3_prepare_v2(src.db, (std::string("SELECT rowid FROM ") + t.name + " WHERE rowid >= ? ORDER BY rowid LIMIT 1").c_str(),
                             -1, &s, nullptr) != SQLITE_OK)
        return false;
      sqlite3_bind_int64(s, 1, from);
      const int rc = sqlite3_step(s);
      if (rc == SQLITE_ROW) found = sqlite3_column_int64(s, 0);
      sqlite3_finalize(s);
      return rc == SQLITE_ROW || rc == SQLITE_DONE;
    };
    int64_t from = 0;  // our rowids start at 1
    for (;;) {
      sqlite3_stmt* s = nullptr;
      if (sqlite3_prepare_v2(src.db, select.c_str(), -1, &s, nullptr) != SQLITE_OK) {
        ++per[t.name].readErrors;
        needPages.insert(t.name);
        break;
      }
      sqlite3_bind_int64(s, 1, from);
      int rc;
      int64_t last = from;
      bool any = false;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        last = sqlite3_column_int64(s, 0);
        any = true;
        sqlite3_bind_int64(ins, 1, last);
        for (size_t i = 0; i < cols.size(); ++i) sqlite3_bind_value(ins, static_cast<int>(i) + 2, sqlite3_column_value(s, static_cast<int>(i) + 1));
        UPCYCLE_CHECK(sqlite3_step(ins) == SQLITE_DONE, "salvage into ", tmp.string(), ": ", sqlite3_errmsg(dst.db));
        sqlite3_reset(ins);
      }
      sqlite3_finalize(s);
      if (rc == SQLITE_DONE) break;
      // A damaged place after `last`: probe forward by doubling steps for a rowid that reads, then
      // bisect back to the first start that reads, so no readable row right after the damage is skipped.
      ++per[t.name].readErrors;
      needPages.insert(t.name);
      const int64_t base = any ? last + 1 : from;
      int64_t bad = base, good = 0;
      std::optional<int64_t> hit;
      bool found = false;
      for (int k = 0; k < 63; ++k) {
        const int64_t step = int64_t(1) << k;
        if (base > std::numeric_limits<int64_t>::max() - step) break;
        if (firstFrom(base + step, hit)) {
          good = base + step;
          found = true;
          break;
        }
        bad = base + step;
      }
      if (!found || !hit) break;  // nothing readable after the damage
      while (good - bad > 1) {
        const int64_t mid = bad + (good - bad) / 2;
        if (firstFrom(mid, hit)) good = mid;
        else bad = mid;
      }
      firstFrom(good, hit);
      if (!hit) break;
      from = *hit;
    }
  }

  // Pass 2: the leaf pages, for what pass 1 could not read.
  if (!needPages.empty()) {
    report.pageScan = true;
    sqlite3_close(src.db);
    src.db = nullptr;
    for (const auto& r : scanFile(damaged, report.pageSize)) {
      if (!needPages.count(r.table)) continue;
      const TableSpec* t = nullptr;
      for (const auto& s : tables())
        if (r.table == s.name) t = &s;
      std::vector<std::string> cols;
      const size_t first = t->alias ? 1 : 0;
      for (size_t i = first; i < r.values.size() && i < t->cols.size(); ++i) cols.push_back(t->cols[i]);
      sqlite3_stmt* ins = nullptr;
      UPCYCLE_CHECK(sqlite3_prepare_v2(dst.db, insertSql(*t, cols).c_str(), -1, &ins, nullptr) == SQLITE_OK, "salvage: ",
                    sqlite3_errmsg(dst.db));
      sqlite3_bind_int64(ins, 1, r.rowid);
      for (size_t i = 0; i < cols.size(); ++i) bindValue(ins, static_cast<int>(i) + 2, r.values[first + i]);
      const int rc = sqlite3_step(ins);
      const bool added = rc == SQLITE_DONE && sqlite3_changes(dst.db) == 1;
      sqlite3_finalize(ins);
      UPCYCLE_CHECK(rc == SQLITE_DONE, "salvage into ", tmp.string(), ": ", sqlite3_errmsg(dst.db));
      if (added) ++per[r.table].fromPages;
    }
  }

  // Placeholders for lost runs and experiments, so every salvaged row keeps its run.
  {
    std::string orphans = "SELECT DISTINCT run FROM (";
    bool firstTable = true;
    for (const auto& t : tables())
      if (std::string(t.cols[0]) == "run") {
        orphans += std::string(firstTable ? "" : " UNION ") + "SELECT run FROM " + t.name;
        firstTable = false;
      }
    orphans += ") WHERE run NOT IN (SELECT id FROM runs)";
    sqlite3_stmt* s = nullptr;
    UPCYCLE_CHECK(sqlite3_prepare_v2(dst.db, orphans.c_str(), -1, &s, nullptr) == SQLITE_OK, "salvage: ", sqlite3_errmsg(dst.db));
    std::vector<int64_t> ids;
    while (sqlite3_step(s) == SQLITE_ROW) ids.push_back(sqlite3_column_int64(s, 0));
    sqlite3_finalize(s);
    for (int64_t id : ids)
      execOrThrow(dst.db, "INSERT INTO runs(id, name, method, status, started, tags) VALUES (" + std::to_string(id) +
                              ", 'salvaged run " + std::to_string(id) + "', '', 'interrupted', '', 'salvaged')", tmp);
    report.placeholderRuns = static_cast<int64_t>(ids.size());
    execOrThrow(dst.db, "INSERT INTO experiments(id, name, created) SELECT DISTINCT experiment_id, 'salvaged', '' FROM runs "
                        "WHERE experiment_id IS NOT NULL AND experiment_id NOT IN (SELECT id FROM experiments)", tmp);
  }
  execOrThrow(dst.db, "COMMIT", tmp);
  for (const auto& t : tables()) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(dst.db, (std::string("SELECT count(*) FROM ") + t.name).c_str(), -1, &s, nullptr);
    if (sqlite3_step(s) == SQLITE_ROW) per[t.name].rows = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    report.tables.push_back(per[t.name]);
  }
  {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(dst.db, "PRAGMA foreign_key_check", -1, &s, nullptr);
    const bool clean = sqlite3_step(s) == SQLITE_DONE;
    sqlite3_finalize(s);
    UPCYCLE_ASSERT(clean, "salvaged store has foreign key violations");
  }
  UPCYCLE_CHECK(sqlite3_close(dst.db) == SQLITE_OK, "cannot close ", tmp.string());  // checkpoints and removes the -wal
  dst.db = nullptr;
  fs::rename(tmp, out, ec);
  UPCYCLE_CHECK(!ec, "cannot rename ", tmp.string(), " to ", out.string(), ": ", ec.message());
  cleanup.done = true;
  return report;
}

}  // namespace upcycle
