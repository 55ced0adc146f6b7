#pragma once
// The run store: one SQLite file per workspace (SPEC: runs, params, metrics, artifacts, analysis
// blobs, GA lineage, evaluation results, logs). Torch-free; sqlite3 C API.
//
// Schema versions are upgraded step by step on open (v1 -> v2 adds run tags and the latest_metrics
// table). WAL mode lets a reader (the GUI) read while a run writes. Every write is one transaction;
// every failed statement throws UserError with SQLite's own message. On open, runs still marked
// 'running' whose process is gone are marked 'interrupted'.
// Thread-safety: one RunStore per thread (each has its own connection).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/lineage.h"

struct sqlite3;

namespace upcycle {

struct RunRow {
  int64_t id = 0;
  std::string name, experiment, method, status, started, finished, device, codeVersion, tags;
  uint64_t seed = 0;
  std::map<std::string, double> finalMetrics;  // latest value of each "stage/key"
};

struct MetricPoint {
  std::string stage, key;
  int64_t step = 0;
  double value = 0;
};

struct EvalRow {
  std::string domain;  // "" = overall
  double loss = 0, perplexity = 0, accuracy = 0;
  int64_t tokens = 0, answered = 0;
};

using LineageRow = Lineage;

struct BlobRow {
  std::string kind;    // weight_similarity | delta_similarity | output_cka | routing_shares | coselection |
                       // routing_stats (1 x 3: entropy, share entropy, imbalance) | seed_buckets
  int64_t layer = 0;
  std::string domain;  // "" when not per domain
  int64_t rows = 0, cols = 0;
  std::vector<double> values;
};

struct RunDetail {
  RunRow run;
  std::vector<std::pair<std::string, std::string>> params;  // flattened config, sorted by key
  std::vector<EvalRow> eval;
  std::vector<std::pair<std::string, std::string>> artifacts;  // kind, path
  std::vector<LineageRow> lineage;
  std::vector<std::string> logs;
};

class RunStore {
 public:
  static constexpr int kSchemaVersion = 2;

  explicit RunStore(const std::filesystem::path& file);
  // Read-only (runs list, show, compare, export): the file must exist; nothing is created, migrated
  // or written, so a store on a read-only file system or owned by someone else can be read.
  struct ReadOnly {};
  RunStore(const std::filesystem::path& file, ReadOnly);
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  const std::filesystem::path& path() const { return m_path; }
  int schemaVersion() const;
  int64_t interruptedOnOpen() const { return m_interrupted; }

  int64_t beginRun(const std::string& name, const std::string& experiment, const std::string& method, uint64_t seed,
                   const std::string& device, const std::vector<std::pair<std::string, std::string>>& params);
  void finishRun(int64_t run, const std::string& status);  // finished | failed | cancelled
  void addMetrics(int64_t run, const std::vector<MetricPoint>& points);
  void addEval(int64_t run, const std::vector<EvalRow>& rows);
  void addArtifact(int64_t run, const std::string& kind, const std::string& path);
  void addLineage(int64_t run, const std::vector<LineageRow>& rows);
  void addBlobs(int64_t run, const std::vector<BlobRow>& rows);
  void addLog(int64_t run, const std::string& message);
  void setName(int64_t run, const std::string& name);
  void setTags(int64_t run, const std::string& tags);

  std::vector<RunRow> listRuns() const;
  RunDetail run(int64_t id) const;  // throws UserError "no run N in FILE"
  // The run's flattened params alone, sorted by key (empty for an unknown run): cheap for tables.
  std::vector<std::pair<std::string, std::string>> params(int64_t run) const;
  std::vector<MetricPoint> metrics(int64_t run) const;
  std::vector<BlobRow> blobs(int64_t run, const std::string& kind = "") const;
  void deleteRun(int64_t id);
  std::string integrityCheck() const;  // "ok" when PRAGMA integrity_check passes
  // PRAGMA data_version: changes whenever another connection commits (the workbench's watcher).
  int64_t dataVersion() const;

  // The default workspace database: $UPCYCLE_DB, else $XDG_DATA_HOME/upcycle-workbench/runs.db, else
  // ~/.local/share/upcycle-workbench/runs.db.
  static std::filesystem::path defaultPath();

 private:
  void exec(const std::string& sql) const;
  void migrate();
  std::vector<RunRow> rows(int64_t only) const;  // only = 0: every run
  void setUp();  // WAL, pragmas, schema, runs of dead processes (the read-write constructor)
  sqlite3* m_db = nullptr;
  std::filesystem::path m_path;
  int64_t m_interrupted = 0;
};

// Flattens a YAML document into sorted "a.b[0].c" = value pairs, so runs can be diffed key by key.
std::vector<std::pair<std::string, std::string>> flattenYaml(const std::string& yaml);

}  // namespace upcycle
