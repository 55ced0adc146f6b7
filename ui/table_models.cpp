#include "table_models.h"


#include <QBrush>
#include <QColor>
#include <QFont>
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "formats/peft_adapter.h"
#include "plot_frame.h"

namespace upcycle::ui {

namespace {

QString header(const char* const* names, int n, int section) {
  return section >= 0 && section < n ? QObject::tr(names[section]) : QString();
}

QString param(const std::vector<std::pair<std::string, std::string>>& params, const std::string& key) {
  for (const auto& [k, v] : params)
    if (k == key) return QString::fromStdString(v);
  return {};
}

QVariant number(double v, int precision = 4) {
  if (std::isnan(v)) return QStringLiteral("-");
  return QString::number(v, 'g', precision);
}

}  // namespace

QString humanBytes(quint64 bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? QStringLiteral("%1 B").arg(bytes) : QStringLiteral("%1 %2").arg(v, 0, 'f', 1).arg(units[u]);
}

QString architectureText(const ModelConfig& c) {
  QString s = QStringLiteral("%1 d%2 L%3 ff%4").arg(QString::fromStdString(c.modelType)).arg(c.hiddenSize).arg(c.numLayers).arg(c.intermediateSize);
  if (c.isMoe()) s += QStringLiteral(" E%1 k%2").arg(c.numExperts).arg(c.topK);
  return s;
}

QString tokenizerText(const std::string& tokenizer, bool chatTemplate) {
  return QString::fromStdString(tokenizer) + (chatTemplate ? QObject::tr("; chat template") : QString());
}

QString keyParams(const std::vector<std::pair<std::string, std::string>>& params) {
  const QString method = param(params, "run.method");
  if (method.isEmpty() || method == QLatin1String("dense")) return method.isEmpty() ? QString() : QStringLiteral("dense");
  QString s = QStringLiteral("E%1 k%2").arg(param(params, "run.experts"), param(params, "run.top_k"));
  if (method == QLatin1String("drop")) s += QStringLiteral(" r=%1").arg(param(params, "run.ratio"));
  if (method == QLatin1String("noise")) s += QStringLiteral(" std=%1").arg(param(params, "run.noise_std"));
  if (method == QLatin1String("upit") || method == QLatin1String("upit_lora"))
    s += QStringLiteral(" M=%1 p=%2 %3").arg(param(params, "run.checkpoints"), param(params, "run.ga.dare_p"), param(params, "run.ga.merge"));
  if (method == QLatin1String("upit_lora") || method == QLatin1String("loramoe"))
    s += QStringLiteral(" LoRA r%1").arg(param(params, "lora.rank"));
  return s;
}

// ------------------------------------------------------------------------------------------ runs

void RunsTableModel::setEntries(std::vector<Entry> entries) {
  beginResetModel();
  m_entries = std::move(entries);
  endResetModel();
}

int RunsTableModel::rowCount(const QModelIndex& p) const { return p.isValid() ? 0 : static_cast<int>(m_entries.size()); }
int RunsTableModel::columnCount(const QModelIndex& p) const { return p.isValid() ? 0 : kColumns; }

QVariant RunsTableModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= static_cast<int>(m_entries.size())) return {};
  const Entry& e = m_entries[index.row()];
  const RunRow& r = e.run;
  auto metric = [&](const char* key) {
    auto it = r.finalMetrics.find(key);
    return it == r.finalMetrics.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
  };
  if (e.groupSize > 0) return groupData(e, index.column(), role);
  if (role == kRunIdRole) return static_cast<qlonglong>(r.id);
  if (role == Qt::CheckStateRole && index.column() == kId) return m_checked.contains(r.id) ? Qt::Checked : Qt::Unchecked;
  if (e.member && role == Qt::DisplayRole && index.column() == kName)
    return QStringLiteral("    ↳ %1 (seed %2)").arg(QString::fromStdString(r.name)).arg(r.seed);
  if (role == Qt::DecorationRole && index.column() == kName) return runColor(r.id);
  if (role == Qt::ToolTipRole && index.column() == kId) return tr("Tick to overlay this run's curves in Compare");
  if (role == Qt::ForegroundRole && index.column() == kStatus) {
    if (r.status == "failed") return QBrush(QColor(0xc0, 0x1c, 0x28));
    if (r.status == "interrupted" || r.status == "cancelled") return QBrush(QColor(0xb8, 0x5c, 0x00));
    if (r.status == "running") return QBrush(QColor(0x1a, 0x5f, 0xb4));
    return {};
  }
  if (role == Qt::TextAlignmentRole && (index.column() == kId || (index.column() >= kAccuracy && index.column() <= kDiversity)))
    return QVariant::fromValue(Qt::AlignRight | Qt::AlignVCenter);
  const bool sort = role == kSortRole;
  if (role != Qt::DisplayRole && !sort) return {};
  switch (index.column()) {
    case kId: return sort ? QVariant(static_cast<qlonglong>(r.id)) : QVariant(QString::number(r.id));
    case kName: return QString::fromStdString(r.name);
    case kExperiment: return QString::fromStdString(r.experiment);
    case kMethod: return QString::fromStdString(r.method);
    case kStatus: return QString::fromStdString(r.status);
    case kParams: return e.params;
    case kAccuracy: {
      const double v = metric("eval/accuracy");
      if (sort) return std::isnan(v) ? -1.0 : v;
      return std::isnan(v) ? QStringLiteral("-") : QStringLiteral("%1%").arg(100.0 * v, 0, 'f', 1);
    }
    case kEvalLoss: {
      const double v = metric("eval/loss");
      return sort ? QVariant(std::isnan(v) ? 1e300 : v) : number(v);
    }
    case kDiversity: {
      const double v = metric("analysis/diversity");
      return sort ? QVariant(std::isnan(v) ? -1.0 : v) : number(v, 3);
    }
    case kStarted: return QString::fromStdString(r.started);
    case kTags: return QString::fromStdString(r.tags);
    default: return {};
  }
}

