// Chat templates (the Jinja interpreter): parsing, then rendering a fixed conversation.
#include <nlohmann/json.hpp>

#include "data/chat_template.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>there</b>"},
                 {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "tools": null})");
  fuzz::expectOurErrorsOnly([&] {
    upcycle::ChatTemplate t(text, "chat_template");
    (void)t.renderOrdered(context);
  });
  return 0;
}
