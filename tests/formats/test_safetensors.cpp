#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/checkpoint_files.h"
#include "formats/safetensors.h"
#include "test_util.h"

using namespace upcycle;
using upcycle::test::TempDir;

namespace {

std::string f32Bytes(std::initializer_list<float> vals) {
  std::string s;
  for (float v : vals) {
    unsigned char b[4];
    std::memcpy(b, &v, 4);  // x86-64 is little-endian, as safetensors
    s.append(reinterpret_cast<char*>(b), 4);
  }
  return s;
}

float readF32(const unsigned char* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

class Corrupt : public ::testing::Test {
 protected:
  // Writes `bytes`, opens it, and checks the error names the file and the given detail.
  void expectRejected(const std::string& bytes, const std::string& detail) {
    auto p = dir / "bad.safetensors";
    test::writeBytes(p, bytes);
    test::expectErrorContaining([&] { SafetensorsFile f(p); }, {p.string(), detail});
  }
  TempDir dir;
};

}  // namespace

TEST(Safetensors, ReadsHandWrittenFileWithExactValues) {
  TempDir dir;
  // Two tensors; "b" is listed first in the header but stored second. The data starts unaligned.
  std::string header =
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while (header.size() % 8 != 7) header += ' ';
  auto p = dir / "ok.safetensors";
  test::writeBytes(p, test::safetensorsBytes(header, f32Bytes({1.0f, -2.5f, 0.125f})));
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");  // file order follows offsets
  const TensorView& a = f.tensor("a");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(readF32(a.data), 1.0f);
  EXPECT_EQ(readF32(a.data + 4), -2.5f);
  EXPECT_EQ(readF32(f.tensor("b").data), 0.125f);
  EXPECT_TRUE(f.metadata().empty());
}

TEST(Safetensors, ReadsMetadataAndScalarsAndEmptyTensors) {
  TempDir dir;
  std::string header =
      R"({"__metadata__":{"format":"pt"},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"e":{"dtype":"BF16","shape":[0,3],"data_offsets":[8,8]}})";
  std::string data(8, '\0');
  data[0] = 7;
  auto p = dir / "m.safetensors";
  test::writeBytes(p, test::safetensorsBytes(header, data));
  SafetensorsFile f(p);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.tensor("s").numel(), 1);
  EXPECT_EQ(f.tensor("s").data[0], 7);
  EXPECT_EQ(f.tensor("e").numel(), 0);
}

TEST_F(Corrupt, TruncatedFile) { expectRejected("abc", "truncated"); }

TEST_F(Corrupt, TruncatedData) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                        f32Bytes({1, 2})),
                 "past the end of the data buffer");
}

TEST_F(Corrupt, HeaderLengthPastEndOfFile) {
  expectRejected(test::safetensorsBytes(R"({})", "", 1000), "runs past the end of the file");
}

TEST_F(Corrupt, HeaderLengthOverLimit) {
  expectRejected(test::safetensorsBytes(R"({})", "", int64_t(200000000)), "exceeds the limit");
}

TEST_F(Corrupt, BadJson) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32",)", ""), "not valid JSON");
}

TEST_F(Corrupt, NotAnObject) { expectRejected(test::safetensorsBytes("[1,2]", ""), "does not start with '{'"); }

TEST_F(Corrupt, OverlappingOffsets) {
  expectRejected(test::safetensorsBytes(
                     R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     f32Bytes({1, 2, 3})),
                 "overlaps");
}

TEST_F(Corrupt, OutOfRangeOffsets) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[100,104]}})",
                                        f32Bytes({1})),
                 "\"a\": data_offsets [100, 104] run past the end");
}

TEST_F(Corrupt, ReversedOffsets) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})",
                                        f32Bytes({1})),
                 "reversed");
}

TEST_F(Corrupt, ByteSizeDoesNotMatchShapeAndDtype) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})",
                                        f32Bytes({1, 2})),
                 "byte size 8 does not match shape and dtype F16 (expected 6 bytes)");
}

