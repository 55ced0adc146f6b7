#pragma once
// The weights of a Hugging Face checkpoint folder: model.safetensors, or shards listed by
// model.safetensors.index.json. Thread-safety: immutable after construction.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/safetensors.h"

namespace upcycle {

class CheckpointFiles {
 public:
  // `path` is a folder, or a single .safetensors file. Throws UserError naming what is missing.
  explicit CheckpointFiles(const std::filesystem::path& path);

  bool contains(const std::string& name) const { return m_owner.count(name) != 0; }
  // Throws UserError "missing tensor NAME in FOLDER".
  const TensorView& tensor(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return m_files; }
  uint64_t totalBytes() const;  // sum of file sizes
  void release(const std::string& name) const;  // SafetensorsFile::release of that tensor
  const std::filesystem::path& folder() const { return m_folder; }

 private:
  std::filesystem::path m_folder;
  std::vector<std::unique_ptr<SafetensorsFile>> m_files;
  std::map<std::string, const SafetensorsFile*> m_owner;
};

// Writes `tensors` into `folder` as model.safetensors when they fit in `maxShardBytes`, otherwise as
// model-0000i-of-0000n.safetensors plus model.safetensors.index.json. Every file is written atomically;
// weight files of an earlier save that the new one does not use are removed afterwards.
void writeCheckpointTensors(const std::filesystem::path& folder,
                            const std::vector<TensorWrite>& tensors,
                            uint64_t maxShardBytes = 5ull << 30);

}  // namespace upcycle
