#pragma once
// Hugging Face chat templates: a small Jinja2 interpreter, torch-free, that renders a conversation
// the way transformers' apply_chat_template(..., tokenize=False) does, byte for byte.
//
// transformers renders with jinja2's ImmutableSandboxedEnvironment(trim_blocks=True,
// lstrip_blocks=True), the loopcontrols extension ({% break %}, {% continue %}), its own
// {% generation %} tag, the default (lenient) Undefined, a tojson filter that is Python's
// json.dumps(x, ensure_ascii=False, indent=, separators=, sort_keys=), and the globals
// raise_exception(msg) and strftime_now(fmt). This file reproduces that subset; what it does not
// reproduce (macros with varargs, {% call %}, {% include %}, printf-style '%' on strings, integers
// beyond 64 bits, case mapping of scripts it has no tables for, ...) is refused with a UserError
// naming the construct and the line rather than rendered differently. The few corner cases that
// still differ are listed at the top of chat_template.cpp.
//
// Values follow Python: `{{ true }}` prints True, none prints None, an undefined name prints
// nothing, lists print as Python reprs. Strings are UTF-8 and indexed by code point.
//
// Key order: Python dicts keep insertion order, and templates print tools and arguments with
// tojson, so the order of keys in `context` matters. nlohmann::json sorts keys alphabetically when
// it parses; use renderOrdered() with nlohmann::ordered_json to keep a file's order (the
// nlohmann::json overload renders with the alphabetical order it was given).
//
// The context apply_chat_template builds: "messages", "tools" (null when there are none),
// "documents" (null), "add_generation_prompt", the tokenizer's special tokens that are set
// (bos_token, eos_token, pad_token, ... as strings; an unset one is left out, not passed as ""),
// then the caller's extra arguments (enable_thinking, ...). Templates test `is defined` and
// `is none`, so a missing key and a null one render differently.
//
// Thread-safety: a ChatTemplate is immutable after construction; render() is const and may run
// on several threads at once.
#include <cstddef>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace upcycle {

// One render with the byte ranges [begin, end) of the output that {% generation %} blocks produced
// (transformers' return_assistant_tokens_mask). Blocks rendered inside a {% set %} block, a macro
// or a {% filter %} block are not recorded: their text is not written to the output directly.
struct ChatRender {
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> generationSpans;
};

// A parsed chat template (Jinja2 subset).
class ChatTemplate {
 public:
  // Parses `text`; throws UserError naming `source` (e.g. "DIR/tokenizer_config.json:
  // chat_template"), the line and the construct, for syntax errors or anything unsupported.
  ChatTemplate(const std::string& text, std::string source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Renders with `context`, a JSON object (messages, add_generation_prompt, bos_token, eos_token,
  // enable_thinking, tools, ... any keys). Errors (raise_exception("msg") included) throw a
  // UserError whose message holds the source, the line and the message.
  std::string render(const nlohmann::json& context) const;
  // The same, keeping the key order of `context` (see the file comment).
  std::string renderOrdered(const nlohmann::ordered_json& context) const;
  // renderOrdered() plus the ranges written by {% generation %} blocks.
  ChatRender renderWithSpans(const nlohmann::ordered_json& context) const;

  const std::string& source() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

struct ChatTemplateFile {
  std::string text, source, bosToken, eosToken;
};

// A checkpoint folder's chat template: `chat_template.jinja` if present, else
// tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"} from which
// "default" is taken). bos_token / eos_token come from tokenizer_config.json (a string or an
// {"content": ...} object; empty when absent or null). nullopt when the folder has no template.
// Malformed JSON or fields throw UserError naming the file and the field.
std::optional<ChatTemplateFile> findChatTemplate(const std::filesystem::path& folder);

}  // namespace upcycle
