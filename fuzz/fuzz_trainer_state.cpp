// trainer_state.json (log_history) and a Trainer output folder's checkpoint-STEP names.
#include "formats/trainer_outputs.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = fuzz::scratch() / "trainer_state.json";
  fuzz::writeFile(file, data, size);
  fuzz::expectOurErrorsOnly([&] { (void)upcycle::readLossHistory(file); });
  return 0;
}
