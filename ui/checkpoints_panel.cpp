#include "checkpoints_panel.h"

#include <QFileDialog>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QSortFilterProxyModel>
#include <QSplitter>
#include <QTableView>
#include <QVBoxLayout>
#include "splitters.h"
#include "qcp.h"

#include <cmath>
#include <filesystem>
#include <set>

#include "api/inspect.h"
#include "formats/peft_adapter.h"
#include "plots.h"
#include "table_models.h"

namespace upcycle::ui {

namespace fs = std::filesystem;

CheckpointsPanel::CheckpointsPanel(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  auto* grid = new QGridLayout;
  m_base = new QLineEdit;
  m_base->setObjectName(QStringLiteral("baseModel"));
  m_base->setPlaceholderText(tr("Dense base: a Hugging Face folder with config.json and *.safetensors"));
  auto* browseBase = new QPushButton(tr("Base…"));
  m_baseStatus = new QLabel;
  m_baseStatus->setObjectName(QStringLiteral("baseStatus"));
  grid->addWidget(new QLabel(tr("Base model")), 0, 0);
  grid->addWidget(m_base, 0, 1);
  grid->addWidget(browseBase, 0, 2);
  grid->addWidget(m_baseStatus, 1, 1, 1, 2);
  layout->addLayout(grid);

  auto* bar = new QHBoxLayout;
  auto* addFolder = new QPushButton(tr("Add folder…"));
  addFolder->setToolTip(tr("A Trainer output folder (its checkpoint-STEP/ subfolders are listed) or one checkpoint folder"));
  auto* addFiles = new QPushButton(tr("Add files…"));
  addFiles->setToolTip(tr("config.json or .safetensors files: their folders are added"));
  auto* clear = new QPushButton(tr("Clear"));
  auto* use = new QPushButton(tr("Use checked as UpIT experts"));
  use->setObjectName(QStringLiteral("useCheckpoints"));
  use->setToolTip(tr("Writes the base and the checked checkpoints into the experiment (sft.checkpoints) and sets the "
                     "UpIT runs' number of checkpoint experts"));
  for (auto* b : {addFolder, addFiles, clear}) bar->addWidget(b);
  bar->addStretch(1);
  bar->addWidget(use);
  layout->addLayout(bar);
  m_summary = new QLabel;
  layout->addWidget(m_summary);

  auto* split = makeSplitter(Qt::Vertical, QStringLiteral("checkpointsSplit"), {1, 1});
  m_model = new CheckpointTableModel(this);
  auto* proxy = new QSortFilterProxyModel(this);
  proxy->setSourceModel(m_model);
  proxy->setSortRole(kSortRole);
  m_table = new QTableView;
  m_table->setObjectName(QStringLiteral("checkpointTable"));
  m_table->setModel(proxy);
  m_table->setSortingEnabled(true);
  m_table->verticalHeader()->hide();
  m_table->horizontalHeader()->setStretchLastSection(true);
  m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
  m_table->setWordWrap(false);
  connect(m_model, &QAbstractItemModel::modelReset, m_table, &QTableView::resizeColumnsToContents);
  split->addWidget(m_table);
  m_lossFrame = new PlotFrame(tr("Dense training loss, checkpoints marked"));
  QCustomPlot* p = m_lossFrame->plot();
  p->xAxis->setLabel(tr("step"));
  p->yAxis->setLabel(tr("training loss"));
  placeLegendOutside(p, true);
  m_lossFrame->setCsvSource([this] {
    CsvTable t{{QStringLiteral("step"), QStringLiteral("loss"), QStringLiteral("checkpoint")}};
    std::set<int64_t> marked;
    for (const auto& e : m_model->entries()) marked.insert(e.step);
    for (const LossPoint& l : m_loss)
      t.push_back({QString::number(l.step), QString::number(l.loss, 'g', 10), marked.count(l.step) ? QStringLiteral("yes") : QString()});
    return t;
  });
  split->addWidget(m_lossFrame);
  layout->addWidget(split, 1);

  connect(browseBase, &QPushButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Dense base model folder"), m_base->text());
    if (!dir.isEmpty()) setBase(dir);
  });
  connect(m_base, &QLineEdit::editingFinished, this, [this] { setBase(m_base->text()); });
  connect(addFolder, &QPushButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Trainer output or checkpoint folder"));
    if (dir.isEmpty()) return;
    const QString err = addPath(dir);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Not a checkpoint"), err);
  });
  connect(addFiles, &QPushButton::clicked, this, [this] {
    const QStringList files = QFileDialog::getOpenFileNames(this, tr("Checkpoint files"), QString(),
                                                            tr("Checkpoints (config.json *.safetensors *.safetensors.index.json)"));
    for (const QString& f : files) {
      const QString err = addPath(f);
      if (!err.isEmpty()) QMessageBox::warning(this, tr("Not a checkpoint"), err);
    }
  });
  connect(clear, &QPushButton::clicked, this, [this] {
    m_model->clear();
    m_loss.clear();
    drawLoss();
  });
  connect(use, &QPushButton::clicked, this, [this] {
    QStringList chosen;
    for (const QString& c : m_model->chosen()) chosen << c;
    // Without a base, the earliest checked checkpoint is one: a dense model of the same architecture,
    // from the user's own folder (a tiny pretrained base would not match the checkpoints at all).
    if (base().isEmpty() && !chosen.isEmpty()) {
      setBase(chosen.front());
      m_summary->setText(tr("No base model was set: the earliest checked checkpoint is the base now. Set the model "
                            "before fine-tuning as Base model to use that instead."));
    }
    Q_EMIT checkpointsChosen(base(), chosen);
  });
  connect(m_model, &QAbstractItemModel::modelReset, this, [this] {
    const auto n = m_model->chosen().size();
    m_summary->setText(tr("%1 checkpoints listed, %2 checked as experts.").arg(m_model->rowCount()).arg(n));
  });
  connect(m_model, &QAbstractItemModel::dataChanged, this, [this] {
    m_summary->setText(tr("%1 checkpoints listed, %2 checked as experts.").arg(m_model->rowCount()).arg(m_model->chosen().size()));
    drawLoss();  // the markers follow the check boxes
  });
  drawLoss();
}

