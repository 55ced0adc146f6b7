#include "data/instruction_data.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/tokenizer.h"

namespace upcycle {

using nlohmann::json;

PromptTemplate PromptTemplate::byName(const std::string& name) {
  if (name == "alpaca")
    return {name,
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
            "{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
            "Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"};
  if (name == "compact") return {name, "Q: {instruction} {input}\nA: ", "Q: {instruction}\nA: "};
  if (name == "raw") return {name, "{instruction}\n{input}", "{instruction}"};
  throw UserError("prompt template \"" + name + "\" is not one of alpaca, compact, raw");
}

std::string PromptTemplate::render(const std::string& instruction, const std::string& input) const {
  std::string out = input.empty() ? withoutInput : withInput;
  auto replace = [&](const std::string& key, const std::string& value) {
    for (size_t pos = out.find(key); pos != std::string::npos; pos = out.find(key, pos + value.size()))
      out.replace(pos, key.size(), value);
  };
  replace("{instruction}", instruction);
  replace("{input}", input);
  return out;
}

namespace {

std::string stringField(const json& j, const char* key, const std::string& where, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    UPCYCLE_CHECK(!required, where, ": missing field \"", key, "\"");
    return "";
  }
  UPCYCLE_CHECK(j[key].is_string(), where, ": field \"", key, "\" is not a string");
  return j[key].get<std::string>();
}

// ShareGPT and messages: system text goes before the next user turn; each user turn is closed by
// the assistant turn that follows it.
std::vector<Turn> conversationTurns(const json& list, const char* roleKey, const char* textKey,
                                    const std::string& where, std::vector<Message>& messages) {
  UPCYCLE_CHECK(list.is_array(), where, ": conversation is not an array");
  std::vector<Turn> turns;
  std::string system, pendingUser;
  bool haveUser = false;
  for (const json& m : list) {
    const std::string role = stringField(m, roleKey, where, true);
    const std::string text = stringField(m, textKey, where, true);
    if (role == "system" || role == "human" || role == "user" || role == "gpt" || role == "assistant")
      messages.push_back({role == "human" ? "user" : role == "gpt" ? "assistant" : role, text});
    if (role == "system") {
      system += text + "\n";
    } else if (role == "human" || role == "user") {
      UPCYCLE_CHECK(!haveUser, where, ": two user turns in a row");
      pendingUser = system + text;
      system.clear();
      haveUser = true;
    } else if (role == "gpt" || role == "assistant") {
      UPCYCLE_CHECK(haveUser, where, ": an assistant turn without a user turn before it");
      turns.push_back({pendingUser, "", text});
      haveUser = false;
    } else {
      throw UserError(where + ": unknown role \"" + role + "\"");
    }
  }
  UPCYCLE_CHECK(!turns.empty(), where, ": conversation has no user/assistant pair");
  return turns;
}

Example fromJson(const json& j, const std::string& where, int64_t line) {
  UPCYCLE_CHECK(j.is_object(), where, ": record is not a JSON object");
  Example e;
  e.line = line;
  for (const char* key : {"domain", "category"})
    if (j.contains(key)) {
      e.domain = stringField(j, key, where, true);
      break;
    }
  if (j.contains("input_ids")) {
    e.kind = Example::Kind::Tokens;
    e.tokens = tokenRecordFromJson(&j, where, line);
  } else if (j.contains("conversations")) {
    e.turns = conversationTurns(j["conversations"], "from", "value", where, e.messages);
  } else if (j.contains("messages")) {
    e.turns = conversationTurns(j["messages"], "role", "content", where, e.messages);
  } else if (j.contains("instruction")) {
    e.turns.push_back({stringField(j, "instruction", where, true), stringField(j, "input", where, false),
                       stringField(j, "output", where, true)});
    const Turn& t = e.turns.back();
    e.messages = {{"user", t.input.empty() ? t.instruction : t.instruction + "\n\n" + t.input},
                  {"assistant", t.response}};
  } else if (j.contains("text")) {
    e.kind = Example::Kind::Text;
    e.text = stringField(j, "text", where, true);
  } else {
    throw UserError(where + ": unknown record kind (expected instruction/output, conversations, messages, "
                    "text or input_ids)");
  }
  e.tokens.domain = e.domain;
  e.tokens.line = line;
  return e;
}

}  // namespace

