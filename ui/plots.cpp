#include "plots.h"

#include "qcp.h"

#include <algorithm>
#include <cmath>

namespace upcycle::ui {

double diversityOf(const BlobRow& m) {
  if (m.rows < 2 || m.rows != m.cols) return 0;
  double sum = 0;
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t j = 0; j < m.cols; ++j)
      if (i != j) sum += m.values[i * m.cols + j];
  return 1.0 - sum / static_cast<double>(m.rows * (m.rows - 1));
}

double entropyOf(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log(v);
  return h;
}

double imbalanceOf(const std::vector<double>& p) {
  if (p.empty()) return 0;
  double sum = 0, mx = 0;
  for (double v : p) {
    sum += v;
    mx = std::max(mx, v);
  }
  return sum > 0 ? mx / (sum / static_cast<double>(p.size())) : 0;
}

std::map<int64_t, BlobRow> byLayer(const std::vector<BlobRow>& blobs, const std::string& domain) {
  std::map<int64_t, BlobRow> out;
  for (const auto& b : blobs)
    if (b.domain == domain) out[b.layer] = b;
  return out;
}

std::vector<double> emaSmooth(const std::vector<double>& y, double w) {
  std::vector<double> out(y.size());
  double last = 0;
  int n = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      out[i] = y[i];
      continue;
    }
    last = last * w + (1.0 - w) * y[i];
    ++n;
    const double debias = w >= 1.0 ? 1.0 : 1.0 - std::pow(w, n);
    out[i] = last / debias;
  }
  return out;
}

double nominalTokensPerStep(const std::vector<std::pair<std::string, std::string>>& params, const std::string& stage) {
  auto num = [&](const std::string& key) {
    for (const auto& [k, v] : params)
      if (k == key) {
        try {
          return std::stod(v);
        } catch (const std::exception&) {
          return 0.0;
        }
      }
    return 0.0;
  };
  const std::string family = stage.substr(0, stage.find(':'));
  if (family == "pretrain") return num("base.pretrain.batch_size") * num("base.pretrain.block");
  const double length = num("data.max_length") > 0 ? num("data.max_length") : num("base.pretrain.block");
  const double batch = family == "sft" ? num("sft.batch_size") : num("post.batch_size");
  return batch * length;
}

QCPColorGradient similarityGradient() {
  QCPColorGradient g;
  g.setColorStopAt(0.0, QColor(0x44, 0x01, 0x54));
  g.setColorStopAt(0.25, QColor(0x3b, 0x52, 0x8b));
  g.setColorStopAt(0.5, QColor(0x21, 0x91, 0x8c));
  g.setColorStopAt(0.75, QColor(0x5e, 0xc9, 0x62));
  g.setColorStopAt(1.0, QColor(0xfd, 0xe7, 0x25));
  g.setLevelCount(256);
  return g;
}

void labelExperts(QCPAxisRect* rect, int n) {
  for (QCPAxis* axis : {rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft)}) {
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    for (int i = 0; i < n; ++i) ticker->addTick(i, QStringLiteral("E%1").arg(i));
    axis->setTicker(ticker);
    axis->grid()->setVisible(false);
    axis->setRange(-0.5, n - 0.5);
  }
  rect->axis(QCPAxis::atLeft)->setRangeReversed(true);  // row 0 at the top, like a matrix
}

void showMatrix(QCPColorMap* map, const BlobRow& m) {
  map->data()->clear();
  map->data()->setSize(static_cast<int>(m.cols), static_cast<int>(m.rows));
  map->data()->setRange(QCPRange(0, std::max<int64_t>(m.cols - 1, 1)), QCPRange(0, std::max<int64_t>(m.rows - 1, 1)));
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c) map->data()->setCell(static_cast<int>(c), static_cast<int>(r), m.values[r * m.cols + c]);
  map->setInterpolate(false);
  labelExperts(map->keyAxis()->axisRect(), static_cast<int>(std::max(m.rows, m.cols)));
}

void styleLegend(QCustomPlot* plot) {
  plot->legend->setVisible(true);
  plot->legend->setBrush(QColor(255, 255, 255, 200));
  plot->legend->setBorderPen(QPen(QColor(180, 180, 180)));
  QFont f = plot->font();
  f.setPointSizeF(f.pointSizeF() * 0.85);
  plot->legend->setFont(f);
}

}  // namespace upcycle::ui

namespace upcycle::ui {

void placeLegendOutside(QCustomPlot* plot, bool below) {
  styleLegend(plot);
  if (plot->legend->layout() != plot->axisRect()->insetLayout()) return;  // already placed
  plot->axisRect()->insetLayout()->take(plot->legend);
  auto* side = new QCPLayoutGrid;
  QCPLayoutGrid* layout = plot->plotLayout();
  if (below) {
    // A row under the axis rect: spacer, legend, spacer.
    layout->addElement(layout->rowCount(), 0, side);
    layout->setRowStretchFactor(layout->rowCount() - 1, 0.001);
    side->setMargins(QMargins(0, 0, 0, 4));
    side->addElement(0, 0, new QCPLayoutElement(plot));
    side->addElement(0, 1, plot->legend);
    side->addElement(0, 2, new QCPLayoutElement(plot));
    side->setColumnStretchFactor(1, 0.001);
    // One entry per row: a narrow plot has no width for long names side by side.
    plot->legend->setFillOrder(QCPLayoutGrid::foRowsFirst);
  } else {
    // A column beside the axis rect: the legend at the top, an empty element below taking the rest.
    layout->addElement(0, layout->columnCount(), side);
    layout->setColumnStretchFactor(layout->columnCount() - 1, 0.001);
    side->setMargins(QMargins(0, 6, 6, 0));
    side->addElement(0, 0, plot->legend);
    side->addElement(1, 0, new QCPLayoutElement(plot));
    side->setRowStretchFactor(0, 0.001);
  }
  plot->legend->setLayer(QStringLiteral("legend"));
}

}  // namespace upcycle::ui