QString CheckpointsPanel::base() const { return m_base->text().trimmed(); }

QString CheckpointsPanel::setBase(const QString& folder) {
  m_base->setText(folder);
  if (folder.trimmed().isEmpty()) {
    m_baseStatus->clear();
    return {};
  }
  try {
    CheckpointSummary s = summarizeCheckpoint(folder.trimmed().toStdString());
    if (s.config.isMoe()) throw std::runtime_error("the base must be a dense model; this one has experts");
    m_baseStatus->setText(tr("<span style='color:#26a269'>ok</span>: %1, %2 parameters, %3<br>tokenizer: %4")
                              .arg(architectureText(s.config))
                              .arg(s.totalParams)
                              .arg(humanBytes(s.fileBytes))
                              .arg(tokenizerText(s.tokenizer, s.chatTemplate).toHtmlEscaped()));
    return {};
  } catch (const std::exception& e) {
    const QString msg = QString::fromStdString(e.what());
    m_baseStatus->setText(QStringLiteral("<span style='color:#c01c28'>%1</span>").arg(msg.toHtmlEscaped()));
    return msg;
  }
}

QString CheckpointsPanel::addPath(const QString& path) {
  fs::path p = path.toStdString();
  if (fs::is_regular_file(p)) p = p.parent_path();
  if (!fs::is_directory(p)) return tr("%1: no such folder").arg(path);
  try {
    if (isTrainerOutput(p)) {
      std::vector<QString> folders;
      std::vector<int64_t> steps;
      std::vector<double> losses;
      const auto cks = listTrainerCheckpoints(p);
      for (const auto& c : cks) {
        folders.push_back(QString::fromStdString(c.path.string()));
        steps.push_back(c.step);
        losses.push_back(c.loss ? *c.loss : std::nan(""));
      }
      m_model->addFolders(folders, steps, losses);
      // The loss curve: the last checkpoint's trainer_state.json holds the whole history.
      if (!cks.empty() && fs::exists(cks.back().path / "trainer_state.json")) m_loss = readLossHistory(cks.back().path / "trainer_state.json");
      drawLoss();
      return {};
    }
    if (!fs::exists(p / "config.json") && !isPeftAdapter(p))
      return tr("%1 has neither config.json, adapter_config.json nor checkpoint-STEP/ subfolders").arg(QString::fromStdString(p.string()));
    m_model->addFolders({QString::fromStdString(p.string())});
    return {};
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
}

void CheckpointsPanel::drawLoss() {
  QCustomPlot* p = m_lossFrame->plot();
  p->clearGraphs();
  QVector<double> x, y;
  for (const LossPoint& l : m_loss) {
    x << static_cast<double>(l.step);
    y << l.loss;
  }
  QCPGraph* g = p->addGraph();
  g->setName(tr("training loss"));
  g->setData(x, y);
  g->setPen(QPen(seriesColor(0), 1.5));
  // Checked checkpoints as filled diamonds, unchecked ones hollow: the curve shows the choice.
  QVector<double> cx, cy, ux, uy;
  for (const auto& e : m_model->entries())
    if (e.step >= 0 && !std::isnan(e.loss)) {
      const bool checked = e.use && e.valid && !e.mismatch;
      (checked ? cx : ux) << static_cast<double>(e.step);
      (checked ? cy : uy) << e.loss;
    }
  QCPGraph* marks = p->addGraph();
  marks->setName(tr("checked checkpoints"));
  marks->setData(cx, cy);
  marks->setLineStyle(QCPGraph::lsNone);
  marks->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, seriesColor(5), seriesColor(5), 11));
  QCPGraph* open = p->addGraph();
  open->setName(tr("unchecked"));
  open->setData(ux, uy);
  open->setLineStyle(QCPGraph::lsNone);
  open->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, QPen(QColor(110, 110, 110), 1.5), Qt::white, 11));
  open->removeFromLegend();
  if (!ux.isEmpty()) open->addToLegend();
  p->rescaleAxes();
  p->xAxis->scaleRange(1.04, p->xAxis->range().center());  // markers at the ends stay visible
  p->yAxis->scaleRange(1.08, p->yAxis->range().center());
  p->replot();
}

}  // namespace upcycle::ui
