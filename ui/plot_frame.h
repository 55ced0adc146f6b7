#pragma once
// A titled frame around one figure (a QCustomPlot, or a QGraphicsView for the lineage tree) with
// export buttons: PNG, PDF, and the plotted data as CSV. Every export is atomic (written under a
// temporary name in the target folder, then renamed). Thread-safety: GUI thread only.
#include <QString>
#include <QStringList>
#include <QWidget>
#include <functional>
#include <vector>

class QCustomPlot;
class QGraphicsView;
class QLabel;

namespace upcycle::ui {

using CsvTable = std::vector<QStringList>;  // first row: the header

class PlotFrame : public QWidget {
  Q_OBJECT
 public:
  PlotFrame(const QString& title, QWidget* parent = nullptr);  // owns a new QCustomPlot
  PlotFrame(const QString& title, QGraphicsView* view, QWidget* parent = nullptr);

  QCustomPlot* plot() const { return m_plot; }
  QGraphicsView* view() const { return m_view; }
  void setTitle(const QString& title);
  QString title() const;
  // The runs the figure shows: exports carry them under the title, and file names include them.
  void setRunNames(const QStringList& names) { m_runNames = names; }
  QStringList runNames() const { return m_runNames; }
  // "expert-similarity-drop-0-5.png": the title and the runs, so figures of two runs never collide.
  QString defaultFileName(const QString& suffix) const;
  void setCsvSource(std::function<CsvTable()> source) { m_csv = std::move(source); }
  CsvTable csv() const { return m_csv ? m_csv() : CsvTable{}; }

  // Each returns false with the reason in *error (no partial file is left behind).
  bool exportPng(const QString& path, QString* error = nullptr) const;
  bool exportPdf(const QString& path, QString* error = nullptr) const;
  bool exportCsv(const QString& path, QString* error = nullptr) const;

 private:
  void build(const QString& title, QWidget* content);
  void askAndExport(const QString& kind);
  QCustomPlot* m_plot = nullptr;
  QGraphicsView* m_view = nullptr;
  QLabel* m_title = nullptr;
  QStringList m_runNames;
  std::function<CsvTable()> m_csv;
  // Exports draw the title and the run names above the figure; this adds them for one export.
  class Heading;
};

// One CSV field, quoted when needed (RFC 4180).
QString csvField(const QString& s);
QString csvText(const CsvTable& table);
// A distinct colour per series (runs, experts, stages); stable for a given index.
QColor seriesColor(int index);
// A run's colour, the same in every panel (the Runs table's swatch, curves, heatmap titles, bars):
// from the run's store id, so it never changes when other runs come or go.
QColor runColor(qint64 runId);
// A run name's colour across its seeds (group rows, the Across seeds view): its earliest run's colour,
// so seed 0's curves and the group's bars look alike.
QColor groupColor(const std::vector<int64_t>& runIds);
// Writes `write(tempPath)` then renames onto `path`; removes the temporary file on failure. For files
// a Qt writer must create by name (PNG, PDF).
bool writeAtomically(const QString& path, const std::function<bool(const QString&)>& write, QString* error);
// Text through the engine's writeFileAtomically (temporary name, fsync, rename).
bool writeTextAtomically(const QString& path, const QString& text, QString* error);

}  // namespace upcycle::ui