TEST_F(Corrupt, DuplicateNames) {
  expectRejected(test::safetensorsBytes(
                     R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                     f32Bytes({1, 2})),
                 "duplicate tensor name \"a\"");
}

TEST_F(Corrupt, GapInBuffer) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                        f32Bytes({1, 2})),
                 "gap in the data buffer");
}

TEST_F(Corrupt, TrailingBytes) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                        f32Bytes({1, 2})),
                 "trailing bytes");
}

TEST_F(Corrupt, Float8IsRefusedClearly) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})",
                                        std::string(1, '\0')),
                 "F8_E4M3 (8-bit float) is not supported");
}

TEST_F(Corrupt, NegativeShape) {
  expectRejected(test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                                        f32Bytes({1})),
                 "not a non-negative integer");
}

TEST_F(Corrupt, MissingTensorIsNamed) {
  auto p = dir / "one.safetensors";
  test::writeBytes(p, test::safetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                             f32Bytes({1})));
  SafetensorsFile f(p);
  test::expectErrorContaining([&] { f.tensor("model.norm.weight"); },
                              {p.string(), "missing tensor \"model.norm.weight\""});
}

TEST(SafetensorsWriter, LayoutMatchesTheFormatByteForByte) {
  TempDir dir;
  const float vals[3] = {1.5f, -2.0f, 3.25f};
  const uint16_t half[2] = {0x3c00, 0xc000};  // F16 1.0 and -2.0
  auto p = dir / "w.safetensors";
  writeSafetensors(p, {{"x", DType::F32, {3}, vals}, {"h", DType::F16, {1, 2}, half}});
  const std::string bytes = test::readBytes(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start at a multiple of 8";
  EXPECT_EQ(bytes.size(), 8 + n + 12 + 4);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_EQ(bytes.substr(8 + n, 12), f32Bytes({1.5f, -2.0f, 3.25f}));  // in the given order
  EXPECT_EQ(static_cast<unsigned char>(bytes[8 + n + 12 + 1]), 0x3c);
  const std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find(R"("x":{"data_offsets":[0,12],"dtype":"F32","shape":[3]})"), std::string::npos) << header;
  EXPECT_NE(header.find(R"("h":{"data_offsets":[12,16],"dtype":"F16","shape":[1,2]})"), std::string::npos) << header;
  EXPECT_NE(header.find(R"("__metadata__":{"format":"pt"})"), std::string::npos);
  // No temporary file is left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(SafetensorsWriter, RefusesDuplicateNames) {
  TempDir dir;
  float v = 1;
  test::expectErrorContaining(
      [&] { writeSafetensors(dir / "d.safetensors", {{"a", DType::F32, {1}, &v}, {"a", DType::F32, {1}, &v}}); },
      {"duplicate tensor name \"a\""});
  EXPECT_FALSE(std::filesystem::exists(dir / "d.safetensors"));
}

TEST(SafetensorsWriter, ReproducesTheReferenceWritersTensorBytes) {
  // The reference file comes from the independent Python writer (tests/reference).
  TempDir dir;
  SafetensorsFile ref(test::fixtures() / "models/llama_bf16/model.safetensors");
  std::vector<TensorWrite> w;
  for (const auto& v : ref.tensors()) w.push_back({v.name, v.dtype, v.shape, v.data});
  writeSafetensors(dir / "copy.safetensors", w);
  SafetensorsFile copy(dir / "copy.safetensors");
  ASSERT_EQ(copy.tensors().size(), ref.tensors().size());
  for (const auto& v : ref.tensors()) {
    const TensorView& c = copy.tensor(v.name);
    EXPECT_EQ(c.dtype, DType::BF16);
    EXPECT_EQ(c.shape, v.shape);
    ASSERT_EQ(c.nbytes, v.nbytes);
    EXPECT_EQ(std::memcmp(c.data, v.data, v.nbytes), 0) << v.name;
  }
}

