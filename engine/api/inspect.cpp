#include "api/inspect.h"

#include <iomanip>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "formats/checkpoint_files.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

CheckpointSummary summarizeCheckpoint(const fs::path& folder) {
  CheckpointSummary s;
  s.path = folder;
  s.config = loadHfConfig(folder);
  CheckpointFiles files(folder);
  std::set<std::string> dtypes;
  for (const auto& f : files.files()) {
    for (const TensorView& v : f->tensors()) {
      s.totalParams += v.numel();
      dtypes.insert(dtypeName(v.dtype));
      ++s.numTensors;
    }
  }
  s.fileDtypes.assign(dtypes.begin(), dtypes.end());
  s.fileBytes = files.totalBytes();
  s.numFiles = static_cast<int64_t>(files.files().size());
  const ModelConfig& c = s.config;
  // The first MoE layer tells the layout (qwen*_moe may keep layer 0 dense).
  int64_t firstMoe = 0;
  while (firstMoe < c.numLayers && !c.isMoeLayer(firstMoe)) ++firstMoe;
  const bool fused =
      files.contains("model.layers." + std::to_string(firstMoe) + ".mlp.experts.gate_up_proj");
  s.layout = !c.isMoe()                   ? "dense"
             : c.modelType == "qwen2_moe" ? (fused ? "qwen2-moe-fused" : "qwen2-moe")
             : c.modelType == "qwen3_moe" ? (fused ? "qwen3-moe-fused" : "qwen3-moe")
             : fused                      ? "mixtral-fused"
                                          : "mixtral-hub";
  // LoRA experts: an expert's own parameters are its factors (the base FFN is shared and always active).
  const int64_t perExpert = c.loraExperts.enabled()
                                ? c.loraExperts.rank * (c.hiddenSize + c.expertIntermediateSize) *
                                      static_cast<int64_t>(c.loraExperts.targets.size())
                                : 3 * c.hiddenSize * c.expertIntermediateSize;
  int64_t inactive = 0;
  for (int64_t l = 0; l < c.numLayers; ++l)
    if (c.isMoeLayer(l)) inactive += (c.numExperts - c.topK) * perExpert;
  s.activeParams = s.totalParams - inactive;
  s.tokenizer = "none";
  for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"})
    if (fs::exists(folder / f)) {
      try {
        s.tokenizer = describeTokenizer(folder);
      } catch (const UserError& e) {
        s.tokenizer = std::string("unreadable: ") + e.what();
      }
      break;
    }
  try {
    s.chatTemplate = findChatTemplate(folder).has_value();
  } catch (const UserError&) {
    s.chatTemplate = false;  // a malformed tokenizer_config.json is already reported above
  }
  return s;
}

AdapterSummary summarizeAdapter(const fs::path& folder) {
  AdapterSummary a;
  a.path = folder;
  const PeftAdapterInfo info = readPeftAdapterConfig(folder);
  a.lora = info.lora;
  a.baseName = info.baseName;
  a.basePath = info.basePath;
  const fs::path file = folder / "adapter_model.safetensors";
  UPCYCLE_CHECK(fs::is_regular_file(file), folder.string(), ": adapter_model.safetensors is missing");
  SafetensorsFile st(file);
  std::set<std::string> dtypes;
  for (const TensorView& v : st.tensors()) {
    a.adapterParams += v.numel();
    dtypes.insert(dtypeName(v.dtype));
    ++a.numTensors;
  }
  a.fileDtypes.assign(dtypes.begin(), dtypes.end());
  a.fileBytes = st.fileSize();
  if (!a.basePath.empty()) a.base = summarizeCheckpoint(a.basePath);
  return a;
}

InspectReport inspectPath(const fs::path& path) {
  UPCYCLE_CHECK(fs::exists(path), "no such file or folder: ", path.string());
  InspectReport r;
  if (isPeftAdapter(path) && !fs::exists(path / "config.json")) {
    r.kind = InspectReport::Kind::Adapter;
    r.adapter = summarizeAdapter(path);
    return r;
  }
  if (fs::is_directory(path) && !fs::exists(path / "config.json") && isTrainerOutput(path)) {
    r.kind = InspectReport::Kind::TrainerOutput;
    r.checkpoints = listTrainerCheckpoints(path);
    return r;
  }
  r.checkpoint = summarizeCheckpoint(fs::is_directory(path) ? path : path.parent_path());
  return r;
}

