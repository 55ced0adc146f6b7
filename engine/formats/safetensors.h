#pragma once
// safetensors reading and writing (FORMATS.md), torch-free.
//
// SafetensorsFile memory-maps one file and validates its whole header on open: header size limit,
// JSON, no duplicate names, known dtypes, offsets inside the buffer, byte size = numel * dtype size,
// no overlaps and no gaps. Tensor data may be unaligned: callers copy out of TensorView::data.
// Thread-safety: a SafetensorsFile is immutable after construction and may be read from any thread.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/dtype.h"

namespace upcycle {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const unsigned char* data = nullptr;  // not necessarily aligned
  std::size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference implementation's limit

  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return m_path; }
  bool contains(const std::string& name) const { return m_index.count(name) != 0; }
  const TensorView& tensor(const std::string& name) const;  // throws naming file and tensor
  const std::vector<TensorView>& tensors() const { return m_tensors; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return m_metadata; }
  uint64_t fileSize() const { return m_size; }
  // Drops the mapped pages that lie wholly inside the tensor's bytes from this process's memory (they
  // stay in the page cache; a later read faults them back in). Streaming readers call it when done.
  void release(const TensorView& t) const;

 private:
  std::filesystem::path m_path;
  void* m_map = nullptr;
  uint64_t m_size = 0;
  std::vector<TensorView> m_tensors;
  std::map<std::string, std::size_t> m_index;
  std::map<std::string, std::string> m_metadata;
};

// One tensor to write; `data` must hold numel * dtypeSize(dtype) bytes, row-major little-endian.
// Streaming: with `data` null, `source()` is called right before the tensor is written and returns its
// bytes, valid until the next call; so a writer of many tensors holds one at a time.
struct TensorWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::function<const void*()> source = nullptr;
  std::size_t nbytes() const;
};

// Writes one safetensors file atomically (temporary name, then rename). The header is padded with
// spaces so that the data buffer starts at a multiple of 8. Throws UserError on duplicate names.
void writeSafetensors(const std::filesystem::path& path, const std::vector<TensorWrite>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace upcycle
