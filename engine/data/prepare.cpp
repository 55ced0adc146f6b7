#include "data/prepare.h"

#include <algorithm>
#include <memory>

#include "core/error.h"
#include "data/instruction_data.h"
#include "data/tokenizer.h"

namespace upcycle {

PreparedData prepareData(const std::filesystem::path& modelDir, const DataOptions& o) {
  std::vector<Example> examples = readExamples(o.path);
  PreparedData out;
  out.promptTemplate = !o.promptTemplate.empty() ? o.promptTemplate : storedPromptTemplate(modelDir).value_or("alpaca");
  const bool allTokens = std::all_of(examples.begin(), examples.end(),
                                     [](const Example& e) { return e.kind == Example::Kind::Tokens; });
  std::unique_ptr<Tokenizer> tok = allTokens ? std::make_unique<ByteTokenizer>() : loadTokenizer(modelDir);
  TokenizeOptions to;
  to.promptTemplate = PromptTemplate::byName(out.promptTemplate);
  to.maxLength = o.packBlock > 0 ? 0 : o.maxLength;
  to.trainOnPrompt = o.trainOnPrompt;
  std::vector<TokenRecord> records = tokenizeExamples(examples, *tok, to, &out.dropped);
  auto [train, val] = splitRecords(records, o.valFraction, o.splitSeed);
  out.train = o.packBlock > 0 ? packRecords(train, o.packBlock) : std::move(train);
  out.val = std::move(val);
  return out;
}

}  // namespace upcycle
