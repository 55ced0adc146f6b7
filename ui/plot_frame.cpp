#include "plot_frame.h"

#include <algorithm>

#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QGraphicsView>
#include <QHBoxLayout>
#include <QImage>
#include <QLabel>
#include <QMessageBox>
#include <QPainter>
#include <QPdfWriter>
#include <QRegularExpression>
#include <QSaveFile>
#include <QToolButton>
#include <QVBoxLayout>
#include "qcp.h"

#include <filesystem>

#include "core/atomic_file.h"

namespace upcycle::ui {

QString csvField(const QString& s) {
  if (!s.contains(QLatin1Char(',')) && !s.contains(QLatin1Char('"')) && !s.contains(QLatin1Char('\n'))) return s;
  QString q = s;
  q.replace(QLatin1String("\""), QLatin1String("\"\""));
  return QLatin1Char('"') + q + QLatin1Char('"');
}

QString csvText(const CsvTable& table) {
  QString out;
  for (const QStringList& row : table) {
    QStringList fields;
    for (const QString& f : row) fields << csvField(f);
    out += fields.join(QLatin1Char(',')) + QLatin1Char('\n');
  }
  return out;
}

QColor seriesColor(int index) {
  // Okabe-Ito (colour-blind safe), then golden-angle hues.
  static const QColor base[] = {QColor(0, 114, 178), QColor(230, 159, 0), QColor(0, 158, 115), QColor(204, 121, 167),
                                QColor(86, 180, 233), QColor(213, 94, 0), QColor(240, 228, 66), QColor(60, 60, 60)};
  if (index >= 0 && index < 8) return base[index];
  return QColor::fromHsv((index * 137) % 360, 170, 200);
}

QColor runColor(qint64 runId) { return seriesColor(static_cast<int>(std::max<qint64>(0, runId - 1) % 100000)); }

QColor groupColor(const std::vector<int64_t>& runIds) {
  return runIds.empty() ? seriesColor(0) : runColor(*std::min_element(runIds.begin(), runIds.end()));
}

bool writeAtomically(const QString& path, const std::function<bool(const QString&)>& write, QString* error) {
  const QFileInfo info(path);
  const QString tmp = info.dir().filePath(QStringLiteral(".%1.tmp").arg(info.fileName()));
  QFile::remove(tmp);
  if (!write(tmp) || !QFileInfo::exists(tmp)) {
    QFile::remove(tmp);
    if (error) *error = QObject::tr("could not write %1").arg(path);
    return false;
  }
  // POSIX rename replaces the old file in one step (QFile::rename would refuse to overwrite).
  std::error_code ec;
  std::filesystem::rename(tmp.toStdString(), path.toStdString(), ec);
  if (ec) {
    QFile::remove(tmp);
    if (error) *error = QObject::tr("could not rename onto %1: %2").arg(path, QString::fromStdString(ec.message()));
    return false;
  }
  return true;
}

bool writeTextAtomically(const QString& path, const QString& text, QString* error) {
  try {
    writeFileAtomically(path.toStdString(), text.toStdString());
    return true;
  } catch (const std::exception& e) {
    if (error) *error = QString::fromStdString(e.what());
    return false;
  }
}

PlotFrame::PlotFrame(const QString& title, QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot) {
  m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  m_plot->setMinimumSize(220, 110);
  build(title, m_plot);
}

PlotFrame::PlotFrame(const QString& title, QGraphicsView* view, QWidget* parent) : QWidget(parent), m_view(view) {
  build(title, view);
}

void PlotFrame::build(const QString& title, QWidget* content) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(2, 2, 2, 2);
  layout->setSpacing(2);
  auto* bar = new QHBoxLayout;
  m_title = new QLabel(QStringLiteral("<b>%1</b>").arg(title.toHtmlEscaped()));
  m_title->setObjectName(QStringLiteral("plotTitle"));
  // A long title wraps instead of widening the dock or being cut.
  m_title->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);
  m_title->setWordWrap(true);
  m_title->setMinimumWidth(40);
  bar->addWidget(m_title, 1);
  for (const QString& kind : {QStringLiteral("PNG"), QStringLiteral("PDF"), QStringLiteral("CSV")}) {
    auto* b = new QToolButton;
    b->setText(kind);
    b->setObjectName(QStringLiteral("export") + kind);
    b->setToolTip(kind == QLatin1String("CSV") ? tr("Export the plotted data as CSV") : tr("Export the figure as %1").arg(kind));
    b->setAutoRaise(true);
    connect(b, &QToolButton::clicked, this, [this, kind] { askAndExport(kind); });
    bar->addWidget(b);
  }
  layout->addLayout(bar);
  layout->addWidget(content, 1);
}

void PlotFrame::setTitle(const QString& title) { m_title->setText(QStringLiteral("<b>%1</b>").arg(title.toHtmlEscaped())); }
QString PlotFrame::title() const {
  QString t = m_title->text();
  t.remove(QStringLiteral("<b>")).remove(QStringLiteral("</b>"));
  return t;
}

