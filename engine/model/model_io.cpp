#include "model/model_io.h"
#include "model/lora.h"

#include <cstring>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

namespace fs = std::filesystem;

torch::Dtype torchDtype(DType t) {
  switch (t) {
    case DType::Bool: return torch::kBool;
    case DType::U8: return torch::kUInt8;
    case DType::I8: return torch::kInt8;
    case DType::I16: return torch::kInt16;
    case DType::I32: return torch::kInt32;
    case DType::I64: return torch::kInt64;
    case DType::F16: return torch::kHalf;
    case DType::BF16: return torch::kBFloat16;
    case DType::F32: return torch::kFloat;
    case DType::F64: return torch::kDouble;
    default: throw UserError("dtype " + dtypeName(t) + " has no torch equivalent");
  }
}

DType storageDtype(torch::Dtype t) {
  if (t == torch::kFloat) return DType::F32;
  if (t == torch::kBFloat16) return DType::BF16;
  if (t == torch::kHalf) return DType::F16;
  if (t == torch::kDouble) return DType::F64;
  throw UserError("cannot store tensors of type " + std::string(c10::toString(t)));
}

torch::Tensor tensorFromView(const TensorView& v) {
  UPCYCLE_CHECK(v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16 || v.dtype == DType::F64 ||
                    v.dtype == DType::I64 || v.dtype == DType::I32 || v.dtype == DType::I16 || v.dtype == DType::I8 ||
                    v.dtype == DType::U8 || v.dtype == DType::Bool,
                "tensor \"", v.name, "\" has dtype ", dtypeName(v.dtype), ", which LibTorch cannot hold");
  auto t = torch::empty(v.shape, torch::TensorOptions().dtype(torchDtype(v.dtype)));
  if (v.nbytes) std::memcpy(t.data_ptr(), v.data, v.nbytes);
  return t;
}

namespace {

std::string layerPrefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }

// The projection's on-disk name in `layout`: gate -> w1 / gate_proj, up -> w3 / up_proj, down -> w2 / down_proj.
std::string projName(MoeLayout layout, const std::string& proj) {
  if (layout == MoeLayout::MixtralHub) return proj == "gate" ? "w1" : proj == "up" ? "w3" : "w2";
  return proj + "_proj";
}

// One on-disk tensor for an internal parameter: either the whole parameter, a slice of a stacked
// expert tensor (expert index), or a half of the fused gate_up tensor.
struct DiskTensor {
  std::string name;
  torch::Tensor value;  // what is written / what the loaded value must equal in shape
};

// The on-disk tensors of one internal MoE parameter, for `layout`.
// internal: "w_gate" | "w_up" | "w_down" ; param (E, F, D) or (E, D, F).
std::vector<std::pair<std::string, int64_t>> expertNames(MoeLayout layout, int64_t layer,
                                                         const std::string& internal, int64_t E) {
  std::vector<std::pair<std::string, int64_t>> out;
  const std::string p = layerPrefix(layer);
  for (int64_t e = 0; e < E; ++e) {
    const std::string es = std::to_string(e);
    if (layout == MoeLayout::MixtralHub) {
      const char* w = internal == "w_gate" ? "w1" : internal == "w_down" ? "w2" : "w3";
      out.push_back({p + "block_sparse_moe.experts." + es + "." + w + ".weight", e});
    } else {
      const char* w = internal == "w_gate" ? "gate_proj" : internal == "w_down" ? "down_proj" : "up_proj";
      out.push_back({p + "mlp.experts." + es + "." + w + ".weight", e});
    }
  }
  return out;
}

// Maps an internal non-expert parameter name to its on-disk name for an MoE layout.
std::string diskName(const std::string& internal, MoeLayout layout, bool isMoe) {
  if (!isMoe) return internal;
  const std::string key = ".moe.";
  auto pos = internal.find(key);
  if (pos == std::string::npos) return internal;
  const std::string head = internal.substr(0, pos + 1);  // "model.layers.N."
  const std::string rest = internal.substr(pos + key.size());
  if (rest == "router.weight")
    return head + (layout == MoeLayout::MixtralHub ? "block_sparse_moe.gate.weight" : "mlp.gate.weight");
  if (rest.rfind("base_", 0) == 0)  // a LoRA-expert MoE's shared base FFN
    return head + (layout == MoeLayout::MixtralHub ? "block_sparse_moe." : "mlp.") + "base." +
           projName(layout, rest.substr(5)) + ".weight";
  // shared_expert.*, shared_expert_gate.weight (Qwen2-MoE only)
  return head + "mlp." + rest;
}