QVariant RunsTableModel::groupData(const Entry& e, int column, int role) const {
  // mean ± half-width of the 95% interval (one seed: the value alone).
  auto figure = [](const SampleStats& st, int decimals, const QString& unit) -> QString {
    if (st.n == 0 || std::isnan(st.mean)) return QStringLiteral("-");
    QString t = QString::number(st.mean, 'f', decimals);
    if (st.n >= 2) t += QStringLiteral(" ± ") + QString::number(st.hi - st.mean, 'f', decimals);
    return t + unit;
  };
  if (role == kRunIdRole) return static_cast<qlonglong>(0);
  if (role == kGroupRole) return QString::fromStdString(e.run.experiment + "\n" + e.run.name);
  if (role == Qt::FontRole) {
    QFont f;
    f.setBold(true);
    return f;
  }
  if (role == Qt::DecorationRole && column == kName) return groupColor(e.memberIds);
  if (role == Qt::ToolTipRole)
    return tr("%1 seeds of %2: mean ± half-width of the 95% confidence interval. Click to %3 the seeds.")
        .arg(e.groupSize)
        .arg(QString::fromStdString(e.run.name))
        .arg(e.expanded ? tr("hide") : tr("show"));
  if (role == Qt::TextAlignmentRole && (column == kId || (column >= kAccuracy && column <= kDiversity)))
    return QVariant::fromValue(Qt::AlignRight | Qt::AlignVCenter);
  if (role != Qt::DisplayRole && role != kSortRole) return {};
  switch (column) {
    case kId: return QStringLiteral("%1 %2 seeds").arg(e.expanded ? QStringLiteral("▾") : QStringLiteral("▸")).arg(e.groupSize);
    case kName: return QString::fromStdString(e.run.name);
    case kExperiment: return QString::fromStdString(e.run.experiment);
    case kMethod: return QString::fromStdString(e.run.method);
    case kStatus: return QString::fromStdString(e.run.status);
    case kParams: return e.params;
    case kAccuracy: return figure(e.accuracy, 1, QStringLiteral("%"));
    case kEvalLoss: return figure(e.evalLoss, 4, QString());
    case kDiversity: return figure(e.diversity, 3, QString());
    case kStarted: return QString::fromStdString(e.run.started);
    case kTags: return QString::fromStdString(e.run.tags);
    default: return {};
  }
}