std::vector<Example> readExamples(const std::filesystem::path& path) {
  std::vector<Example> out;
  forEachJsonRecord(path, [&](const void* j, const std::string& where, int64_t line) {
    out.push_back(fromJson(*static_cast<const json*>(j), where, line));
  });
  return out;
}

std::shared_ptr<const ChatFormat> ChatFormat::fromFolder(const std::filesystem::path& folder) {
  auto file = findChatTemplate(folder);
  if (!file) return nullptr;
  auto f = std::make_shared<ChatFormat>();
  f->tmpl = std::make_shared<const ChatTemplate>(file->text, file->source);
  f->bosToken = file->bosToken;
  f->eosToken = file->eosToken;
  return f;
}

std::string ChatFormat::render(const std::vector<Message>& messages, bool addGenerationPrompt) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Message& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  // As transformers calls the template: tools and documents null, then only the special tokens
  // the tokenizer has (Qwen has no BOS: "bos_token" must stay undefined, not "").
  nlohmann::ordered_json ctx = {{"messages", list},
                                {"tools", nullptr},
                                {"documents", nullptr},
                                {"add_generation_prompt", addGenerationPrompt}};
  if (!bosToken.empty()) ctx["bos_token"] = bosToken;
  if (!eosToken.empty()) ctx["eos_token"] = eosToken;
  return tmpl->renderOrdered(ctx);
}

InstructionFormat resolveInstructionFormat(const std::filesystem::path& modelDir, const std::string& requested) {
  InstructionFormat f;
  if (requested.empty() || requested == "chat") {
    f.chat = ChatFormat::fromFolder(modelDir);
    UPCYCLE_CHECK(f.chat || requested.empty(), modelDir.string(),
                  ": template \"chat\" asks for the model's chat template, but it has none "
                  "(tokenizer_config.json has no \"chat_template\" and there is no chat_template.jinja)");
    if (f.chat) {
      f.name = "chat";
      return f;
    }
  }
  f.name = !requested.empty() ? requested : storedPromptTemplate(modelDir).value_or("alpaca");
  f.promptTemplate = PromptTemplate::byName(f.name);
  return f;
}

namespace {

// Cuts a conversation rendered by its chat template into (text, trained) segments: each assistant
// message's content, with the special token that closes it, is trained; the rest is prompt.
// Contents are found in order, each searched from where the text rendered for the prompt before it
// (add_generation_prompt=True) stops agreeing with the whole conversation, so that a user turn
// quoting the answer is not mistaken for it.
std::vector<std::pair<std::string, bool>> chatSegments(const ChatFormat& chat, const std::vector<Message>& messages,
                                                       const Tokenizer& tok, const std::string& where) {
  const std::string full = chat.render(messages, false);
  const std::vector<std::string> closers = tok.specialTokenStrings();
  std::vector<std::pair<std::string, bool>> out;
  size_t cursor = 0;  // end of the text already cut
  for (size_t k = 0; k < messages.size(); ++k) {
    if (messages[k].role != "assistant") continue;
    const std::vector<Message> before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(k));
    const std::string prompt = chat.render(before, true);
    size_t agree = 0;
    while (agree < prompt.size() && agree < full.size() && prompt[agree] == full[agree]) ++agree;
    std::string content = messages[k].content;
    size_t at = full.find(content, std::max(cursor, agree));
    if (at == std::string::npos) {  // templates that trim the content
      const size_t a = content.find_first_not_of(" \t\r\n"), b = content.find_last_not_of(" \t\r\n");
      content = a == std::string::npos ? std::string() : content.substr(a, b - a + 1);
      at = content.empty() ? std::string::npos : full.find(content, std::max(cursor, agree));
    }
    UPCYCLE_CHECK(at != std::string::npos, where, ": the chat template does not write assistant message ", k + 1,
                  " verbatim, so its tokens cannot be told apart for the loss");
    size_t end = at + content.size();
    for (const std::string& c : closers)
      if (!c.empty() && full.compare(end, c.size(), c) == 0) {
        end += c.size();
        break;
      }
    out.emplace_back(full.substr(cursor, at - cursor), false);
    out.emplace_back(full.substr(at, end - at), true);
    cursor = end;
  }
  if (cursor < full.size()) out.emplace_back(full.substr(cursor), false);
  return out;
}

}  // namespace

