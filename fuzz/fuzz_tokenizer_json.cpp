// tokenizer.json (models, normalizers, pre-tokenizers with regexes, post-processors, decoders,
// added tokens), then encoding and decoding a fixed mixed-script text.
#include "data/hf_tokenizer.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expectOurErrorsOnly([&] {
    auto tok = upcycle::parseHfTokenizer(text, "tokenizer.json");
    const auto ids = tok->encode(
        "Hello, world! 12345 \xc3\xa9t\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  <|im_end|>\n\ttabs");
    (void)tok->decode(ids);
  });
  return 0;
}