QVariant RunsTableModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"ID", "Name", "Experiment", "Method", "Status", "Key params", "Accuracy", "Eval loss",
                                "Diversity", "Started", "Tags"};
  return header(names, kColumns, section);
}

bool RunsTableModel::setData(const QModelIndex& index, const QVariant& value, int role) {
  if (!index.isValid() || role != Qt::CheckStateRole || index.column() != kId || index.row() >= static_cast<int>(m_entries.size()) ||
      m_entries[index.row()].groupSize > 0)
    return false;
  const qint64 id = m_entries[index.row()].run.id;
  if (value.toInt() == Qt::Checked) m_checked.insert(id);
  else m_checked.remove(id);
  Q_EMIT dataChanged(index, index, {Qt::CheckStateRole});
  Q_EMIT checkedChanged(checked());
  return true;
}

Qt::ItemFlags RunsTableModel::flags(const QModelIndex& index) const {
  Qt::ItemFlags f = QAbstractTableModel::flags(index);
  const bool group = index.isValid() && index.row() < static_cast<int>(m_entries.size()) && m_entries[index.row()].groupSize > 0;
  if (index.isValid() && index.column() == kId && !group) f |= Qt::ItemIsUserCheckable;
  return f;
}

void RunsTableModel::setChecked(const QList<qint64>& ids) {
  const QSet<qint64> next(ids.begin(), ids.end());
  if (next == m_checked) return;
  m_checked = next;
  if (!m_entries.empty()) Q_EMIT dataChanged(index(0, kId), index(rowCount() - 1, kId), {Qt::CheckStateRole});
}

QList<qint64> RunsTableModel::checked() const {
  QList<qint64> out(m_checked.begin(), m_checked.end());
  std::sort(out.begin(), out.end());
  return out;
}

// ------------------------------------------------------------------------------------- param diff

void ParamDiffModel::setRuns(const std::vector<RunDetail>& runs) {
  m_runs = runs;
  rebuild();
}

void ParamDiffModel::setDiffOnly(bool diffOnly) {
  if (diffOnly == m_diffOnly) return;
  m_diffOnly = diffOnly;
  rebuild();
}

void ParamDiffModel::rebuild() {
  beginResetModel();
  m_rows = compareParams(m_runs, m_diffOnly);
  endResetModel();
}

int ParamDiffModel::rowCount(const QModelIndex& p) const { return p.isValid() ? 0 : static_cast<int>(m_rows.size()); }
int ParamDiffModel::columnCount(const QModelIndex& p) const { return p.isValid() ? 0 : 1 + static_cast<int>(m_runs.size()); }

QVariant ParamDiffModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= static_cast<int>(m_rows.size())) return {};
  const ParamDiffRow& r = m_rows[index.row()];
  if (role == Qt::FontRole && r.differs) {
    QFont f;
    f.setBold(true);
    return f;
  }
  if (role == Qt::BackgroundRole && r.differs) return QBrush(QColor(255, 244, 204));
  if (role != Qt::DisplayRole) return {};
  if (index.column() == 0) return QString::fromStdString(r.key);
  return QString::fromStdString(r.values.at(index.column() - 1));
}

QVariant ParamDiffModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  if (section == 0) return tr("Parameter");
  if (section - 1 >= static_cast<int>(m_runs.size())) return {};
  const RunRow& r = m_runs[section - 1].run;
  return QStringLiteral("#%1 %2").arg(r.id).arg(QString::fromStdString(r.name));
}

// ---------------------------------------------------------------------------------- metric table

