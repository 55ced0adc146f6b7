#include "formats/peft_adapter.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string>& loraTargetNames() {
  static const std::vector<std::string> t = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return t;
}

namespace {
bool isLoraTarget(const std::string& name) {
  const auto& all = loraTargetNames();
  return std::find(all.begin(), all.end(), name) != all.end();
}
}  // namespace

double LoraOptions::scale() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

std::vector<std::string> parseLoraTargets(const std::string& list, const std::string& field) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    std::string name = item.size() > 5 && item.compare(item.size() - 5, 5, "_proj") == 0 ? item : item + "_proj";
    if (!isLoraTarget(name))
      throw UserError(field + ": \"" + item + "\" is not one of q, k, v, o, gate, up, down (or their _proj names)");
    for (const auto& t : out)
      if (t == name) throw UserError(field + ": \"" + item + "\" is named twice");
    out.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void validateLoraOptions(const LoraOptions& o, const std::string& where) {
  if (!o.enabled()) return;
  UPCYCLE_CHECK(o.rank >= 1 && o.rank <= 4096, where, ".rank must be in [1, 4096], got ", o.rank);
  UPCYCLE_CHECK(std::isfinite(o.alpha) && o.alpha > 0 && o.alpha <= 1e6, where, ".alpha must be in (0, 1e6], got ", o.alpha);
  UPCYCLE_CHECK(o.dropout >= 0 && o.dropout < 1, where, ".dropout must be in [0, 1), got ", o.dropout);
  UPCYCLE_CHECK(!o.targets.empty(), where, ".targets must name at least one of q, k, v, o, gate, up, down");
  std::set<std::string> seen;
  for (const auto& t : o.targets) {
    UPCYCLE_CHECK(isLoraTarget(t), where, ".targets: \"", t, "\" is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    UPCYCLE_CHECK(seen.insert(t).second, where, ".targets: \"", t, "\" is named twice");
  }
}

bool isPeftAdapter(const fs::path& folder) {
  std::error_code ec;
  return fs::is_directory(folder, ec) && fs::is_regular_file(folder / "adapter_config.json", ec);
}

PeftAdapterInfo readPeftAdapterConfig(const fs::path& folder) {
  const fs::path file = folder / "adapter_config.json";
  const std::string where = file.string();
  json j;
  try {
    j = json::parse(readTextFile(file));
  } catch (const json::exception& e) {
    throw UserError(where + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  UPCYCLE_CHECK(j.is_object(), where, ": not a JSON object");
  auto str = [&](const char* k, const std::string& dflt) {
    if (!j.contains(k) || j[k].is_null()) return dflt;
    UPCYCLE_CHECK(j[k].is_string(), where, ": \"", k, "\" must be a string");
    return j[k].get<std::string>();
  };
  auto num = [&](const char* k, double dflt) {
    if (!j.contains(k) || j[k].is_null()) return dflt;
    UPCYCLE_CHECK(j[k].is_number(), where, ": \"", k, "\" must be a number");
    return j[k].get<double>();
  };
  auto flag = [&](const char* k) {
    if (!j.contains(k) || j[k].is_null()) return false;
    UPCYCLE_CHECK(j[k].is_boolean(), where, ": \"", k, "\" must be true or false");
    return j[k].get<bool>();
  };
  auto emptyOrNull = [&](const char* k) {
    return !j.contains(k) || j[k].is_null() || (j[k].is_object() && j[k].empty()) || (j[k].is_array() && j[k].empty());
  };
  const std::string type = str("peft_type", "");
  UPCYCLE_CHECK(type == "LORA", where, ": peft_type \"", type, "\" is not supported (only LORA)");
  UPCYCLE_CHECK(!flag("use_dora"), where, ": use_dora (DoRA) is not supported");
  UPCYCLE_CHECK(!flag("fan_in_fan_out"), where, ": fan_in_fan_out (GPT-2 style Conv1D weights) is not supported");
  const std::string bias = str("bias", "none");
  UPCYCLE_CHECK(bias == "none", where, ": bias \"", bias, "\" is not supported (only \"none\")");
  for (const char* k : {"rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern", "modules_to_save"})
    UPCYCLE_CHECK(emptyOrNull(k), where, ": \"", k, "\" is not supported (the same rank and alpha for every target)");
  PeftAdapterInfo info;
  const double r = num("r", 8);
  UPCYCLE_CHECK(r == std::floor(r) && r >= 1 && r <= 4096, where, ": r must be an integer in [1, 4096], got ", r);
  info.lora.rank = static_cast<int64_t>(r);
  info.lora.alpha = num("lora_alpha", 8);
  info.lora.dropout = num("lora_dropout", 0);
  info.lora.rslora = flag("use_rslora");
  UPCYCLE_CHECK(j.contains("target_modules") && j["target_modules"].is_array(), where,
                ": target_modules must be a list of module names (a regular expression is not supported)");
  info.lora.targets.clear();
  for (const auto& t : j["target_modules"]) {
    UPCYCLE_CHECK(t.is_string(), where, ": target_modules must hold strings");
    info.lora.targets.push_back(t.get<std::string>());
  }
  // The canonical order (q k v o gate up down), whatever order the file lists them in.
  auto rankOf = [](const std::string& t) {
    const auto& all = loraTargetNames();
    return static_cast<size_t>(std::find(all.begin(), all.end(), t) - all.begin());
  };
  std::stable_sort(info.lora.targets.begin(), info.lora.targets.end(),
                   [&](const std::string& a, const std::string& b) { return rankOf(a) < rankOf(b); });
  validateLoraOptions(info.lora, where);
  info.baseName = str("base_model_name_or_path", "");
  if (!info.baseName.empty()) {
    const fs::path b(info.baseName);
    std::error_code ec;
    for (const fs::path& c : b.is_absolute() ? std::vector<fs::path>{b} : std::vector<fs::path>{folder / b, b})
      if (fs::is_directory(c, ec)) {
        info.basePath = fs::weakly_canonical(c, ec);
        if (ec) info.basePath = c;
        break;
      }
  }
  return info;
}

}  // namespace upcycle
