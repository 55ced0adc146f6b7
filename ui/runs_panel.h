#pragma once
// The store's runs in a table that sorts and filters (status, method, key params, final metrics), with
// rename, tag and delete, and "Compare" for 2-4 selected runs. Thread-safety: GUI thread only.
#include <QSet>
#include <QWidget>
#include <functional>

#include "store/run_store.h"

class QCheckBox;
class QLineEdit;
class QPushButton;
class QSortFilterProxyModel;
class QTableView;

namespace upcycle::ui {

class RunsTableModel;
class Workspace;

class RunsPanel : public QWidget {
  Q_OBJECT
 public:
  explicit RunsPanel(Workspace* ws, QWidget* parent = nullptr);
  RunsTableModel* model() const { return m_model; }
  QSortFilterProxyModel* proxy() const { return m_proxy; }
  QTableView* table() const { return m_table; }
  QList<qint64> selectedRuns() const;
  void selectRuns(const QList<qint64>& ids);
  void setFilter(const QString& text);
  // The actions behind the buttons, without dialogs (the buttons ask, then call these).
  // Group seeds: one row per (experiment, run name) with several seeds, mean ± 95% CI half-width of
  // accuracy, eval loss and diversity; a click on the group row shows or hides its seeds. Sorting is
  // off while grouped (groups newest first, seeds in order under their group).
  void setGroupSeeds(bool on);
  bool groupSeeds() const;
  void toggleGroup(const QString& experiment, const QString& name);
  bool renameRun(qint64 id, const QString& name);
  bool tagRun(qint64 id, const QString& tags);
  bool deleteRun(qint64 id);

 private:
  void refresh();
  void updateButtons();
  // Runs `action` on the store; a failure is shown with `failure` as the title. Reloads on success.
  bool storeAction(const QString& failure, const std::function<void(RunStore&)>& action);
  Workspace* m_ws;
  RunsTableModel* m_model;
  QSortFilterProxyModel* m_proxy;
  QTableView* m_table;
  QLineEdit* m_filter;
  QCheckBox* m_group;
  QSet<QString> m_expanded;  // "experiment\nname" of the groups whose seeds are shown
  QPushButton *m_rename, *m_tag, *m_delete, *m_compare;
};

}  // namespace upcycle::ui
