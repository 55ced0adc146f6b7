#include "upcycle/stream_convert.h"

#include <torch/torch.h>

#include <algorithm>

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
  if (dense.isMoe()) return false;
  const bool wholeFfn =
      method == "drop" || shape.expertFf == 0 || shape.expertFf == dense.intermediateSize;
  // Qwen2-MoE / Qwen3-MoE: mlp.experts.E.*, dense layers kept (q/k/v biases, q/k norms copied as they are).
  if (dense.modelType == "qwen2" || dense.modelType == "qwen3") return wholeFfn;
  if (dense.modelType != "llama" && dense.modelType != "mistral") return false;
  if (layout != "mixtral-hub" || shape.layerFreq != 1) return false;
  return wholeFfn;
}

namespace {

std::string layerName(int64_t l, const std::string& rest) { return "model.layers." + std::to_string(l) + "." + rest; }

// The layer of "model.layers.L.*", or -1 for the other tensors (embeddings, final norm, head). The
// names were checked against the config (checkDenseCheckpoint), so L is a layer index.
int64_t layerOf(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  const std::string digits = name.substr(prefix.size(), name.find('.', prefix.size()) - prefix.size());
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

// Produces one layer's experts in write order (expert 0 gate, down, up; expert 1 ...), drawing each
// expert when its first tensor is requested. Holds the dense layer's FFN and one expert, in the output
// dtype when the checkpoint stores that dtype (a bf16 model stays bf16: the permutation moves bits, and
// Drop-Upcycling's statistics widen only the neurons they re-draw), else in float32 as the in-memory
// path does.
class ExpertStream {
 public:
  ExpertStream(const CheckpointFiles& dense, const StreamConvertOptions& o, const ModelConfig& mc, torch::Generator& gen)
      : m_dense(dense), m_o(o), m_mc(mc), m_gen(gen) {
    if (o.method == "drop") m_edit = dropEdit(o.ratio, o.sharedIndices, gen);
  }
  // which: 0 gate (w1, gate_proj), 1 down (w2, down_proj), 2 up (w3, up_proj)
  const void* get(int64_t layer, int64_t expert, int which) {
    if (layer != m_layer) {
      // Everything of the earlier layers is written by now: drop its mapped pages from our memory.
      for (const auto& n : m_dense.names())
        if (const int64_t l = layerOf(n); l >= 0 && l < layer) m_dense.release(n);
      auto load = [&](const char* n) {
        const TensorView& v = m_dense.tensor(layerName(layer, n));
        auto t = tensorFromView(v);
        return v.dtype == m_mc.dtype ? t : t.to(torch::kFloat);
      };
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
  const ModelConfig mc = moeConfigFromDense(dc, o.shape);
  const bool hub = mc.moeLayout == MoeLayout::MixtralHub;  // else Qwen2/3-MoE names
  UPCYCLE_ASSERT(hub || mc.moeLayout == MoeLayout::Qwen2Moe,
                 "streaming writes the Hub layouts only");
  const CheckpointFiles dense(o.base);
  // Every tensor against the config before a byte is read: a short or missing tensor would otherwise
  // be read past its end into the experts, or copied into a checkpoint nothing can load.
  checkDenseCheckpoint(dense, dc, o.base.string());
  const int64_t L = mc.numLayers, E = mc.numExperts, D = mc.hiddenSize, Fe = mc.expertIntermediateSize;
  torch::Generator gen = at::detail::createCPUGenerator(o.seed);

  // Routers first, MoE layer by MoE layer (the in-memory methods' draw order), in the MoE
  // parameters' float32. Dense layers (layer frequency > 1) have none.
  std::vector<torch::Tensor> routers(L);
  {
    torch::NoGradGuard ng;
    for (int64_t l = 0; l < L; ++l) {
      if (!mc.isMoeLayer(l)) continue;
      auto w = torch::empty({E, D}, torch::kFloat);  // (E, D)
      initRouter(w, o.routerInit, gen);
      routers[l] = w.to(torchDtype(mc.dtype)).contiguous();
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
  // Tensors the in-memory path never writes: rotary caches of old checkpoints, a tied head.
  std::vector<std::string> names;
  for (const auto& n : dense.names())
    if (n.find("rotary_emb.inv_freq") == std::string::npos &&
        !(mc.tieWordEmbeddings && n == "lm_head.weight"))
      names.push_back(n);
  auto isFfn = [](const std::string& n) { return n.find(".mlp.") != std::string::npos; };
  for (const auto& n : names)
    if (layerOf(n) < 0 && n != "lm_head.weight" && n != "model.norm.weight") copy(n);  // embeddings first
  const std::string moePrefix = hub ? "block_sparse_moe." : "mlp.";
  // gate (Fe, D), down (D, Fe), up (Fe, D): Mixtral w1, w2, w3; Qwen gate_proj, down_proj, up_proj.
  const char* const expertNames[3] = {hub ? "w1" : "gate_proj", hub ? "w2" : "down_proj",
                                      hub ? "w3" : "up_proj"};
  for (int64_t l = 0; l < L; ++l) {
    // Attention and norms; a dense layer (layer frequency > 1) also keeps its FFN.
    for (const auto& n : names)
      if (layerOf(n) == l && (!isFfn(n) || !mc.isMoeLayer(l))) copy(n);
    if (!mc.isMoeLayer(l)) continue;
    plan.push_back(
        {layerName(l, moePrefix + "gate.weight"), store, {E, D}, routers[l].data_ptr(), {}});
    for (int64_t e = 0; e < E; ++e) {
      const std::string p = moePrefix + "experts." + std::to_string(e) + ".";
      for (int which = 0; which < 3; ++which) {
        const std::vector<int64_t> shape =
            which == 1 ? std::vector<int64_t>{D, Fe} : std::vector<int64_t>{Fe, D};
        plan.push_back({layerName(l, p + expertNames[which] + ".weight"), store, shape, nullptr,
                        [&experts, l, e, which] { return experts.get(l, e, which); }});
      }
    }
  }
  for (const char* n : {"model.norm.weight", "lm_head.weight"})
    if (std::find(names.begin(), names.end(), n) != names.end()) copy(n);

  fs::create_directories(o.out);
  writeCheckpointTensors(o.out, plan, o.maxShardBytes);
  writeFileAtomically(o.out / "config.json", hfConfigJson(mc));
  copyTokenizerFiles(o.base, o.out);
  return mc;
}

}  // namespace upcycle
