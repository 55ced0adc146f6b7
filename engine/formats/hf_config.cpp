#include "formats/hf_config.h"
#include "formats/peft_adapter.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

using nlohmann::json;

namespace {

int64_t requireInt(const json& j, const char* key, const std::string& ctx) {
  UPCYCLE_CHECK(j.contains(key), ctx, ": missing required key \"", key, "\"");
  UPCYCLE_CHECK(j[key].is_number_integer(), ctx, ": key \"", key, "\" must be an integer, got ",
                j[key].dump());
  int64_t v = j[key].get<int64_t>();
  UPCYCLE_CHECK(v > 0, ctx, ": key \"", key, "\" must be positive, got ", v);
  return v;
}

int64_t optInt(const json& j, const char* key, int64_t fallback, const std::string& ctx) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  UPCYCLE_CHECK(j[key].is_number_integer(), ctx, ": key \"", key, "\" must be an integer, got ",
                j[key].dump());
  return j[key].get<int64_t>();
}

double optNum(const json& j, const char* key, double fallback, const std::string& ctx) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  UPCYCLE_CHECK(j[key].is_number(), ctx, ": key \"", key, "\" must be a number, got ", j[key].dump());
  return j[key].get<double>();
}

bool optBool(const json& j, const char* key, bool fallback, const std::string& ctx) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  UPCYCLE_CHECK(j[key].is_boolean(), ctx, ": key \"", key, "\" must be true or false, got ",
                j[key].dump());
  return j[key].get<bool>();
}

std::optional<int64_t> optTokenId(const json& j, const char* key, const std::string& ctx) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const json& v = j[key];
  if (v.is_array()) {  // e.g. Llama 3 lists several eos ids: the first is the canonical one
    if (v.empty()) return std::nullopt;
    UPCYCLE_CHECK(v[0].is_number_integer(), ctx, ": key \"", key, "\" must hold integers");
    return v[0].get<int64_t>();
  }
  UPCYCLE_CHECK(v.is_number_integer(), ctx, ": key \"", key, "\" must be an integer, got ", v.dump());
  return v.get<int64_t>();
}

// rope_scaling (transformers v4) or rope_parameters (v5): only the default and linear kinds.
void readRopeKind(const json& rs, const char* key, const std::string& defaultType, ModelConfig& c,
                  const std::string& ctx) {
  UPCYCLE_CHECK(rs.is_object(), ctx, ": ", key, " must be null or an object");
  auto str = [&](const char* k) {
    UPCYCLE_CHECK(rs[k].is_string(), ctx, ": ", key, ".", k, " must be a string, got ",
                  rs[k].dump());
    return rs[k].get<std::string>();
  };
  const std::string type = rs.contains("rope_type") ? str("rope_type")
                           : rs.contains("type")    ? str("type")
                                                    : defaultType;
  if (type == "linear") {
    c.ropeLinearFactor = optNum(rs, "factor", 1.0, ctx + ": " + key);
    UPCYCLE_CHECK(c.ropeLinearFactor > 0, ctx, ": ", key, ".factor must be positive");
  } else {
    UPCYCLE_CHECK(type == "default", ctx, ": ", key, " type \"", type,
                  "\" is not supported (null, \"default\" or \"linear\")");
  }
}

bool isQwen3Family(const std::string& type) { return type == "qwen3" || type == "qwen3_moe"; }

}  // namespace

const char* supportedModelTypes() {
  return "llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe";
}

std::string ModelConfig::architecture() const {
  if (modelType == "llama") return "LlamaForCausalLM";
  if (modelType == "mistral") return "MistralForCausalLM";
  if (modelType == "qwen2") return "Qwen2ForCausalLM";
  if (modelType == "qwen3") return "Qwen3ForCausalLM";
  if (modelType == "mixtral") return "MixtralForCausalLM";
  if (modelType == "qwen2_moe") return "Qwen2MoeForCausalLM";
  if (modelType == "qwen3_moe") return "Qwen3MoeForCausalLM";
  return modelType;
}