void MetricsCompareModel::setRuns(const std::vector<RunDetail>& runs) {
  beginResetModel();
  m_headers.clear();
  m_rows.clear();
  std::map<QString, Row> rows;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto cell = [&](const QString& name, size_t run, double v, bool higherBetter) {
    Row& r = rows[name];
    if (r.values.empty()) {
      r.metric = name;
      r.values.assign(runs.size(), nan);
      r.higherIsBetter = higherBetter;
    }
    r.values[run] = v;
  };
  for (size_t i = 0; i < runs.size(); ++i) {
    m_headers.push_back(QStringLiteral("#%1 %2").arg(runs[i].run.id).arg(QString::fromStdString(runs[i].run.name)));
    for (const auto& [k, v] : runs[i].run.finalMetrics) {
      QString key = QString::fromStdString(k);
      if (key.startsWith(QLatin1String("eval/"))) continue;  // the eval table below is the fuller source
      // "post:NAME/loss": each run's own stage name; one row per metric across runs.
      if (key.startsWith(QLatin1String("post:"))) key = QStringLiteral("post-training/") + key.section(QLatin1Char('/'), 1);
      const bool higher = key.contains(QLatin1String("accuracy")) || key.contains(QLatin1String("tokens_per_s")) ||
                          key.contains(QLatin1String("diversity"));
      cell(key, i, v, higher);
    }
    for (const EvalRow& e : runs[i].eval) {
      const QString d = e.domain.empty() ? QStringLiteral("overall") : QString::fromStdString(e.domain);
      if (e.answered > 0) cell(QStringLiteral("eval accuracy: %1").arg(d), i, e.accuracy, true);
      cell(QStringLiteral("eval loss: %1").arg(d), i, e.loss, false);
    }
  }
  // The evaluation first (overall, then the domains), then the training and analysis figures.
  std::vector<Row> evalRows, others;
  for (auto& [k, r] : rows) (k.startsWith(QLatin1String("eval ")) ? evalRows : others).push_back(std::move(r));
  std::stable_sort(evalRows.begin(), evalRows.end(), [](const Row& a, const Row& b) {
    const bool ao = a.metric.endsWith(QLatin1String(": overall")), bo = b.metric.endsWith(QLatin1String(": overall"));
    return ao != bo ? ao : false;
  });
  for (auto& r : evalRows) m_rows.push_back(std::move(r));
  for (auto& r : others) m_rows.push_back(std::move(r));
  endResetModel();
}

int MetricsCompareModel::rowCount(const QModelIndex& p) const { return p.isValid() ? 0 : static_cast<int>(m_rows.size()); }
int MetricsCompareModel::columnCount(const QModelIndex& p) const { return p.isValid() ? 0 : 1 + static_cast<int>(m_headers.size()); }

// One precision per row, so a column of numbers reads alike: accuracies as percentages with one
// decimal, other figures with four significant digits of the row's largest magnitude.
QString MetricsCompareModel::formatCell(const Row& r, double v) {
  if (std::isnan(v)) return QStringLiteral("-");
  if (r.metric.contains(QLatin1String("accuracy"))) return QStringLiteral("%1%").arg(100.0 * v, 0, 'f', 1);
  double largest = 0;
  for (double o : r.values)
    if (std::isfinite(o)) largest = std::max(largest, std::fabs(o));
  const int decimals = largest > 0 ? std::clamp(3 - static_cast<int>(std::floor(std::log10(largest))), 0, 6) : 4;
  QString text = QString::number(v, 'f', decimals);
  // -0.0 and tiny negatives that round to zero read as 0, not "-0.0000".
  if (std::isfinite(v) && text.startsWith(QLatin1Char('-')) && text.toDouble() == 0.0) text.remove(0, 1);
  return text;
}

QVariant MetricsCompareModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= static_cast<int>(m_rows.size())) return {};
  const Row& r = m_rows[index.row()];
  if (index.column() == 0) return role == Qt::DisplayRole ? QVariant(r.metric) : QVariant();
  const double v = r.values.at(index.column() - 1);
  if (role == Qt::FontRole && !std::isnan(v) && r.values.size() > 1) {
    // Bold marks a unique best: a value no other run beats or equals as shown (a tie is not a win).
    const QString shown = formatCell(r, v);
    for (size_t i = 0; i < r.values.size(); ++i) {
      const double o = r.values[i];
      if (static_cast<int>(i) == index.column() - 1 || std::isnan(o)) continue;
      if ((r.higherIsBetter ? o > v : o < v) || formatCell(r, o) == shown) return {};
    }
    QFont f;
    f.setBold(true);
    return f;
  }
  if (role == Qt::TextAlignmentRole) return QVariant::fromValue(Qt::AlignRight | Qt::AlignVCenter);
  if (role == kSortRole) return v;
  if (role != Qt::DisplayRole) return {};
  return formatCell(r, v);
}