TEST(AtomicFile, UncommittedWriteLeavesTargetUntouched) {
  TempDir dir;
  auto target = dir / "keep.txt";
  writeFileAtomically(target, "old");
  {
    AtomicFile f(target);
    f.write("new content", 11);
    // destroyed without commit, as when an exception unwinds a save
  }
  EXPECT_EQ(test::readBytes(target), "old");
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(CheckpointFiles, ReadsShardsThroughTheIndex) {
  CheckpointFiles files(test::fixtures() / "models/llama_sharded");
  EXPECT_EQ(files.files().size(), 3u);
  EXPECT_TRUE(files.contains("model.layers.1.mlp.down_proj.weight"));
  EXPECT_EQ(files.tensor("model.embed_tokens.weight").shape, (std::vector<int64_t>{64, 32}));
  test::expectErrorContaining([&] { files.tensor("model.layers.9.mlp.up_proj.weight"); },
                              {"missing tensor \"model.layers.9.mlp.up_proj.weight\"", "llama_sharded"});
}

TEST(CheckpointFiles, MissingShardIsNamed) {
  TempDir dir;
  test::writeBytes(dir / "model.safetensors.index.json",
                   R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors"}})");
  test::expectErrorContaining([&] { CheckpointFiles f(dir.path()); },
                              {"model.safetensors.index.json", "shard model-00001-of-00002.safetensors is missing"});
}

TEST(CheckpointFiles, EmptyFolderIsExplained) {
  TempDir dir;
  test::expectErrorContaining([&] { CheckpointFiles f(dir.path()); }, {"no model.safetensors"});
}

TEST(CheckpointFiles, WritesShardsAndIndexAndRemovesStaleFiles) {
  TempDir dir;
  std::vector<float> a(100, 1.0f), b(100, 2.0f), c(100, 3.0f);
  std::vector<TensorWrite> w = {{"a", DType::F32, {100}, a.data()},
                                {"b", DType::F32, {100}, b.data()},
                                {"c", DType::F32, {100}, c.data()}};
  writeCheckpointTensors(dir.path(), w, /*maxShardBytes=*/800);  // 400 bytes each: 2 per shard
  EXPECT_TRUE(std::filesystem::exists(dir / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir / "model-00002-of-00002.safetensors"));
  const std::string index = test::readBytes(dir / "model.safetensors.index.json");
  EXPECT_NE(index.find("\"total_size\": 1200"), std::string::npos) << index;
  CheckpointFiles files(dir.path());
  EXPECT_EQ(readF32(files.tensor("c").data + 4 * 99), 3.0f);
  // Saving again unsharded removes the old shards and index.
  writeCheckpointTensors(dir.path(), w);
  EXPECT_FALSE(std::filesystem::exists(dir / "model-00001-of-00002.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_EQ(CheckpointFiles(dir.path()).files().size(), 1u);
}

// A write interrupted by kill -9 leaves "<file>.tmp-PID"; the next write of that file removes it when
// PID is dead, and leaves another live process's temporary alone.
TEST(AtomicFile, StaleTemporariesOfDeadProcessesAreRemoved) {
  test::TempDir dir;
  const pid_t dead = [] {
    const pid_t p = ::fork();
    if (p == 0) ::_exit(0);
    int st = 0;
    ::waitpid(p, &st, 0);
    return p;
  }();
  const auto stale = dir / ("model.safetensors.tmp-" + std::to_string(dead));
  const auto live = dir / ("model.safetensors.tmp-" + std::to_string(::getppid()));
  test::writeBytes(stale, "half");
  test::writeBytes(live, "busy");
  writeFileAtomically(dir / "model.safetensors", "whole");
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_EQ(test::readBytes(dir / "model.safetensors"), "whole");
}
