#pragma once
// Tokenizers (torch-free): the built-in byte-level tokenizer, which needs no files, SentencePiece
// `tokenizer.model` (Llama 2, Mistral), and Hugging Face `tokenizer.json` (data/hf_tokenizer.h:
// Llama 3, Qwen2/3, Mistral, Gemma, SmolLM...). Special tokens (bos, eos, pad) come from the
// model's config and tokenizer_config.json.
// Thread-safety: encode/decode are const and may be called from any thread.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace upcycle {

struct ModelConfig;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "byte", "sentencepiece", "tokenizer.json (BPE)"
  // As HF's add_special_tokens=False: no BOS/EOS added. Special-token strings typed in the text
  // (e.g. "<|im_end|>") map to their ids where the format has added tokens (tokenizer.json).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // As HF's add_special_tokens=True: tokenizer.json's post-processor (its BOS/EOS template);
  // otherwise BOS (when the tokenizer has one) and the text.
  virtual std::vector<int64_t> encodeWithSpecialTokens(const std::string& text) const;
  // skipSpecialTokens: drop BOS/EOS/PAD and (tokenizer.json) every special added token.
  virtual std::string decode(const std::vector<int64_t>& ids, bool skipSpecialTokens = true) const = 0;
  virtual int64_t vocabSize() const = 0;
  // The id of a token string (added tokens included), when the tokenizer has one.
  virtual std::optional<int64_t> tokenId(const std::string& token) const { return std::nullopt; }
  // The strings of the special added tokens (tokenizer.json), e.g. "<|im_end|>".
  virtual std::vector<std::string> specialTokenStrings() const { return {}; }
  std::optional<int64_t> bos, eos, pad;
};

// Bytes 0..255 are their own ids; bos = 256, eos = 257, pad = 258 unless the config says otherwise.
class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kBos = 256, kEos = 257, kPad = 258, kVocab = 264;  // padded to a multiple of 8
  ByteTokenizer();
  std::string kind() const override { return "byte"; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skipSpecialTokens = true) const override;
  int64_t vocabSize() const override { return kVocab; }
};

std::unique_ptr<Tokenizer> loadSentencePiece(const std::filesystem::path& modelFile);

// The tokenizer of a checkpoint folder, in transformers' order of preference: tokenizer_config.json
// naming the built-in byte tokenizer, tokenizer.json (as AutoTokenizer's fast tokenizer), then
// tokenizer.model (SentencePiece). EOS/PAD ids come from tokenizer_config.json's token strings and
// then config.json; BOS is what the tokenizer itself adds (tokenizer.json's post-processor) or
// config.json's. A folder's tokenizer is loaded once per process and shared (loading a 150k-token
// tokenizer.json takes a good fraction of a second). Throws UserError naming the folder when it has
// no tokenizer we can read.
std::shared_ptr<const Tokenizer> loadTokenizer(const std::filesystem::path& folder);
// The folder whose tokenizer files a model uses: its own, or, for a PEFT adapter folder without
// tokenizer files, its base's (throws UserError when that base is not a folder here).
std::filesystem::path tokenizerFolder(const std::filesystem::path& model);
// A short description for inspect and the GUI: "tokenizer.json (BPE, 151,665 tokens)".
std::string describeTokenizer(const std::filesystem::path& folder);

// Writes tokenizer_config.json for the byte tokenizer, with an optional prompt template name.
void writeByteTokenizerConfig(const std::filesystem::path& folder, const std::string& promptTemplate);
// Copies tokenizer files (tokenizer.model, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, chat_template.jinja, generation_config.json) from one checkpoint folder
// to another; absent files are skipped.
void copyTokenizerFiles(const std::filesystem::path& from, const std::filesystem::path& to);
// The prompt template name stored in tokenizer_config.json ("upcycle_prompt_template"), if any.
std::optional<std::string> storedPromptTemplate(const std::filesystem::path& folder);

}  // namespace upcycle
