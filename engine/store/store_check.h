#pragma once
// Checking a run store and salvaging a damaged one (`upcycle runs check [--salvage OUT]`).
// Torch-free; sqlite3 C API. Neither function writes to the file it checks.
//
// checkStore runs PRAGMA integrity_check and foreign_key_check on a read-only connection and counts
// the rows of each table it can read. salvageStore copies into a new store (the current schema,
// written as OUT.tmp-PID and renamed) every row that can still be read, in two passes:
//  1. through SQLite, table by table in rowid order; when a read fails on a damaged page, the scan
//     looks for the first readable rowid after it (probing forward, then bisecting back) and goes on;
//  2. when SQLite cannot read the schema at all (page 1 overwritten: "file is not a database") or a
//     table had damaged pages, a scan of the file's b-tree leaf pages (SQLite's documented file
//     format: cells, varints, records, overflow chains). Each record is matched to its table by its
//     columns' count and types; rows the first pass already has are kept from it.
// Rows of runs whose own row was lost keep a placeholder run ("salvaged run N", interrupted), so no
// metric, log or blob is dropped and the foreign keys hold. Limits: the page scan reads the main file
// only (not a -wal), and a freed page that still held rows could bring deleted rows back (Debian's
// SQLite is built with SECURE_DELETE, which zeroes freed pages).
// Thread-safety: free functions; each opens its own connections.
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace upcycle {

struct StoreCheck {
  bool ok = false;                                        // both checks clean
  std::vector<std::string> problems;                      // what integrity_check, foreign_key_check or opening said
  std::vector<std::pair<std::string, int64_t>> tableRows;  // count(*) of each table that could be counted
};
StoreCheck checkStore(const std::filesystem::path& file);

struct SalvagedTable {
  std::string table;
  int64_t rows = 0;          // in the new store
  int64_t fromPages = 0;     // of which found by the page scan
  int64_t readErrors = 0;    // damaged places the SQLite pass skipped
};
struct SalvageReport {
  std::vector<SalvagedTable> tables;
  bool pageScan = false;         // the second pass ran
  int64_t pageSize = 0;          // the page size it used (from the header, or detected)
  int64_t placeholderRuns = 0;   // runs recreated for rows whose run row was lost
  std::string sqliteError;       // why SQLite could not read the schema ("" when it could)
};
// Throws UserError naming the file when `out` exists, equals `damaged`, or cannot be written.
SalvageReport salvageStore(const std::filesystem::path& damaged, const std::filesystem::path& out);

}  // namespace upcycle
