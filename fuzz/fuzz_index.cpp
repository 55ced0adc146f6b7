// model.safetensors.index.json (sharded checkpoints: weight_map, shard names, path traversal).
#include "formats/checkpoint_files.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto dir = fuzz::scratch() / "sharded";
  static bool made = [&] {
    std::filesystem::create_directories(dir);
    // One valid shard the index may point at: {"a": F32 [2]}.
    const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    bytes += header + std::string(8, '\0');
    fuzz::writeFile(dir / "model-00001-of-00001.safetensors",
                    reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    return true;
  }();
  (void)made;
  fuzz::writeFile(dir / "model.safetensors.index.json", data, size);
  fuzz::expectOurErrorsOnly([&] {
    upcycle::CheckpointFiles f(dir);
    for (const auto& n : f.names()) (void)f.tensor(n);
  });
  return 0;
}
