#include "run_detail.h"

#include <algorithm>

#include <QDesktopServices>
#include <QDialogButtonBox>
#include <QDir>
#include <QFileInfo>
#include <QFormLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QTabWidget>
#include <QTableWidget>
#include <QUrl>
#include <QVBoxLayout>
#include <map>

#include "plot_frame.h"
#include "stage_model.h"
#include "workspace.h"

namespace upcycle::ui {

namespace {

QString param(const std::vector<std::pair<std::string, std::string>>& params, const std::string& key) {
  for (const auto& [k, v] : params)
    if (k == key) return QString::fromStdString(v);
  return {};
}

QTableWidget* table(const QStringList& headers) {
  auto* t = new QTableWidget(0, static_cast<int>(headers.size()));
  t->setHorizontalHeaderLabels(headers);
  t->verticalHeader()->hide();
  t->setEditTriggers(QAbstractItemView::NoEditTriggers);
  t->setAlternatingRowColors(true);
  t->horizontalHeader()->setStretchLastSection(true);
  t->setSelectionBehavior(QAbstractItemView::SelectRows);
  return t;
}

void addRow(QTableWidget* t, const QStringList& cells) {
  const int r = t->rowCount();
  t->insertRow(r);
  for (int c = 0; c < cells.size(); ++c) t->setItem(r, c, new QTableWidgetItem(cells[c]));
}

}  // namespace

QString runOutputFolder(const Workspace* ws, qint64 id) {
  if (!ws->store()) return {};
  try {
    const RunDetail d = ws->store()->run(id);
    for (const auto& [kind, path] : d.artifacts)
      if (kind == "model") {
        const QFileInfo f(QString::fromStdString(path));
        const QString dir = f.isDir() ? f.absoluteFilePath() : f.absolutePath();
        if (QFileInfo(dir).isDir()) return dir;
      }
    const QString out = param(d.params, "out");
    if (out.isEmpty()) return {};
    const QString root = QDir(ws->workDir()).absoluteFilePath(out);
    const QString dir = d.run.method == "base" ? QDir(root).filePath(QStringLiteral("base"))
                                               : QDir(root).filePath(QStringLiteral("runs/") + QString::fromStdString(d.run.name));
    if (QFileInfo(dir).isDir()) return dir;
    return QFileInfo(root).isDir() ? root : QString();
  } catch (const std::exception&) {
    return {};
  }
}

RunDetailDialog::RunDetailDialog(Workspace* ws, qint64 id, QWidget* parent) : QDialog(parent), m_ws(ws), m_id(id) {
  setObjectName(QStringLiteral("runDetail"));
  setAttribute(Qt::WA_DeleteOnClose, false);
  // Two thirds of the main window (a larger page on a larger screen), never below 820x600 where the
  // window has room for it.
  QSize size(820, 600);
  if (parent) {
    const QSize w = parent->window()->size();
    size = QSize(std::max(std::min(820, w.width() - 40), w.width() * 2 / 3), std::max(std::min(600, w.height() - 40), w.height() * 2 / 3));
  }
  resize(size);
  auto* v = new QVBoxLayout(this);
  RunDetail d;
  QString error;
  try {
    if (ws->store()) d = ws->store()->run(id);
  } catch (const std::exception& e) {
    error = QString::fromStdString(e.what());
  }
  const RunRow& r = d.run;
  setWindowTitle(tr("Run #%1 %2").arg(id).arg(QString::fromStdString(r.name)));
  auto* title = new QLabel(QStringLiteral("<h3><span style='color:%1'>&#9632;</span> #%2 %3</h3>")
                               .arg(runColor(id).name())
                               .arg(id)
                               .arg(QString::fromStdString(r.name).toHtmlEscaped()));
  v->addWidget(title);
  if (!error.isEmpty()) v->addWidget(new QLabel(error));
  m_folder = runOutputFolder(ws, id);

  m_tabs = new QTabWidget;
  v->addWidget(m_tabs, 1);

  // Overview.
  auto* overview = new QWidget;
  auto* form = new QFormLayout(overview);
  form->setRowWrapPolicy(QFormLayout::WrapLongRows);
  auto text = [](const QString& s) {
    auto* l = new QLabel(s);
    l->setTextInteractionFlags(Qt::TextSelectableByMouse);
    l->setWordWrap(true);
    return l;
  };
  const double secs = storeSecondsBetween(r.started, r.finished);
  form->addRow(tr("Experiment"), text(QString::fromStdString(r.experiment)));
  form->addRow(tr("Method"), text(QString::fromStdString(r.method)));
  form->addRow(tr("Status"), text(QString::fromStdString(r.status)));
  form->addRow(tr("Started"), text(QString::fromStdString(r.started) + tr(" (UTC)")));
  form->addRow(tr("Finished"), text(r.finished.empty() ? QStringLiteral("-")
                                                       : QString::fromStdString(r.finished) +
                                                             (secs >= 0 ? tr(" (took %1)").arg(formatDuration(secs)) : QString())));
  form->addRow(tr("Seed"), text(QString::number(r.seed)));
  form->addRow(tr("Device"), text(QString::fromStdString(r.device)));
  form->addRow(tr("Code version"), text(QString::fromStdString(r.codeVersion)));
  form->addRow(tr("Tags"), text(QString::fromStdString(r.tags)));
  auto* folderRow = new QWidget;
  auto* fh = new QHBoxLayout(folderRow);
  fh->setContentsMargins(0, 0, 0, 0);
  auto* folder = new QLineEdit(m_folder.isEmpty() ? tr("(no output folder on disk)") : m_folder);
  folder->setReadOnly(true);
  folder->setObjectName(QStringLiteral("outputFolder"));
  auto* open = new QPushButton(tr("Open folder"));
  open->setObjectName(QStringLiteral("openFolder"));
  open->setEnabled(!m_folder.isEmpty());
  connect(open, &QPushButton::clicked, this, [this] { QDesktopServices::openUrl(QUrl::fromLocalFile(m_folder)); });
  fh->addWidget(folder, 1);
  fh->addWidget(open);
  form->addRow(tr("Output folder"), folderRow);
  m_tabs->addTab(overview, tr("Overview"));

  // Parameters.
  m_params = table({tr("Parameter"), tr("Value")});
  m_params->setObjectName(QStringLiteral("detailParams"));
  for (const auto& [k, val] : d.params) addRow(m_params, {QString::fromStdString(k), QString::fromStdString(val)});
  m_params->resizeColumnToContents(0);
  m_tabs->addTab(m_params, tr("Parameters"));

  // Stages: steps and first / last loss per training stage, from the stored metrics.
  m_stages = table({tr("Stage"), tr("Steps"), tr("First loss"), tr("Last loss"), tr("Mean tokens/s")});
  m_stages->setObjectName(QStringLiteral("detailStages"));
  struct StageFigures {
    int64_t steps = 0;
    std::map<int64_t, double> loss;
    double tpsSum = 0;
    int tpsCount = 0;
  };
  std::map<std::string, StageFigures> stages;
  std::vector<std::string> order;
  if (ws->store()) {
    for (const MetricPoint& p : ws->store()->metrics(id)) {
      if (p.stage == "eval" || p.stage == "analysis") continue;
      if (!stages.count(p.stage)) order.push_back(p.stage);
      StageFigures& s = stages[p.stage];
      s.steps = std::max(s.steps, p.step);
      if (p.key == "loss") s.loss[p.step] = p.value;
      if (p.key == "tokens_per_s") {
        s.tpsSum += p.value;
        ++s.tpsCount;
      }
    }
  }
  for (const std::string& st : order) {
    const StageFigures& s = stages[st];
    addRow(m_stages, {QString::fromStdString(st), QString::number(s.steps),
                      s.loss.empty() ? QStringLiteral("-") : QString::number(s.loss.begin()->second, 'f', 4),
                      s.loss.empty() ? QStringLiteral("-") : QString::number(s.loss.rbegin()->second, 'f', 4),
                      s.tpsCount ? QString::number(s.tpsSum / s.tpsCount, 'f', 0) : QStringLiteral("-")});
  }
  m_tabs->addTab(m_stages, tr("Stages"));

  // Final metrics and evaluation.
  m_metrics = table({tr("Metric"), tr("Value")});
  for (const auto& [k, val] : r.finalMetrics) addRow(m_metrics, {QString::fromStdString(k), QString::number(val, 'g', 6)});
  for (const EvalRow& e : d.eval) {
    const QString dom = e.domain.empty() ? tr("overall") : QString::fromStdString(e.domain);
    addRow(m_metrics, {tr("eval loss: %1").arg(dom), QString::number(e.loss, 'f', 4)});
    if (e.answered > 0) addRow(m_metrics, {tr("eval accuracy: %1").arg(dom), QStringLiteral("%1%").arg(100.0 * e.accuracy, 0, 'f', 1)});
  }
  m_metrics->resizeColumnToContents(0);
  m_tabs->addTab(m_metrics, tr("Metrics"));

  // Log.
  m_log = new QPlainTextEdit;
  m_log->setObjectName(QStringLiteral("detailLog"));
  m_log->setReadOnly(true);
  m_log->setLineWrapMode(QPlainTextEdit::NoWrap);
  m_log->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  for (const std::string& line : d.logs) m_log->appendPlainText(QString::fromStdString(line));
  m_tabs->addTab(m_log, tr("Log"));

  // Artifacts: double-click opens the folder that holds one.
  m_artifacts = table({tr("Kind"), tr("Path")});
  m_artifacts->setObjectName(QStringLiteral("detailArtifacts"));
  for (const auto& [kind, path] : d.artifacts) addRow(m_artifacts, {QString::fromStdString(kind), QString::fromStdString(path)});
  m_artifacts->resizeColumnToContents(0);
  connect(m_artifacts, &QTableWidget::cellDoubleClicked, this, [this](int row, int) {
    const QFileInfo f(m_artifacts->item(row, 1)->text());
    QDesktopServices::openUrl(QUrl::fromLocalFile(f.isDir() ? f.absoluteFilePath() : f.absolutePath()));
  });
  m_tabs->addTab(m_artifacts, tr("Artifacts"));

  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close);
  connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::close);
  v->addWidget(buttons);
}

QString RunDetailDialog::logText() const { return m_log->toPlainText(); }

}  // namespace upcycle::ui