std::string inspectJson(const InspectReport& r) {
  json j;
  if (r.kind == InspectReport::Kind::Adapter) {
    const AdapterSummary& a = r.adapter;
    j = {{"kind", "peft_lora_adapter"}, {"path", a.path.string()}, {"r", a.lora.rank}, {"lora_alpha", a.lora.alpha},
         {"scale", a.lora.scale()}, {"lora_dropout", a.lora.dropout}, {"use_rslora", a.lora.rslora},
         {"target_modules", a.lora.targets}, {"base_model_name_or_path", a.baseName},
         {"base_path", a.basePath.empty() ? json(nullptr) : json(a.basePath.string())},
         {"params_adapter", a.adapterParams}, {"file_dtypes", a.fileDtypes}, {"file_bytes", a.fileBytes},
         {"num_tensors", a.numTensors}};
    if (a.base) {
      j["base_architecture"] = a.base->config.architecture();
      j["base_params_total"] = a.base->totalParams;
    }
    return j.dump(2);
  }
  if (r.kind == InspectReport::Kind::TrainerOutput) {
    j["kind"] = "trainer_output";
    j["checkpoints"] = json::array();
    for (const auto& c : r.checkpoints) {
      json e = {{"path", c.path.string()}, {"step", c.step}};
      e["epoch"] = c.epoch ? json(*c.epoch) : json(nullptr);
      e["loss"] = c.loss ? json(*c.loss) : json(nullptr);
      j["checkpoints"].push_back(e);
    }
    return j.dump(2);
  }
  const CheckpointSummary& s = r.checkpoint;
  const ModelConfig& c = s.config;
  j["kind"] = "checkpoint";
  j["path"] = s.path.string();
  j["architecture"] = c.architecture();
  j["model_type"] = c.modelType;
  j["layout"] = s.layout;
  j["hidden_size"] = c.hiddenSize;
  j["intermediate_size"] = c.intermediateSize;
  j["num_layers"] = c.numLayers;
  j["num_heads"] = c.numHeads;
  j["num_kv_heads"] = c.numKvHeads;
  j["head_dim"] = c.headDim;
  j["vocab_size"] = c.vocabSize;
  j["tie_word_embeddings"] = c.tieWordEmbeddings;
  j["qk_norm"] = c.qkNorm;
  j["dtype"] = torchNameOf(c.dtype);
  j["file_dtypes"] = s.fileDtypes;
  j["num_experts"] = c.numExperts;
  if (c.loraExperts.enabled())
    j["lora_experts"] = {{"rank", c.loraExperts.rank}, {"alpha", c.loraExperts.alpha}, {"targets", c.loraExperts.targets}};
  j["top_k"] = c.topK;
  if (c.isMoe()) {
    j["expert_intermediate_size"] = c.expertIntermediateSize;
    j["shared_expert_intermediate_size"] = c.sharedExpertIntermediateSize;
    json layers = json::array();
    for (int64_t l = 0; l < c.numLayers; ++l)
      if (c.isMoeLayer(l)) layers.push_back(l);
    j["moe_layers"] = layers;
  }
  j["params_total"] = s.totalParams;
  j["params_active"] = s.activeParams;
  j["file_bytes"] = s.fileBytes;
  j["num_files"] = s.numFiles;
  j["num_tensors"] = s.numTensors;
  j["tokenizer"] = s.tokenizer;
  j["chat_template"] = s.chatTemplate;
  return j.dump(2);
}

namespace {
std::string human(double n, const char* unit) {
  const char* suffix[] = {"", "K", "M", "G", "T"};
  int i = 0;
  while (n >= 1000 && i < 4) { n /= 1000; ++i; }
  std::ostringstream os;
  os << std::setprecision(n < 10 && i ? 3 : 4) << n << suffix[i] << unit;
  return os.str();
}
}  // namespace

