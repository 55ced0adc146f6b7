// safetensors files (header JSON, offsets, dtypes, shapes) through SafetensorsFile, and the
// single-file checkpoint path of CheckpointFiles.
#include "formats/checkpoint_files.h"
#include "formats/safetensors.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = fuzz::scratch() / "model.safetensors";
  fuzz::writeFile(file, data, size);
  fuzz::expectOurErrorsOnly([&] {
    upcycle::SafetensorsFile f(file);
    uint64_t sum = 0;
    for (const auto& t : f.tensors()) {
      const auto* b = static_cast<const unsigned char*>(t.data);
      for (uint64_t i = 0; i < t.nbytes; i += 4096)
        sum += b[i];  // every page of every tensor is readable
      if (t.nbytes) sum += b[t.nbytes - 1];
    }
    if (sum == 0xdeadbeef) std::puts("");
  });
  return 0;
}
