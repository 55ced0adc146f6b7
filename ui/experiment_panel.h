#pragma once
// "Method and GA": the experiment as forms. The experiment-wide settings (base, data, SFT, post-training,
// evaluation), the list of runs, and the selected run's method with its parameters (E, top-k, r, the
// GA's parent rule, alpha range, DARE p and merge operator, the router pre-optimization's seed
// fraction, epochs, a and learning rate). Spin boxes bound each value; every edit is validated with
// the engine's own rules and the message names the field. Load and save are the same YAML files the
// CLI runs (pipeline/experiment.h). The forms reflow: side by side when the panel is wide, stacked
// (and scrolled) when it is narrow. A validation error names the run by its name, without the file's
// path, and the field it names is outlined in red. Thread-safety: GUI thread only.
#include <QWidget>

#include "pipeline/experiment.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QGroupBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QSpinBox;
class QScrollArea;
class QSplitter;

namespace upcycle::ui {

class ExperimentPanel : public QWidget {
  Q_OBJECT
 public:
  explicit ExperimentPanel(QWidget* parent = nullptr);

  const Experiment& experiment() const { return m_exp; }
  void setExperiment(const Experiment& e);
  QString validationError() const { return m_error; }  // empty when valid, else the message shown
  QString errorField() const { return m_errorField; }  // the form field the error names ("runs.top_k"), or empty
  QString currentFile() const { return m_file; }
  // True when the file is one of the bundled examples (resources/experiments): never saved over.
  bool isBundledFile() const;
  // Where Save as… proposes to write: the current file when it is the user's, else
  // NAME.yaml in the user's documents folder (or home).
  QString suggestedSavePath() const;
  bool isModified() const { return m_modified; }
  // Return an error message (empty on success). saveFile refuses an invalid experiment.
  QString loadFile(const QString& path);
  QString saveFile(const QString& path);
  void newExperiment();  // the small default experiment, no file
  // Presets with the papers' defaults, applied to the selected run.
  static QStringList presetNames();
  void applyPreset(int preset);
  void selectRun(int index);
  int currentRun() const { return m_run; }
  // The Checkpoints panel's choice: base and SFT checkpoints; UpIT runs use them as experts.
  void useCheckpoints(const QString& base, const QStringList& checkpoints);
  // The form widget for a YAML field ("runs.ratio", "ga.dare_p", ...), for tests.
  QWidget* field(const QString& name) const;

 Q_SIGNALS:
  void experimentChanged();
  void fileChanged(const QString& path);
  void modifiedChanged(bool modified);

 protected:
  void resizeEvent(QResizeEvent* event) override;

 private:
  void buildExperimentForm(QWidget* host);
  void buildRunForm(QWidget* host);
  void fillForms();
  void fillRunForm();
  void commit();
  void validate();
  void updateMethodGroups();
  void updateSourceFields();  // base path vs pretrain sizes, generator vs data files: enabled by mode
  void refillRunList();
  void setModified(bool modified);
  void fitForms();
  void highlightField(const QString& name);
  QSpinBox* ispin(const QString& name, int lo, int hi, const QString& tip);
  QDoubleSpinBox* dspin(const QString& name, double lo, double hi, int decimals, double step, const QString& tip);
  QComboBox* combo(const QString& name, const QStringList& items, const QString& tip);
  QCheckBox* check(const QString& name, const QString& text, const QString& tip);
  QLineEdit* line(const QString& name, const QString& tip);

  Experiment m_exp;
  int m_run = -1;
  bool m_filling = false;
  QString m_error, m_errorField, m_file;
  bool m_modified = false;
  QSplitter* m_split;
  QSplitter* m_runSide = nullptr;  // the runs list above the selected run's form
  QScrollArea *m_page = nullptr, *m_expScroll = nullptr, *m_runScroll = nullptr;
  QString m_parseError;     // the Seeds or LoRA targets field does not parse (validate() reports it)
  QMap<QString, QWidget*> m_fields;
  QListWidget* m_runs;
  QComboBox* m_preset;
  QLabel* m_status;
  QLabel* m_baseInfo;       // the base folder's architecture, tokenizer and chat template
  QString m_baseInfoPath;   // the folder m_baseInfo describes (inspected once per path)
  QGroupBox *m_dropGroup, *m_noiseGroup, *m_btxGroup, *m_upitGroup, *m_gaGroup, *m_routerGroup, *m_moeGroup;
};

// The engine's validation message as the forms show it: without the "FILE: " prefix, a run named by its
// name instead of its index ("run \"drop\": top_k ..."). *field gets the form field it names, if any,
// and *run the index of the run it names (-1: none).
QString describeExperimentError(const Experiment& e, const QString& message, QString* field = nullptr, int* run = nullptr);

}  // namespace upcycle::ui
