#include "formats/trainer_outputs.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
std::optional<int64_t> stepOfFolder(const fs::path& p) {
  const std::string name = p.filename().string();
  const std::string prefix = "checkpoint-";
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return std::nullopt;
  return std::stoll(digits);  // at most 18 digits: fits int64
}

json readJson(const fs::path& p) {
  try {
    return json::parse(readTextFile(p));
  } catch (const json::exception& e) {
    throw UserError(p.string() + ": not valid JSON (" + e.what() + ")");
  }
}
}  // namespace

bool isTrainerOutput(const fs::path& folder) {
  if (!fs::is_directory(folder)) return false;
  for (const auto& e : fs::directory_iterator(folder))
    if (e.is_directory() && stepOfFolder(e.path())) return true;
  return false;
}

std::vector<LossPoint> readLossHistory(const fs::path& file) {
  json j = readJson(file);
  std::vector<LossPoint> out;
  if (!j.contains("log_history")) return out;
  UPCYCLE_CHECK(j["log_history"].is_array(), file.string(), ": log_history is not an array");
  for (const json& e : j["log_history"]) {
    if (!e.is_object() || !e.contains("loss") || !e.contains("step")) continue;
    UPCYCLE_CHECK(e["loss"].is_number() && e["step"].is_number_integer(), file.string(),
                  ": log_history entry ", e.dump(), " has a non-numeric loss or step");
    out.push_back({e["step"].get<int64_t>(), e["loss"].get<double>()});
  }
  return out;
}

std::vector<TrainerCheckpoint> listTrainerCheckpoints(const fs::path& folder) {
  UPCYCLE_CHECK(fs::is_directory(folder), folder.string(), " is not a folder");
  std::vector<TrainerCheckpoint> out;
  for (const auto& e : fs::directory_iterator(folder)) {
    auto step = e.is_directory() ? stepOfFolder(e.path()) : std::nullopt;
    if (!step) continue;
    TrainerCheckpoint c;
    c.path = e.path();
    c.step = *step;
    const fs::path state = e.path() / "trainer_state.json";
    if (fs::exists(state)) {
      json j = readJson(state);
      if (j.contains("global_step") && j["global_step"].is_number_integer())
        c.step = j["global_step"].get<int64_t>();
      if (j.contains("epoch") && j["epoch"].is_number()) c.epoch = j["epoch"].get<double>();
      for (const LossPoint& p : readLossHistory(state))
        if (p.step <= c.step) c.loss = p.loss;
    }
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

}  // namespace upcycle
