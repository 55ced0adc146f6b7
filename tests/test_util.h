#pragma once
// Helpers shared by the test suites: temporary folders, raw file writing, error-message checks.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <cstring>

#include "api/models.h"
#include "formats/checkpoint_files.h"

namespace upcycle::test {

inline std::filesystem::path fixtures() { return UPCYCLE_FIXTURES; }
// Real tokenizer folders (qwen3, llama3, mistral, gemma3), unpacked from fixtures/hf_tokenizers.
inline std::filesystem::path hfTokenizers() { return UPCYCLE_HF_TOKENIZERS; }

// A fresh folder under the system temp dir, removed when the test ends.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    m_path = std::filesystem::temp_directory_path() /
             ("upcycle-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(m_path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  const std::filesystem::path& path() const { return m_path; }
  std::filesystem::path operator/(const std::string& name) const { return m_path / name; }

 private:
  std::filesystem::path m_path;
};

// Every tensor of checkpoint `a` is in `b` with the same dtype, shape and bytes, and vice versa.
inline void expectSameTensors(const std::filesystem::path& a, const std::filesystem::path& b) {
  CheckpointFiles fa(a), fb(b);
  EXPECT_EQ(fa.names(), fb.names());
  for (const auto& n : fa.names()) {
    if (!fb.contains(n)) continue;
    const auto& x = fa.tensor(n);
    const auto& y = fb.tensor(n);
    EXPECT_EQ(x.dtype, y.dtype) << n;
    EXPECT_EQ(x.shape, y.shape) << n;
    ASSERT_EQ(x.nbytes, y.nbytes) << n;
    EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << n << " differs";
  }
}

// A tiny random dense Llama (d 64, 2 layers) at dir/"dense" and a Mixtral of it with `experts` experts
// (top-2) at dir/"moe", through createRandomModel (tests that call it link upcycle_engine).
struct TinyModels {
  std::filesystem::path dense, moe;
};
inline TinyModels createTinyModels(const std::filesystem::path& dir, int64_t ff, int64_t experts, int64_t expertFf,
                                   uint64_t seed) {
  CreateOptions c;
  c.hiddenSize = 64;
  c.intermediateSize = ff;
  c.numLayers = 2;
  c.seed = seed;
  c.out = dir / "dense";
  createRandomModel(c);
  c.modelType = "mixtral";
  c.experts = experts;
  c.topK = 2;
  c.intermediateSize = expertFf;
  c.out = dir / "moe";
  createRandomModel(c);
  return {dir / "dense", dir / "moe"};
}

inline void writeBytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string readBytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file assembled by hand: little-endian u64 length, header text, raw data.
inline std::string safetensorsBytes(const std::string& header, const std::string& data,
                                    int64_t lengthOverride = -1) {
  uint64_t n = lengthOverride >= 0 ? static_cast<uint64_t>(lengthOverride) : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// Expects `fn` to throw an exception whose message contains every one of `needles`.
template <typename Fn>
void expectErrorContaining(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "message: " << msg << "\nmissing: " << n;
  }
}

}  // namespace upcycle::test