std::string moePrefix(MoeLayout layout, int64_t layer) {
  return layerPrefix(layer) + (layout == MoeLayout::MixtralHub ? "block_sparse_moe." : "mlp.");
}

// LoRA experts' stacked factors: model.layers.N.moe.lora_<proj>_<A|B> (E, ...) -> one tensor per
// expert, adapter-style: <moe prefix>experts.E.<proj name>.lora_A.weight. The shared base FFN:
// model.layers.N.moe.base_<proj> -> <moe prefix>base.<proj name>.weight.
bool isLoraExpertStack(const std::string& name, int64_t& layer, std::string& proj, std::string& factor) {
  auto pos = name.find(".moe.lora_");
  if (pos == std::string::npos) return false;
  const std::string rest = name.substr(pos + 10);  // gate_A
  const auto us = rest.rfind('_');
  proj = rest.substr(0, us);
  factor = rest.substr(us + 1);
  layer = std::stoll(name.substr(std::string("model.layers.").size()));
  return true;
}
std::string loraExpertName(MoeLayout layout, int64_t layer, const std::string& proj, const std::string& factor, int64_t e) {
  return moePrefix(layout, layer) + "experts." + std::to_string(e) + "." + projName(layout, proj) + ".lora_" + factor +
         ".weight";
}

bool isExpertStack(const std::string& name, int64_t& layer, std::string& which) {
  auto pos = name.find(".moe.w_");
  if (pos == std::string::npos) return false;
  which = name.substr(pos + 5);
  layer = std::stoll(name.substr(std::string("model.layers.").size()));
  return true;
}

void checkShape(const TensorView& v, at::IntArrayRef expected, const std::string& where) {
  std::vector<int64_t> exp(expected.begin(), expected.end());
  if (v.shape != exp) {
    std::ostringstream os;
    os << where << ": tensor \"" << v.name << "\" has shape " << at::IntArrayRef(v.shape)
       << ", expected " << expected;
    throw UserError(os.str());
  }
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> denseCheckpointTensors(const ModelConfig& c) {
  UPCYCLE_CHECK(!c.isMoe(), "denseCheckpointTensors: ", c.modelType, " is an MoE");
  const int64_t D = c.hiddenSize, V = c.vocabSize, F = c.intermediateSize, hd = c.headDim;
  const int64_t q = c.numHeads * hd, kv = c.numKvHeads * hd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {V, D}});
  for (int64_t l = 0; l < c.numLayers; ++l) {
    const std::string p = layerPrefix(l);
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "self_attn.q_proj.weight", {q, D}});
    if (c.attentionBias) out.push_back({p + "self_attn.q_proj.bias", {q}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, D}});
    if (c.attentionBias) out.push_back({p + "self_attn.k_proj.bias", {kv}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, D}});
    if (c.attentionBias) out.push_back({p + "self_attn.v_proj.bias", {kv}});
    out.push_back({p + "self_attn.o_proj.weight", {D, q}});
    if (c.qkNorm) {
      out.push_back({p + "self_attn.q_norm.weight", {hd}});
      out.push_back({p + "self_attn.k_norm.weight", {hd}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {D}});
    out.push_back({p + "mlp.gate_proj.weight", {F, D}});
    out.push_back({p + "mlp.up_proj.weight", {F, D}});
    out.push_back({p + "mlp.down_proj.weight", {D, F}});
  }
  out.push_back({"model.norm.weight", {D}});
  if (!c.tieWordEmbeddings) out.push_back({"lm_head.weight", {V, D}});
  return out;
}

