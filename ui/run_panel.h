#pragma once
// Running an experiment: start and cancel, the stages with progress bars and ETA, live curves of loss,
// aux loss, learning rate and tokens/s, and the log. Training steps reach the plots through the
// worker's buffer: a signal without payload starts a 40 ms single-shot timer, and the timer's slot
// takes every buffered step at once and redraws (one replot per 40 ms at most, however fast the
// engine steps). Thread-safety: GUI thread only.
#include <QElapsedTimer>
#include <QTimer>
#include <QWidget>
#include <map>
#include <tuple>
#include <vector>

#include "api/training.h"
#include "pipeline/experiment.h"
#include "plot_frame.h"

class QLabel;
class QPlainTextEdit;
class QPushButton;
class QTableView;
class QCPGraph;

namespace upcycle::ui {

class EngineController;
class StageModel;
class Workspace;

class RunPanel : public QWidget {
  Q_OBJECT
 public:
  RunPanel(Workspace* ws, EngineController* engine, QWidget* parent = nullptr);
  // Starts `e` (named `source` in messages) on the engine thread. Returns false when the engine is busy
  // or the experiment is invalid (the reason goes to the log).
  bool start(const Experiment& e, const QString& source);
  void cancel();
  // Says in the log and the state line why the experiment was not started.
  void refuse(const QString& why);
  QTableView* stageTable() const { return m_table; }
  QLabel* stateLabel() const { return m_state; }
  StageModel* stages() const { return m_stages; }
  // One frame per curve: loss, aux loss, learning rate, tokens/s.
  PlotFrame* curve(int i) const { return m_frames[i]; }
  // Every step the plots have received, in order (what the curves show).
  const std::vector<StepMetrics>& history() const { return m_history; }
  int redraws() const { return m_redraws; }
  QString logText() const;
  static constexpr int kCoalesceMs = 40;

 Q_SIGNALS:
  void startRequested();  // the Start button: the main window supplies the experiment

 private:
  void onStepsAvailable();
  void drain();
  void appendLog(const QString& line);
  void onFinished(bool ok, bool cancelled, const QString& message);
  QCPGraph* graphFor(int plot, const std::string& stage);
  Workspace* m_ws;
  EngineController* m_engine;
  StageModel* m_stages;
  QTableView* m_table;
  QPushButton *m_start, *m_cancel;
  QLabel* m_state;
  PlotFrame* m_frames[4];
  QPlainTextEdit* m_log;
  QTimer m_coalesce;
  std::vector<StepMetrics> m_history;
  std::map<std::string, int> m_stageIndex;          // colour per stage
  // The graph a stage's steps go to now. A stage that begins again (the same stage name in the next
  // seed) starts a new graph in the same colour, so no line joins the end of one seed to the next.
  std::map<std::tuple<int, std::string, int>, QCPGraph*> m_graphs;  // (plot, stage, segment)
  std::map<std::string, int> m_segments;            // how often each stage began, less one
  std::string m_lastStage;                          // the stage of the last step drawn
  int64_t m_lastStep = 0;                           // and its step
  double m_x = 0;                                   // global step counter across stages
  QElapsedTimer m_clock;                            // since start()
  double m_expectedSeconds = -1;                    // the last complete run of this experiment, -1: none
  int m_redraws = 0;
};

}  // namespace upcycle::ui
