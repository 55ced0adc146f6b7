#include "data/prepare.h"

#include <algorithm>
#include <memory>

#include "core/error.h"
#include "data/instruction_data.h"
#include "data/tokenizer.h"
#include "formats/hf_config.h"

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
  UPCYCLE_CHECK(o.maxLength >= 0, "max_length must be 0 (the model's context) or positive, got ", o.maxLength);
  // A record never outgrows the model's context (max_position_embeddings): longer ones are truncated
  // here, like transformers' truncation=True, instead of being allocated whole at training time.
  const int64_t context = loadHfConfig(modelDir).maxPositionEmbeddings;
  to.maxLength = o.packBlock > 0 ? 0 : (o.maxLength > 0 ? std::min(o.maxLength, context) : context);
  to.trainOnPrompt = o.trainOnPrompt;
  std::vector<TokenRecord> records = tokenizeExamples(examples, *tok, to, &out.dropped);
  auto [train, val] = splitRecords(records, o.valFraction, o.splitSeed);
  out.train = o.packBlock > 0 ? packRecords(train, o.packBlock) : std::move(train);
  out.val = std::move(val);
  return out;
}

}  // namespace upcycle
