#include "formats/checkpoint_files.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

CheckpointFiles::CheckpointFiles(const fs::path& path) {
  UPCYCLE_CHECK(fs::exists(path), "checkpoint path does not exist: ", path.string());
  auto add = [&](const fs::path& file) {
    m_files.push_back(std::make_unique<SafetensorsFile>(file));
    const SafetensorsFile* f = m_files.back().get();
    for (const TensorView& v : f->tensors()) {
      auto [it, inserted] = m_owner.emplace(v.name, f);
      UPCYCLE_CHECK(inserted, "tensor \"", v.name, "\" appears in both ", it->second->path().string(),
                    " and ", file.string());
    }
  };
  if (fs::is_regular_file(path)) {
    m_folder = path.parent_path();
    add(path);
    return;
  }
  m_folder = path;
  const fs::path index = path / "model.safetensors.index.json";
  if (fs::exists(index)) {
    json j;
    try {
      j = json::parse(readTextFile(index));
    } catch (const json::exception& e) {
      throw UserError(index.string() + ": not valid JSON (" + e.what() + ")");
    }
    UPCYCLE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                  index.string(), ": missing object \"weight_map\"");
    std::set<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      UPCYCLE_CHECK(it->is_string(), index.string(), ": weight_map entry \"", it.key(),
                    "\" is not a file name");
      shards.insert(it->get<std::string>());
    }
    for (const std::string& s : shards) {
      UPCYCLE_CHECK(s.find('/') == std::string::npos, index.string(), ": shard name \"", s,
                    "\" must be a plain file name");
      UPCYCLE_CHECK(fs::exists(path / s), index.string(), ": shard ", s, " is missing");
      add(path / s);
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      auto owner = m_owner.find(it.key());
      UPCYCLE_CHECK(owner != m_owner.end() &&
                        owner->second->path().filename() == it->get<std::string>(),
                    index.string(), ": tensor \"", it.key(), "\" is not in shard ",
                    it->get<std::string>());
    }
    return;
  }
  const fs::path single = path / "model.safetensors";
  UPCYCLE_CHECK(fs::exists(single), path.string(),
                ": no model.safetensors or model.safetensors.index.json in this folder");
  add(single);
}

const TensorView& CheckpointFiles::tensor(const std::string& name) const {
  auto it = m_owner.find(name);
  UPCYCLE_CHECK(it != m_owner.end(), "missing tensor \"", name, "\" in ", m_folder.string());
  return it->second->tensor(name);
}

std::vector<std::string> CheckpointFiles::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : m_owner) out.push_back(name);
  return out;
}

uint64_t CheckpointFiles::totalBytes() const {
  uint64_t total = 0;
  for (const auto& f : m_files) total += f->fileSize();
  return total;
}

void CheckpointFiles::release(const std::string& name) const {
  auto it = m_owner.find(name);
  if (it != m_owner.end()) it->second->release(it->second->tensor(name));
}

void writeCheckpointTensors(const fs::path& folder, const std::vector<TensorWrite>& tensors,
                            uint64_t maxShardBytes) {
  fs::create_directories(folder);
  // Greedy sharding in the given order, as transformers does.
  std::vector<std::vector<const TensorWrite*>> shards(1);
  uint64_t current = 0, total = 0;
  for (const TensorWrite& t : tensors) {
    uint64_t n = t.nbytes();
    if (current > 0 && current + n > maxShardBytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(&t);
    current += n;
    total += n;
  }
  std::set<std::string> written;
  if (shards.size() == 1) {
    writeSafetensors(folder / "model.safetensors", tensors);
    written.insert("model.safetensors");
  } else {
    json weightMap = json::object();
    const std::size_t n = shards.size();
    for (std::size_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      std::vector<TensorWrite> part;
      for (const TensorWrite* t : shards[i]) {
        part.push_back(*t);
        weightMap[t->name] = name;
      }
      writeSafetensors(folder / name, part);
      written.insert(name);
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weightMap}};
    writeFileAtomically(folder / "model.safetensors.index.json", index.dump(2) + "\n");
    written.insert("model.safetensors.index.json");
  }
  // Remove weight files from an earlier save of a different layout.
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    bool weightFile = (name.rfind("model", 0) == 0) &&
                      (entry.path().extension() == ".safetensors" ||
                       name == "model.safetensors.index.json");
    if (weightFile && !written.count(name)) fs::remove(entry.path());
  }
}

}  // namespace upcycle