void ModelConfig::validate(const std::string& ctx) const {
  UPCYCLE_CHECK(hiddenSize > 0 && numHeads > 0 && numKvHeads > 0 && headDim > 0 && numLayers > 0 &&
                    vocabSize > 0,
                ctx, ": model dimensions must be positive");
  // Sizes from a file are bounded before anything is allocated from them: far above any released
  // model (the largest have ~260k vocabularies, d 16384, 126 layers, 256 experts), far below what
  // would make a size computation overflow or a loop run for hours.
  auto bound = [&](const char* field, int64_t v, int64_t max) {
    UPCYCLE_CHECK(v <= max, ctx, ": ", field, " = ", v, " is above the limit of ", max);
  };
  bound("vocab_size", vocabSize, int64_t(1) << 22);
  bound("hidden_size", hiddenSize, int64_t(1) << 16);
  bound("intermediate_size", intermediateSize, int64_t(1) << 20);
  bound("num_hidden_layers", numLayers, 1024);
  bound("num_attention_heads", numHeads, 4096);
  bound("num_key_value_heads", numKvHeads, 4096);
  bound("head_dim", headDim, 8192);
  bound("max_position_embeddings", maxPositionEmbeddings, int64_t(1) << 24);
  UPCYCLE_CHECK(maxPositionEmbeddings >= 1, ctx, ": max_position_embeddings must be positive, got ", maxPositionEmbeddings);
  UPCYCLE_CHECK(std::isfinite(ropeTheta) && ropeTheta > 0, ctx, ": rope_theta must be a positive number, got ", ropeTheta);
  if (isMoe()) {
    bound("num_local_experts", numExperts, 4096);
    bound("moe_intermediate_size", expertIntermediateSize, int64_t(1) << 20);
  }
  for (const auto& [field, id] : {std::pair<const char*, std::optional<int64_t>>{"bos_token_id", bosTokenId}, {"eos_token_id", eosTokenId}})
    UPCYCLE_CHECK(!id || (*id >= 0 && *id < vocabSize), ctx, ": ", field, " = ", *id, " is outside the vocabulary (",
                  vocabSize, " tokens)");
  UPCYCLE_CHECK(numHeads % numKvHeads == 0, ctx, ": num_attention_heads (", numHeads,
                ") must be a multiple of num_key_value_heads (", numKvHeads, ")");
  UPCYCLE_CHECK(headDim % 2 == 0, ctx, ": head_dim (", headDim, ") must be even for rotary embeddings");
  UPCYCLE_CHECK(rmsNormEps > 0, ctx, ": rms_norm_eps must be positive");
  if (isMoe()) {
    UPCYCLE_CHECK(topK >= 1 && topK <= numExperts, ctx, ": num_experts_per_tok (", topK,
                  ") must be between 1 and the number of experts (", numExperts, ")");
    UPCYCLE_CHECK(expertIntermediateSize > 0, ctx, ": expert intermediate size must be positive");
    UPCYCLE_CHECK(static_cast<int64_t>(moeLayers.size()) == numLayers, ctx,
                  ": MoE layer map has ", moeLayers.size(), " entries for ", numLayers, " layers");
  }
  if (loraExperts.enabled()) {
    const std::string k = ctx + ": upcycle_lora_experts";
    UPCYCLE_CHECK(isMoe(), k, " is only for MoE models");
    validateLoraOptions(loraExperts, k);
    UPCYCLE_CHECK(!loraExperts.targets.empty(), k, ": target_modules is empty");
    for (const auto& t : loraExperts.targets)
      UPCYCLE_CHECK(t == "gate_proj" || t == "up_proj" || t == "down_proj", k, ": target \"", t,
                    "\" is not an FFN projection (gate_proj, up_proj, down_proj)");
    UPCYCLE_CHECK(sharedExpertIntermediateSize == 0, k, ": LoRA experts with a shared expert are not supported");
  }
}

