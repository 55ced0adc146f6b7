// Experiment YAML: parsing, validation and writing it back.
#include "fuzz_common.h"
#include "pipeline/experiment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expectOurErrorsOnly([&] {
    upcycle::Experiment e = upcycle::parseExperiment(text, "experiment.yaml");
    (void)upcycle::experimentYaml(e);
  });
  return 0;
}
