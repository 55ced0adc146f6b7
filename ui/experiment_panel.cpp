#include "experiment_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileInfo>
#include <QFileDialog>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QMessageBox>
#include <QPushButton>
#include <QRegularExpression>
#include <QResizeEvent>
#include <QScrollArea>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QVBoxLayout>

#include <algorithm>
#include <set>

#include "splitters.h"
#include "api/inspect.h"
#include "formats/peft_adapter.h"
#include "api/pipeline.h"
#include "plot_frame.h"
#include "table_models.h"

namespace upcycle::ui {

namespace {

QString qs(const std::string& s) { return QString::fromStdString(s); }

QStringList splitList(const QString& s) {
  QStringList out;
  for (const QString& part : s.split(QLatin1Char(','), Qt::SkipEmptyParts))
    if (!part.trimmed().isEmpty()) out << part.trimmed();
  return out;
}

// A scroll area holding `inner`, so the forms fit in a small dock.
QScrollArea* scrolled(QWidget* inner) {
  auto* s = new QScrollArea;
  s->setWidget(inner);
  s->setWidgetResizable(true);
  s->setFrameShape(QFrame::NoFrame);
  return s;
}

// A form whose labels move above their fields when the column is too narrow for both.
QFormLayout* makeForm(QWidget* host) {
  auto* f = new QFormLayout(host);
  f->setRowWrapPolicy(QFormLayout::WrapLongRows);
  f->setFieldGrowthPolicy(QFormLayout::AllNonFixedFieldsGrow);
  return f;
}

}  // namespace

QSpinBox* ExperimentPanel::ispin(const QString& name, int lo, int hi, const QString& tip) {
  auto* w = new QSpinBox;
  w->setRange(lo, hi);
  w->setToolTip(tip);
  w->setObjectName(name);
  w->setKeyboardTracking(false);
  connect(w, qOverload<int>(&QSpinBox::valueChanged), this, &ExperimentPanel::commit);
  m_fields[name] = w;
  return w;
}

QDoubleSpinBox* ExperimentPanel::dspin(const QString& name, double lo, double hi, int decimals, double step, const QString& tip) {
  auto* w = new QDoubleSpinBox;
  w->setRange(lo, hi);
  w->setDecimals(decimals);
  w->setSingleStep(step);
  w->setToolTip(tip);
  w->setObjectName(name);
  w->setKeyboardTracking(false);
  connect(w, qOverload<double>(&QDoubleSpinBox::valueChanged), this, &ExperimentPanel::commit);
  m_fields[name] = w;
  return w;
}

QComboBox* ExperimentPanel::combo(const QString& name, const QStringList& items, const QString& tip) {
  auto* w = new QComboBox;
  w->addItems(items);
  w->setToolTip(tip);
  w->setObjectName(name);
  connect(w, qOverload<int>(&QComboBox::currentIndexChanged), this, &ExperimentPanel::commit);
  m_fields[name] = w;
  return w;
}

QCheckBox* ExperimentPanel::check(const QString& name, const QString& text, const QString& tip) {
  auto* w = new QCheckBox(text);
  w->setToolTip(tip);
  w->setObjectName(name);
  connect(w, &QCheckBox::toggled, this, &ExperimentPanel::commit);
  m_fields[name] = w;
  return w;
}

QLineEdit* ExperimentPanel::line(const QString& name, const QString& tip) {
  auto* w = new QLineEdit;
  w->setToolTip(tip);
  w->setObjectName(name);
  connect(w, &QLineEdit::editingFinished, this, &ExperimentPanel::commit);
  m_fields[name] = w;
  return w;
}

QWidget* ExperimentPanel::field(const QString& name) const { return m_fields.value(name, nullptr); }

QStringList ExperimentPanel::presetNames() {
  return {tr("Sparse upcycling (Komatsuzaki et al.): E=8, top-2"),
          tr("Drop-Upcycling (Nakamura et al., ICLR 2025): E=8, top-2, r=0.5"),
          tr("UpIT (Hui et al.): E=8, top-2, 4 checkpoints, GA, router pre-optimization"),
          tr("Dense baseline (no experts)")};
}

ExperimentPanel::ExperimentPanel(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  auto* bar = new QHBoxLayout;
  auto* load = new QPushButton(tr("Open…"));
  load->setToolTip(tr("Open an experiment YAML file (the same files `upcycle run` takes)"));
  auto* save = new QPushButton(tr("Save as…"));
  save->setToolTip(tr("Save the experiment as YAML; `upcycle run FILE` runs it headless"));
  m_preset = new QComboBox;
  m_preset->addItem(tr("Apply a preset to the selected run…"));
  m_preset->addItems(presetNames());
  m_preset->setObjectName(QStringLiteral("preset"));
  m_preset->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_preset->setMinimumContentsLength(16);
  bar->addWidget(load);
  bar->addWidget(save);
  bar->addWidget(m_preset, 1);
  layout->addLayout(bar);

  // Two columns (the experiment | the runs and the selected run's method) that stack when the panel
  // is narrow (resizeEvent); no part can be dragged to nothing.
  m_split = makeSplitter(Qt::Horizontal, QStringLiteral("experimentSplit"), {1, 1});
  auto* expHost = new QWidget;
  buildExperimentForm(expHost);
  QScrollArea* expScroll = scrolled(expHost);
  expScroll->setMinimumSize(260, 140);
  m_split->addWidget(expScroll);

  auto* right = makeSplitter(Qt::Vertical, QStringLiteral("runSpecSplit"), {150, 450});
  auto* runsHost = new QWidget;
  auto* rl = new QVBoxLayout(runsHost);
  rl->setContentsMargins(0, 0, 0, 0);
  auto* runsTitle = new QLabel(tr("<b>Runs</b> (each is post-trained with the same budget)"));
  runsTitle->setWordWrap(true);
  rl->addWidget(runsTitle);
  m_runs = new QListWidget;
  m_runs->setObjectName(QStringLiteral("runList"));
  m_runs->setMinimumHeight(60);
  rl->addWidget(m_runs, 1);
  auto* rb = new QHBoxLayout;
  auto* add = new QPushButton(tr("Add"));
  auto* dup = new QPushButton(tr("Duplicate"));
  auto* remove = new QPushButton(tr("Remove"));
  for (auto* b : {add, dup, remove}) rb->addWidget(b);
  rl->addLayout(rb);
  right->addWidget(runsHost);

  auto* runHost = new QWidget;
  buildRunForm(runHost);
  QScrollArea* runScroll = scrolled(runHost);
  runScroll->setMinimumSize(260, 140);
  right->addWidget(runScroll);
  right->setStretchFactor(0, 1);
  right->setStretchFactor(1, 3);
  m_split->addWidget(right);
  m_runSide = right;
  m_split->setStretchFactor(0, 1);
  m_split->setStretchFactor(1, 1);
  // Narrow, the columns stack into one page that scrolls as a whole (resizeEvent); wide, the page
  // fits and each form scrolls on its own.
  m_page = new QScrollArea;
  m_page->setObjectName(QStringLiteral("experimentPage"));
  m_page->setWidgetResizable(true);
  m_page->setFrameShape(QFrame::NoFrame);
  m_page->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  m_page->setWidget(m_split);
  m_expScroll = expScroll;
  m_runScroll = runScroll;
  layout->addWidget(m_page, 1);
  m_status = new QLabel;
  m_status->setObjectName(QStringLiteral("validation"));
  m_status->setWordWrap(true);
  m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
  layout->addWidget(m_status);

  connect(load, &QPushButton::clicked, this, [this] {
    const QString path = QFileDialog::getOpenFileName(this, tr("Open experiment"), m_file, tr("Experiments (*.yaml *.yml)"));
    if (path.isEmpty()) return;
    const QString err = loadFile(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot open the experiment"), err);
  });
  connect(save, &QPushButton::clicked, this, [this] {
    if (!m_error.isEmpty()) {
      QMessageBox::warning(this, tr("Cannot save the experiment"), tr("The experiment is not valid: %1").arg(m_error));
      return;
    }
    const QString path = QFileDialog::getSaveFileName(this, tr("Save experiment"), suggestedSavePath(), tr("Experiments (*.yaml)"));
    if (path.isEmpty()) return;
    const QString err = saveFile(path);
    if (!err.isEmpty()) QMessageBox::warning(this, tr("Cannot save the experiment"), err);
  });
  connect(m_preset, qOverload<int>(&QComboBox::activated), this, [this](int i) {
    if (i > 0) applyPreset(i - 1);
    m_preset->setCurrentIndex(0);
  });
  connect(m_runs, &QListWidget::currentRowChanged, this, [this](int row) {
    if (m_filling) return;
    m_run = row;
    fillRunForm();
    validate();  // the outline follows the run shown
  });
  connect(add, &QPushButton::clicked, this, [this] {
    RunSpec r;
    r.name = "run" + std::to_string(m_exp.runs.size() + 1);
    r.seed = m_exp.seed;
    m_exp.runs.push_back(r);
    m_run = static_cast<int>(m_exp.runs.size()) - 1;
    refillRunList();
    fillRunForm();
    validate();
    setModified(true);
  });
  connect(dup, &QPushButton::clicked, this, [this] {
    if (m_run < 0) return;
    RunSpec r = m_exp.runs[m_run];
    r.name += "-copy";
    m_exp.runs.insert(m_exp.runs.begin() + m_run + 1, r);
    ++m_run;
    refillRunList();
    fillRunForm();
    validate();
    setModified(true);
  });
  connect(remove, &QPushButton::clicked, this, [this] {
    if (m_run < 0) return;
    m_exp.runs.erase(m_exp.runs.begin() + m_run);
    m_run = std::min<int>(m_run, static_cast<int>(m_exp.runs.size()) - 1);
    refillRunList();
    fillRunForm();
    validate();
    setModified(true);
  });

  newExperiment();
}

void ExperimentPanel::newExperiment() {
  // A small default: the quick demo's shape, editable. Every run takes the experiment's seed.
  Experiment e;
  e.name = "experiment";
  e.out = "out/experiment";
  e.pretrain = true;
  RunSpec sparse;
  sparse.name = "sparse";
  sparse.method = "sparse";
  e.runs.push_back(sparse);
  setExperiment(e);
  m_file.clear();
  setModified(false);
  Q_EMIT fileChanged(m_file);
  Q_EMIT experimentChanged();
}

void ExperimentPanel::resizeEvent(QResizeEvent* event) {
  QWidget::resizeEvent(event);
  // Side by side needs two forms' width; below that the columns stack.
  const Qt::Orientation o = event->size().width() >= 760 ? Qt::Horizontal : Qt::Vertical;
  if (m_split->orientation() != o) {
    m_split->setOrientation(o);
    // Stacked, the runs and the selected run's method come first: they are what one edits most; the
    // experiment-wide settings follow below.
    m_split->insertWidget(o == Qt::Vertical ? 0 : 1, m_runSide);
  }
  fitForms();
}

void ExperimentPanel::fitForms() {
  // Stacked, each form is as tall as its content and the page scrolls; side by side, the forms share
  // the panel's height and scroll inside.
  if (!m_expScroll || !m_runScroll) return;
  const bool stacked = m_split->orientation() == Qt::Vertical;
  for (QScrollArea* s : {m_expScroll, m_runScroll})
    s->setMinimumHeight(stacked ? s->widget()->sizeHint().height() + 4 : 140);
}

void ExperimentPanel::setModified(bool modified) {
  if (modified == m_modified) return;
  m_modified = modified;
  Q_EMIT modifiedChanged(modified);
}

bool ExperimentPanel::isBundledFile() const {
  if (m_file.isEmpty()) return false;
  const QString bundled = QFileInfo(QString::fromStdString(findResource("experiments").string())).canonicalFilePath();
  const QString file = QFileInfo(m_file).canonicalFilePath();
  return !bundled.isEmpty() && file.startsWith(bundled + QLatin1Char('/'));
}

QString ExperimentPanel::suggestedSavePath() const {
  if (!m_file.isEmpty() && !isBundledFile()) return m_file;
  QString dir = QStandardPaths::writableLocation(QStandardPaths::DocumentsLocation);
  if (dir.isEmpty() || !QFileInfo(dir).isDir()) dir = QDir::homePath();
  QString name = qs(m_exp.name).trimmed();
  name.replace(QRegularExpression(QStringLiteral("[^A-Za-z0-9._-]+")), QStringLiteral("-"));
  if (name.isEmpty()) name = QStringLiteral("experiment");
  return QDir(dir).filePath(name + QStringLiteral(".yaml"));
}

void ExperimentPanel::buildExperimentForm(QWidget* host) {
  auto* v = new QVBoxLayout(host);
  auto* g = new QGroupBox(tr("Experiment"));
  auto* f = makeForm(g);
  f->addRow(tr("Name"), line(QStringLiteral("name"), tr("Names the experiment in the run store")));
  f->addRow(tr("Seed"), ispin(QStringLiteral("seed"), 0, 2147483647, tr("Every random draw of the pipeline derives from this seed (runs may override it)")));
  f->addRow(tr("Seeds"), line(QStringLiteral("seeds"), tr("Several seeds, e.g. 0, 1, 2 or 0-4: the whole pipeline once per seed (into "
                                                           "OUT/seed-S), each run's mean and 95% confidence interval in Compare → "
                                                           "Across seeds. Empty: just the seed above.")));
  f->addRow(tr("Device"), combo(QStringLiteral("device"), {QStringLiteral("auto"), QStringLiteral("cpu"), QStringLiteral("cuda")},
                                tr("auto: CUDA when LibTorch sees a GPU, else the CPU")));
  f->addRow(tr("Threads"), ispin(QStringLiteral("threads"), 0, 1024, tr("Intra-op CPU threads (0 = one per core)")));
  f->addRow(tr("Precision"), combo(QStringLiteral("precision"), {QStringLiteral("auto"), QStringLiteral("fp32"), QStringLiteral("bf16")},
                                   tr("Mixed precision of every training and evaluation stage. bf16: matmuls in bfloat16, "
                                      "float32 master weights, norms, softmaxes, router and losses. auto: bf16 on CUDA and on "
                                      "CPUs with AVX-512 BF16 or AMX, else fp32.")));
  f->addRow(tr("Processes"), ispin(QStringLiteral("nproc"), 1, 256,
                                   tr("Data-parallel training processes on this machine (c10d: Gloo on the CPU, NCCL on CUDA). "
                                      "The workbench is rank 0; the others run the upcycle command line. Results equal one "
                                      "process's; each process gets cores / processes threads.")));
  f->addRow(tr("Output folder"), line(QStringLiteral("out"), tr("Checkpoints and results; a relative path is placed next to the run store")));
  v->addWidget(g);

  g = new QGroupBox(tr("Dense base"));
  f = makeForm(g);
  f->addRow(tr("Base"), combo(QStringLiteral("base.mode"), {tr("pretrain a tiny byte-level Llama"), tr("an existing model folder")},
                              tr("The dense decoder every method starts from")));
  f->addRow(tr("Model folder"), line(QStringLiteral("base.path"), tr("A Hugging Face folder: config.json plus *.safetensors (Llama, Mistral, Qwen2 or Qwen3), "
                                                                      "with tokenizer.json or tokenizer.model and, optionally, a chat template")));
  m_baseInfo = new QLabel;
  m_baseInfo->setObjectName(QStringLiteral("baseInfo"));
  m_baseInfo->setWordWrap(true);
  m_baseInfo->setTextInteractionFlags(Qt::TextSelectableByMouse);
  f->addRow(QString(), m_baseInfo);
  f->addRow(tr("Pretrain steps"), ispin(QStringLiteral("pretrain.steps"), 1, 10000000, tr("Optimizer steps of the tiny base's pretraining")));
  f->addRow(tr("Hidden size"), ispin(QStringLiteral("pretrain.hidden"), 8, 65536, tr("d_model of the tiny base (a multiple of the heads)")));
  f->addRow(tr("FFN size"), ispin(QStringLiteral("pretrain.ff"), 8, 262144, tr("d_ff of the tiny base: each expert's width")));
  f->addRow(tr("Layers"), ispin(QStringLiteral("pretrain.layers"), 1, 256, tr("Decoder layers of the tiny base")));
  f->addRow(tr("Heads / KV heads"), [&] {
    auto* w = new QWidget;
    auto* h = new QHBoxLayout(w);
    h->setContentsMargins(0, 0, 0, 0);
    h->addWidget(ispin(QStringLiteral("pretrain.heads"), 1, 512, tr("Attention heads")));
    h->addWidget(ispin(QStringLiteral("pretrain.kv_heads"), 1, 512, tr("Key/value heads (GQA); divides the heads")));
    return w;
  }());
  f->addRow(tr("Pretrain lr"), dspin(QStringLiteral("pretrain.lr"), 1e-6, 1.0, 6, 1e-4, tr("Peak learning rate of pretraining")));
  v->addWidget(g);

  g = new QGroupBox(tr("Data"));
  f = makeForm(g);
  f->addRow(tr("Source"), combo(QStringLiteral("data.mode"), {tr("built-in generator (7 domains)"), tr("JSONL files")},
                                tr("The built-in generator writes exact-answer tasks in 7 domains; or use your own instruction data")));
  f->addRow(tr("Per domain"), ispin(QStringLiteral("data.per_domain"), 1, 10000000, tr("Training records per domain")));
  f->addRow(tr("Eval per domain"), ispin(QStringLiteral("data.eval_per_domain"), 1, 10000000, tr("Evaluation records per domain")));
  f->addRow(tr("Train file"), line(QStringLiteral("data.train"), tr("Alpaca, ShareGPT, messages, text or pre-tokenized JSONL")));
  f->addRow(tr("Eval file"), line(QStringLiteral("data.eval"), tr("Optional; without it 10% of the training file is held out")));
  f->addRow(tr("Template"), combo(QStringLiteral("data.template"), {QStringLiteral("compact"), QStringLiteral("alpaca"), QStringLiteral("raw"),
                                                                     QStringLiteral("auto"), QStringLiteral("chat")},
                                  tr("How instruction and response are joined (FORMATS.md). auto: the base's chat template when it has one "
                                     "(the loss then covers the assistant turns), else alpaca; chat: insist on the chat template")));
  f->addRow(tr("Max length"), ispin(QStringLiteral("data.max_length"), 0, 1000000, tr("Truncate records to this many tokens (0 = no limit)")));
  v->addWidget(g);

  g = new QGroupBox(tr("Dense instruction tuning (SFT)"));
  f = makeForm(g);
  f->addRow(check(QStringLiteral("sft.enabled"), tr("Run the SFT stage"), tr("UpIT needs it: its experts are the SFT checkpoints")));
  f->addRow(tr("Epochs"), dspin(QStringLiteral("sft.epochs"), 0.01, 1000, 2, 0.25, tr("SFT epochs (SPEC default 2)")));
  f->addRow(tr("Save every"), dspin(QStringLiteral("sft.save_every"), 0, 1, 3, 0.05, tr("A checkpoint every this fraction of an epoch (UpIT default 0.25: 8 checkpoints in 2 epochs)")));
  f->addRow(tr("Learning rate"), dspin(QStringLiteral("sft.lr"), 1e-7, 1, 6, 1e-4, tr("Peak learning rate (warmup then cosine)")));
  f->addRow(tr("Batch size"), ispin(QStringLiteral("sft.batch_size"), 1, 65536, tr("Records per optimizer step")));
  f->addRow(tr("LoRA rank"), ispin(QStringLiteral("lora.rank"), 0, 4096, tr("0: full fine-tuning. Otherwise the SFT trains LoRA adapters of this rank "
                                                                         "(PEFT checkpoints); upit_lora and loramoe need it")));
  f->addRow(tr("LoRA alpha"), dspin(QStringLiteral("lora.alpha"), 0.001, 100000, 3, 1, tr("The update is (alpha / rank) B A (usual: 2 x rank)")));
  f->addRow(tr("LoRA targets"), line(QStringLiteral("lora.targets"), tr("Projections with adapters, comma separated: q, k, v, o, gate, up, down "
                                                                        "(upit_lora's experts are the gate/up/down adapters)")));
  f->addRow(tr("Given checkpoints"), line(QStringLiteral("sft.checkpoints"), tr("Existing SFT checkpoint folders, comma separated, in training order: "
                                                                                 "used instead of training (the Checkpoints panel fills this)")));
  v->addWidget(g);

  g = new QGroupBox(tr("Post-training (the same for every run)"));
  f = makeForm(g);
  f->addRow(tr("Epochs"), dspin(QStringLiteral("post.epochs"), 0.01, 1000, 2, 0.25, tr("Post-training epochs of every run")));
  f->addRow(tr("Learning rate"), dspin(QStringLiteral("post.lr"), 1e-7, 1, 6, 1e-4, tr("Peak learning rate")));
  f->addRow(tr("Batch size"), ispin(QStringLiteral("post.batch_size"), 1, 65536, tr("Records per optimizer step")));
  f->addRow(tr("Aux loss coef"), dspin(QStringLiteral("post.aux_loss_coef"), 0, 10, 4, 0.001, tr("Weight of the load-balancing loss E * sum f_e P_e (SPEC default 0.01)")));
  f->addRow(tr("Z loss coef"), dspin(QStringLiteral("post.z_loss_coef"), 0, 10, 5, 0.0001, tr("Weight of the router z-loss (default 0)")));
  v->addWidget(g);

  g = new QGroupBox(tr("Evaluation"));
  f = makeForm(g);
  f->addRow(check(QStringLiteral("eval.accuracy"), tr("Exact-match accuracy by greedy decoding"), tr("Off: loss and perplexity only")));
  f->addRow(tr("Max new tokens"), ispin(QStringLiteral("eval.max_new_tokens"), 1, 4096, tr("Greedy decoding budget per answer")));
  v->addWidget(g);
  v->addStretch(1);
}

void ExperimentPanel::buildRunForm(QWidget* host) {
  auto* v = new QVBoxLayout(host);
  auto* g = new QGroupBox(tr("Run"));
  auto* f = makeForm(g);
  f->addRow(tr("Name"), line(QStringLiteral("runs.name"), tr("Unique within the experiment")));
  f->addRow(tr("Method"), combo(QStringLiteral("runs.method"),
                                {QStringLiteral("sparse"), QStringLiteral("drop"), QStringLiteral("upit"), QStringLiteral("upit_lora"),
                                 QStringLiteral("loramoe"), QStringLiteral("dense"), QStringLiteral("noise"), QStringLiteral("scratch"),
                                 QStringLiteral("btx")},
                                tr("sparse: copy the FFN into every expert\ndrop: copy, then re-initialize a fraction r of each expert's neurons\n"
                                   "upit: experts from SFT checkpoints, grown by the GA, router pre-optimized\n"
                                   "upit_lora: the same with LoRA experts (the SFT's adapters) over one shared base FFN (set a LoRA rank)\n"
                                   "loramoe: fresh LoRA experts and routers on the base, trained by post-training (set a LoRA rank)\n"
                                   "dense: the SFT model post-trained (baseline)\nnoise: copies plus Gaussian noise\n"
                                   "scratch: a randomly initialized MoE\nbtx: one expert per dense source model")));
  auto* seedRow = new QWidget;
  auto* sh = new QHBoxLayout(seedRow);
  sh->setContentsMargins(0, 0, 0, 0);
  sh->addWidget(check(QStringLiteral("runs.seed_set"), tr("own seed"), tr("Off: the experiment's seed")));
  sh->addWidget(ispin(QStringLiteral("runs.seed"), 0, 2147483647, tr("The run's seed: router init, drop indices, GA draws, shuffling")));
  f->addRow(tr("Seed"), seedRow);
  v->addWidget(g);

  m_moeGroup = new QGroupBox(tr("Mixture of experts"));
  f = makeForm(m_moeGroup);
  f->addRow(tr("Experts (E)"), ispin(QStringLiteral("runs.experts"), 1, 1024, tr("Experts per MoE layer")));
  f->addRow(tr("Top-k"), ispin(QStringLiteral("runs.top_k"), 1, 1024, tr("Experts each token is routed to (1 <= k <= E)")));
  f->addRow(tr("MoE layer every"), ispin(QStringLiteral("runs.moe_layer_freq"), 1, 64, tr("1: every layer is MoE; 2: every other layer")));
  f->addRow(tr("Router init"), combo(QStringLiteral("runs.router_init"),
                                     {QStringLiteral("uniform_std002"), QStringLiteral("normal_002"), QStringLiteral("uniform"), QStringLiteral("hidden"),
                                      QStringLiteral("hidden_avg")},
                                     tr("uniform_std002: U[0, 1) minus its sample mean, std 0.02 (Drop-Upcycling's default)\n"
                                        "normal_002: N(0, 0.02^2)\nuniform: U[0, 1)\n"
                                        "hidden: each expert's row is its domain's prompts' last-token hidden state (mergekit)\n"
                                        "hidden_avg: the same with each prompt's mean hidden state")));
  v->addWidget(m_moeGroup);

  m_dropGroup = new QGroupBox(tr("Drop-Upcycling"));
  f = makeForm(m_dropGroup);
  f->addRow(tr("Ratio r"), dspin(QStringLiteral("runs.ratio"), 0, 1, 3, 0.05,
                                 tr("Fraction of each expert's FFN neurons re-initialized from the weights' own statistics (paper: 0.5)")));
  f->addRow(check(QStringLiteral("runs.shared_indices"), tr("Same neurons in every expert"), tr("Off (default): each expert draws its own indices")));
  f->addRow(tr("Expert d_ff"), ispin(QStringLiteral("runs.expert_ff"), 0, 1000000, tr("Fine-grained experts narrower than the dense FFN (0 = the dense d_ff)")));
  v->addWidget(m_dropGroup);

  m_noiseGroup = new QGroupBox(tr("Noise upcycling"));
  f = makeForm(m_noiseGroup);
  f->addRow(tr("Noise std"), dspin(QStringLiteral("runs.noise_std"), 0, 10, 4, 0.005, tr("Std of the Gaussian noise added to the copies")));
  f->addRow(tr("Noise fraction"), dspin(QStringLiteral("runs.noise_fraction"), 0, 1, 3, 0.05, tr("Fraction of the entries that get noise")));
  v->addWidget(m_noiseGroup);

  m_btxGroup = new QGroupBox(tr("Branch-Train-MiX"));
  f = makeForm(m_btxGroup);
  f->addRow(tr("Sources"), line(QStringLiteral("runs.sources"), tr("Dense model folders, comma separated; experts must be a multiple of their number")));
  v->addWidget(m_btxGroup);

  m_upitGroup = new QGroupBox(tr("UpIT experts"));
  f = makeForm(m_upitGroup);
  f->addRow(tr("Checkpoints (M)"), ispin(QStringLiteral("runs.checkpoints"), 1, 1024, tr("SFT checkpoints that become experts; the GA grows the other E - M")));
  f->addRow(tr("Select"), combo(QStringLiteral("runs.select"), {QStringLiteral("even"), QStringLiteral("latest"), QStringLiteral("list")},
                                tr("even: evenly spaced including the last (default)\nlatest: the last M\nlist: the positions below")));
  f->addRow(tr("Positions"), line(QStringLiteral("runs.checkpoint_list"), tr("1-based checkpoint positions, comma separated (select: list)")));
  f->addRow(tr("Non-FFN weights"), combo(QStringLiteral("runs.non_ffn"), {QStringLiteral("average"), QStringLiteral("last")},
                                         tr("average: element-wise mean of the chosen checkpoints (default, as in BTX)\nlast: the last checkpoint's")));
  f->addRow(check(QStringLiteral("runs.expand"), tr("Grow experts with the GA"), tr("Off: M must equal E")));
  v->addWidget(m_upitGroup);

  m_gaGroup = new QGroupBox(tr("Genetic expansion (merge + DARE mutation)"));
  f = makeForm(m_gaGroup);
  f->addRow(tr("Parent rule"), combo(QStringLiteral("ga.parent_rule"), {QStringLiteral("distance"), QStringLiteral("random"), QStringLiteral("tournament")},
                                     tr("distance: the pair of pool experts farthest apart (default)\nrandom: a random pair\ntournament: best of random draws")));
  f->addRow(tr("Distance"), combo(QStringLiteral("ga.distance"), {QStringLiteral("cosine_delta"), QStringLiteral("cosine"), QStringLiteral("l2")},
                                  tr("How far apart two experts are: cosine of their deltas from the base (default), of their weights, or L2")));
  auto* alphaRow = new QWidget;
  auto* ah = new QHBoxLayout(alphaRow);
  ah->setContentsMargins(0, 0, 0, 0);
  ah->addWidget(dspin(QStringLiteral("ga.alpha_min"), 0, 1, 3, 0.05, tr("Lower end of the merge weight alpha (child = alpha A + (1 - alpha) B)")));
  ah->addWidget(dspin(QStringLiteral("ga.alpha_max"), 0, 1, 3, 0.05, tr("Upper end of alpha; alpha is drawn uniformly in [min, max] (default [0, 1])")));
  f->addRow(tr("alpha range"), alphaRow);
  f->addRow(tr("DARE p"), dspin(QStringLiteral("ga.dare_p"), 0, 0.999, 3, 0.05,
                                tr("Mutation: each entry of the child's delta is dropped with probability p and the rest rescaled (default 0.3)")));
  f->addRow(tr("DARE rescale"), combo(QStringLiteral("ga.dare_rescale"), {QStringLiteral("inverse"), QStringLiteral("l1")},
                                      tr("inverse: kept entries times 1 / (1 - p) (default)\nl1: rescale to keep the delta's L1 norm (mergekit)")));
  f->addRow(tr("Merge"), combo(QStringLiteral("ga.merge"),
                              {QStringLiteral("linear"), QStringLiteral("task_arithmetic"), QStringLiteral("ties"), QStringLiteral("dare_linear"),
                               QStringLiteral("dare_ties"), QStringLiteral("slerp")},
                              tr("The merge operator of the two parents (default linear)")));
  v->addWidget(m_gaGroup);

  m_routerGroup = new QGroupBox(tr("Router pre-optimization"));
  f = makeForm(m_routerGroup);
  f->addRow(check(QStringLiteral("router.preoptimize"), tr("Pre-optimize the routers"), tr("Train only the routers on a seed set first")));
  f->addRow(tr("Seed fraction"), dspin(QStringLiteral("router.seed_fraction"), 0.0001, 1, 4, 0.005,
                                       tr("Share of the training data in the seed set (default 1%)")));
  f->addRow(tr("Min seed"), ispin(QStringLiteral("router.min_seed"), 1, 10000000, tr("At least this many seed samples (default 32)")));
  f->addRow(tr("Epochs"), dspin(QStringLiteral("router.epochs"), 0.01, 1000, 2, 0.5, tr("Router-only epochs on the seed set (default 4)")));
  f->addRow(tr("a"), dspin(QStringLiteral("router.a"), 0, 1, 3, 0.05,
                           tr("L = a L_lm + (1 - a) L_cls: the weight of the language-model loss against the expert classification loss (default 0.5)")));
  f->addRow(tr("Learning rate"), dspin(QStringLiteral("router.lr"), 1e-7, 1, 6, 1e-4, tr("Router learning rate")));
  v->addWidget(m_routerGroup);
  v->addStretch(1);
}

template <typename W>
static W* as(QWidget* w) {
  return static_cast<W*>(w);
}

void ExperimentPanel::setExperiment(const Experiment& e) {
  m_exp = e;
  m_run = m_exp.runs.empty() ? -1 : 0;
  fillForms();
  refillRunList();
  fillRunForm();
  validate();
}

void ExperimentPanel::refillRunList() {
  m_filling = true;
  m_runs->clear();
  for (const RunSpec& r : m_exp.runs) m_runs->addItem(QStringLiteral("%1  (%2)").arg(qs(r.name), qs(r.method)));
  m_runs->setCurrentRow(m_run);
  m_filling = false;
}

void ExperimentPanel::fillForms() {
  m_filling = true;
  auto text = [&](const char* n, const QString& v) { as<QLineEdit>(m_fields[n])->setText(v); };
  auto num = [&](const char* n, int64_t v) { as<QSpinBox>(m_fields[n])->setValue(static_cast<int>(v)); };
  auto real = [&](const char* n, double v) { as<QDoubleSpinBox>(m_fields[n])->setValue(v); };
  auto pick = [&](const char* n, const QString& v) {
    auto* c = as<QComboBox>(m_fields[n]);
    c->setCurrentIndex(std::max(0, c->findText(v)));
  };
  auto flag = [&](const char* n, bool v) { as<QCheckBox>(m_fields[n])->setChecked(v); };
  const Experiment& e = m_exp;
  text("name", qs(e.name));
  num("seed", static_cast<int64_t>(e.seed));
  {
    QStringList seeds;
    for (uint64_t v : e.seeds) seeds << QString::number(v);
    text("seeds", seeds.join(QStringLiteral(", ")));
  }
  pick("device", qs(e.device));
  num("threads", e.threads);
  num("nproc", e.nproc);
  pick("precision", qs(e.precision));
  text("out", qs(e.out.string()));
  as<QComboBox>(m_fields["base.mode"])->setCurrentIndex(e.pretrain ? 0 : 1);
  text("base.path", qs(e.basePath.string()));
  num("pretrain.steps", e.pretrainSteps);
  num("pretrain.hidden", e.hidden);
  num("pretrain.ff", e.ff);
  num("pretrain.layers", e.layers);
  num("pretrain.heads", e.heads);
  num("pretrain.kv_heads", e.kvHeads);
  real("pretrain.lr", e.pretrainLr);
  as<QComboBox>(m_fields["data.mode"])->setCurrentIndex(e.generateData ? 0 : 1);
  num("data.per_domain", e.perDomain);
  num("data.eval_per_domain", e.evalPerDomain);
  text("data.train", qs(e.trainData.string()));
  text("data.eval", qs(e.evalData.string()));
  pick("data.template", qs(e.promptTemplate));
  num("data.max_length", e.maxLength);
  flag("sft.enabled", e.sft);
  real("sft.epochs", e.sftTraining.epochs);
  real("sft.save_every", e.sftTraining.saveEvery);
  real("sft.lr", e.sftTraining.lr);
  num("sft.batch_size", e.sftTraining.batchSize);
  num("lora.rank", e.lora.rank);
  real("lora.alpha", e.lora.alpha);
  {
    QStringList t;
    for (const auto& x : e.lora.targets) t << qs(x.substr(0, x.find('_')));
    text("lora.targets", t.join(QStringLiteral(",")));
  }
  QStringList cks;
  for (const auto& c : e.sftCheckpoints) cks << qs(c.string());
  text("sft.checkpoints", cks.join(QStringLiteral(", ")));
  real("post.epochs", e.post.epochs);
  real("post.lr", e.post.lr);
  num("post.batch_size", e.post.batchSize);
  real("post.aux_loss_coef", e.post.auxLossCoef);
  real("post.z_loss_coef", e.post.zLossCoef);
  flag("eval.accuracy", e.evalAccuracy);
  num("eval.max_new_tokens", e.maxNewTokens);
  m_filling = false;
  updateSourceFields();
}

void ExperimentPanel::updateSourceFields() {
  const Experiment& e = m_exp;
  m_fields["base.path"]->setEnabled(!e.pretrain);
  const QString basePath = e.pretrain ? QString() : QString::fromStdString(e.basePath.string());
  if (basePath != m_baseInfoPath) {
    m_baseInfoPath = basePath;
    m_baseInfo->clear();
    if (!basePath.isEmpty()) {
      try {
        const CheckpointSummary s = summarizeCheckpoint(e.basePath);
        m_baseInfo->setText(tr("%1, %2 parameters; tokenizer: %3")
                                .arg(architectureText(s.config))
                                .arg(s.totalParams)
                                .arg(tokenizerText(s.tokenizer, s.chatTemplate)));
      } catch (const std::exception& ex) {
        m_baseInfo->setText(QString::fromStdString(ex.what()));
      }
    }
  }
  for (const char* n : {"pretrain.steps", "pretrain.hidden", "pretrain.ff", "pretrain.layers", "pretrain.heads", "pretrain.kv_heads", "pretrain.lr"})
    m_fields[n]->setEnabled(e.pretrain);
  for (const char* n : {"data.per_domain", "data.eval_per_domain"}) m_fields[n]->setEnabled(e.generateData);
  for (const char* n : {"data.train", "data.eval"}) m_fields[n]->setEnabled(!e.generateData);
}

void ExperimentPanel::fillRunForm() {
  const bool has = m_run >= 0 && m_run < static_cast<int>(m_exp.runs.size());
  for (auto it = m_fields.begin(); it != m_fields.end(); ++it)
    if (it.key().startsWith(QLatin1String("runs.")) || it.key().startsWith(QLatin1String("ga.")) || it.key().startsWith(QLatin1String("router.")))
      it.value()->setEnabled(has);
  if (!has) return;
  m_filling = true;
  const RunSpec& r = m_exp.runs[m_run];
  auto pick = [&](const char* n, const std::string& v) {
    auto* c = as<QComboBox>(m_fields[n]);
    c->setCurrentIndex(std::max(0, c->findText(qs(v))));
  };
  as<QLineEdit>(m_fields["runs.name"])->setText(qs(r.name));
  pick("runs.method", r.method);
  as<QCheckBox>(m_fields["runs.seed_set"])->setChecked(r.seedSet);
  as<QSpinBox>(m_fields["runs.seed"])->setValue(static_cast<int>(r.seed));
  as<QSpinBox>(m_fields["runs.experts"])->setValue(static_cast<int>(r.experts));
  as<QSpinBox>(m_fields["runs.top_k"])->setValue(static_cast<int>(r.topK));
  as<QSpinBox>(m_fields["runs.moe_layer_freq"])->setValue(static_cast<int>(r.moeLayerFreq));
  pick("runs.router_init", r.routerInit);
  as<QDoubleSpinBox>(m_fields["runs.ratio"])->setValue(r.ratio);
  as<QCheckBox>(m_fields["runs.shared_indices"])->setChecked(r.sharedIndices);
  as<QSpinBox>(m_fields["runs.expert_ff"])->setValue(static_cast<int>(r.expertFf));
  as<QDoubleSpinBox>(m_fields["runs.noise_std"])->setValue(r.noiseStd);
  as<QDoubleSpinBox>(m_fields["runs.noise_fraction"])->setValue(r.noiseFraction);
  QStringList sources;
  for (const auto& s : r.sources) sources << qs(s.string());
  as<QLineEdit>(m_fields["runs.sources"])->setText(sources.join(QStringLiteral(", ")));
  as<QSpinBox>(m_fields["runs.checkpoints"])->setValue(static_cast<int>(r.checkpoints));
  pick("runs.select", r.select);
  QStringList positions;
  for (int64_t p : r.checkpointList) positions << QString::number(p);
  as<QLineEdit>(m_fields["runs.checkpoint_list"])->setText(positions.join(QStringLiteral(", ")));
  pick("runs.non_ffn", r.nonFfn);
  as<QCheckBox>(m_fields["runs.expand"])->setChecked(r.expand);
  pick("ga.parent_rule", r.parentRule);
  pick("ga.distance", r.distance);
  as<QDoubleSpinBox>(m_fields["ga.alpha_min"])->setValue(r.alphaMin);
  as<QDoubleSpinBox>(m_fields["ga.alpha_max"])->setValue(r.alphaMax);
  as<QDoubleSpinBox>(m_fields["ga.dare_p"])->setValue(r.dareP);
  pick("ga.dare_rescale", r.dareRescale);
  pick("ga.merge", r.mergeOp);
  as<QCheckBox>(m_fields["router.preoptimize"])->setChecked(r.preoptimize);
  as<QDoubleSpinBox>(m_fields["router.seed_fraction"])->setValue(r.seedFraction);
  as<QSpinBox>(m_fields["router.min_seed"])->setValue(static_cast<int>(r.minSeed));
  as<QDoubleSpinBox>(m_fields["router.epochs"])->setValue(r.routerEpochs);
  as<QDoubleSpinBox>(m_fields["router.a"])->setValue(r.clsWeightA);
  as<QDoubleSpinBox>(m_fields["router.lr"])->setValue(r.routerLr);
  m_filling = false;
  m_fields["runs.seed"]->setEnabled(r.seedSet);
  updateMethodGroups();
}

void ExperimentPanel::updateMethodGroups() {
  const std::string m = m_run >= 0 && m_run < static_cast<int>(m_exp.runs.size()) ? m_exp.runs[m_run].method : "";
  m_moeGroup->setVisible(!m.empty() && m != "dense");
  m_dropGroup->setVisible(m == "drop");
  m_noiseGroup->setVisible(m == "noise");
  m_btxGroup->setVisible(m == "btx");
  const bool upit = m == "upit" || m == "upit_lora";
  m_upitGroup->setVisible(upit);
  m_gaGroup->setVisible(upit);
  m_routerGroup->setVisible(upit);
  fitForms();  // the run form's height changed with the method's groups
}

void ExperimentPanel::commit() {
  if (m_filling) return;
  auto text = [&](const char* n) { return as<QLineEdit>(m_fields[n])->text().trimmed(); };
  auto num = [&](const char* n) { return static_cast<int64_t>(as<QSpinBox>(m_fields[n])->value()); };
  auto real = [&](const char* n) { return as<QDoubleSpinBox>(m_fields[n])->value(); };
  auto pick = [&](const char* n) { return as<QComboBox>(m_fields[n])->currentText().toStdString(); };
  auto flag = [&](const char* n) { return as<QCheckBox>(m_fields[n])->isChecked(); };
  Experiment& e = m_exp;
  e.name = text("name").toStdString();
  e.seed = static_cast<uint64_t>(num("seed"));
  m_parseError.clear();
  e.seeds.clear();
  if (!text("seeds").isEmpty()) {
    try {
      e.seeds = parseSeedList(text("seeds").toStdString(), "Seeds");
    } catch (const std::exception& ex) {
      m_parseError = qs(ex.what());
    }
  }
  e.device = pick("device");
  e.threads = static_cast<int>(num("threads"));
  e.nproc = static_cast<int>(num("nproc"));
  e.precision = pick("precision");
  e.out = text("out").toStdString();
  e.pretrain = as<QComboBox>(m_fields["base.mode"])->currentIndex() == 0;
  e.basePath = e.pretrain ? std::filesystem::path() : std::filesystem::path(text("base.path").toStdString());
  e.pretrainSteps = num("pretrain.steps");
  e.hidden = num("pretrain.hidden");
  e.ff = num("pretrain.ff");
  e.layers = num("pretrain.layers");
  e.heads = num("pretrain.heads");
  e.kvHeads = num("pretrain.kv_heads");
  e.pretrainLr = real("pretrain.lr");
  e.generateData = as<QComboBox>(m_fields["data.mode"])->currentIndex() == 0;
  e.perDomain = num("data.per_domain");
  e.evalPerDomain = num("data.eval_per_domain");
  e.trainData = e.generateData ? std::filesystem::path() : std::filesystem::path(text("data.train").toStdString());
  e.evalData = e.generateData ? std::filesystem::path() : std::filesystem::path(text("data.eval").toStdString());
  e.promptTemplate = pick("data.template");
  e.maxLength = num("data.max_length");
  e.sft = flag("sft.enabled");
  e.sftTraining.epochs = real("sft.epochs");
  e.sftTraining.saveEvery = real("sft.save_every");
  e.sftTraining.lr = real("sft.lr");
  e.sftTraining.batchSize = num("sft.batch_size");
  e.lora.rank = num("lora.rank");
  e.lora.alpha = real("lora.alpha");
  try {
    e.lora.targets = parseLoraTargets(text("lora.targets").toStdString(), "LoRA targets");
  } catch (const std::exception& ex) {
    if (m_parseError.isEmpty()) m_parseError = qs(ex.what());
  }
  e.sftCheckpoints.clear();
  for (const QString& c : splitList(text("sft.checkpoints"))) e.sftCheckpoints.emplace_back(c.toStdString());
  e.post.epochs = real("post.epochs");
  e.post.lr = real("post.lr");
  e.post.batchSize = num("post.batch_size");
  e.post.auxLossCoef = real("post.aux_loss_coef");
  e.post.zLossCoef = real("post.z_loss_coef");
  e.evalAccuracy = flag("eval.accuracy");
  e.maxNewTokens = num("eval.max_new_tokens");
  if (m_run >= 0 && m_run < static_cast<int>(e.runs.size())) {
    RunSpec& r = e.runs[m_run];
    r.name = text("runs.name").toStdString();
    r.method = pick("runs.method");
    r.seedSet = flag("runs.seed_set");
    r.seed = r.seedSet ? static_cast<uint64_t>(num("runs.seed")) : e.seed;
    r.experts = num("runs.experts");
    r.topK = num("runs.top_k");
    r.moeLayerFreq = num("runs.moe_layer_freq");
    r.routerInit = pick("runs.router_init");
    r.ratio = real("runs.ratio");
    r.sharedIndices = flag("runs.shared_indices");
    r.expertFf = num("runs.expert_ff");
    r.noiseStd = real("runs.noise_std");
    r.noiseFraction = real("runs.noise_fraction");
    r.sources.clear();
    for (const QString& s : splitList(text("runs.sources"))) r.sources.emplace_back(s.toStdString());
    r.checkpoints = num("runs.checkpoints");
    r.select = pick("runs.select");
    r.checkpointList.clear();
    for (const QString& s : splitList(text("runs.checkpoint_list"))) r.checkpointList.push_back(s.toLongLong());
    r.nonFfn = pick("runs.non_ffn");
    r.expand = flag("runs.expand");
    r.parentRule = pick("ga.parent_rule");
    r.distance = pick("ga.distance");
    r.alphaMin = real("ga.alpha_min");
    r.alphaMax = real("ga.alpha_max");
    r.dareP = real("ga.dare_p");
    r.dareRescale = pick("ga.dare_rescale");
    r.mergeOp = pick("ga.merge");
    r.preoptimize = flag("router.preoptimize");
    r.seedFraction = real("router.seed_fraction");
    r.minSeed = num("router.min_seed");
    r.routerEpochs = real("router.epochs");
    r.clsWeightA = real("router.a");
    r.routerLr = real("router.lr");
    if (auto* item = m_runs->item(m_run)) item->setText(QStringLiteral("%1  (%2)").arg(qs(r.name), qs(r.method)));
    m_fields["runs.seed"]->setEnabled(r.seedSet);
  }
  for (auto& r : e.runs)
    if (!r.seedSet) r.seed = e.seed;
  updateSourceFields();
  updateMethodGroups();
  validate();
  setModified(true);
  Q_EMIT experimentChanged();
}

QString describeExperimentError(const Experiment& e, const QString& message, QString* field, int* run) {
  QString m = message.trimmed();
  // The engine prefixes the file (or "experiment"): the form is the context here.
  const QString ctx = e.sourceFile.empty() ? QStringLiteral("experiment") : QString::fromStdString(e.sourceFile.string());
  if (m.startsWith(ctx + QStringLiteral(": "))) m = m.mid(ctx.size() + 2);
  // "runs[2].top_k ..." -> run "drop": top_k ...
  QString path;
  if (run) *run = -1;
  static const QRegularExpression runRe(QStringLiteral("^runs\\[(\\d+)\\]\\.?([A-Za-z0-9_.]*)"));
  static const QRegularExpression keyRe(QStringLiteral("^([a-z_]+(?:\\.[a-z_]+)*)"));
  if (const auto rm = runRe.match(m); rm.hasMatch()) {
    const int i = rm.captured(1).toInt();
    if (run) *run = i;
    const QString key = rm.captured(2);
    const QString who = i >= 0 && i < static_cast<int>(e.runs.size()) && !e.runs[i].name.empty()
                            ? QObject::tr("run \"%1\"").arg(QString::fromStdString(e.runs[i].name))
                            : QObject::tr("run %1").arg(i + 1);
    m = who + (key.isEmpty() ? QString() : QStringLiteral(": ") + key) + m.mid(rm.capturedLength());
    if (!key.isEmpty()) path = key.startsWith(QLatin1String("ga.")) || key.startsWith(QLatin1String("router.")) ? key : QStringLiteral("runs.") + key;
  } else if (const auto km = keyRe.match(m); km.hasMatch()) {
    path = km.captured(1);
    if (path.startsWith(QLatin1String("base.pretrain."))) path = path.mid(5);    // the form's "pretrain.steps"
    if (path.startsWith(QLatin1String("data.generate."))) path.remove(5, 9);  // the form's "data.per_domain"
  }
  if (field) *field = path;
  return m;
}

void ExperimentPanel::validate() {
  m_error.clear();
  QString field;
  int run = -1;
  try {
    std::set<std::string> names;
    for (size_t i = 0; i < m_exp.runs.size(); ++i)
      if (!names.insert(m_exp.runs[i].name).second)
        throw std::runtime_error("runs[" + std::to_string(i) + "].name \"" + m_exp.runs[i].name + "\" is used twice");
    if (!m_parseError.isEmpty()) throw std::runtime_error(m_parseError.toStdString());
    validateExperiment(m_exp);
  } catch (const std::exception& ex) {
    m_error = describeExperimentError(m_exp, qs(ex.what()), &field, &run);
  }
  // A run's field is outlined only while that run's form is shown (the message names the run).
  highlightField(m_error.isEmpty() || (run >= 0 && run != m_run) ? QString() : field);
  if (m_error.isEmpty())
    m_status->setText(tr("<span style='color:#26a269'>&#10003; valid</span> - %1 runs; saved files run with <tt>upcycle run FILE</tt>")
                          .arg(m_exp.runs.size()));
  else
    m_status->setText(QStringLiteral("<span style='color:#c01c28'>&#10007; %1</span>").arg(m_error.toHtmlEscaped()));
}

void ExperimentPanel::highlightField(const QString& name) {
  // The field the error names is outlined; the previous one is restored. A run's field belongs to
  // the run the message names, so that run is selected first.
  if (QWidget* old = m_fields.value(m_errorField, nullptr)) old->setStyleSheet(QString());
  m_errorField.clear();
  QWidget* w = m_fields.value(name, nullptr);
  if (!w) return;
  m_errorField = name;
  w->setStyleSheet(QStringLiteral("border: 2px solid #c01c28;"));
}

QString ExperimentPanel::loadFile(const QString& path) {
  try {
    Experiment e = loadExperiment(path.toStdString());
    setExperiment(e);
    m_file = path;
    setModified(false);
    Q_EMIT fileChanged(path);
    Q_EMIT experimentChanged();
    return {};
  } catch (const std::exception& ex) {
    return qs(ex.what());
  }
}

QString ExperimentPanel::saveFile(const QString& path) {
  if (!m_error.isEmpty()) return tr("The experiment is not valid, so it was not saved: %1").arg(m_error);
  QString error;
  if (!writeTextAtomically(path, QString::fromStdString(experimentYaml(m_exp)), &error)) return error;
  m_file = path;
  m_exp.sourceFile = path.toStdString();
  setModified(false);
  Q_EMIT fileChanged(path);
  return {};
}

void ExperimentPanel::applyPreset(int preset) {
  if (m_run < 0 || m_run >= static_cast<int>(m_exp.runs.size())) return;
  RunSpec& cur = m_exp.runs[m_run];
  RunSpec r;  // RunSpec's defaults are SPEC.md's defaults
  r.name = cur.name;
  r.seed = cur.seed;
  r.seedSet = cur.seedSet;
  r.experts = 8;
  r.topK = 2;
  switch (preset) {
    case 0: r.method = "sparse"; break;
    case 1: r.method = "drop"; r.ratio = 0.5; break;
    case 2:
      r.method = "upit";
      r.checkpoints = 4;
      if (!m_exp.sft) m_exp.sft = true;
      if (m_exp.sftCheckpoints.empty() && m_exp.sftTraining.saveEvery <= 0) m_exp.sftTraining.saveEvery = 0.25;
      break;
    default: r.method = "dense"; break;
  }
  cur = r;
  fillForms();
  fillRunForm();
  refillRunList();
  validate();
  setModified(true);
  Q_EMIT experimentChanged();
}

void ExperimentPanel::selectRun(int index) {
  if (index < 0 || index >= static_cast<int>(m_exp.runs.size())) return;
  m_run = index;
  refillRunList();
  fillRunForm();
  validate();
}

void ExperimentPanel::useCheckpoints(const QString& base, const QStringList& checkpoints) {
  if (!base.isEmpty()) {
    m_exp.pretrain = false;
    m_exp.basePath = base.toStdString();
  }
  m_exp.sft = true;
  m_exp.sftCheckpoints.clear();
  for (const QString& c : checkpoints) m_exp.sftCheckpoints.emplace_back(c.toStdString());
  const auto n = static_cast<int64_t>(checkpoints.size());
  // PEFT adapters become LoRA experts (upit_lora); full checkpoints FFN experts (upit).
  const bool adapters = !checkpoints.isEmpty() && isPeftAdapter(checkpoints.front().toStdString());
  const std::string method = adapters ? "upit_lora" : "upit";
  bool hasUpit = false;
  for (RunSpec& r : m_exp.runs) {
    if (r.method == "upit" || r.method == "upit_lora") r.method = method;
    if (r.method != method) continue;
    hasUpit = true;
    r.checkpoints = std::min(n, r.experts);
    r.select = "even";
    r.checkpointList.clear();
  }
  if (!hasUpit && n > 0) {
    RunSpec r;
    r.name = method == "upit_lora" ? "upit-lora" : "upit";
    r.method = method;
    r.seed = m_exp.seed;
    r.checkpoints = std::min<int64_t>(n, r.experts);
    m_exp.runs.push_back(r);
  }
  fillForms();
  refillRunList();
  fillRunForm();
  validate();
  setModified(true);
  Q_EMIT experimentChanged();
}

}  // namespace upcycle::ui