QVariant MetricsCompareModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  if (section == 0) return tr("Metric");
  return section - 1 < static_cast<int>(m_headers.size()) ? QVariant(m_headers[section - 1]) : QVariant();
}

// ---------------------------------------------------------------------------------------- lineage

void LineageModel::setLineage(std::vector<LineageRow> rows) {
  beginResetModel();
  m_rows = std::move(rows);
  endResetModel();
}

int LineageModel::rowCount(const QModelIndex& p) const { return p.isValid() ? 0 : static_cast<int>(m_rows.size()); }
int LineageModel::columnCount(const QModelIndex& p) const { return p.isValid() ? 0 : kColumns; }

QVariant LineageModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= static_cast<int>(m_rows.size())) return {};
  const LineageRow& l = m_rows[index.row()];
  if (role != Qt::DisplayRole && role != kSortRole) return {};
  switch (index.column()) {
    case kChild: return static_cast<qlonglong>(l.child);
    case kParentA: return static_cast<qlonglong>(l.parentA);
    case kParentB: return static_cast<qlonglong>(l.parentB);
    case kAlpha: return role == kSortRole ? QVariant(l.alpha) : QVariant(QString::number(l.alpha, 'f', 3));
    case kDareP: return role == kSortRole ? QVariant(l.dareP) : QVariant(QString::number(l.dareP, 'f', 2));
    case kDistance: return role == kSortRole ? QVariant(l.distance) : QVariant(QString::number(l.distance, 'g', 4));
    case kMerge: return QString::fromStdString(l.mergeOp);
    case kMaskSeed: return QString::number(l.maskSeed);
    default: return {};
  }
}

QVariant LineageModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"Expert", "Parent A", "Parent B", "alpha", "DARE p", "Distance", "Merge", "Mask seed"};
  return header(names, kColumns, section);
}

// ------------------------------------------------------------------------------------ checkpoints

void CheckpointTableModel::addFolders(const std::vector<QString>& folders, const std::vector<int64_t>& steps,
                                      const std::vector<double>& losses) {
  beginResetModel();
  for (size_t i = 0; i < folders.size(); ++i) {
    Entry e;
    e.path = folders[i];
    if (i < steps.size()) e.step = steps[i];
    if (i < losses.size()) e.loss = losses[i];
    try {
      const std::filesystem::path folder = folders[i].toStdString();
      if (isPeftAdapter(folder)) {  // a LoRA adapter: its base's architecture plus the adapter's settings
        const PeftAdapterInfo a = readPeftAdapterConfig(folder);
        CheckpointSummary base = summarizeCheckpoint(a.basePath);
        QStringList targets;
        for (const auto& t : a.lora.targets) targets << QString::fromStdString(t.substr(0, t.find('_')));
        e.architecture = architectureText(base.config) +
                         QStringLiteral(" + LoRA r%1 (%2)").arg(a.lora.rank).arg(targets.join(QStringLiteral(",")));
        std::error_code ec;
        e.bytes = static_cast<int64_t>(std::filesystem::file_size(folder / "adapter_model.safetensors", ec));
        e.tokenizer = tokenizerText(base.tokenizer, base.chatTemplate);
        e.valid = true;
        e.status = tr("ok (adapter on %1)").arg(QString::fromStdString(a.basePath.string()));
        m_entries.push_back(std::move(e));
        continue;
      }
      CheckpointSummary s = summarizeCheckpoint(folder);
      e.architecture = architectureText(s.config);
      e.bytes = s.fileBytes;
      e.tokenizer = tokenizerText(s.tokenizer, s.chatTemplate);
      e.valid = true;
      e.status = tr("ok");
    } catch (const std::exception& ex) {
      e.status = QString::fromStdString(ex.what());
      e.use = false;
    }
    m_entries.push_back(std::move(e));
  }
  flagMismatches();
  endResetModel();
}

