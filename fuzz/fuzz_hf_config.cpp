// config.json of every supported family (and of the refused ones).
#include "formats/hf_config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expectOurErrorsOnly([&] {
    upcycle::ModelConfig c = upcycle::parseHfConfig(text, "config.json");
    (void)upcycle::hfConfigJson(c);  // what we would write back
  });
  return 0;
}
