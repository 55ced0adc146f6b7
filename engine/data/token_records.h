#pragma once
// Pre-tokenized records from JSONL (FORMATS.md): {"input_ids": [...], "labels"?: [...], "domain"?: "..."}.
// Torch-free. Thread-safety: free functions.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle {

struct TokenRecord {
  std::vector<int64_t> inputIds;
  std::vector<int64_t> labels;  // same length as inputIds; -100 = ignored. Empty = inputIds.
  std::string domain;           // from "domain" or "category"; empty when absent
  int64_t line = 0;             // 1-based line in the source file, for error messages
  // Instruction records: the tokens up to the end of the last prompt, and the expected last response
  // (exact-match accuracy by greedy decoding). promptLength == 0 for other records.
  int64_t promptLength = 0;
  std::string answer;
};

// Reads a JSONL file (a JSON array is accepted too). Throws UserError naming FILE:LINE and field.
std::vector<TokenRecord> readTokenRecords(const std::filesystem::path& path);

}  // namespace upcycle
