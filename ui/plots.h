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

// TensorBoard's exponential moving average with debiasing: last = w last + (1 - w) y over the finite
// values, each divided by 1 - w^n (n finite values so far), so the start is not pulled toward 0;
// non-finite values pass through. w in [0, 1): 0 leaves the curve as it is.
std::vector<double> emaSmooth(const std::vector<double>& y, double weight);

// Tokens one optimizer step of a metrics stage ("pretrain", "sft", "post:NAME", ...) reads, from the
// run's flattened params: pretraining packs batch_size blocks of `block` tokens, so batch_size x block
// exactly; the other stages batch_size x data.max_length (or the base's block when max_length is 0),
// an upper bound, since their records are shorter than the longest. 0 when the params do not say.
double nominalTokensPerStep(const std::vector<std::pair<std::string, std::string>>& params, const std::string& stage);

QCPColorGradient similarityGradient();  // viridis-like, perceptually ordered
// Fills `map` (on its axis rect) with the matrix, row 0 at the top, experts labelled E0..; the colour
// range is the caller's (a shared one in the Compare view).
void showMatrix(QCPColorMap* map, const BlobRow& m);
// An axis rect's integer ticks labelled with a prefix ("E0", "E1", ...).
void labelExperts(QCPAxisRect* rect, int n);
void styleLegend(QCustomPlot* plot);
// The legend in its own cell outside the axis rect: a column on the right, top-aligned (many entries),
// or a row below, centred (a narrow plot with few entries). It never covers
// the data, however many entries it gets.
void placeLegendOutside(QCustomPlot* plot, bool below = false);

}  // namespace upcycle::ui
