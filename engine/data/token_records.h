#pragma once
// Pre-tokenized records from JSONL (FORMATS.md): {"input_ids": [...], "labels"?: [...], "domain"?: "..."}.
// Torch-free. Thread-safety: free functions.
#include <cstdint>
#include <filesystem>
#include <functional>
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
  int64_t tag = -1;  // a per-record class, e.g. the UpIT expert a seed sample was assigned to
};

// One pre-tokenized record from its parsed JSON (a nlohmann::json): "input_ids" (at least 2
// non-negative ids), optional "labels" of the same length, optional "domain"/"category". Throws
// UserError naming `where` and the field.
TokenRecord tokenRecordFromJson(const void* json, const std::string& where, int64_t line);

// Calls fn(recordJsonText, where, line) for each record of a JSONL file or JSON array file; `where`
// is "FILE:LINE" (or "FILE: record N" for arrays). Blank lines are skipped but counted. Throws
// UserError naming the place for invalid JSON, and for a file without records.
void forEachJsonRecord(const std::filesystem::path& path,
                       const std::function<void(const void* json, const std::string& where, int64_t line)>& fn);

}  // namespace upcycle
