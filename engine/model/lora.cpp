#include "model/lora.h"

#include <cmath>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/safetensors.h"
#include "model/model_io.h"
#include "formats/peft_adapter.h"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool isAttention(const std::string& t) { return t == "q_proj" || t == "k_proj" || t == "v_proj" || t == "o_proj"; }

// One adaptable projection of one layer: the linear, the adapter slot, the module they live in.
struct Site {
  torch::nn::Module* owner = nullptr;
  torch::nn::Linear* proj = nullptr;
  Lora* lora = nullptr;
  std::string target;      // q_proj, ...: the adapter is registered as `<target>_lora`
  std::string peftPrefix;  // base_model.model.model.layers.N.self_attn.q_proj
  int64_t layer = 0;
};

// The site of `target` in layer `l`; none for an FFN target of an MoE layer (its experts are not a
// projection: upit_lora's).
std::optional<Site> siteOf(DecoderLayerImpl& layer, size_t l, const std::string& target) {
  const std::string prefix = "base_model.model.model.layers." + std::to_string(l) + ".";
  Site s;
  s.target = target;
  s.layer = static_cast<int64_t>(l);
  if (isAttention(target)) {
    auto& a = *layer.self_attn;
    s.owner = &a;
    s.peftPrefix = prefix + "self_attn." + target;
    if (target == "q_proj") { s.proj = &a.q_proj; s.lora = &a.q_proj_lora; }
    else if (target == "k_proj") { s.proj = &a.k_proj; s.lora = &a.k_proj_lora; }
    else if (target == "v_proj") { s.proj = &a.v_proj; s.lora = &a.v_proj_lora; }
    else { s.proj = &a.o_proj; s.lora = &a.o_proj_lora; }
    return s;
  }
  if (!layer.mlp) return std::nullopt;
  auto& m = *layer.mlp;
  s.owner = &m;
  s.peftPrefix = prefix + "mlp." + target;
  if (target == "gate_proj") { s.proj = &m.gate_proj; s.lora = &m.gate_proj_lora; }
  else if (target == "up_proj") { s.proj = &m.up_proj; s.lora = &m.up_proj_lora; }
  else { s.proj = &m.down_proj; s.lora = &m.down_proj_lora; }
  return s;
}

// The sites of the given targets, layer by layer (PEFT's order), each layer's in the targets' order.
std::vector<Site> sites(DecoderLM& model, const std::vector<std::string>& targets = loraTargetNames()) {
  std::vector<Site> out;
  const auto layers = model->model->layers->children();
  for (size_t l = 0; l < layers.size(); ++l) {
    auto& layer = *std::static_pointer_cast<DecoderLayerImpl>(layers[l]);
    for (const auto& t : targets)
      if (auto s = siteOf(layer, l, t)) out.push_back(*s);
  }
  return out;
}

}  // namespace

void addLora(DecoderLM& model, const LoraOptions& o, torch::Generator& gen) {
  validateLoraOptions(o);
  UPCYCLE_CHECK(o.enabled(), "addLora needs a rank >= 1");
  const ModelConfig& cfg = model->config();
  for (const auto& t : o.targets) {
    const auto ss = sites(model, {t});
    UPCYCLE_CHECK(isAttention(t) || static_cast<int64_t>(ss.size()) == cfg.numLayers, "LoRA target ", t,
                  ": this model's FFNs are MoE experts (", cfg.modelType,
                  "); LoRA on experts is the upit_lora method, here use attention targets only");
    for (const Site& s : ss) {
      UPCYCLE_CHECK(!*s.lora, "LoRA target ", t, " already has an adapter");
      const auto& w = (*s.proj)->weight;
      const int64_t out = w.size(0), in = w.size(1);
      Lora lora(in, out, o.rank, o.scale(), o.dropout);
      {
        torch::NoGradGuard ng;
        // PEFT: kaiming_uniform_(A, a=sqrt(5)) = uniform(-1/sqrt(in), 1/sqrt(in)); B = 0.
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        lora->lora_A.uniform_(-bound, bound, gen);
        lora->lora_B.zero_();
      }
      lora->to(w.device());
      *s.lora = s.owner->register_module(s.target + "_lora", lora);
    }
  }
}

LoraOptions loraOf(DecoderLM& model) {
  LoraOptions o;
  o.rank = 0;
  o.targets.clear();
  for (const auto& t : loraTargetNames()) {
    bool any = false;
    for (const Site& s : sites(model, {t})) {
      if (!*s.lora) continue;
      any = true;
      o.rank = (*s.lora)->lora_A.size(0);
      o.alpha = (*s.lora)->scale * static_cast<double>(o.rank);
      o.dropout = (*s.lora)->dropout;
    }
    if (any) o.targets.push_back(t);
  }
  return o;
}

std::vector<LoraTensors> loraTensors(DecoderLM& model) {
  std::vector<LoraTensors> out;
  for (const Site& s : sites(model))
    if (*s.lora) out.push_back({s.peftPrefix, (*s.lora)->lora_A, (*s.lora)->lora_B, s.layer, s.target, (*s.lora)->scale});
  return out;
}

