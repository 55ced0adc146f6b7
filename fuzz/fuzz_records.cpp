// Data files: JSONL or a JSON array of records (text, Alpaca, ShareGPT, messages, pre-tokenized
// ids), read as instruction examples and tokenized with the byte tokenizer and the compact
// template.
#include "data/instruction_data.h"
#include "data/tokenizer.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = fuzz::scratch() / "data.jsonl";
  fuzz::writeFile(file, data, size);
  fuzz::expectOurErrorsOnly([&] {
    const auto examples = upcycle::readExamples(file);
    upcycle::ByteTokenizer tok;
    upcycle::TokenizeOptions o;
    o.promptTemplate = upcycle::PromptTemplate::byName("compact");
    o.maxLength = 256;
    (void)upcycle::tokenizeExamples(examples, tok, o, nullptr);
  });
  return 0;
}
