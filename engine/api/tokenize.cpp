#include "api/tokenize.h"

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/token_records.h"
#include "data/tokenizer.h"

namespace upcycle {

using nlohmann::json;

namespace {

// Each non-blank line of a JSONL file, parsed keeping its key order (templates print tools and
// arguments with tojson, in the order the user wrote them).
void forEachOrderedLine(const std::filesystem::path& path,
                        const std::function<void(const nlohmann::ordered_json&, const std::string&)>& fn) {
  UPCYCLE_CHECK(std::filesystem::is_regular_file(path), "cannot open data file ", path.string(),
                std::filesystem::exists(path) ? ": not a regular file" : ": no such file");
  std::ifstream in(path, std::ios::binary);
  UPCYCLE_CHECK(in.good(), "cannot open data file ", path.string());
  std::string line;
  int64_t n = 0, records = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path.string() + ":" + std::to_string(n);
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(line);
    } catch (const nlohmann::ordered_json::exception& e) {
      throw UserError(where + ": not valid JSON (" + e.what() + ")");
    }
    ++records;
    fn(j, where);
  }
  UPCYCLE_CHECK(records > 0, path.string(), ": no records");
}

}  // namespace

void tokenizeJsonl(const TokenizeRequest& r, std::ostream& out) {
  auto tok = loadTokenizer(r.model);
  auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  auto emit = [&](const std::string& text, json result) {
    const std::vector<int64_t> ids = r.addSpecialTokens ? tok->encodeWithSpecialTokens(text) : tok->encode(text);
    result["ids"] = ids;
    if (r.decode) result["decoded"] = tok->decode(ids, false);
    out << dump(result) << "\n";
  };
  if (!r.chat) {
    forEachJsonRecord(r.jsonl, [&](const void* p, const std::string& where, int64_t) {
      const json& line = *static_cast<const json*>(p);
      UPCYCLE_CHECK(line.is_object() && line.contains("text") && line["text"].is_string(), where,
                    ": field \"text\" is missing or not a string");
      emit(line["text"].get<std::string>(), json::object());
    });
    out.flush();
    return;
  }
  const std::optional<ChatTemplateFile> file = findChatTemplate(r.model);
  UPCYCLE_CHECK(file, r.model.string(), ": no chat template (tokenizer_config.json has no \"chat_template\" "
                "and there is no chat_template.jinja)");
  const ChatTemplate chat(file->text, file->source);
  forEachOrderedLine(r.jsonl, [&](const nlohmann::ordered_json& line, const std::string& where) {
    UPCYCLE_CHECK(line.is_object() && line.contains("messages") && line["messages"].is_array(), where,
                  ": field \"messages\" is missing or not an array");
    // As transformers calls the template: tools and documents null unless given, the special tokens
    // the tokenizer has (an absent one stays undefined), and every other key of the line
    // (enable_thinking, ...) as a keyword argument.
    nlohmann::ordered_json context = line;
    for (const char* key : {"tools", "documents"})
      if (!context.contains(key)) context[key] = nullptr;
    if (!context.contains("add_generation_prompt")) context["add_generation_prompt"] = false;
    if (!context.contains("bos_token") && !file->bosToken.empty()) context["bos_token"] = file->bosToken;
    if (!context.contains("eos_token") && !file->eosToken.empty()) context["eos_token"] = file->eosToken;
    std::string text;
    try {
      text = chat.renderOrdered(context);
    } catch (const UserError& e) {
      out << dump(json{{"error", e.what()}}) << "\n";
      return;
    }
    emit(text, json{{"text", text}});
  });
  out.flush();
}

}  // namespace upcycle
