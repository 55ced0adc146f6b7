#include "runs_panel.h"

#include <QCheckBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QItemSelectionModel>
#include <QLineEdit>
#include <QMenu>
#include <QDesktopServices>
#include <QUrl>
#include <QMessageBox>
#include <QPushButton>
#include <QSortFilterProxyModel>
#include <QTableView>
#include <QVBoxLayout>

#include <map>
#include <set>

#include "run_detail.h"
#include "table_models.h"
#include "workspace.h"

namespace upcycle::ui {

RunsPanel::RunsPanel(Workspace* ws, QWidget* parent) : QWidget(parent), m_ws(ws) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  m_filter = new QLineEdit;
  m_filter->setObjectName(QStringLiteral("runsFilter"));
  m_filter->setPlaceholderText(tr("Filter runs (name, method, status, tags, params)"));
  m_filter->setClearButtonEnabled(true);
  bar->addWidget(m_filter, 1);
  m_group = new QCheckBox(tr("Group seeds"));
  m_group->setObjectName(QStringLiteral("groupSeeds"));
  m_group->setToolTip(tr("One row per run name with several seeds: mean ± half-width of the 95% confidence interval. "
                         "Click a group to show its seeds."));
  bar->addWidget(m_group);
  m_rename = new QPushButton(tr("Rename…"));
  m_tag = new QPushButton(tr("Tags…"));
  m_delete = new QPushButton(tr("Delete"));
  m_compare = new QPushButton(tr("Compare"));
  m_compare->setObjectName(QStringLiteral("compareButton"));
  m_compare->setToolTip(tr("Compare 2 to 4 selected runs side by side"));
  auto* reloadButton = new QPushButton(tr("Refresh"));
  for (auto* b : {m_rename, m_tag, m_delete, m_compare, reloadButton}) bar->addWidget(b);
  layout->addLayout(bar);

  m_model = new RunsTableModel(this);
  m_proxy = new QSortFilterProxyModel(this);
  m_proxy->setSourceModel(m_model);
  m_proxy->setSortRole(kSortRole);
  m_proxy->setFilterCaseSensitivity(Qt::CaseInsensitive);
  m_proxy->setFilterKeyColumn(-1);
  m_table = new QTableView;
  m_table->setObjectName(QStringLiteral("runsTable"));
  m_table->setModel(m_proxy);
  m_table->setSortingEnabled(true);
  m_table->sortByColumn(RunsTableModel::kId, Qt::DescendingOrder);
  m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
  m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
  m_table->verticalHeader()->hide();
  m_table->horizontalHeader()->setStretchLastSection(true);
  m_table->setAlternatingRowColors(true);
  m_table->setMinimumHeight(m_table->horizontalHeader()->sizeHint().height() + 3 * m_table->verticalHeader()->defaultSectionSize() + 4);
  m_table->setContextMenuPolicy(Qt::CustomContextMenu);
  m_table->setToolTip(tr("Tick runs to overlay their curves in Compare; double-click a run for its details"));
  layout->addWidget(m_table, 1);