std::vector<TokenRecord> tokenizeExamples(const std::vector<Example>& examples, const Tokenizer& tok,
                                          const TokenizeOptions& o, int64_t* dropped) {
  std::vector<TokenRecord> out;
  int64_t lost = 0;
  for (const Example& e : examples) {
    TokenRecord r;
    r.domain = e.domain;
    r.line = e.line;
    auto push = [&](const std::vector<int64_t>& ids, bool train) {
      for (int64_t id : ids) {
        r.inputIds.push_back(id);
        r.labels.push_back(train ? id : -100);
      }
    };
    if (e.kind == Example::Kind::Tokens) {
      r.inputIds = e.tokens.inputIds;
      r.labels = e.tokens.labels.empty() ? e.tokens.inputIds : e.tokens.labels;
    } else {
      if (o.addBos && tok.bos) push({*tok.bos}, false);
      if (e.kind == Example::Kind::Text) {
        push(tok.encode(e.text), true);
        if (o.addEos && tok.eos) push({*tok.eos}, true);
      } else if (o.chat) {
        r.inputIds.clear();  // the template writes BOS itself (add_special_tokens=False)
        r.labels.clear();
        const auto segments = chatSegments(*o.chat, e.messages, tok, "record at line " + std::to_string(e.line));
        for (const auto& [text, trained] : segments) {
          if (trained) r.promptLength = static_cast<int64_t>(r.inputIds.size());
          push(tok.encode(text), trained || o.trainOnPrompt);
        }
        r.answer = e.turns.back().response;
      } else {
        for (const Turn& t : e.turns) {
          push(tok.encode(o.promptTemplate.render(t.instruction, t.input)), o.trainOnPrompt);
          r.promptLength = static_cast<int64_t>(r.inputIds.size());
          push(tok.encode(t.response), true);
          if (o.addEos && tok.eos) push({*tok.eos}, true);
        }
        r.answer = e.turns.back().response;
      }
    }
    if (o.maxLength > 0 && static_cast<int64_t>(r.inputIds.size()) > o.maxLength) {
      r.inputIds.resize(o.maxLength);
      r.labels.resize(o.maxLength);
      if (r.promptLength >= o.maxLength) r.promptLength = 0;  // no room left to answer in
    }
    bool learnable = false;
    for (size_t t = 1; t < r.labels.size(); ++t) learnable |= r.labels[t] != -100;
    if (!learnable || r.inputIds.size() < 2) {
      ++lost;
      continue;
    }
    out.push_back(std::move(r));
  }
  if (dropped) *dropped = lost;
  UPCYCLE_CHECK(!out.empty(), "no record has a token to learn after tokenization (max_length ", o.maxLength, ")");
  return out;
}

std::vector<TokenRecord> packRecords(const std::vector<TokenRecord>& records, int64_t blockSize) {
  UPCYCLE_CHECK(blockSize >= 2, "pack block size must be at least 2, got ", blockSize);
  std::vector<TokenRecord> out;
  TokenRecord cur;
  for (const TokenRecord& r : records) {
    const auto& lab = r.labels.empty() ? r.inputIds : r.labels;
    for (size_t i = 0; i < r.inputIds.size(); ++i) {
      cur.inputIds.push_back(r.inputIds[i]);
      cur.labels.push_back(lab[i]);
      if (static_cast<int64_t>(cur.inputIds.size()) == blockSize) {
        cur.line = static_cast<int64_t>(out.size()) + 1;
        out.push_back(std::move(cur));
        cur = TokenRecord{};
      }
    }
  }
  UPCYCLE_CHECK(!out.empty(), "the data holds fewer tokens than one pack block (", blockSize, ")");
  return out;
}

std::pair<std::vector<TokenRecord>, std::vector<TokenRecord>> splitRecords(
    const std::vector<TokenRecord>& records, double valFraction, uint64_t seed) {
  UPCYCLE_CHECK(valFraction >= 0 && valFraction < 1, "validation fraction must be in [0, 1), got ", valFraction);
  const size_t n = records.size();
  size_t nVal = static_cast<size_t>(std::llround(double(n) * valFraction));
  if (valFraction > 0 && n > 1) nVal = std::max<size_t>(1, std::min(nVal, n - 1));
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  std::vector<bool> isVal(n, false);
  for (size_t i = 0; i < nVal; ++i) isVal[order[i]] = true;
  std::pair<std::vector<TokenRecord>, std::vector<TokenRecord>> out;
  for (size_t i = 0; i < n; ++i) (isVal[i] ? out.second : out.first).push_back(records[i]);
  return out;
}

}  // namespace upcycle