// The title and the run names as a text element on top of the plot for the time of one export.
class PlotFrame::Heading {
 public:
  explicit Heading(const PlotFrame& f) : m_plot(f.m_plot) {
    if (!m_plot) return;
    QString text = f.title();
    if (!f.m_runNames.isEmpty()) text += QLatin1Char('\n') + f.m_runNames.join(QStringLiteral(", "));
    m_plot->plotLayout()->insertRow(0);
    m_element = new QCPTextElement(m_plot, text, QFont(m_plot->font().family(), m_plot->font().pointSize() + 1, QFont::Bold));
    m_plot->plotLayout()->addElement(0, 0, m_element);
    m_plot->replot(QCustomPlot::rpImmediateRefresh);
  }
  ~Heading() {
    if (!m_element) return;
    m_plot->plotLayout()->remove(m_element);
    m_plot->plotLayout()->simplify();
    m_plot->replot();
  }

 private:
  QCustomPlot* m_plot;
  QCPTextElement* m_element = nullptr;
};

QString PlotFrame::defaultFileName(const QString& suffix) const {
  QString base = (QStringList{title()} + m_runNames).join(QLatin1Char('-')).toLower();
  base.replace(QRegularExpression(QStringLiteral("[^a-z0-9]+")), QStringLiteral("-"));
  base.remove(QRegularExpression(QStringLiteral("^-+|-+$")));
  if (base.isEmpty()) base = QStringLiteral("figure");
  return base.left(120) + QLatin1Char('.') + suffix;
}

bool PlotFrame::exportPng(const QString& path, QString* error) const {
  return writeAtomically(path, [this](const QString& tmp) {
    if (m_plot) {
      Heading heading(*this);
      return m_plot->savePng(tmp, 0, 0, 2.0);
    }
    // The lineage tree: the heading drawn above the scene.
    const QRectF scene = m_view->scene()->sceneRect();
    QString text = title();
    if (!m_runNames.isEmpty()) text += QLatin1Char('\n') + m_runNames.join(QStringLiteral(", "));
    QFont font = m_view->font();
    font.setBold(true);
    const int head = QFontMetrics(font).height() * (m_runNames.isEmpty() ? 1 : 2) + 12;
    QImage img(QSize(static_cast<int>(scene.width()), static_cast<int>(scene.height()) + head) * 2, QImage::Format_ARGB32);
    img.fill(Qt::white);
    QPainter p(&img);
    p.scale(2, 2);
    p.setRenderHint(QPainter::Antialiasing);
    p.setFont(font);
    p.drawText(QRectF(0, 4, scene.width(), head - 4), Qt::AlignHCenter | Qt::AlignTop, text);
    m_view->scene()->render(&p, QRectF(0, head, scene.width(), scene.height()), scene);
    p.end();
    return img.save(tmp, "PNG");
  }, error);
}

bool PlotFrame::exportPdf(const QString& path, QString* error) const {
  return writeAtomically(path, [this](const QString& tmp) {
    if (m_plot) {
      Heading heading(*this);
      return m_plot->savePdf(tmp);
    }
    const QRectF scene = m_view->scene()->sceneRect();
    QString text = title();
    if (!m_runNames.isEmpty()) text += QLatin1Char('\n') + m_runNames.join(QStringLiteral(", "));
    const double head = 40;
    QPdfWriter pdf(tmp);
    pdf.setPageSize(QPageSize(QSizeF(scene.width(), scene.height() + head), QPageSize::Point));
    pdf.setPageMargins(QMarginsF(0, 0, 0, 0));
    pdf.setResolution(72);
    QPainter p(&pdf);
    QFont font = m_view->font();
    font.setBold(true);
    p.setFont(font);
    p.drawText(QRectF(0, 2, scene.width(), head - 2), Qt::AlignHCenter | Qt::AlignTop, text);
    m_view->scene()->render(&p, QRectF(0, head, scene.width(), scene.height()), scene);
    return p.end();
  }, error);
}

bool PlotFrame::exportCsv(const QString& path, QString* error) const {
  return writeTextAtomically(path, csvText(csv()), error);
}

void PlotFrame::askAndExport(const QString& kind) {
  const QString suffix = kind.toLower();
  const QString path = QFileDialog::getSaveFileName(this, tr("Export %1").arg(kind), defaultFileName(suffix),
                                                    tr("%1 files (*.%2)").arg(kind, suffix));
  if (path.isEmpty()) return;
  QString error;
  const bool ok = kind == QLatin1String("PNG") ? exportPng(path, &error)
                  : kind == QLatin1String("PDF") ? exportPdf(path, &error)
                                                 : exportCsv(path, &error);
  if (!ok) QMessageBox::warning(this, tr("Export failed"), error);
}

}  // namespace upcycle::ui