ModelConfig parseHfConfig(const std::string& text, const std::string& ctx) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw UserError(ctx + ": not valid JSON (" + e.what() + ")");
  }
  UPCYCLE_CHECK(j.is_object(), ctx, ": config is not a JSON object");
  ModelConfig c;
  UPCYCLE_CHECK(j.contains("model_type") && j["model_type"].is_string(), ctx,
                ": missing string key \"model_type\"");
  c.modelType = j["model_type"].get<std::string>();
  const bool known = c.modelType == "llama" || c.modelType == "mistral" || c.modelType == "qwen2" ||
                     c.modelType == "qwen3" || c.modelType == "mixtral" ||
                     c.modelType == "qwen2_moe" || c.modelType == "qwen3_moe";
  UPCYCLE_CHECK(known, ctx, ": model_type \"", c.modelType,
                "\" is not supported; supported model types: ", supportedModelTypes());
  const bool qwen3 = isQwen3Family(c.modelType);

  c.vocabSize = requireInt(j, "vocab_size", ctx);
  c.hiddenSize = requireInt(j, "hidden_size", ctx);
  c.intermediateSize = requireInt(j, "intermediate_size", ctx);
  c.numLayers = requireInt(j, "num_hidden_layers", ctx);
  c.numHeads = requireInt(j, "num_attention_heads", ctx);
  c.numKvHeads = optInt(j, "num_key_value_heads", c.numHeads, ctx);
  UPCYCLE_CHECK(c.numKvHeads > 0, ctx, ": key \"num_key_value_heads\" must be positive");
  // qwen3's config class declares head_dim = 128, so an absent head_dim is 128 there; qwen3_moe's
  // does not, and its modelling code falls back to hidden / heads as the other families do.
  const bool qwen3DefaultHeadDim = c.modelType == "qwen3";
  const bool hasHeadDim = j.contains("head_dim") && !j["head_dim"].is_null();
  UPCYCLE_CHECK(c.hiddenSize % c.numHeads == 0 || hasHeadDim || qwen3DefaultHeadDim, ctx,
                ": hidden_size (", c.hiddenSize, ") is not divisible by num_attention_heads (",
                c.numHeads, ") and head_dim is absent");
  c.headDim = optInt(j, "head_dim", qwen3DefaultHeadDim ? 128 : c.hiddenSize / c.numHeads, ctx);
  UPCYCLE_CHECK(c.headDim > 0, ctx, ": key \"head_dim\" must be positive, got ", c.headDim);
  c.rmsNormEps = optNum(j, "rms_norm_eps", 1e-6, ctx);
  c.ropeTheta = optNum(j, "rope_theta", 10000.0, ctx);
  c.maxPositionEmbeddings = optInt(j, "max_position_embeddings", 2048, ctx);
  c.tieWordEmbeddings = optBool(j, "tie_word_embeddings", false, ctx);
  c.initializerRange = optNum(j, "initializer_range", 0.02, ctx);
  c.bosTokenId = optTokenId(j, "bos_token_id", ctx);
  c.eosTokenId = optTokenId(j, "eos_token_id", ctx);
  c.padTokenId = optTokenId(j, "pad_token_id", ctx);

  const std::string act = j.contains("hidden_act") && j["hidden_act"].is_string()
                              ? j["hidden_act"].get<std::string>() : "silu";
  UPCYCLE_CHECK(act == "silu" || act == "swish", ctx, ": hidden_act \"", act,
                "\" is not supported (only silu)");
  UPCYCLE_CHECK(!optBool(j, "mlp_bias", false, ctx), ctx,
                ": mlp_bias = true is not supported (SwiGLU without bias only)");

  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    readRopeKind(j["rope_scaling"], "rope_scaling", "", c, ctx);
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    // transformers v5 moves rope_theta and the scaling kind into one object.
    readRopeKind(j["rope_parameters"], "rope_parameters", "default", c, ctx);
    c.ropeTheta =
        optNum(j["rope_parameters"], "rope_theta", c.ropeTheta, ctx + ": rope_parameters");
  }
  UPCYCLE_CHECK(c.ropeTheta > 0, ctx, ": rope_theta must be positive, got ", c.ropeTheta);

  if (c.modelType == "mistral") {
    c.slidingWindow = optInt(j, "sliding_window", 0, ctx);
  } else if (c.modelType == "qwen2" || c.modelType == "qwen2_moe") {
    if (optBool(j, "use_sliding_window", false, ctx)) c.slidingWindow = optInt(j, "sliding_window", 0, ctx);
  } else if (c.modelType == "mixtral") {
    c.slidingWindow = optInt(j, "sliding_window", 0, ctx);
  }
  UPCYCLE_CHECK(c.slidingWindow >= 0, ctx, ": sliding_window must be non-negative");

  const bool qwen2 = c.modelType == "qwen2" || c.modelType == "qwen2_moe";
  c.attentionBias = optBool(j, "attention_bias", qwen2, ctx);
  if (qwen3) {
    // Released Qwen3 checkpoints: no biases, full attention in every layer (the sliding window
    // fields are present with use_sliding_window false).
    UPCYCLE_CHECK(!c.attentionBias, ctx, ": attention_bias = true is not supported for ",
                  c.modelType, " (it adds biases to q_proj, k_proj, v_proj and o_proj)");
    UPCYCLE_CHECK(!optBool(j, "use_sliding_window", false, ctx), ctx,
                  ": use_sliding_window = true is not supported for ", c.modelType);
    if (j.contains("layer_types") && !j["layer_types"].is_null()) {
      UPCYCLE_CHECK(j["layer_types"].is_array(), ctx, ": layer_types must be an array");
      for (const json& t : j["layer_types"])
        UPCYCLE_CHECK(t == "full_attention", ctx, ": layer_types entry ", t.dump(),
                      " is not supported (only \"full_attention\")");
    }
    c.qkNorm = true;
  }
  c.dtype = j.contains("torch_dtype") && j["torch_dtype"].is_string()
                ? dtypeFromTorchName(j["torch_dtype"].get<std::string>(), ctx + ": torch_dtype")
                : DType::F32;

  if (c.modelType == "mixtral") {
    c.numExperts = requireInt(j, "num_local_experts", ctx);
    c.topK = requireInt(j, "num_experts_per_tok", ctx);
    c.expertIntermediateSize = c.intermediateSize;
    c.normTopkProb = true;
    c.routerAuxLossCoef = optNum(j, "router_aux_loss_coef", 0.001, ctx);
    c.routerJitterNoise = optNum(j, "router_jitter_noise", 0.0, ctx);
    c.moeLayers.assign(c.numLayers, true);
    c.moeLayout = MoeLayout::MixtralHub;  // the reader detects the fused layout from tensor names
  } else if (c.isQwenMoe()) {
    // transformers v5's Qwen3MoeConfig maps num_experts onto num_local_experts (attribute_map), so
    // a config it writes may spell it that way.
    const bool localKey = !j.contains("num_experts") && j.contains("num_local_experts");
    c.numExperts = requireInt(j, localKey ? "num_local_experts" : "num_experts", ctx);
    c.topK = requireInt(j, "num_experts_per_tok", ctx);
    c.expertIntermediateSize = requireInt(j, "moe_intermediate_size", ctx);
    // Qwen3-MoE has no shared expert (transformers ignores the key there).
    if (c.modelType == "qwen2_moe")
      c.sharedExpertIntermediateSize = optInt(j, "shared_expert_intermediate_size", 0, ctx);
    c.normTopkProb = optBool(j, "norm_topk_prob", false, ctx);
    c.routerAuxLossCoef = optNum(j, "router_aux_loss_coef", 0.001, ctx);
    optBool(j, "output_router_logits", false, ctx);  // a transformers training switch: checked only
    int64_t step = optInt(j, "decoder_sparse_step", 1, ctx);
    UPCYCLE_CHECK(step >= 1, ctx, ": decoder_sparse_step must be >= 1, got ", step);
    // transformers: layer i is sparse iff i not in mlp_only_layers and (i + 1) % step == 0.
    c.moeLayers.assign(c.numLayers, false);
    for (int64_t i = 0; i < c.numLayers; ++i) c.moeLayers[i] = ((i + 1) % step == 0);
    if (j.contains("mlp_only_layers") && !j["mlp_only_layers"].is_null()) {
      UPCYCLE_CHECK(j["mlp_only_layers"].is_array(), ctx, ": mlp_only_layers must be an array");
      for (const json& v : j["mlp_only_layers"]) {
        UPCYCLE_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < c.numLayers,
                      ctx, ": mlp_only_layers entry ", v.dump(), " is not a layer index");
        c.moeLayers[v.get<int64_t>()] = false;
      }
    }
    c.moeLayout = MoeLayout::Qwen2Moe;
  }
  // Our own extension keys (written by the workbench, ignored by transformers).
  c.routerZLossCoef = optNum(j, "router_z_loss_coef", 0.0, ctx);
  if (j.contains("upcycle_lora_experts")) {
    const std::string k = ctx + ": upcycle_lora_experts";
    const json& le = j["upcycle_lora_experts"];
    UPCYCLE_CHECK(le.is_object(), k, " must be an object");
    UPCYCLE_CHECK(c.isMoe(), k, " is only for MoE models");
    c.loraExperts.rank = requireInt(le, "r", k);
    c.loraExperts.alpha = optNum(le, "lora_alpha", 16.0, k);
    c.loraExperts.rslora = optBool(le, "use_rslora", false, k);
    UPCYCLE_CHECK(le.contains("target_modules") && le["target_modules"].is_array(), k,
                  ": target_modules must be a list of gate_proj, up_proj, down_proj");
    c.loraExperts.targets.clear();
    for (const json& t : le["target_modules"]) {
      UPCYCLE_CHECK(t.is_string(), k, ": target_modules entry ", t.dump(), " is not a string");
      c.loraExperts.targets.push_back(t.get<std::string>());
    }
  }
  c.validate(ctx);
  return c;
}

