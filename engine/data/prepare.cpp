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
  const bool allTokens = std::all_of(examples.begin(), examples.end(),
                                     [](const Example& e) { return e.kind == Example::Kind::Tokens; });
  std::shared_ptr<const Tokenizer> tok =
      allTokens ? std::make_shared<ByteTokenizer>() : loadTokenizer(modelDir);
  const InstructionFormat format =
      allTokens ? InstructionFormat{} : resolveInstructionFormat(modelDir, o.promptTemplate == "auto" ? "" : o.promptTemplate);
  out.promptTemplate = format.name;
  TokenizeOptions to;
  to.promptTemplate = format.promptTemplate;
  to.chat = format.chat;
  to.maxLength = o.packBlock > 0 ? 0 : o.maxLength;
  to.trainOnPrompt = o.trainOnPrompt;
  std::vector<TokenRecord> records = tokenizeExamples(examples, *tok, to, &out.dropped);
  auto [train, val] = splitRecords(records, o.valFraction, o.splitSeed);
  out.train = o.packBlock > 0 ? packRecords(train, o.packBlock) : std::move(train);
  out.val = std::move(val);
  return out;
}

}  // namespace upcycle
