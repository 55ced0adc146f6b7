#pragma once
// The workbench's main window: every panel is a dock the user can move, tab or close (the layout is
// kept with QSettings); the engine runs on its own thread (EngineController). A Start page offers the
// built-in demo on first start. Thread-safety: GUI thread only.
#include <QMainWindow>
#include <QMessageBox>
#include <QString>
#include <functional>

class QDockWidget;
class QMenu;
class QPushButton;
class QSplitter;

namespace upcycle::ui {

class CheckpointsPanel;
class ComparePanel;
class EngineController;
class ExperimentPanel;
class LineagePanel;
class RoutingPanel;
class RunPanel;
class RunsPanel;
class SimilarityPanel;
class Workspace;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  // dbPath empty: the default workspace (RunStore::defaultPath()).
  explicit MainWindow(const QString& dbPath = QString(), QWidget* parent = nullptr);
  ~MainWindow() override;

  Workspace* workspace() const { return m_ws; }
  EngineController* engine() const { return m_engine; }
  ExperimentPanel* experimentPanel() const { return m_experiment; }
  CheckpointsPanel* checkpointsPanel() const { return m_checkpoints; }
  RunPanel* runPanel() const { return m_run; }
  SimilarityPanel* similarityPanel() const { return m_similarity; }
  RoutingPanel* routingPanel() const { return m_routing; }
  LineagePanel* lineagePanel() const { return m_lineage; }
  RunsPanel* runsPanel() const { return m_runs; }
  ComparePanel* comparePanel() const { return m_compare; }
  QDockWidget* dock(const QString& objectName) const;

  // Returns an error message (empty on success).
  QString openExperiment(const QString& path);
  // Loads resources/experiments/demo[-quick].yaml and starts it.
  QString runDemo(bool quick);
  // Refuses an invalid experiment (shown in Method and GA) and asks before reusing an output folder
  // that has files. Returns true when the run started.
  bool startExperiment();
  void showPanel(const QString& dockName);  // raises a dock (for the screenshots and menus)
  QString aboutText() const;
  // File menu actions. save() writes the current file, or asks for one (a bundled example is never
  // overwritten); both return false when nothing was saved.
  bool save();
  bool saveAs();
  void newExperiment();
  QStringList recentFiles() const;
  // View → Reset layout: the default docks and every splitter's default proportions.
  void resetLayout();
  // The questions the window asks (overwrite, unsaved edits): a QMessageBox by default; tests answer
  // them through this hook.
  using Asker = std::function<QMessageBox::StandardButton(const QString& title, const QString& text,
                                                          QMessageBox::StandardButtons buttons)>;
  void setAsker(Asker asker) { m_ask = std::move(asker); }
  // The Start page's demo buttons say how long the demo took here last time.
  void updateDemoButtons();
  QPushButton* quickDemoButton() const { return m_quickButton; }

 protected:
  void closeEvent(QCloseEvent* event) override;
  void showEvent(QShowEvent* event) override;

 private:
  QDockWidget* addPanel(QWidget* panel, const QString& name, const QString& title, Qt::DockWidgetArea area);
  void buildMenus();
  void buildStartPage();
  bool restoreLayout();  // false when there was no saved geometry
  void saveLayout();
  void fitDocks();  // dock areas in proportion to the window's size
  bool maybeSaveChanges();  // false: the user cancelled
  void addRecentFile(const QString& path);
  void rebuildRecentMenu();
  QMessageBox::StandardButton ask(const QString& title, const QString& text, QMessageBox::StandardButtons buttons);
  QList<QSplitter*> splitters() const;
  Workspace* m_ws;
  EngineController* m_engine;
  ExperimentPanel* m_experiment;
  CheckpointsPanel* m_checkpoints;
  RunPanel* m_run;
  SimilarityPanel* m_similarity;
  RoutingPanel* m_routing;
  LineagePanel* m_lineage;
  RunsPanel* m_runs;
  ComparePanel* m_compare;
  QWidget* m_startPage = nullptr;
  QList<QDockWidget*> m_docks;
  QByteArray m_defaultState;
  bool m_fitToScreen = false;  // no saved geometry: size the window to the screen when first shown
  QMenu* m_recentMenu = nullptr;
  QPushButton *m_demoButton = nullptr, *m_quickButton = nullptr;
  Asker m_ask;
};

// A title as a menu or button shows it: "&" doubled, so it is not taken for a mnemonic.
QString menuText(const QString& title);

}  // namespace upcycle::ui