void checkDenseCheckpoint(const CheckpointFiles& files, const ModelConfig& c, const std::string& where) {
  std::set<std::string> expected;
  for (const auto& [name, shape] : denseCheckpointTensors(c)) {
    UPCYCLE_CHECK(files.contains(name), where, ": the checkpoint has no tensor \"", name, "\" (model_type ",
                  c.modelType, ", ", c.numLayers, " layers)");
    const TensorView& v = files.tensor(name);
    checkShape(v, shape, where);
    UPCYCLE_CHECK(v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16 || v.dtype == DType::F64,
                  where, ": tensor \"", name, "\" has dtype ", dtypeName(v.dtype), ", not a floating-point type");
    expected.insert(name);
  }
  for (const std::string& n : files.names()) {
    const bool harmless = n.find("rotary_emb.inv_freq") != std::string::npos || (c.tieWordEmbeddings && n == "lm_head.weight");
    UPCYCLE_CHECK(expected.count(n) || harmless, where, ": unexpected tensor \"", n, "\" for model_type ", c.modelType);
  }
}

DecoderLM loadModel(const fs::path& folder, const LoadOptions& opts) {
  if (isPeftAdapter(folder)) return loadPeftAdapter(folder, opts.dtype, opts.device);
  ModelConfig cfg = loadHfConfig(folder);
  CheckpointFiles files(folder);
  const std::string where = folder.string();
  // transformers v5 holds the experts of Mixtral, Qwen2-MoE and Qwen3-MoE fused in memory
  // (gate_up_proj (E, 2F, D), down_proj (E, D, F)); a checkpoint it saved may carry them so.
  for (int64_t l = 0; l < cfg.numLayers; ++l) {
    if (!cfg.isMoeLayer(l)) continue;  // qwen*_moe: the first MoE layer need not be layer 0
    if (files.contains(layerPrefix(l) + "mlp.experts.gate_up_proj"))
      cfg.moeLayout = MoeLayout::MixtralFused;
    break;
  }
  DecoderLM model(cfg, opts.dtype);  // built in the load dtype: no float32 model first
  torch::NoGradGuard noGrad;
  std::set<std::string> used;
  // The tensor in its stored dtype; copy_ converts into the parameter (bf16 -> f32 is exact).
  auto read = [&](const std::string& name, at::IntArrayRef shape) {
    const TensorView& v = files.tensor(name);
    checkShape(v, shape, where);
    UPCYCLE_CHECK(v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16 || v.dtype == DType::F64,
                  where, ": tensor \"", name, "\" has dtype ", dtypeName(v.dtype), ", not a floating-point type");
    used.insert(name);
    return tensorFromView(v);
  };
  // Copied tensors' mapped pages leave our memory (a fused gate_up read twice maps them back in).
  auto done = [&](const std::string& name) { files.release(name); };
  for (auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    torch::Tensor& param = p.value();
    int64_t layer = 0;
    std::string which, factor;
    if (isLoraExpertStack(name, layer, which, factor)) {
      for (int64_t e = 0; e < param.size(0); ++e) {
        const std::string disk = loraExpertName(cfg.moeLayout, layer, which, factor, e);
        param[e].copy_(read(disk, param[e].sizes()));
        done(disk);
      }
      continue;
    }
    if (isExpertStack(name, layer, which)) {
      const int64_t E = param.size(0);
      if (cfg.moeLayout == MoeLayout::MixtralFused) {
        const std::string p0 = layerPrefix(layer) + "mlp.experts.";
        if (which == "w_down") {
          param.copy_(read(p0 + "down_proj", param.sizes()));
          done(p0 + "down_proj");
        } else {
          const int64_t F = param.size(1), D = param.size(2);
          auto fused = read(p0 + "gate_up_proj", {E, 2 * F, D});  // w1 then w3 on dim 1
          param.copy_(fused.narrow(1, which == "w_gate" ? 0 : F, F));
          done(p0 + "gate_up_proj");
        }
      } else {
        for (const auto& [disk, e] : expertNames(cfg.moeLayout, layer, which, E)) {
          param[e].copy_(read(disk, param[e].sizes()));
          done(disk);
        }
      }
      continue;
    }
    const std::string disk = diskName(name, cfg.moeLayout, cfg.isMoe());
    param.copy_(read(disk, param.sizes()));
    done(disk);
  }
  for (const std::string& n : files.names()) {
    if (used.count(n)) continue;
    const bool harmless = n.find("rotary_emb.inv_freq") != std::string::npos ||
                          (cfg.tieWordEmbeddings && n == "lm_head.weight");
    UPCYCLE_CHECK(harmless, where, ": unexpected tensor \"", n, "\" for model_type ", cfg.modelType);
  }
  model->to(opts.device, opts.dtype);
  return model;
}