ModelConfig loadHfConfig(const std::filesystem::path& folder) {
  if (!std::filesystem::exists(folder / "config.json") && isPeftAdapter(folder)) {
    // A PEFT adapter folder: the architecture is its base model's.
    const PeftAdapterInfo info = readPeftAdapterConfig(folder);
    UPCYCLE_CHECK(!info.basePath.empty(), folder.string(), ": the adapter's base model \"", info.baseName,
                  "\" (base_model_name_or_path) is not a folder here");
    return loadHfConfig(info.basePath);
  }
  const auto path = folder / "config.json";
  UPCYCLE_CHECK(std::filesystem::exists(path), "missing config.json in ", folder.string());
  return parseHfConfig(readTextFile(path), path.string());
}

std::string hfConfigJson(const ModelConfig& c) {
  c.validate("config for " + c.modelType);
  json j;
  j["architectures"] = {c.architecture()};
  j["model_type"] = c.modelType;
  j["vocab_size"] = c.vocabSize;
  j["hidden_size"] = c.hiddenSize;
  j["intermediate_size"] = c.intermediateSize;
  j["num_hidden_layers"] = c.numLayers;
  j["num_attention_heads"] = c.numHeads;
  j["num_key_value_heads"] = c.numKvHeads;
  j["head_dim"] = c.headDim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rmsNormEps;
  j["rope_theta"] = c.ropeTheta;
  j["rope_scaling"] = c.ropeLinearFactor == 1.0
                          ? json(nullptr) : json{{"type", "linear"}, {"factor", c.ropeLinearFactor}};
  j["max_position_embeddings"] = c.maxPositionEmbeddings;
  j["tie_word_embeddings"] = c.tieWordEmbeddings;
  j["initializer_range"] = c.initializerRange;
  j["torch_dtype"] = torchNameOf(c.dtype);
  j["attention_dropout"] = 0.0;
  if (c.bosTokenId) j["bos_token_id"] = *c.bosTokenId;
  if (c.eosTokenId) j["eos_token_id"] = *c.eosTokenId;
  if (c.padTokenId) j["pad_token_id"] = *c.padTokenId;
  if (c.modelType == "llama") {
    j["attention_bias"] = c.attentionBias;
    j["mlp_bias"] = false;
  }
  if (c.modelType == "mistral" || c.modelType == "mixtral")
    j["sliding_window"] = c.slidingWindow > 0 ? json(c.slidingWindow) : json(nullptr);
  if (c.modelType == "qwen2" || c.modelType == "qwen2_moe") {
    j["use_sliding_window"] = c.slidingWindow > 0;
    j["sliding_window"] = c.slidingWindow > 0 ? c.slidingWindow : c.maxPositionEmbeddings;
    j["max_window_layers"] = c.numLayers;
  }
  if (isQwen3Family(c.modelType)) {
    UPCYCLE_ASSERT(c.qkNorm && !c.attentionBias && c.slidingWindow == 0, "config for ", c.modelType,
                   ": qwen3 has q/k norms, no attention bias and no sliding window");
    j["attention_bias"] = false;
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.numLayers;
  }
  if (c.modelType == "mixtral") {
    for (bool m : c.moeLayers)
      UPCYCLE_CHECK(m, "mixtral checkpoints make every layer MoE; use the qwen2_moe format for "
                       "moe_layer_freq > 1");
    j["intermediate_size"] = c.expertIntermediateSize;
    j["num_local_experts"] = c.numExperts;
    j["num_experts_per_tok"] = c.topK;
    j["router_aux_loss_coef"] = c.routerAuxLossCoef;
    j["router_jitter_noise"] = c.routerJitterNoise;
    j["output_router_logits"] = false;
  } else if (c.isQwenMoe()) {
    j["num_experts"] = c.numExperts;
    j["num_experts_per_tok"] = c.topK;
    j["moe_intermediate_size"] = c.expertIntermediateSize;
    if (c.modelType == "qwen2_moe") {
      j["shared_expert_intermediate_size"] = c.sharedExpertIntermediateSize;
    } else {
      UPCYCLE_ASSERT(c.sharedExpertIntermediateSize == 0, "qwen3_moe has no shared expert");
      j["output_router_logits"] = false;
    }
    j["norm_topk_prob"] = c.normTopkProb;
    j["router_aux_loss_coef"] = c.routerAuxLossCoef;
    j["decoder_sparse_step"] = 1;
    json only = json::array();
    for (int64_t i = 0; i < c.numLayers; ++i)
      if (!c.moeLayers[i]) only.push_back(i);
    j["mlp_only_layers"] = only;
  }
  if (c.routerZLossCoef != 0.0) j["router_z_loss_coef"] = c.routerZLossCoef;
  if (c.loraExperts.enabled())
    j["upcycle_lora_experts"] = {{"r", c.loraExperts.rank}, {"lora_alpha", c.loraExperts.alpha},
                                 {"use_rslora", c.loraExperts.rslora}, {"target_modules", c.loraExperts.targets}};
  return j.dump(2) + "\n";
}

}  // namespace upcycle
