#pragma once
// The workbench's read-only table models over run-store data: runs, parameter diffs, final metrics,
// GA lineage, and the Checkpoints panel's checkpoint list. Each is a plain QAbstractTableModel filled
// by a setter. Numeric columns also answer kSortRole with a number, so a QSortFilterProxyModel sorts
// them numerically. Thread-safety: GUI thread only.
#include <QAbstractTableModel>
#include <QSet>
#include <QString>
#include <map>
#include <vector>

#include "api/inspect.h"
#include "store/run_compare.h"
#include "store/run_store.h"
#include "store/run_summary.h"

namespace upcycle::ui {

constexpr int kSortRole = Qt::UserRole + 10;
constexpr int kRunIdRole = Qt::UserRole + 11;
constexpr int kGroupRole = Qt::UserRole + 12;  // a group row of seeds: "experiment\nname"

// One row per stored run. The ID column has a check box (tick runs to overlay their curves) and the
// name a swatch of the run's colour.
class RunsTableModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { kId, kName, kExperiment, kMethod, kStatus, kParams, kAccuracy, kEvalLoss, kDiversity, kStarted, kTags, kColumns };
  struct Entry {
    RunRow run;
    QString params;  // the key parameters, e.g. "E8 k2 r=0.5"
    // Grouped seeds (RunsPanel's "Group seeds"): a group row stands for one run name's seeds (run holds
    // its newest member's row; its id is not a run's) with the mean and 95% CI of each figure; a member
    // row is one seed shown under its expanded group.
    int groupSize = 0;  // > 0: a group row of this many seeds
    bool expanded = false, member = false;
    SampleStats accuracy, evalLoss, diversity;  // group rows: across the seeds (accuracy in %)
    std::vector<int64_t> memberIds;             // group rows: every seed's run (its colour: groupColor)
  };
  using QAbstractTableModel::QAbstractTableModel;
  void setEntries(std::vector<Entry> entries);
  const std::vector<Entry>& entries() const { return m_entries; }
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;
  bool setData(const QModelIndex& index, const QVariant& value, int role) override;
  Qt::ItemFlags flags(const QModelIndex& index) const override;
  void setChecked(const QList<qint64>& ids);
  QList<qint64> checked() const;
  QVariant groupData(const Entry& e, int column, int role) const;

 Q_SIGNALS:
  void checkedChanged(const QList<qint64>& ids);  // the user ticked or unticked a run

 private:
  std::vector<Entry> m_entries;
  QSet<qint64> m_checked;
};

// The key parameters of a run from its flattened params ("E8 k2 r=0.5", "E8 k2 M=4 p=0.3").
QString keyParams(const std::vector<std::pair<std::string, std::string>>& params);

// Compare: the parameters of 2-4 runs, one column each; differing rows are bold and tinted.
class ParamDiffModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  using QAbstractTableModel::QAbstractTableModel;
  void setRuns(const std::vector<RunDetail>& runs);
  void setDiffOnly(bool diffOnly);
  bool diffOnly() const { return m_diffOnly; }
  const std::vector<ParamDiffRow>& rows() const { return m_rows; }
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

 private:
  void rebuild();
  std::vector<RunDetail> m_runs;
  std::vector<ParamDiffRow> m_rows;
  bool m_diffOnly = false;
};

// Compare: final metrics and per-domain evaluation, one column per run; a unique best value is bold
// (ties are not), and each row has one precision.
class MetricsCompareModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  struct Row {
    QString metric;
    std::vector<double> values;  // NaN where the run lacks it
    bool higherIsBetter = false;
  };
  using QAbstractTableModel::QAbstractTableModel;
  void setRuns(const std::vector<RunDetail>& runs);
  const std::vector<Row>& rows() const { return m_rows; }
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;
  static QString formatCell(const Row& r, double v);

 private:
  std::vector<QString> m_headers;
  std::vector<Row> m_rows;
};

// GA lineage: one row per generated expert.
class LineageModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { kChild, kParentA, kParentB, kAlpha, kDareP, kDistance, kMerge, kMaskSeed, kColumns };
  using QAbstractTableModel::QAbstractTableModel;
  void setLineage(std::vector<LineageRow> rows);
  const std::vector<LineageRow>& lineage() const { return m_rows; }
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

 private:
  std::vector<LineageRow> m_rows;
};

// Checkpoints panel: candidate checkpoints with their validation; column 0 is checkable (the expert
// choice). A checkpoint whose architecture differs from the first valid one is flagged.
class CheckpointTableModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { kUse, kStep, kLoss, kArchitecture, kSize, kTokenizer, kStatus, kPath, kColumns };
  struct Entry {
    QString path;
    int64_t step = -1;        // -1: not from a Trainer output
    double loss = std::numeric_limits<double>::quiet_NaN();
    QString architecture;     // "llama d128 L4 ff344" (empty when invalid)
    quint64 bytes = 0;
    QString tokenizer;        // "tokenizer.json (BPE), 151,669 tokens; chat template"
    QString status;           // "ok" or the validation error
    bool valid = false;
    bool mismatch = false;    // architecture differs from the reference
    bool use = true;
  };
  using QAbstractTableModel::QAbstractTableModel;
  // Validates every folder (safetensors headers and config.json; no tensor is read).
  void addFolders(const std::vector<QString>& folders, const std::vector<int64_t>& steps = {},
                  const std::vector<double>& losses = {});
  void clear();
  const std::vector<Entry>& entries() const { return m_entries; }
  std::vector<QString> chosen() const;  // valid, matching, checked; in step order
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  bool setData(const QModelIndex& index, const QVariant& value, int role) override;
  Qt::ItemFlags flags(const QModelIndex& index) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

 private:
  void flagMismatches();
  std::vector<Entry> m_entries;
};

QString architectureText(const ModelConfig& c);
// "tokenizer.json (BPE), 151,669 tokens; chat template" (CheckpointSummary's tokenizer fields).
QString tokenizerText(const std::string& tokenizer, bool chatTemplate);
QString humanBytes(quint64 bytes);

}  // namespace upcycle::ui