void mergeLora(DecoderLM& model) {
  torch::NoGradGuard ng;
  for (const Site& s : sites(model)) {
    if (!*s.lora) continue;
    auto& w = (*s.proj)->weight;
    const auto& l = **s.lora;
    auto delta = torch::matmul(l.lora_B.to(torch::kFloat), l.lora_A.to(torch::kFloat)) * l.scale;
    w.copy_((w.to(torch::kFloat) + delta.to(w.device())).to(w.scalar_type()));
    s.owner->unregister_module(s.target + "_lora");
    *s.lora = nullptr;
  }
}

void setLoraGenerator(DecoderLM& model, const torch::Generator& gen) {
  for (const Site& s : sites(model))
    if (*s.lora) (*s.lora)->generator = gen;
}

DecoderLM loadPeftAdapter(const fs::path& folder, torch::Dtype dtype, torch::Device device) {
  const PeftAdapterInfo info = readPeftAdapterConfig(folder);
  const fs::path& base = info.basePath;
  UPCYCLE_CHECK(!base.empty(), folder.string(), ": the adapter's base model \"", info.baseName,
                "\" (base_model_name_or_path) is not a folder here; point it at the base's folder (there is no "
                "--base option for adapters yet)");
  UPCYCLE_CHECK(!isPeftAdapter(base), folder.string(), ": the base ", base.string(), " is itself an adapter");
  // The adapter's file and header first: a broken adapter is refused before the base is loaded.
  const fs::path file = folder / "adapter_model.safetensors";
  UPCYCLE_CHECK(fs::is_regular_file(file), folder.string(), ": adapter_model.safetensors is missing",
                fs::exists(folder / "adapter_model.bin") ? " (adapter_model.bin, a pickle, is not read: save with safe_serialization)" : "");
  SafetensorsFile st(file);
  DecoderLM model = loadModel(base, {torch::kCPU, torch::kFloat});
  torch::Generator gen = at::detail::createCPUGenerator(0);  // A is overwritten below
  addLora(model, info.lora, gen);
  std::set<std::string> used;
  torch::NoGradGuard ng;
  for (auto& lt : loraTensors(model)) {
    for (auto [suffix, param] : {std::pair<std::string, torch::Tensor>{".lora_A.weight", lt.A}, {".lora_B.weight", lt.B}}) {
      // PEFT writes without the adapter name; some tools keep ".default".
      std::string name = lt.peftPrefix + suffix;
      if (!st.contains(name)) {
        const std::string alt = lt.peftPrefix + suffix.substr(0, 7) + ".default.weight";
        UPCYCLE_CHECK(st.contains(alt), file.string(), ": missing tensor ", name, " (target ",
                      lt.peftPrefix.substr(lt.peftPrefix.rfind('.') + 1), " of the config)");
        name = alt;
      }
      const TensorView& v = st.tensor(name);
      UPCYCLE_CHECK(v.shape == param.sizes().vec(), file.string(), ": tensor ", name, " has shape ",
                    json(v.shape).dump(), ", the base and r = ", info.lora.rank, " need ", json(param.sizes().vec()).dump());
      UPCYCLE_CHECK(v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16, file.string(),
                    ": tensor ", name, " is not a floating-point tensor");
      param.copy_(tensorFromView(v).to(torch::kFloat));
      used.insert(name);
    }
  }
  for (const auto& v : st.tensors())
    UPCYCLE_CHECK(used.count(v.name), file.string(), ": unexpected tensor \"", v.name,
                  "\" (not a lora_A/lora_B of the config's target_modules on this base)");
  model->to(device, dtype);
  return model;
}

void savePeftAdapter(DecoderLM& model, const fs::path& folder, const std::string& baseName) {
  const LoraOptions o = loraOf(model);
  UPCYCLE_CHECK(o.enabled(), "the model has no LoRA adapters to save");
  std::vector<std::pair<std::string, torch::Tensor>> keep;
  for (const auto& lt : loraTensors(model)) {
    keep.push_back({lt.peftPrefix + ".lora_A.weight", lt.A.detach().to(torch::kCPU, torch::kFloat).contiguous()});
    keep.push_back({lt.peftPrefix + ".lora_B.weight", lt.B.detach().to(torch::kCPU, torch::kFloat).contiguous()});
  }
  std::vector<TensorWrite> writes;
  for (const auto& [n, t] : keep) writes.push_back({n, DType::F32, t.sizes().vec(), t.data_ptr()});
  fs::create_directories(folder);
  writeSafetensors(folder / "adapter_model.safetensors", writes);
  // The keys PEFT writes (0.x), so that PEFT and transformers load the folder.
  json c = {{"alpha_pattern", json::object()}, {"auto_mapping", nullptr}, {"base_model_name_or_path", baseName},
            {"bias", "none"}, {"fan_in_fan_out", false}, {"inference_mode", true}, {"init_lora_weights", true},
            {"layers_pattern", nullptr}, {"layers_to_transform", nullptr}, {"lora_alpha", o.alpha},
            {"lora_dropout", o.dropout}, {"modules_to_save", nullptr}, {"peft_type", "LORA"}, {"r", o.rank},
            {"rank_pattern", json::object()}, {"revision", nullptr}, {"target_modules", o.targets},
            {"task_type", "CAUSAL_LM"}, {"use_dora", false}, {"use_rslora", false}};
  writeFileAtomically(folder / "adapter_config.json", c.dump(2) + "\n");
}

}  // namespace upcycle