std::string inspectText(const InspectReport& r) {
  std::ostringstream os;
  if (r.kind == InspectReport::Kind::Adapter) {
    const AdapterSummary& a = r.adapter;
    os << "PEFT adapter  " << a.path.string() << "\n"
       << "LoRA          rank " << a.lora.rank << ", alpha " << a.lora.alpha << " (scale " << a.lora.scale()
       << (a.lora.rslora ? ", rslora" : "") << "), dropout " << a.lora.dropout << "\n"
       << "Targets      ";
    for (const auto& t : a.lora.targets) os << " " << t;
    os << "\n"
       << "Base          " << a.baseName;
    if (a.base)
      os << " (" << a.base->config.architecture() << ", " << human(double(a.base->totalParams), "") << " parameters, at "
         << a.basePath.string() << ")";
    else
      os << " (not a folder here: give it with --base where a command needs it)";
    os << "\n"
       << "Parameters    " << human(double(a.adapterParams), "") << " in the adapter (" << a.adapterParams << ")";
    if (a.base && a.base->totalParams > 0)
      os << ", " << std::setprecision(3) << 100.0 * double(a.adapterParams) / double(a.base->totalParams)
         << "% of the base";
    os << "\n"
       << "Files         adapter_model.safetensors, " << a.numTensors << " tensors (";
    for (size_t i = 0; i < a.fileDtypes.size(); ++i) os << (i ? " " : "") << a.fileDtypes[i];
    os << "), " << human(double(a.fileBytes), "B") << "\n";
    return os.str();
  }
  if (r.kind == InspectReport::Kind::TrainerOutput) {
    os << "Trainer output: " << r.checkpoints.size() << " checkpoints\n";
    os << std::left << std::setw(10) << "step" << std::setw(10) << "epoch" << std::setw(12) << "loss"
       << "path\n";
    for (const auto& c : r.checkpoints) {
      os << std::left << std::setw(10) << c.step << std::setw(10)
         << (c.epoch ? std::to_string(*c.epoch).substr(0, 6) : "-") << std::setw(12)
         << (c.loss ? std::to_string(*c.loss).substr(0, 8) : "-") << c.path.string() << "\n";
    }
    return os.str();
  }
  const CheckpointSummary& s = r.checkpoint;
  const ModelConfig& c = s.config;
  os << "Checkpoint    " << s.path.string() << "\n"
     << "Architecture  " << c.architecture() << " (" << s.layout << ")\n"
     << "Dimensions    d_model " << c.hiddenSize << ", d_ff " << c.intermediateSize << ", layers "
     << c.numLayers << ", heads " << c.numHeads << " (kv " << c.numKvHeads << ", head_dim "
     << c.headDim << (c.qkNorm ? ", q/k norm" : "") << "), vocab " << c.vocabSize
     << (c.tieWordEmbeddings ? ", tied embeddings" : "") << "\n";
  if (c.isMoe()) {
    int64_t moeLayers = 0;
    for (int64_t l = 0; l < c.numLayers; ++l) moeLayers += c.isMoeLayer(l);
    os << "Experts       " << c.numExperts << " x d_ff " << c.expertIntermediateSize << ", top-"
       << c.topK << ", " << moeLayers << "/" << c.numLayers << " MoE layers"
       << (c.sharedExpertIntermediateSize ? ", shared expert d_ff " + std::to_string(c.sharedExpertIntermediateSize) : "")
       << "\n";
    if (c.loraExperts.enabled()) {
      os << "LoRA experts  rank " << c.loraExperts.rank << ", alpha " << c.loraExperts.alpha << " on";
      for (const auto& t : c.loraExperts.targets) os << " " << t;
      os << ", over one shared base FFN per layer (native form; `convert` without --keep-factors exports a plain MoE)\n";
    }
  }
  os << "Parameters    " << human(double(s.totalParams), "") << " total, " << human(double(s.activeParams), "")
     << " active per token (" << s.totalParams << " / " << s.activeParams << ")\n"
     << "Dtype         " << torchNameOf(c.dtype) << " (files:";
  for (const auto& d : s.fileDtypes) os << " " << d;
  os << ")\n"
     << "Files         " << s.numFiles << " safetensors, " << s.numTensors << " tensors, "
     << human(double(s.fileBytes), "B") << "\n"
     << "Tokenizer     " << s.tokenizer << (s.chatTemplate ? "; chat template" : "; no chat template") << "\n";
  return os.str();
}

}  // namespace upcycle
