#pragma once
// Instruction and text data (FORMATS.md), read into Examples and tokenized into TokenRecords.
// Torch-free. Thread-safety: free functions.
//
// Record kinds, detected per record:
//   Alpaca    {"instruction", "input"?, "output"}
//   ShareGPT  {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
//   messages  {"messages": [{"role": "user"|"assistant"|"system", "content"}]}
//   text      {"text"}                      (pretraining corpus; every token is trained)
//   tokens    {"input_ids", "labels"?}      (pre-tokenized)
// An optional "domain" (or "category") string is kept through to evaluation.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/token_records.h"

namespace upcycle {

class Tokenizer;
class ChatTemplate;

struct PromptTemplate {
  std::string name;
  std::string withInput;     // placeholders {instruction} and {input}
  std::string withoutInput;  // placeholder {instruction}
  // "alpaca" (default), "compact" ("Q: ...\nA: "), "raw" (the instruction text itself).
  static PromptTemplate byName(const std::string& name);
  std::string render(const std::string& instruction, const std::string& input) const;
};

struct Turn {
  std::string instruction;  // the user's message (with any system prompt before it)
  std::string input;        // Alpaca "input"; empty for conversations
  std::string response;
};

struct Message {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct Example {
  enum class Kind { Instruction, Text, Tokens } kind = Kind::Instruction;
  std::vector<Turn> turns;   // Instruction
  std::vector<Message> messages;  // Instruction, as a chat: Alpaca becomes one user turn
  std::string text;          // Text
  TokenRecord tokens;        // Tokens
  std::string domain;
  int64_t line = 0;
};

// Reads JSONL or a JSON array; throws UserError naming FILE:LINE and the field at fault.
std::vector<Example> readExamples(const std::filesystem::path& path);

// A model's chat template (tokenizer_config.json or chat_template.jinja) with the special-token
// strings the template may print.
struct ChatFormat {
  std::shared_ptr<const ChatTemplate> tmpl;
  std::string bosToken, eosToken;
  // nullptr when the folder has no chat template.
  static std::shared_ptr<const ChatFormat> fromFolder(const std::filesystem::path& folder);
  // apply_chat_template(messages, tokenize=False, add_generation_prompt=...).
  std::string render(const std::vector<Message>& messages, bool addGenerationPrompt) const;
};

// How instruction records are written out for a model: its chat template, or a named prompt
// template. `requested`: "" = the chat template when the model has one, else the template stored
// with the model (byte tokenizer), else alpaca; "chat" = the chat template (an error when there is
// none); alpaca | compact | raw = that template even when the model has a chat template.
struct InstructionFormat {
  std::string name;  // "chat" or the prompt template's name
  PromptTemplate promptTemplate = PromptTemplate::byName("alpaca");
  std::shared_ptr<const ChatFormat> chat;  // set when name == "chat"
};
InstructionFormat resolveInstructionFormat(const std::filesystem::path& modelDir, const std::string& requested);

struct TokenizeOptions {
  PromptTemplate promptTemplate = PromptTemplate::byName("alpaca");
  // When set, instruction records are rendered with this chat template instead (as transformers'
  // apply_chat_template, add_special_tokens=False) and the loss covers the assistant turns only:
  // each assistant message's content and the special token that closes it (e.g. <|im_end|>).
  std::shared_ptr<const ChatFormat> chat;
  int64_t maxLength = 0;        // > 0: truncate (records left with nothing to learn are dropped)
  bool trainOnPrompt = false;   // false: the loss covers response tokens only
  bool addBos = true;
  bool addEos = true;
};

// Tokenizes instruction and text examples; token examples pass through (truncated). Each instruction
// record remembers its last prompt's length and last response, for generation-based accuracy.
std::vector<TokenRecord> tokenizeExamples(const std::vector<Example>& examples, const Tokenizer& tok,
                                          const TokenizeOptions& opts, int64_t* dropped = nullptr);

// Packing: concatenates records (in order) and cuts blocks of exactly `blockSize` tokens; the tail
// shorter than a block is dropped. Labels travel with their tokens; blocks carry no domain.
std::vector<TokenRecord> packRecords(const std::vector<TokenRecord>& records, int64_t blockSize);

// A seeded split: validation gets round(n * valFraction) records (at least one when valFraction > 0
// and n > 1), chosen by a std::mt19937_64 Fisher-Yates shuffle; both parts keep the file order.
std::pair<std::vector<TokenRecord>, std::vector<TokenRecord>> splitRecords(
    const std::vector<TokenRecord>& records, double valFraction, uint64_t seed);

}  // namespace upcycle
