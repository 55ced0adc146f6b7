// adapter_config.json of a PEFT LoRA adapter folder (formats/peft_adapter.h): JSON, field types, the
// LoRA settings' bounds, the refused PEFT options, base_model_name_or_path resolution.
#include "formats/peft_adapter.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto folder = fuzz::scratch() / "adapter";
  std::filesystem::create_directories(folder);
  fuzz::writeFile(folder / "adapter_config.json", data, size);
  fuzz::expectOurErrorsOnly([&] {
    if (upcycle::isPeftAdapter(folder)) (void)upcycle::readPeftAdapterConfig(folder);
  });
  return 0;
}
