#include "upcycle/stream_convert.h"

#include <torch/torch.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "formats/checkpoint_files.h"
#include "model/model_io.h"
#include "upcycle/methods.h"

namespace upcycle {

namespace fs = std::filesystem;

bool canStreamConvert(const ModelConfig& dense, const std::string& method, const MoeShape& shape, const std::string& layout) {
  if (method != "sparse" && method != "drop") return false;
  if (dense.isMoe() || (dense.modelType != "llama" && dense.modelType != "mistral")) return false;
  if (layout != "mixtral-hub" || shape.layerFreq != 1) return false;
  return method == "drop" || shape.expertFf == 0 || shape.expertFf == dense.intermediateSize;
}

namespace {

std::string layerName(int64_t l, const std::string& rest) { return "model.layers." + std::to_string(l) + "." + rest; }

// The layer of "model.layers.L.*", or -1 for the other tensors (embeddings, final norm, head).
int64_t layerOf(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  return std::stoll(name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size()));
}

// Produces one layer's experts in write order (expert 0 gate, down, up; expert 1 ...), drawing each
// expert when its first tensor is requested. Holds the dense layer's FFN in float32 and one expert.
class ExpertStream {
 public:
  ExpertStream(const CheckpointFiles& dense, const StreamConvertOptions& o, const ModelConfig& mc, torch::Generator& gen)
      : m_dense(dense), m_o(o), m_mc(mc), m_gen(gen) {
    if (o.method == "drop") m_edit = dropEdit(o.ratio, o.sharedIndices, gen);
  }
  // which: 0 gate (w1), 1 down (w2), 2 up (w3)
  const void* get(int64_t layer, int64_t expert, int which) {
    if (layer != m_layer) {
      // Everything of the earlier layers is written by now: drop its mapped pages from our memory.
      for (const auto& n : m_dense.names())
        if (const int64_t l = layerOf(n); l >= 0 && l < layer) m_dense.release(n);
      auto load = [&](const char* n) { return tensorFromView(m_dense.tensor(layerName(layer, n))).to(torch::kFloat); };
      m_gate = load("mlp.gate_proj.weight");  // (F, D)
      m_up = load("mlp.up_proj.weight");      // (F, D)
      m_down = load("mlp.down_proj.weight");  // (D, F)
      m_layer = layer;
      m_expert = -1;
    }
    if (expert != m_expert) {
      torch::NoGradGuard ng;
      torch::Tensor g = m_gate, u = m_up, dn = m_down;
      if (m_o.method == "drop")
        std::tie(g, u, dn) = permutedExpert(m_gate, m_up, m_down, m_gate.size(0), m_mc.expertIntermediateSize, m_gen, m_edit);
      const torch::Dtype store = torchDtype(m_mc.dtype);
      m_out[0] = g.to(store).contiguous();
      m_out[1] = dn.to(store).contiguous();
      m_out[2] = u.to(store).contiguous();
      m_expert = expert;
    }
    return m_out[which].data_ptr();
  }

 private:
  const CheckpointFiles& m_dense;
  const StreamConvertOptions& m_o;
  const ModelConfig& m_mc;
  torch::Generator& m_gen;
  ExpertEdit m_edit;
  int64_t m_layer = -1, m_expert = -1;
  torch::Tensor m_gate, m_up, m_down, m_out[3];
};

}  // namespace

ModelConfig streamConvert(const StreamConvertOptions& o) {
  const ModelConfig dc = parseHfConfig(readTextFile(o.base / "config.json"), (o.base / "config.json").string());
  UPCYCLE_CHECK(canStreamConvert(dc, o.method, o.shape, "mixtral-hub"), "streaming conversion does not support this model or method");
  checkRouterInit(o.routerInit);
  ModelConfig mc = moeConfigFromDense(dc, o.shape);
  mc.moeLayout = MoeLayout::MixtralHub;
  const CheckpointFiles dense(o.base);
  const int64_t L = mc.numLayers, E = mc.numExperts, D = mc.hiddenSize, Fe = mc.expertIntermediateSize;
  torch::Generator gen = at::detail::createCPUGenerator(o.seed);

  // Routers first, layer by layer (the in-memory methods' draw order), in the MoE parameters' float32.
  std::vector<torch::Tensor> routers;
  {
    torch::NoGradGuard ng;
    for (int64_t l = 0; l < L; ++l) {
      auto w = torch::empty({E, D}, torch::kFloat);
      initRouter(w, o.routerInit, gen);
      routers.push_back(w.to(torchDtype(mc.dtype)).contiguous());
    }
  }
  ExpertStream experts(dense, o, mc, gen);
  const DType store = mc.dtype;

  // The write plan, layer-major: what is not an FFN tensor is copied byte for byte (the in-memory path
  // converts to float32 and back, which is exact).
  std::vector<TensorWrite> plan;
  std::vector<torch::Tensor> converted;  // non-FFN tensors stored in another dtype than the config's
  auto copy = [&](const std::string& name) {
    const TensorView& v = dense.tensor(name);
    if (v.dtype == store) {
      plan.push_back({name, v.dtype, v.shape, v.data, {}});
      return;
    }
    converted.push_back(tensorFromView(v).to(torchDtype(store)).contiguous());
    plan.push_back({name, store, v.shape, converted.back().data_ptr(), {}});
  };
  std::vector<std::string> names = dense.names();
  for (const auto& n : names)
    if (layerOf(n) < 0 && n != "lm_head.weight" && n != "model.norm.weight") copy(n);  // embeddings first
  for (int64_t l = 0; l < L; ++l) {
    for (const auto& n : names)
      if (layerOf(n) == l && n.find(".mlp.") == std::string::npos) copy(n);
    plan.push_back({layerName(l, "block_sparse_moe.gate.weight"), store, {E, D}, routers[l].data_ptr(), {}});
    for (int64_t e = 0; e < E; ++e) {
      const std::string p = "block_sparse_moe.experts." + std::to_string(e) + ".";
      plan.push_back({layerName(l, p + "w1.weight"), store, {Fe, D}, nullptr, [&experts, l, e] { return experts.get(l, e, 0); }});
      plan.push_back({layerName(l, p + "w2.weight"), store, {D, Fe}, nullptr, [&experts, l, e] { return experts.get(l, e, 1); }});
      plan.push_back({layerName(l, p + "w3.weight"), store, {Fe, D}, nullptr, [&experts, l, e] { return experts.get(l, e, 2); }});
    }
  }
  for (const char* n : {"model.norm.weight", "lm_head.weight"})
    if (dense.contains(n)) copy(n);

  fs::create_directories(o.out);
  writeCheckpointTensors(o.out, plan, o.maxShardBytes);
  writeFileAtomically(o.out / "config.json", hfConfigJson(mc));
  copyTokenizerFiles(o.base, o.out);
  return mc;
}

}  // namespace upcycle
