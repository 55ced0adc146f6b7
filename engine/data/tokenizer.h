#pragma once
// Tokenizers (torch-free): the built-in byte-level tokenizer, which needs no files, and
// SentencePiece `tokenizer.model` (Llama 2, Mistral). HF `tokenizer.json` BPE can join behind the
// same interface. Special tokens (bos, eos, pad) come from the model's config.
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
  virtual std::string kind() const = 0;                       // "byte", "sentencepiece"
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;  // no specials added
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;   // specials skipped
  virtual int64_t vocabSize() const = 0;
  std::optional<int64_t> bos, eos, pad;
};

// Bytes 0..255 are their own ids; bos = 256, eos = 257, pad = 258 unless the config says otherwise.
class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kBos = 256, kEos = 257, kPad = 258, kVocab = 264;  // padded to a multiple of 8
  ByteTokenizer();
  std::string kind() const override { return "byte"; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocabSize() const override { return kVocab; }
};

std::unique_ptr<Tokenizer> loadSentencePiece(const std::filesystem::path& modelFile);

// The tokenizer of a checkpoint folder: tokenizer.model (SentencePiece), or tokenizer_config.json
// naming the built-in byte tokenizer. Special ids are taken from config.json when present.
// Throws UserError naming the folder when it has no tokenizer we can read.
std::unique_ptr<Tokenizer> loadTokenizer(const std::filesystem::path& folder);

// Writes tokenizer_config.json for the byte tokenizer, with an optional prompt template name.
void writeByteTokenizerConfig(const std::filesystem::path& folder, const std::string& promptTemplate);
// Copies tokenizer files (tokenizer.model, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json) from one checkpoint folder to another; absent files are skipped.
void copyTokenizerFiles(const std::filesystem::path& from, const std::filesystem::path& to);
// The prompt template name stored in tokenizer_config.json ("upcycle_prompt_template"), if any.
std::optional<std::string> storedPromptTemplate(const std::filesystem::path& folder);

}  // namespace upcycle