  connect(m_filter, &QLineEdit::textChanged, this, &RunsPanel::setFilter);
  connect(m_group, &QCheckBox::toggled, this, [this](bool on) {
    m_table->setSortingEnabled(!on);
    if (on) m_proxy->sort(-1);  // the panel's order: groups newest first, each followed by its seeds
    else m_table->sortByColumn(RunsTableModel::kId, Qt::DescendingOrder);
    refresh();
  });
  connect(m_table, &QTableView::clicked, this, [this](const QModelIndex& i) {
    const QString key = i.data(kGroupRole).toString();
    if (!key.isEmpty()) toggleGroup(key.section('\n', 0, 0), key.section('\n', 1));
  });
  connect(ws, &Workspace::runsChanged, this, &RunsPanel::refresh);
  connect(reloadButton, &QPushButton::clicked, ws, &Workspace::reload);
  connect(m_table->selectionModel(), &QItemSelectionModel::selectionChanged, this, [this] {
    updateButtons();
    const auto ids = selectedRuns();
    if (ids.size() == 1) m_ws->setCurrentRun(ids.front());
  });
  connect(m_rename, &QPushButton::clicked, this, [this] {
    const auto ids = selectedRuns();
    const RunRow* r = ids.size() == 1 ? m_ws->findRun(ids.front()) : nullptr;
    if (!r) return;
    bool ok = false;
    const QString name = QInputDialog::getText(this, tr("Rename run"), tr("Name of run #%1:").arg(r->id), QLineEdit::Normal,
                                               QString::fromStdString(r->name), &ok);
    if (ok) renameRun(r->id, name);
  });
  connect(m_tag, &QPushButton::clicked, this, [this] {
    const auto ids = selectedRuns();
    const RunRow* r = ids.size() == 1 ? m_ws->findRun(ids.front()) : nullptr;
    if (!r) return;
    bool ok = false;
    const QString tags = QInputDialog::getText(this, tr("Tag run"), tr("Tags of run #%1 (comma separated):").arg(r->id),
                                               QLineEdit::Normal, QString::fromStdString(r->tags), &ok);
    if (ok) tagRun(r->id, tags);
  });
  connect(m_delete, &QPushButton::clicked, this, [this] {
    const auto ids = selectedRuns();
    if (ids.isEmpty()) return;
    if (QMessageBox::question(this, tr("Delete runs"),
                              tr("Delete %n run(s) from the store? Their checkpoints on disk are kept.", nullptr, ids.size())) !=
        QMessageBox::Yes)
      return;
    for (qint64 id : ids) deleteRun(id);
  });
  connect(m_compare, &QPushButton::clicked, this, [this] { m_ws->requestCompare(selectedRuns()); });  // ticks them too
  connect(m_model, &RunsTableModel::checkedChanged, ws, &Workspace::setCheckedRuns);
  connect(ws, &Workspace::checkedRunsChanged, m_model, &RunsTableModel::setChecked);
  connect(m_table, &QTableView::doubleClicked, this, [this](const QModelIndex& i) {
    if (i.column() != RunsTableModel::kId && i.data(kRunIdRole).toLongLong() > 0) m_ws->requestDetails(i.data(kRunIdRole).toLongLong());
  });
  connect(m_table, &QTableView::customContextMenuRequested, this, [this](const QPoint& pos) {
    const QModelIndex at = m_table->indexAt(pos);
    if (!at.isValid() || at.data(kRunIdRole).toLongLong() <= 0) return;
    const qint64 id = at.data(kRunIdRole).toLongLong();
    if (!selectedRuns().contains(id)) selectRuns({id});
    QMenu menu(this);
    menu.addAction(tr("Details…"), this, [this, id] { m_ws->requestDetails(id); });
    menu.addAction(tr("Open output folder"), this, [this, id] {
      const QString dir = runOutputFolder(m_ws, id);
      if (!dir.isEmpty()) QDesktopServices::openUrl(QUrl::fromLocalFile(dir));
    })->setEnabled(!runOutputFolder(m_ws, id).isEmpty());
    menu.addSeparator();
    QList<qint64> ticked = m_ws->checkedRuns();
    const bool isTicked = ticked.contains(id);
    menu.addAction(isTicked ? tr("Hide its curves") : tr("Overlay its curves"), this, [this, id, isTicked] {
      QList<qint64> t = m_ws->checkedRuns();
      if (isTicked) t.removeAll(id);
      else t << id;
      m_ws->setCheckedRuns(t);
    });
    menu.addAction(m_compare->text(), m_compare, &QPushButton::click)->setEnabled(m_compare->isEnabled());
    menu.addSeparator();
    menu.addAction(m_rename->text(), m_rename, &QPushButton::click)->setEnabled(m_rename->isEnabled());
    menu.addAction(m_tag->text(), m_tag, &QPushButton::click)->setEnabled(m_tag->isEnabled());
    menu.addAction(m_delete->text(), m_delete, &QPushButton::click)->setEnabled(m_delete->isEnabled());
    menu.exec(m_table->viewport()->mapToGlobal(pos));
  });
  refresh();
}

void RunsPanel::setFilter(const QString& text) {
  if (m_filter->text() != text) m_filter->setText(text);
  m_proxy->setFilterFixedString(text);
}

QList<qint64> RunsPanel::selectedRuns() const {
  QList<qint64> ids;
  for (const QModelIndex& i : m_table->selectionModel()->selectedRows())
    if (i.data(kRunIdRole).toLongLong() > 0) ids << i.data(kRunIdRole).toLongLong();  // not a group row
  std::sort(ids.begin(), ids.end());
  return ids;
}