torch::Dtype loadDtype(const std::string& name, DType stored, const std::string& option) {
  if (name == "auto") return stored == DType::BF16 ? torch::kBFloat16 : torch::kFloat;
  if (name == "float32" || name == "fp32" || name == "float") return torch::kFloat;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  throw UserError(option + " \"" + name + "\" is not one of auto, float32, bfloat16");
}

void saveModel(DecoderLM& model, const fs::path& folder, const SaveOptions& opts) {
  ModelConfig cfg = model->config();
  if (opts.dtype) cfg.dtype = *opts.dtype;
  MoeLayout layout = cfg.isQwenMoe() ? MoeLayout::Qwen2Moe : MoeLayout::MixtralHub;
  if (opts.layout) layout = *opts.layout;
  if (cfg.isMoe()) {
    UPCYCLE_CHECK(!(cfg.modelType == "mixtral" && layout == MoeLayout::Qwen2Moe),
                  "a mixtral model cannot be written in the qwen2_moe layout");
    UPCYCLE_CHECK(!(cfg.isQwenMoe() && layout != MoeLayout::Qwen2Moe), "a ", cfg.modelType,
                  " model can only be written in its own layout (mlp.experts.E.*)");
  }
  cfg.moeLayout = layout;
  const torch::Dtype store = torchDtype(cfg.dtype);
  torch::NoGradGuard noGrad;

  std::vector<std::pair<std::string, torch::Tensor>> out;  // keeps the converted tensors alive
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    UPCYCLE_CHECK(name.find("_lora.") == std::string::npos, "the model has LoRA adapters (", name,
                  "): save them with savePeftAdapter, or merge them into the weights (mergeLora) first");
    auto t = p.value().detach().to(torch::kCPU, store).contiguous();
    int64_t layer = 0;
    std::string which, factor;
    if (isLoraExpertStack(name, layer, which, factor)) {
      for (int64_t e = 0; e < t.size(0); ++e) out.push_back({loraExpertName(layout, layer, which, factor, e), t[e].contiguous()});
      continue;
    }
    if (isExpertStack(name, layer, which)) {
      if (layout == MoeLayout::MixtralFused) {
        const std::string p0 = layerPrefix(layer) + "mlp.experts.";
        if (which == "w_down") out.push_back({p0 + "down_proj", t});
        else if (which == "w_gate") {
          // gate_up_proj = cat(w_gate, w_up) on dim 1; w_up follows w_gate in named_parameters().
          auto up = model->named_parameters()[layerPrefix(layer) + "moe.w_up"].detach().to(torch::kCPU, store);
          out.push_back({p0 + "gate_up_proj", torch::cat({t, up}, 1).contiguous()});
        }
      } else {
        for (const auto& [disk, e] : expertNames(layout, layer, which, t.size(0)))
          out.push_back({disk, t[e].contiguous()});
      }
      continue;
    }
    out.push_back({diskName(name, layout, cfg.isMoe()), t});
  }
  std::vector<TensorWrite> writes;
  writes.reserve(out.size());
  for (const auto& [name, t] : out)
    writes.push_back({name, storageDtype(t.scalar_type()), t.sizes().vec(), t.data_ptr()});
  fs::create_directories(folder);
  writeCheckpointTensors(folder, writes, opts.maxShardBytes);
  writeFileAtomically(folder / "config.json", hfConfigJson(cfg));
}

}  // namespace upcycle