void CheckpointTableModel::clear() {
  beginResetModel();
  m_entries.clear();
  endResetModel();
}

void CheckpointTableModel::flagMismatches() {
  QString reference;
  for (auto& e : m_entries) {
    if (!e.valid) continue;
    if (reference.isEmpty()) reference = e.architecture;
    e.mismatch = e.architecture != reference;
    if (e.mismatch) {
      e.use = false;
      e.status = tr("architecture differs from %1").arg(reference);
    }
  }
}

std::vector<QString> CheckpointTableModel::chosen() const {
  std::vector<const Entry*> picked;
  for (const auto& e : m_entries)
    if (e.valid && !e.mismatch && e.use) picked.push_back(&e);
  std::stable_sort(picked.begin(), picked.end(), [](const Entry* a, const Entry* b) { return a->step < b->step; });
  std::vector<QString> out;
  for (const Entry* e : picked) out.push_back(e->path);
  return out;
}

int CheckpointTableModel::rowCount(const QModelIndex& p) const { return p.isValid() ? 0 : static_cast<int>(m_entries.size()); }
int CheckpointTableModel::columnCount(const QModelIndex& p) const { return p.isValid() ? 0 : kColumns; }

QVariant CheckpointTableModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= static_cast<int>(m_entries.size())) return {};
  const Entry& e = m_entries[index.row()];
  if (role == Qt::CheckStateRole && index.column() == kUse) return e.use ? Qt::Checked : Qt::Unchecked;
  if (role == Qt::ForegroundRole && index.column() == kStatus && (!e.valid || e.mismatch)) return QBrush(QColor(0xc0, 0x1c, 0x28));
  if (role == Qt::ToolTipRole) return e.path + QStringLiteral("\n") + e.status;
  if (role == kSortRole) {
    if (index.column() == kStep) return static_cast<qlonglong>(e.step);
    if (index.column() == kLoss) return e.loss;
    if (index.column() == kSize) return static_cast<qulonglong>(e.bytes);
  }
  if (role != Qt::DisplayRole && role != kSortRole) return {};
  switch (index.column()) {
    case kUse: return {};
    case kStep: return e.step >= 0 ? QString::number(e.step) : QStringLiteral("-");
    case kLoss: return std::isnan(e.loss) ? QStringLiteral("-") : QString::number(e.loss, 'f', 4);
    case kArchitecture: return e.architecture;
    case kSize: return e.valid ? humanBytes(e.bytes) : QString();
    case kTokenizer: return e.tokenizer;
    case kStatus: return e.status;
    case kPath: return e.path;
    default: return {};
  }
}

bool CheckpointTableModel::setData(const QModelIndex& index, const QVariant& value, int role) {
  if (!index.isValid() || index.column() != kUse || role != Qt::CheckStateRole) return false;
  Entry& e = m_entries[index.row()];
  if (!e.valid || e.mismatch) return false;
  e.use = value.toInt() == Qt::Checked;
  Q_EMIT dataChanged(index, index, {Qt::CheckStateRole});
  return true;
}

Qt::ItemFlags CheckpointTableModel::flags(const QModelIndex& index) const {
  if (!index.isValid()) return Qt::NoItemFlags;
  Qt::ItemFlags f = Qt::ItemIsEnabled | Qt::ItemIsSelectable;
  const Entry& e = m_entries[index.row()];
  if (index.column() == kUse && e.valid && !e.mismatch) f |= Qt::ItemIsUserCheckable;
  return f;
}

QVariant CheckpointTableModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"Expert", "Step", "Loss", "Architecture", "Size", "Tokenizer", "Status", "Path"};
  return header(names, kColumns, section);
}

}  // namespace upcycle::ui