void RunsPanel::selectRuns(const QList<qint64>& ids) {
  QItemSelection sel;
  for (int r = 0; r < m_proxy->rowCount(); ++r) {
    const QModelIndex i = m_proxy->index(r, 0);
    if (ids.contains(i.data(kRunIdRole).toLongLong())) sel.select(i, m_proxy->index(r, m_proxy->columnCount() - 1));
  }
  m_table->selectionModel()->select(sel, QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
}

void RunsPanel::setGroupSeeds(bool on) { m_group->setChecked(on); }
bool RunsPanel::groupSeeds() const { return m_group->isChecked(); }

void RunsPanel::toggleGroup(const QString& experiment, const QString& name) {
  const QString key = experiment + '\n' + name;
  if (!m_expanded.remove(key)) m_expanded.insert(key);
  refresh();
}

void RunsPanel::refresh() {
  const auto keep = selectedRuns();
  auto entryOf = [&](const RunRow& r) {
    RunsTableModel::Entry e;
    e.run = r;
    try {
      if (m_ws->store()) e.params = keyParams(m_ws->store()->params(r.id));  // one query per run, not a whole record
    } catch (const std::exception&) {
    }
    return e;
  };
  std::vector<RunsTableModel::Entry> entries;
  if (!m_group->isChecked()) {
    for (const RunRow& r : m_ws->runs()) entries.push_back(entryOf(r));
  } else {
    // Groups of (experiment, name) with several seeds; everything else stays one row. Newest first.
    std::map<std::string, std::vector<const RunRow*>> groups;
    for (const RunRow& r : m_ws->runs())
      if (r.method != "base") groups[r.experiment + "\n" + r.name].push_back(&r);
    std::vector<const RunRow*> rows;
    for (const RunRow& r : m_ws->runs()) rows.push_back(&r);
    std::sort(rows.begin(), rows.end(), [](const RunRow* a, const RunRow* b) { return a->id > b->id; });
    std::set<std::string> shown;
    for (const RunRow* r : rows) {
      const std::string key = r->experiment + "\n" + r->name;
      const auto g = groups.find(key);
      std::set<uint64_t> seeds;
      if (g != groups.end())
        for (const RunRow* m : g->second) seeds.insert(m->seed);
      if (r->method == "base" || seeds.size() < 2) {
        entries.push_back(entryOf(*r));
        continue;
      }
      if (!shown.insert(key).second) continue;
      // The group row: figures over its finished seeds (the later run of a repeated seed counts).
      std::map<uint64_t, const RunRow*> bySeed;
      int finished = 0;
      for (const RunRow* m : g->second)
        if (m->status == "finished" && (!bySeed.count(m->seed) || bySeed[m->seed]->id < m->id)) bySeed[m->seed] = m;
      std::vector<double> acc, loss, div;
      for (const auto& [seed, m] : bySeed) {
        ++finished;
        auto value = [&](const char* k, std::vector<double>& out, double scale) {
          const auto it = m->finalMetrics.find(k);
          if (it != m->finalMetrics.end()) out.push_back(scale * it->second);
        };
        value("eval/accuracy", acc, 100.0);
        value("eval/loss", loss, 1.0);
        value("analysis/diversity", div, 1.0);
      }
      RunsTableModel::Entry e = entryOf(*r);
      e.groupSize = static_cast<int>(seeds.size());
      // The colour of the Across seeds view: from the runs it summarizes (each seed's last finished one).
      for (const auto& [seed, m] : bySeed) e.memberIds.push_back(m->id);
      if (e.memberIds.empty()) e.memberIds.push_back(r->id);
      e.expanded = m_expanded.contains(QString::fromStdString(key));
      e.accuracy = sampleStats(acc);
      e.evalLoss = sampleStats(loss);
      e.diversity = sampleStats(div);
      e.run.status = std::to_string(finished) + " of " + std::to_string(seeds.size()) + " finished";
      entries.push_back(e);
      if (!e.expanded) continue;
      std::vector<const RunRow*> members = g->second;
      std::sort(members.begin(), members.end(), [](const RunRow* a, const RunRow* b) {
        return a->seed != b->seed ? a->seed < b->seed : a->id < b->id;
      });
      for (const RunRow* m : members) {
        RunsTableModel::Entry me = entryOf(*m);
        me.member = true;
        entries.push_back(std::move(me));
      }
    }
  }
  m_model->setEntries(std::move(entries));
  m_table->resizeColumnsToContents();
  selectRuns(keep);
  updateButtons();
}

void RunsPanel::updateButtons() {
  const int n = static_cast<int>(selectedRuns().size());
  m_rename->setEnabled(n == 1);
  m_tag->setEnabled(n == 1);
  m_delete->setEnabled(n >= 1);
  m_compare->setEnabled(n >= 2 && n <= 4);
}

bool RunsPanel::storeAction(const QString& failure, const std::function<void(RunStore&)>& action) {
  if (!m_ws->store()) return false;
  try {
    action(*m_ws->store());
  } catch (const std::exception& e) {
    QMessageBox::warning(this, failure, QString::fromStdString(e.what()));
    return false;
  }
  m_ws->reload();
  return true;
}

bool RunsPanel::renameRun(qint64 id, const QString& name) {
  if (name.trimmed().isEmpty()) return false;
  return storeAction(tr("Rename failed"), [&](RunStore& s) { s.setName(id, name.trimmed().toStdString()); });
}

bool RunsPanel::tagRun(qint64 id, const QString& tags) {
  return storeAction(tr("Tagging failed"), [&](RunStore& s) { s.setTags(id, tags.trimmed().toStdString()); });
}

bool RunsPanel::deleteRun(qint64 id) {
  return storeAction(tr("Delete failed"), [&](RunStore& s) { s.deleteRun(id); });
}

}  // namespace upcycle::ui
