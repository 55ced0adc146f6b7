#pragma once
// Expert similarity and routing analysis (SPEC §6). Torch-free header; shared by the CLI, the store
// and the GUI. Thread-safety: analyzeModel runs on the calling thread.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace upcycle {

// A dense row-major matrix of doubles.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> values;
  double at(int64_t r, int64_t c) const { return values[r * cols + c]; }
  bool empty() const { return values.empty(); }
};

struct LayerSimilarity {
  int64_t layer = 0;
  Matrix weights;   // E x E cosine similarity of the experts' flattened FFN weights (gate, up, down)
  Matrix deltas;    // the same on the deltas from the dense base FFN (empty without a base)
  Matrix cka;       // linear CKA of the experts' outputs on the probe tokens (empty without a probe)
  double diversity = 0;  // mean off-diagonal (1 - weights similarity)
};

struct RoutingLayer {
  int64_t layer = 0;
  std::vector<double> shares;                             // E: share of (token, slot) assignments
  std::map<std::string, std::vector<double>> domainShares;  // per data domain
  double entropy = 0;       // mean per-token entropy of the router's softmax (nats)
  double shareEntropy = 0;  // entropy of `shares` (nats; log E = perfectly balanced)
  double imbalance = 0;     // max share / mean share (1 = balanced)
  Matrix coselection;       // E x E: tokens that chose both experts (diagonal: tokens that chose e)
};

struct AnalysisReport {
  int64_t experts = 0, topK = 0, probeTokens = 0;
  std::vector<LayerSimilarity> similarity;  // one per MoE layer
  std::vector<RoutingLayer> routing;        // one per MoE layer (empty without a probe)
  double diversity = 0;                     // mean over layers of LayerSimilarity::diversity
};

struct AnalyzeOptions {
  std::filesystem::path base;  // dense base for delta similarity (optional)
  std::filesystem::path data;  // probe records for routing and CKA (optional; any data kind)
  int64_t maxProbeRecords = 256;
  std::string promptTemplate;
  std::string device = "auto";
  // The dtype the models are loaded in: "auto" keeps a bfloat16 checkpoint in bfloat16 (the similarity
  // reads its rows as stored; the probe forward runs in bfloat16, router softmax in float32) and loads
  // anything else as float32; or "float32", "bfloat16".
  std::string dtype = "auto";
};

AnalysisReport analyzeModel(const std::filesystem::path& model, const AnalyzeOptions& o = {});
std::string analysisJson(const AnalysisReport& r);
std::string analysisText(const AnalysisReport& r);

}  // namespace upcycle
