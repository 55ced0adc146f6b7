#pragma once
// `upcycle tokenize`: a model's tokenizer (byte, SentencePiece or tokenizer.json) and chat template
// applied to JSONL lines, the interface tests and users script against. Torch-free.
// Thread-safety: each call is independent.
#include <filesystem>
#include <ostream>

namespace upcycle {

struct TokenizeRequest {
  std::filesystem::path model;  // a checkpoint or tokenizer folder
  std::filesystem::path jsonl;  // {"text": ...} per line; with chat, {"messages": [...], ...}
  bool decode = false;          // add "decoded": the ids decoded, special tokens kept
  bool chat = false;            // render "messages" with the folder's chat template first
  bool addSpecialTokens = false;  // as HF's add_special_tokens=True (the post-processor's BOS/EOS)
};

// Writes one JSON object per input record, in order: {"ids": [...]} (+ "decoded"); with chat,
// {"text": rendered, "ids": [...]}, or {"error": message} for a record whose template raises. A line
// that is not JSON, lacks its field, or a folder without tokenizer or chat template is a UserError
// naming the file, line and field.
void tokenizeJsonl(const TokenizeRequest& request, std::ostream& out);

}  // namespace upcycle
