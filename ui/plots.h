#pragma once
// Plot helpers shared by the panels, and the small pieces of arithmetic the panels plot (computed
// here from the stored matrices so the figures can be checked against hand arithmetic).
// Thread-safety: GUI thread only (QCustomPlot); the arithmetic is pure.
#include <QString>
#include <map>
#include <vector>

#include "store/run_store.h"

class QCustomPlot;
class QCPAxisRect;
class QCPColorMap;
class QCPColorScale;
class QCPColorGradient;

namespace upcycle::ui {

// 1 - mean off-diagonal entry of a square similarity matrix (the SPEC's diversity of a layer).
double diversityOf(const BlobRow& similarity);
// Entropy (nats) of a share vector and its imbalance, max / mean.
double entropyOf(const std::vector<double>& shares);
double imbalanceOf(const std::vector<double>& shares);
// Blobs of one kind keyed by layer; `domain` selects the per-domain ones ("" = overall).
std::map<int64_t, BlobRow> byLayer(const std::vector<BlobRow>& blobs, const std::string& domain = "");

QCPColorGradient similarityGradient();  // viridis-like, perceptually ordered
// Fills `map` (on its axis rect) with the matrix, row 0 at the top, experts labelled E0..; the colour
// range is the caller's (a shared one in the Compare view).
void showMatrix(QCPColorMap* map, const BlobRow& m);
// An axis rect's integer ticks labelled with a prefix ("E0", "E1", ...).
void labelExperts(QCPAxisRect* rect, int n);
void styleLegend(QCustomPlot* plot);

}  // namespace upcycle::ui
