#include "data/token_records.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

using nlohmann::json;

namespace {

std::vector<int64_t> intArray(const json& j, const char* key, const std::string& where) {
  UPCYCLE_CHECK(j[key].is_array(), where, ": \"", key, "\" is not an array");
  std::vector<int64_t> out;
  out.reserve(j[key].size());
  for (const json& v : j[key]) {
    UPCYCLE_CHECK(v.is_number_integer(), where, ": \"", key, "\" holds a non-integer ", v.dump());
    // An unsigned value above INT64_MAX would read as a negative number (18446744073709551615 as -1).
    UPCYCLE_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX), where, ": \"", key,
                  "\" holds ", v.dump(), ", too large for a token id");
    out.push_back(v.get<int64_t>());
  }
  return out;
}

}  // namespace

TokenRecord tokenRecordFromJson(const void* record, const std::string& where, int64_t line) {
  const json& j = *static_cast<const json*>(record);
  UPCYCLE_CHECK(j.is_object(), where, ": record is not a JSON object");
  UPCYCLE_CHECK(j.contains("input_ids"), where,
                ": record has no \"input_ids\" (text records need a tokenizer; pre-tokenize them)");
  TokenRecord r;
  r.line = line;
  r.inputIds = intArray(j, "input_ids", where);
  UPCYCLE_CHECK(r.inputIds.size() >= 2, where, ": \"input_ids\" needs at least 2 tokens");
  for (int64_t id : r.inputIds) UPCYCLE_CHECK(id >= 0, where, ": negative token id ", id);
  if (j.contains("labels")) {
    r.labels = intArray(j, "labels", where);
    UPCYCLE_CHECK(r.labels.size() == r.inputIds.size(), where, ": \"labels\" has ", r.labels.size(),
                  " entries but \"input_ids\" has ", r.inputIds.size());
    for (int64_t l : r.labels)
      UPCYCLE_CHECK(l >= 0 || l == -100, where, ": label ", l, " is neither a token id nor -100 (ignored)");
  }
  for (const char* key : {"domain", "category"}) {
    if (j.contains(key)) {
      UPCYCLE_CHECK(j[key].is_string(), where, ": \"", key, "\" is not a string");
      r.domain = j[key].get<std::string>();
      break;
    }
  }
  return r;
}

void forEachJsonRecord(const std::filesystem::path& path,
                       const std::function<void(const void*, const std::string&, int64_t)>& fn) {
  UPCYCLE_CHECK(std::filesystem::exists(path), "cannot open data file ", path.string(), ": no such file");
  const std::string text = readTextFile(path);  // regular files only
  const size_t first = text.find_first_not_of(" \t\r\n");
  int64_t count = 0;
  if (first != std::string::npos && text[first] == '[') {  // a JSON array of records
    json arr;
    try {
      arr = json::parse(text);
    } catch (const json::exception& e) {
      throw UserError(path.string() + ": not valid JSON (" + e.what() + ")");
    }
    for (const json& j : arr) {
      ++count;
      fn(&j, path.string() + ": record " + std::to_string(count), count);
    }
  } else {
    int64_t n = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path.string() + ":" + std::to_string(n);
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        throw UserError(where + ": not valid JSON (" + e.what() + ")");
      }
      ++count;
      fn(&j, where, n);
    }
  }
  UPCYCLE_CHECK(count > 0, path.string(), ": no records");
}

}  // namespace upcycle
