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
#include <string>
#include <utility>
#include <vector>

#include "data/token_records.h"

namespace upcycle {

class Tokenizer;

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

struct Example {
  enum class Kind { Instruction, Text, Tokens } kind = Kind::Instruction;
  std::vector<Turn> turns;   // Instruction
  std::string text;          // Text
  TokenRecord tokens;        // Tokens
  std::string domain;
  int64_t line = 0;
};

// Reads JSONL or a JSON array; throws UserError naming FILE:LINE and the field at fault.
std::vector<Example> readExamples(const std::filesystem::path& path);

struct TokenizeOptions {
  PromptTemplate promptTemplate = PromptTemplate::byName("alpaca");
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
