#include "data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "data/unicode_text.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------------------------------------
// Regexes: PCRE2 in UTF + UCP mode, JIT-compiled. The tokenizers library uses Oniguruma, whose
// \s is Unicode's White_Space (U+0085 yes, U+180E and U+FEFF no) and whose \w is Unicode's word
// class; PCRE2's differ at the edges, so both are rewritten into explicit classes first.

constexpr const char* kSpaceClass =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{"
    "202F}"
    "\\x{205F}\\x{3000}";
constexpr const char* kWordClass =
    "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";  // + Join_Control

std::string translatePattern(const std::string& p) {
  std::string out;
  bool inClass = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      const char* cls = (n == 's' || n == 'S')   ? kSpaceClass
                        : (n == 'w' || n == 'W') ? kWordClass
                                                 : nullptr;
      if (cls && !inClass) {
        out += (n == 's' || n == 'w') ? "[" : "[^";
        out += cls;
        out += "]";
      } else if (cls && inClass && (n == 's' || n == 'w')) {
        out += cls;
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[' && !inClass) {
      inClass = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && inClass) inClass = false;
    out += c;
  }
  return out;
}

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) : m_pattern(pattern) {
    const std::string translated = translatePattern(pattern);
    int err = 0;
    PCRE2_SIZE offset = 0;
    m_code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                           PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
    if (!m_code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw UserError(where + ": regex \"" + pattern + "\" does not compile (" +
                      reinterpret_cast<const char*>(msg) + " at offset " + std::to_string(offset) +
                      ")");
    }
    pcre2_jit_compile(m_code,
                      PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
  }
  ~Regex() { pcre2_code_free(m_code); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-overlapping match as [start, end) byte offsets, as Oniguruma's find_iter yields
  // them: after an empty match the search moves on by one character. `s` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> findAll(std::string_view s) const {
    struct PerThread {
      pcre2_match_data* data = nullptr;
      pcre2_match_context* ctx = nullptr;
      pcre2_jit_stack* stack = nullptr;
      PerThread() {
        data = pcre2_match_data_create(32, nullptr);
        ctx = pcre2_match_context_create(nullptr);
        stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
        pcre2_jit_stack_assign(ctx, nullptr, stack);
        // Bounded backtracking: a pathological pattern fails with an error instead of hanging.
        pcre2_set_match_limit(ctx, 50'000'000);
        pcre2_set_depth_limit(ctx, 1'000'000);
      }
      ~PerThread() {
        pcre2_match_data_free(data);
        pcre2_match_context_free(ctx);
        pcre2_jit_stack_free(stack);
      }
    };
    thread_local PerThread t;
    std::vector<std::pair<size_t, size_t>> out;
    size_t pos = 0;
    while (pos <= s.size()) {
      const int rc = pcre2_match(m_code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                 PCRE2_NO_UTF_CHECK, t.data, t.ctx);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw UserError("regex \"" + m_pattern + "\" failed on a text of " +
                        std::to_string(s.size()) + " bytes (" + reinterpret_cast<const char*>(msg) +
                        ")");
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(t.data);
      const size_t start = ov[0], end = ov[1];
      out.emplace_back(start, end);
      if (end > start) {
        pos = end;
      } else {
        if (end >= s.size()) break;
        size_t next = end;
        unicode::nextCodePoint(s, next);
        pos = next;
      }
    }
    return out;
  }

 private:
  std::string m_pattern;
  pcre2_code* m_code = nullptr;
};

// A pattern of the library: a literal string or a regex.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;

  std::vector<std::pair<size_t, size_t>> findAll(std::string_view s) const {
    if (regex) return regex->findAll(s);
    std::vector<std::pair<size_t, size_t>> out;
    if (literal.empty()) return out;
    for (size_t p = s.find(literal); p != std::string_view::npos;
         p = s.find(literal, p + literal.size()))
      out.emplace_back(p, p + literal.size());
    return out;
  }
  std::string replaceAll(std::string_view s, const std::string& content) const {
    std::string out;
    size_t prev = 0;
    for (auto [a, b] : findAll(s)) {
      out.append(s.substr(prev, a - prev));
      out += content;
      prev = b;
    }
    out.append(s.substr(prev));
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// JSON access with errors that name the file and the field.

struct Ctx {
  std::string source;
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw UserError(source + ": " + field + ": " + what);
  }
  const json& member(const json& j, const std::string& field, const char* key) const {
    if (!j.is_object() || !j.contains(key)) fail(field, std::string("missing \"") + key + "\"");
    return j[key];
  }
  std::string str(const json& j, const std::string& field, const char* key) const {
    const json& v = member(j, field, key);
    if (!v.is_string()) fail(field + "." + key, "is not a string");
    return v.get<std::string>();
  }
  std::string strOr(const json& j, const std::string& field, const char* key,
                    const std::string& dflt) const {
    if (!j.contains(key) || j[key].is_null()) return dflt;
    return str(j, field, key);
  }
  bool boolOr(const json& j, const std::string& field, const char* key, bool dflt) const {
    if (!j.contains(key) || j[key].is_null()) return dflt;
    if (!j[key].is_boolean()) fail(field + "." + key, "is not true or false");
    return j[key].get<bool>();
  }
  int64_t intOr(const json& j, const std::string& field, const char* key, int64_t dflt) const {
    if (!j.contains(key) || j[key].is_null()) return dflt;
    if (!j[key].is_number_integer()) fail(field + "." + key, "is not an integer");
    return j[key].get<int64_t>();
  }
  Pattern pattern(const json& j, const std::string& field) const {
    const json& p = member(j, field, "pattern");
    Pattern out;
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      out.literal = p["String"].get<std::string>();
    } else if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      out.regex = std::make_shared<Regex>(p["Regex"].get<std::string>(),
                                          source + ": " + field + ".pattern");
    } else {
      fail(field + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
    }
    return out;
  }
  std::string type(const json& j, const std::string& field) const {
    if (!j.is_object()) fail(field, "is not an object");
    return str(j, field, "type");
  }
  // Each element of the array j[key] (a Sequence's parts), with its field name "field.key[i]".
  template <typename Fn>
  void forEachPart(const json& j, const std::string& field, const char* key, Fn fn) const {
    const json& list = member(j, field, key);
    if (!list.is_array()) fail(field + "." + key, "is not an array");
    for (size_t i = 0; i < list.size(); ++i)
      fn(list[i], field + "." + key + "[" + std::to_string(i) + "]");
  }
};

// ---------------------------------------------------------------------------------------------
// Normalizers

struct Normalizer {
  enum class Kind {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Lowercase,
    StripAccents,
    Strip,
    Prepend,
    Replace,
    Sequence
  } kind;
  std::string text;  // Prepend: the prefix; Replace: the content
  Pattern pattern;
  bool left = false, right = false;
  std::vector<Normalizer> children;

  std::string apply(std::string s) const {
    switch (kind) {
      case Kind::Nfc:
        return unicode::normalize(s, unicode::Form::NFC);
      case Kind::Nfd:
        return unicode::normalize(s, unicode::Form::NFD);
      case Kind::Nfkc:
        return unicode::normalize(s, unicode::Form::NFKC);
      case Kind::Nfkd:
        return unicode::normalize(s, unicode::Form::NFKD);
      case Kind::Lowercase:
        return unicode::toLower(s);
      case Kind::StripAccents:
        return unicode::stripAccents(s);
      case Kind::Strip: {
        size_t a = 0, b = s.size();
        if (left) {
          while (a < b) {
            size_t i = a;
            if (!unicode::isWhitespace(unicode::nextCodePoint(s, i))) break;
            a = i;
          }
        }
        if (right) {
          while (b > a) {
            size_t start = b - 1;
            while (start > a && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
            size_t i = start;
            if (!unicode::isWhitespace(unicode::nextCodePoint(s, i))) break;
            b = start;
          }
        }
        return s.substr(a, b - a);
      }
      case Kind::Prepend:
        return s.empty() ? s : text + s;
      case Kind::Replace:
        return pattern.replaceAll(s, text);
      case Kind::Sequence:
        for (const auto& c : children) s = c.apply(std::move(s));
        return s;
    }
    return s;
  }
};

Normalizer parseNormalizer(const Ctx& c, const json& j, const std::string& field) {
  const std::string t = c.type(j, field);
  Normalizer n{};
  using K = Normalizer::Kind;
  if (t == "NFC")
    n.kind = K::Nfc;
  else if (t == "NFD")
    n.kind = K::Nfd;
  else if (t == "NFKC")
    n.kind = K::Nfkc;
  else if (t == "NFKD")
    n.kind = K::Nfkd;
  else if (t == "Lowercase")
    n.kind = K::Lowercase;
  else if (t == "StripAccents")
    n.kind = K::StripAccents;
  else if (t == "Strip") {
    n.kind = K::Strip;
    n.left = c.boolOr(j, field, "strip_left", true);
    n.right = c.boolOr(j, field, "strip_right", true);
  } else if (t == "Prepend") {
    n.kind = K::Prepend;
    n.text = c.str(j, field, "prepend");
  } else if (t == "Replace") {
    n.kind = K::Replace;
    n.pattern = c.pattern(j, field);
    n.text = c.str(j, field, "content");
  } else if (t == "Sequence") {
    n.kind = K::Sequence;
    c.forEachPart(j, field, "normalizers", [&](const json& part, const std::string& f) {
      n.children.push_back(parseNormalizer(c, part, f));
    });
  } else {
    c.fail(field + ".type",
           "\"" + t +
               "\" is not supported (NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, "
               "Strip, Prepend, Replace, Sequence)");
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers. A split is a piece of normalized text; `first` marks the piece that starts at
// the beginning of the original text (Metaspace's prepend_scheme "first").

struct Split {
  std::string text;
  bool first = false;
};

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// The library's NormalizedString::split: the matches and the gaps between them, then combined
// according to `behavior`; empty pieces are dropped.
void splitBy(const Split& in, const std::vector<std::pair<size_t, size_t>>& matches,
             Behavior behavior, bool invert, std::vector<Split>& out) {
  const std::string& s = in.text;
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;  // (offsets, is delimiter)
  size_t prev = 0;
  for (auto [a, b] : matches) {
    if (prev != a) parts.push_back({{prev, a}, false});
    parts.push_back({{a, b}, true});
    prev = b;
  }
  if (prev != s.size() || s.empty()) parts.push_back({{prev, s.size()}, false});
  if (invert)
    for (auto& p : parts) p.second = !p.second;
  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case Behavior::Isolated:
      for (auto& p : parts) pieces.push_back(p.first);
      break;
    case Behavior::Removed:
      for (auto& p : parts)
        if (!p.second) pieces.push_back(p.first);
      break;
    case Behavior::Contiguous: {
      bool prevMatch = false;
      for (auto& p : parts) {
        if (p.second == prevMatch && !pieces.empty())
          pieces.back().second = p.first.second;
        else
          pieces.push_back(p.first);
        prevMatch = p.second;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prevMatch = false;
      for (auto& p : parts) {
        if (p.second && !prevMatch && !pieces.empty())
          pieces.back().second = p.first.second;
        else
          pieces.push_back(p.first);
        prevMatch = p.second;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prevMatch = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->second && !prevMatch && !pieces.empty())
          pieces.back().first = it->first.first;
        else
          pieces.push_back(it->first);
        prevMatch = it->second;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
  }
  for (auto [a, b] : pieces)
    if (b > a) out.push_back({s.substr(a, b - a), in.first && a == 0});
}

// Matches of single characters selected by a predicate, each its own match (runs are not merged).
template <typename Pred>
std::vector<std::pair<size_t, size_t>> charMatches(const std::string& s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = unicode::nextCodePoint(s, i);
    if (pred(c)) out.emplace_back(start, i);
  }
  return out;
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
struct ByteTable {
  struct Utf8 {
    char bytes[2];  // every character here is below U+0800: one or two bytes
    unsigned char size;
  };
  Utf8 toChar[256];
  std::unordered_map<char32_t, unsigned char> toByte;
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      std::string s;
      unicode::appendUtf8(s, cp);
      toChar[b] = {{s[0], s.size() > 1 ? s[1] : '\0'}, static_cast<unsigned char>(s.size())};
      toByte[cp] = static_cast<unsigned char>(b);
    }
  }
  // The text with every byte replaced by its character.
  void map(std::string_view in, std::string& out) const {
    out.resize(2 * in.size());
    char* o = out.data();
    for (unsigned char b : in) {
      const Utf8& c = toChar[b];
      o[0] = c.bytes[0];
      o[1] = c.bytes[1];
      o += c.size;
    }
    out.resize(static_cast<size_t>(o - out.data()));
  }
};
const ByteTable& byteTable() {
  static const ByteTable t;
  return t;
}

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct PreTokenizer {
  enum class Kind {
    ByteLevel,
    Split,
    Metaspace,
    Digits,
    Whitespace,
    WhitespaceSplit,
    Punctuation,
    Sequence
  } kind;
  bool addPrefixSpace = false, useRegex = true, individualDigits = false, invert = false,
       split = true;
  std::string replacement;       // Metaspace
  std::string prepend;           // Metaspace: always | first | never
  Pattern pattern;               // Split
  std::shared_ptr<Regex> regex;  // ByteLevel (GPT-2) and Whitespace
  Behavior behavior = Behavior::Isolated;
  std::vector<PreTokenizer> children;

  void apply(std::vector<Split>& splits) const {
    std::vector<Split> out;
    out.reserve(splits.size() * 2);
    switch (kind) {
      case Kind::Sequence:
        for (const auto& c : children) c.apply(splits);
        return;
      case Kind::ByteLevel: {
        const ByteTable& bt = byteTable();
        for (auto& sp : splits) {
          if (addPrefixSpace && (sp.text.empty() || sp.text[0] != ' ')) sp.text.insert(0, " ");
          if (useRegex)
            splitBy(sp, regex->findAll(sp.text), Behavior::Isolated, false, out);
          else if (!sp.text.empty())
            out.push_back(std::move(sp));
        }
        std::string mapped;
        for (auto& sp : out) {
          bt.map(sp.text, mapped);
          sp.text.swap(mapped);  // the buffers circulate instead of one allocation per split
        }
        break;
      }
      case Kind::Split:
        for (const auto& sp : splits) splitBy(sp, pattern.findAll(sp.text), behavior, invert, out);
        break;
      case Kind::Metaspace:
        for (auto& sp : splits) {
          std::string t;
          t.reserve(sp.text.size() + replacement.size());
          for (char ch : sp.text) {
            if (ch == ' ')
              t += replacement;
            else
              t += ch;
          }
          const bool startsWith = t.compare(0, replacement.size(), replacement) == 0;
          if (!startsWith && (prepend == "always" || (prepend == "first" && sp.first)))
            t.insert(0, replacement);
          Split s{std::move(t), sp.first};
          if (split) {
            Pattern p;
            p.literal = replacement;
            splitBy(s, p.findAll(s.text), Behavior::MergedWithNext, false, out);
          } else if (!s.text.empty()) {
            out.push_back(std::move(s));
          }
        }
        break;
      case Kind::Digits:
        for (const auto& sp : splits)
          splitBy(sp, charMatches(sp.text, unicode::isNumeric),
                  individualDigits ? Behavior::Isolated : Behavior::Contiguous, false, out);
        break;
      case Kind::Whitespace:
        for (const auto& sp : splits)
          splitBy(sp, regex->findAll(sp.text), Behavior::Removed, true, out);
        break;
      case Kind::WhitespaceSplit:
        for (const auto& sp : splits)
          splitBy(sp, charMatches(sp.text, unicode::isWhitespace), Behavior::Removed, false, out);
        break;
      case Kind::Punctuation:
        for (const auto& sp : splits)
          splitBy(sp, charMatches(sp.text, unicode::isPunctuation), behavior, false, out);
        break;
    }
    splits = std::move(out);
  }
};

Behavior parseBehavior(const Ctx& c, const json& j, const std::string& field, Behavior dflt) {
  if (!j.contains("behavior")) return dflt;
  const std::string b = c.str(j, field, "behavior");
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  c.fail(field + ".behavior", "\"" + b +
                                  "\" is not one of Removed, Isolated, MergedWithPrevious, "
                                  "MergedWithNext, Contiguous");
}

PreTokenizer parsePreTokenizer(const Ctx& c, const json& j, const std::string& field) {
  const std::string t = c.type(j, field);
  PreTokenizer p{};
  using K = PreTokenizer::Kind;
  if (t == "ByteLevel") {
    p.kind = K::ByteLevel;
    p.addPrefixSpace = c.boolOr(j, field, "add_prefix_space", true);
    p.useRegex = c.boolOr(j, field, "use_regex", true);
    if (p.useRegex) p.regex = std::make_shared<Regex>(kGpt2Pattern, c.source + ": " + field);
  } else if (t == "Split") {
    p.kind = K::Split;
    p.pattern = c.pattern(j, field);
    p.behavior = parseBehavior(c, j, field, Behavior::Isolated);
    p.invert = c.boolOr(j, field, "invert", false);
  } else if (t == "Metaspace") {
    p.kind = K::Metaspace;
    p.replacement = c.strOr(j, field, "replacement", "\xE2\x96\x81");
    size_t i = 0;
    if (p.replacement.empty() ||
        (unicode::nextCodePoint(p.replacement, i), i != p.replacement.size()))
      c.fail(field + ".replacement", "must be exactly one character");
    if (j.contains("prepend_scheme")) {
      p.prepend = c.str(j, field, "prepend_scheme");
      if (p.prepend != "always" && p.prepend != "first" && p.prepend != "never")
        c.fail(field + ".prepend_scheme",
               "\"" + p.prepend + "\" is not one of always, first, never");
    } else {
      p.prepend = c.boolOr(j, field, "add_prefix_space", true) ? "always" : "never";
    }
    p.split = c.boolOr(j, field, "split", true);
  } else if (t == "Digits") {
    p.kind = K::Digits;
    p.individualDigits = c.boolOr(j, field, "individual_digits", false);
  } else if (t == "Whitespace") {
    p.kind = K::Whitespace;
    p.regex = std::make_shared<Regex>("\\w+|[^\\w\\s]+", c.source + ": " + field);
  } else if (t == "WhitespaceSplit") {
    p.kind = K::WhitespaceSplit;
  } else if (t == "Punctuation") {
    p.kind = K::Punctuation;
    p.behavior = parseBehavior(c, j, field, Behavior::Isolated);
  } else if (t == "Sequence") {
    p.kind = K::Sequence;
    c.forEachPart(j, field, "pretokenizers", [&](const json& part, const std::string& f) {
      p.children.push_back(parsePreTokenizer(c, part, f));
    });
  } else {
    c.fail(field + ".type",
           "\"" + t +
               "\" is not supported (ByteLevel, Split, Metaspace, Digits, Whitespace, "
               "WhitespaceSplit, Punctuation, Sequence)");
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Decoders: each maps the list of token strings to a new list; the result is their concatenation.

struct Decoder {
  enum class Kind { ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence } kind;
  std::string content;  // Strip: the character; Replace: the replacement; Metaspace: replacement
  Pattern pattern;
  int64_t start = 0, stop = 0;
  bool prependNever = false;
  std::vector<Decoder> children;

  void apply(std::vector<std::string>& tokens) const {
    switch (kind) {
      case Kind::Sequence:
        for (const auto& c : children) c.apply(tokens);
        return;
      case Kind::ByteLevel: {
        const auto& table = byteTable().toByte;
        std::string bytes;
        for (const auto& t : tokens) {
          std::string mine;
          bool ok = true;
          for (size_t i = 0; i < t.size() && ok;) {
            auto it = table.find(unicode::nextCodePoint(t, i));
            if (it == table.end())
              ok = false;
            else
              mine.push_back(static_cast<char>(it->second));
          }
          bytes += ok ? mine : t;
        }
        tokens = {unicode::fromUtf8Lossy(bytes)};
        return;
      }
      case Kind::ByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        size_t pendingCount = 0;
        auto flush = [&] {
          if (!pendingCount) return;
          if (unicode::isValidUtf8(pending))
            out.push_back(pending);
          else
            for (size_t k = 0; k < pendingCount; ++k) out.push_back("\xEF\xBF\xBD");
          pending.clear();
          pendingCount = 0;
        };
        for (auto& t : tokens) {
          unsigned int b = 0;
          const bool isByte = t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                              std::isxdigit(static_cast<unsigned char>(t[3])) &&
                              std::isxdigit(static_cast<unsigned char>(t[4])) &&
                              std::sscanf(t.c_str() + 3, "%2x", &b) == 1;
          if (isByte) {
            pending.push_back(static_cast<char>(b));
            ++pendingCount;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        return;
      }
      case Kind::Fuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens = {all};
        return;
      }
      case Kind::Strip:
        for (auto& t : tokens) {
          std::vector<std::pair<size_t, size_t>> chars;  // byte ranges of the characters
          for (size_t i = 0; i < t.size();) {
            const size_t s = i;
            unicode::nextCodePoint(t, i);
            chars.emplace_back(s, i);
          }
          auto is = [&](size_t k) {
            return t.compare(chars[k].first, chars[k].second - chars[k].first, content) == 0;
          };
          size_t a = 0, b = chars.size();
          for (int64_t k = 0; k < start && a < chars.size() && is(a); ++k) ++a;
          for (int64_t k = 0; k < stop && b > a && is(b - 1); ++k) --b;
          t = a >= b ? std::string()
                     : t.substr(chars[a].first, chars[b - 1].second - chars[a].first);
        }
        return;
      case Kind::Replace:
        for (auto& t : tokens) t = pattern.replaceAll(t, content);
        return;
      case Kind::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string t;
          const std::string& in = tokens[i];
          for (size_t p = 0; p < in.size();) {
            if (in.compare(p, content.size(), content) == 0) {
              // As the library does: the first token loses its replacement characters altogether
              // (the space the pre-tokenizer prepended), later ones turn them into spaces.
              if (i != 0 || prependNever) t += ' ';
              p += content.size();
            } else {
              t += in[p++];
            }
          }
          tokens[i] = std::move(t);
        }
        return;
    }
  }
};

Decoder parseDecoder(const Ctx& c, const json& j, const std::string& field) {
  const std::string t = c.type(j, field);
  Decoder d{};
  using K = Decoder::Kind;
  if (t == "ByteLevel")
    d.kind = K::ByteLevel;
  else if (t == "ByteFallback")
    d.kind = K::ByteFallback;
  else if (t == "Fuse")
    d.kind = K::Fuse;
  else if (t == "Strip") {
    d.kind = K::Strip;
    d.content = c.str(j, field, "content");
    d.start = c.intOr(j, field, "start", 0);
    d.stop = c.intOr(j, field, "stop", 0);
    if (d.start < 0 || d.stop < 0) c.fail(field, "start and stop must not be negative");
  } else if (t == "Replace") {
    d.kind = K::Replace;
    d.pattern = c.pattern(j, field);
    d.content = c.str(j, field, "content");
  } else if (t == "Metaspace") {
    d.kind = K::Metaspace;
    d.content = c.strOr(j, field, "replacement", "\xE2\x96\x81");
    if (d.content.empty()) c.fail(field + ".replacement", "must be exactly one character");
    if (j.contains("prepend_scheme"))
      d.prependNever = c.str(j, field, "prepend_scheme") == "never";
    else
      d.prependNever = !c.boolOr(j, field, "add_prefix_space", true);
  } else if (t == "Sequence") {
    d.kind = K::Sequence;
    c.forEachPart(j, field, "decoders", [&](const json& part, const std::string& f) {
      d.children.push_back(parseDecoder(c, part, f));
    });
  } else {
    c.fail(field + ".type",
           "\"" + t +
               "\" is not supported (ByteLevel, ByteFallback, Fuse, Strip, Replace, "
               "Metaspace, Sequence)");
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// Post-processors: only what they add around a single sequence matters here.

struct PostProcessor {
  std::vector<int64_t> before, after;  // ids around the sequence
};

void parsePostProcessor(const Ctx& c, const json& j, const std::string& field,
                        const std::function<std::optional<int64_t>(const std::string&)>& idOf,
                        PostProcessor& pp) {
  const std::string t = c.type(j, field);
  if (t == "ByteLevel") return;  // only trims offsets
  if (t == "Sequence") {
    c.forEachPart(j, field, "processors", [&](const json& part, const std::string& f) {
      parsePostProcessor(c, part, f, idOf, pp);
    });
    return;
  }
  if (t == "RobertaProcessing" || t == "BertProcessing") {
    auto pairId = [&](const char* key) {
      const json& v = c.member(j, field, key);
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
        c.fail(field + "." + key, "expected [token, id]");
      return v[1].get<int64_t>();
    };
    pp.before = {pairId("cls")};
    pp.after = {pairId("sep")};
    return;
  }
  if (t == "TemplateProcessing") {
    const json& single = c.member(j, field, "single");
    if (!single.is_array()) c.fail(field + ".single", "is not an array");
    const json specials = j.value("special_tokens", json::object());
    bool seenSequence = false;
    std::vector<int64_t> before, after;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string f = field + ".single[" + std::to_string(i) + "]";
      const json& item = single[i];
      if (item.contains("Sequence")) {
        if (seenSequence) c.fail(f, "the sequence appears twice");
        seenSequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string id = c.str(item["SpecialToken"], f + ".SpecialToken", "id");
        std::vector<int64_t> ids;
        if (specials.is_object() && specials.contains(id) && specials[id].contains("ids") &&
            specials[id]["ids"].is_array()) {
          for (const auto& v : specials[id]["ids"]) {
            if (!v.is_number_integer())
              c.fail(field + ".special_tokens." + id + ".ids", "holds a non-integer");
            ids.push_back(v.get<int64_t>());
          }
        } else if (auto tid = idOf(id)) {
          ids.push_back(*tid);
        } else {
          c.fail(f,
                 "special token \"" + id + "\" is neither in special_tokens nor in the vocabulary");
        }
        (seenSequence ? after : before)
            .insert((seenSequence ? after : before).end(), ids.begin(), ids.end());
      } else {
        c.fail(f, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    pp.before.insert(pp.before.end(), before.begin(), before.end());
    pp.after.insert(pp.after.end(), after.begin(), after.end());
    return;
  }
  c.fail(field + ".type",
         "\"" + t +
             "\" is not supported (TemplateProcessing, ByteLevel, RobertaProcessing, "
             "BertProcessing, Sequence)");
}

// ---------------------------------------------------------------------------------------------
// Added tokens, matched leftmost-longest with a byte trie (the library uses Aho-Corasick with
// the same match kind).

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool singleWord = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

class TokenTrie {
 public:
  void add(const std::string& s, int index) {
    if (s.empty()) return;
    int node = 0;
    for (unsigned char b : s) {
      auto& edges = m_nodes[node].next;
      auto it =
          std::find_if(edges.begin(), edges.end(), [&](const auto& e) { return e.first == b; });
      if (it == edges.end()) {
        m_nodes.push_back({});
        m_nodes[node].next.emplace_back(b, static_cast<int>(m_nodes.size() - 1));
        node = static_cast<int>(m_nodes.size() - 1);
      } else {
        node = it->second;
      }
    }
    m_nodes[node].token = index;
  }
  bool empty() const { return m_nodes.size() == 1; }
  // The longest token starting at s[pos]: (token index, end) or (-1, pos).
  std::pair<int, size_t> longestAt(std::string_view s, size_t pos) const {
    int node = 0, best = -1;
    size_t bestEnd = pos;
    for (size_t i = pos; i < s.size(); ++i) {
      const auto& edges = m_nodes[node].next;
      const unsigned char b = static_cast<unsigned char>(s[i]);
      auto it =
          std::find_if(edges.begin(), edges.end(), [&](const auto& e) { return e.first == b; });
      if (it == edges.end()) break;
      node = it->second;
      if (m_nodes[node].token >= 0) best = m_nodes[node].token, bestEnd = i + 1;
    }
    return {best, bestEnd};
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> next;
    int token = -1;
  };
  std::vector<Node> m_nodes{Node{}};
};

// ---------------------------------------------------------------------------------------------
// Storage for the vocabulary, merges and word cache. Encoding is mostly lookups of token text,
// merge pairs and cached words, and loading mostly inserts them: std::unordered_map keeps one
// heap node per entry (an allocation per insert, two dependent cache misses per lookup), so these
// keep their entries in one array, probed linearly and kept at most half full.

inline uint64_t mix64(
    uint64_t h) {  // MurmurHash3's finalizer: every input bit reaches every output bit
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  return h ^ (h >> 33);
}

inline uint64_t hashText(std::string_view s) {  // eight bytes per step; tokens are short
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  return mix64(h ^ tail);
}

inline size_t tableSizeFor(size_t entries) {  // a power of two, at least twice the entries
  size_t n = 16;
  while (n < 2 * entries) n *= 2;
  return n;
}

// Text -> V. Keys are views: their text must outlive the map (it lives in a TextArena).
template <typename V>
class TextMap {
 public:
  void reserve(size_t entries) {
    if (tableSizeFor(entries) > m_slots.size()) rehash(tableSizeFor(entries));
  }
  void set(std::string_view key, const V& value) {
    if (2 * (m_size + 1) > m_slots.size()) rehash(tableSizeFor(m_size + 1));
    const uint64_t h = hashText(key);
    for (size_t i = h & m_mask;; i = (i + 1) & m_mask) {
      Slot& s = m_slots[i];
      if (!s.data) {
        s = {h, key.data() ? key.data() : "", static_cast<uint32_t>(key.size()), value};
        ++m_size;
        return;
      }
      if (s.hash == h && same(s, key)) {
        s.value = value;
        return;
      }
    }
  }
  const V* find(std::string_view key) const {
    if (m_slots.empty()) return nullptr;
    const uint64_t h = hashText(key);
    for (size_t i = h & m_mask;; i = (i + 1) & m_mask) {
      const Slot& s = m_slots[i];
      if (!s.data) return nullptr;
      if (s.hash == h && same(s, key)) return &s.value;
    }
  }
  size_t size() const { return m_size; }
  template <typename F>
  void forEach(F&& f) const {
    for (const Slot& s : m_slots)
      if (s.data) f(std::string_view(s.data, s.size), s.value);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    const char* data = nullptr;  // null: empty slot
    uint32_t size = 0;
    V value{};
  };
  static bool same(const Slot& s, std::string_view key) {
    return s.size == key.size() && std::memcmp(s.data, key.data(), key.size()) == 0;
  }
  void rehash(size_t n) {
    std::vector<Slot> old = std::move(m_slots);
    m_slots.assign(n, Slot{});
    m_mask = n - 1;
    for (const Slot& s : old) {
      if (!s.data) continue;
      size_t i = s.hash & m_mask;
      while (m_slots[i].data) i = (i + 1) & m_mask;
      m_slots[i] = s;
    }
  }
  std::vector<Slot> m_slots;
  size_t m_mask = 0, m_size = 0;
};

// (left id, right id) -> (rank, merged id).
class MergeTable {
 public:
  struct Merge {
    int32_t rank, id;
  };
  void reserve(size_t entries) {
    m_slots.assign(tableSizeFor(entries), Slot{});
    m_mask = m_slots.size() - 1;
  }
  void set(int32_t a, int32_t b,
           Merge m) {  // a later merge of the same pair replaces an earlier one
    if (2 * (m_size + 1) > m_slots.size()) grow();
    const uint64_t k = key(a, b);
    size_t i = mix64(k) & m_mask;
    while (m_slots[i].key != kEmpty && m_slots[i].key != k) i = (i + 1) & m_mask;
    if (m_slots[i].key == kEmpty) ++m_size;
    m_slots[i] = {k, m};
  }
  const Merge* find(int32_t a, int32_t b) const {
    if (m_slots.empty()) return nullptr;
    const uint64_t k = key(a, b);
    for (size_t i = mix64(k) & m_mask;; i = (i + 1) & m_mask) {
      if (m_slots[i].key == k) return &m_slots[i].merge;
      if (m_slots[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;  // ids are below 2^31, so no pair has this key
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge{};
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void grow() {
    std::vector<Slot> old = std::move(m_slots);
    reserve(std::max<size_t>(8, old.size()));  // tableSizeFor doubles it
    m_size = 0;
    for (const Slot& s : old)
      if (s.key != kEmpty)
        set(static_cast<int32_t>(s.key >> 32), static_cast<int32_t>(s.key & 0xFFFFFFFFu), s.merge);
  }
  std::vector<Slot> m_slots;
  size_t m_mask = 0, m_size = 0;
};

// Many small strings in few allocations; views into it stay valid while it grows.
class TextArena {
 public:
  std::string_view store(std::string_view s) {
    if (s.empty()) return std::string_view("", 0);
    if (m_left < s.size()) {
      const size_t n = std::max(kChunk, s.size());
      m_chunks.push_back(std::make_unique<char[]>(n));
      m_next = m_chunks.back().get();
      m_left = n;
    }
    std::memcpy(m_next, s.data(), s.size());
    const std::string_view out(m_next, s.size());
    m_next += s.size();
    m_left -= s.size();
    return out;
  }

 private:
  static constexpr size_t kChunk = size_t{1} << 20;
  std::vector<std::unique_ptr<char[]>> m_chunks;
  char* m_next = nullptr;
  size_t m_left = 0;
};

// Words already encoded -> their ids. Each entry's text and ids lie side by side in one array and
// a table slot is 8 bytes (part of the hash and the entry's offset), so a hit costs two memory
// reads: a cache of 200,000 words is far larger than the CPU's caches, and every extra
// indirection (a node, a separate key string, a separate id vector) was a cache miss per word.
class WordCache {
 public:
  // Appends the ids of `word` to `out`; false when the word is not cached.
  bool find(std::string_view word, std::vector<int64_t>& out) const {
    if (m_slots.empty()) return false;
    const uint64_t h = hashText(word);
    for (size_t i = h & m_mask;; i = (i + 1) & m_mask) {
      const Slot& s = m_slots[i];
      if (s.at == 0) return false;
      if (s.tag != static_cast<uint32_t>(h >> 32)) continue;
      const uint32_t* e = &m_data[s.at - 1];
      const size_t len = e[0] >> 16, count = e[0] & 0xFFFF;
      if (len != word.size() || std::memcmp(e + 1, word.data(), len) != 0) continue;
      const uint32_t* ids = e + 1 + (len + 3) / 4;
      for (size_t k = 0; k < count; ++k) out.push_back(static_cast<int32_t>(ids[k]));
      return true;
    }
  }
  // `word` is at most 256 bytes, so that it and its ids fit the 16-bit fields.
  void add(std::string_view word, const std::vector<int32_t>& ids) {
    if (2 * (m_size + 1) > m_slots.size()) grow();
    const size_t at = m_data.size();
    m_data.push_back(static_cast<uint32_t>(word.size() << 16 | ids.size()));
    m_data.resize(m_data.size() + (word.size() + 3) / 4, 0);
    std::memcpy(&m_data[at + 1], word.data(), word.size());
    m_data.insert(m_data.end(), ids.begin(), ids.end());
    place(hashText(word), static_cast<uint32_t>(at + 1));
    ++m_size;
  }
  size_t size() const { return m_size; }

 private:
  struct Slot {
    uint32_t tag = 0;  // the hash's upper half
    uint32_t at = 0;   // 1 + the entry's offset in m_data; 0: empty
  };
  void place(uint64_t h, uint32_t at) {
    size_t i = h & m_mask;
    while (m_slots[i].at != 0) i = (i + 1) & m_mask;
    m_slots[i] = {static_cast<uint32_t>(h >> 32), at};
  }
  void grow() {
    const std::vector<Slot> old = std::move(m_slots);
    m_slots.assign(std::max<size_t>(1024, 2 * old.size()), Slot{});
    m_mask = m_slots.size() - 1;
    for (const Slot& s : old) {
      if (s.at == 0) continue;
      const uint32_t* e = &m_data[s.at - 1];
      place(hashText(std::string_view(reinterpret_cast<const char*>(e + 1), e[0] >> 16)), s.at);
    }
  }
  std::vector<Slot> m_slots;
  size_t m_mask = 0, m_size = 0;
  std::vector<uint32_t>
      m_data;  // per entry: (length << 16 | id count), the text padded to 4 bytes, the ids
};

// ---------------------------------------------------------------------------------------------
// Reading tokenizer.json. model.vocab and model.merges are nearly all of the file (Qwen3: 151k
// entries each; Gemma 3: 262k and 515k); as a DOM they cost a heap string per token, a tree node
// per vocabulary entry, and as much time again to free. So the parser streams those two into
// flat arrays and builds nlohmann's DOM for the rest, where they are left empty. Errors in them
// are kept (first one only) and reported where the DOM version reported them.

struct StreamedModel {
  struct Merge {
    enum class Kind {
      Joined,
      Pair,
      Bad
    } kind;  // Joined: "a b" in `a`; Bad: not a string or a pair
    std::string_view a, b;
  };
  TextArena vocabText;  // the tokenizer keeps this
  std::vector<std::pair<std::string_view, int64_t>> vocab;
  std::string vocabError;  // "model.vocab[\"x\"]: is not an integer id"
  TextArena mergeText;
  std::vector<Merge> merges;
};

class TokenizerJsonReader {
 public:
  using Dom = nlohmann::detail::json_sax_dom_parser<json>;
  TokenizerJsonReader(json& root, StreamedModel& out) : m_dom(root, true), m_out(out) {}

  bool null() {
    return scalar([&] { return m_dom.null(); });
  }
  bool boolean(bool v) {
    return scalar([&] { return m_dom.boolean(v); });
  }
  bool number_integer(json::number_integer_t v) {
    if (atVocabValue()) return vocabId(v);
    return scalar([&] { return m_dom.number_integer(v); });
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (atVocabValue())
      return vocabId(
          static_cast<int64_t>(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max())));
    return scalar([&] { return m_dom.number_unsigned(v); });
  }
  bool number_float(json::number_float_t v, const json::string_t& s) {
    return scalar([&] { return m_dom.number_float(v, s); });
  }
  bool binary(json::binary_t& v) {
    return scalar([&] { return m_dom.binary(v); });
  }
  bool string(json::string_t& v) {
    if (m_skip) return true;
    if (m_mode == Mode::Merges && m_depth == 3) {
      m_out.merges.push_back({StreamedModel::Merge::Kind::Joined, m_out.mergeText.store(v), {}});
      return true;
    }
    if (m_mode == Mode::Merges && m_depth == 4) {
      auto& m = m_out.merges.back();
      if (m.kind == StreamedModel::Merge::Kind::Pair && m.a.data() == nullptr)
        m.a = m_out.mergeText.store(v);
      else if (m.kind == StreamedModel::Merge::Kind::Pair && m.b.data() == nullptr)
        m.b = m_out.mergeText.store(v);
      else
        m.kind = StreamedModel::Merge::Kind::Bad;
      return true;
    }
    return scalar([&] { return m_dom.string(v); });
  }
  bool key(json::string_t& k) {
    if (m_skip) return true;
    if (m_mode == Mode::Vocab) {
      m_key = m_out.vocabText.store(k);
      return true;
    }
    if (m_depth == 1) m_rootKey = k;
    if (m_depth == 2) m_modelKey = k;
    return m_dom.key(k);
  }
  bool start_object(std::size_t n) {
    if (m_mode == Mode::None && m_depth == 2 && m_rootKey == "model" && m_modelKey == "vocab") {
      m_mode = Mode::Vocab;
      ++m_depth;
      return m_dom.start_object(0);  // an empty object in the DOM
    }
    if (m_mode != Mode::None) return nested();
    ++m_depth;
    return m_dom.start_object(n);
  }
  bool end_object() {
    if (m_skip) return --m_skip, true;
    if (m_mode == Mode::Vocab) m_mode = Mode::None;
    --m_depth;
    return m_dom.end_object();
  }
  bool start_array(std::size_t n) {
    if (m_mode == Mode::None && m_depth == 2 && m_rootKey == "model" && m_modelKey == "merges") {
      m_mode = Mode::Merges;
      ++m_depth;
      return m_dom.start_array(0);
    }
    if (m_mode == Mode::Merges && m_depth == 3 && !m_skip) {  // a merge written as [a, b]
      m_out.merges.push_back({StreamedModel::Merge::Kind::Pair, {}, {}});
      ++m_depth;
      return true;
    }
    if (m_mode != Mode::None) return nested();
    ++m_depth;
    return m_dom.start_array(n);
  }
  bool end_array() {
    if (m_skip) return --m_skip, true;
    if (m_mode == Mode::Merges && m_depth == 4) {
      auto& m = m_out.merges.back();
      if (m.b.data() == nullptr) m.kind = StreamedModel::Merge::Kind::Bad;
      --m_depth;
      return true;
    }
    if (m_mode == Mode::Merges) m_mode = Mode::None;
    --m_depth;
    return m_dom.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t pos, const std::string& token, const Exception& e) {
    return m_dom.parse_error(pos, token, e);
  }

 private:
  enum class Mode { None, Vocab, Merges };
  bool atVocabValue() const { return m_mode == Mode::Vocab && !m_skip; }
  bool vocabId(int64_t id) {
    m_out.vocab.emplace_back(m_key, id);
    return true;
  }
  // A value inside model.vocab or model.merges that does not belong there.
  void bad() {
    if (m_mode == Mode::Vocab && m_out.vocabError.empty())
      m_out.vocabError = "model.vocab[\"" + std::string(m_key) + "\"]: is not an integer id";
    if (m_mode == Mode::Merges) {
      if (m_depth == 3)
        m_out.merges.push_back({StreamedModel::Merge::Kind::Bad, {}, {}});
      else
        m_out.merges.back().kind = StreamedModel::Merge::Kind::Bad;
    }
  }
  template <typename F>
  bool scalar(F&& forward) {
    if (m_skip) return true;
    if (m_mode != Mode::None) return bad(), true;
    return forward();
  }
  bool nested() {  // an object or array inside a vocabulary value or a merge: skipped whole
    if (!m_skip) bad();
    ++m_skip;
    return true;
  }

  Dom m_dom;
  StreamedModel& m_out;
  Mode m_mode = Mode::None;
  int m_depth = 0;                    // open objects and arrays outside skipped values
  int m_skip = 0;                     // open objects and arrays inside a skipped value
  std::string m_rootKey, m_modelKey;  // the current key at depth 1 (the top level) and 2
  std::string_view m_key;             // the current vocabulary key
};

// ---------------------------------------------------------------------------------------------
// The BPE model.

// Code points below this have their single-character token in a table (256 KB for the Basic
// Multilingual Plane, which holds nearly all text and all of GPT-2's byte characters).
constexpr char32_t kCharTableSize = 0x10000;

struct MergeSymbol {  // a piece of the word being merged, in a doubly linked list
  int32_t id;
  int32_t prev, next;
  bool alive;
};

struct MergeCandidate {  // a possible merge of the symbol at `pos` with its right neighbour
  uint64_t order;        // rank << 32 | pos: lowest rank first, leftmost on ties, in one comparison
  int32_t newId;
  int32_t pos() const { return static_cast<int32_t>(order & 0xFFFFFFFFu); }
  // std::push_heap keeps the largest on top; the smallest order must come first.
  bool operator<(const MergeCandidate& o) const { return order > o.order; }
};

class HfTokenizer : public Tokenizer {
 public:
  HfTokenizer(const json& root, StreamedModel&& streamed, const std::string& source);
  std::string kind() const override { return "tokenizer.json (BPE)"; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::vector<int64_t> encodeWithSpecialTokens(const std::string& text) const override {
    std::vector<int64_t> out = m_post.before;
    auto mid = encode(text);
    out.insert(out.end(), mid.begin(), mid.end());
    out.insert(out.end(), m_post.after.begin(), m_post.after.end());
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids, bool skipSpecialTokens = true) const override;
  int64_t vocabSize() const override { return static_cast<int64_t>(m_idToToken.size()); }
  std::optional<int64_t> tokenId(const std::string& token) const override {
    if (auto it = m_addedByContent.find(token); it != m_addedByContent.end())
      return m_added[it->second].id;
    if (const int32_t* id = m_vocab.find(token)) return *id;
    return std::nullopt;
  }
  std::vector<std::string> specialTokenStrings() const override {
    std::vector<std::string> out;
    for (const auto& a : m_added)
      if (a.special) out.push_back(a.content);
    return out;
  }
  std::vector<int64_t> postProcessorPrefix() const { return m_post.before; }

 private:
  struct Piece {
    std::string text;
    int64_t addedId = -1;  // >= 0: an added token, emitted as is
    bool first = false;
  };
  void splitAdded(std::vector<Piece>&& in, const TokenTrie& trie, const std::vector<int>& tokenOf,
                  std::vector<Piece>& out) const;
  void bpeWord(std::string_view word, std::vector<int64_t>& out) const;
  void mergeWord(std::string_view word, std::vector<int32_t>& ids) const;

  std::string m_source;
  TextArena m_vocabText;              // the vocabulary's text; m_vocab's keys point into it
  std::deque<std::string> m_strings;  // the added tokens' text
  TextMap<int32_t> m_vocab;
  MergeTable m_merges;
  std::vector<std::string_view> m_idToToken;
  std::vector<bool> m_isSpecial;
  std::optional<int32_t> m_unk;
  std::string m_prefix, m_suffix;
  bool m_byteFallback = false, m_fuseUnk = false, m_ignoreMerges = false;
  // The id of each single-character token by code point (-1: none), when there is no subword
  // prefix or suffix: a word's characters are looked up here instead of hashed. Empty otherwise.
  std::vector<int32_t> m_charIds;

  std::vector<AddedToken> m_added;
  std::unordered_map<std::string, size_t> m_addedByContent;
  TokenTrie m_rawTrie, m_normTrie;
  std::vector<int> m_rawTokenOf, m_normTokenOf;  // trie index -> m_added index

  std::optional<Normalizer> m_normalizer;
  std::optional<PreTokenizer> m_preTokenizer;
  std::optional<Decoder> m_decoder;
  PostProcessor m_post;

  // Words seen before, as the library caches them. Bounded (the library keeps 10,000 words; this
  // 200,000, a few tens of MB at most); guarded for concurrent encoders.
  static constexpr size_t kCacheCapacity = 200'000, kCacheMaxWord = 256;
  mutable std::mutex m_cacheMutex;
  mutable WordCache m_cache;
};

HfTokenizer::HfTokenizer(const json& root, StreamedModel&& streamed, const std::string& source)
    : m_source(source), m_vocabText(std::move(streamed.vocabText)) {
  const Ctx c{source};
  if (!root.is_object()) c.fail("(top level)", "is not a JSON object");
  const json& model = c.member(root, "(top level)", "model");
  if (!model.is_object()) c.fail("model", "is not an object");
  if (model.contains("type") && !model["type"].is_string()) c.fail("model.type", "is not a string");
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE")
    c.fail("model.type",
           "\"" + type +
               "\" is not supported: only BPE tokenizers are (Unigram and WordPiece are "
               "not implemented)");
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0))
    c.fail("model.dropout", "BPE dropout is for training only and is not supported");

  if (root.contains("normalizer") && !root["normalizer"].is_null())
    m_normalizer = parseNormalizer(c, root["normalizer"], "normalizer");

  // Vocabulary (streamed: the DOM holds an empty object in its place).
  const json& vocab = c.member(model, "model", "vocab");
  if (!vocab.is_object()) c.fail("model.vocab", "is not an object of token -> id");
  if (!streamed.vocabError.empty()) throw UserError(source + ": " + streamed.vocabError);
  const json addedList = root.value("added_tokens", json::array());
  if (!addedList.is_array()) c.fail("added_tokens", "is not an array");
  // Ids must be dense enough that the id table stays small: a file claiming id 4e9 for a
  // three-token vocabulary is refused instead of allocating for it.
  const int64_t maxAllowed =
      2 * static_cast<int64_t>(streamed.vocab.size() + addedList.size()) + 1024;
  int64_t maxId = -1;
  auto checkId = [&](int64_t id, auto&& field) {
    if (id < 0 || id >= maxAllowed)
      c.fail(field(), "id " + std::to_string(id) + " is out of range (0.." +
                          std::to_string(maxAllowed - 1) + ")");
    maxId = std::max(maxId, id);
    return id;
  };
  m_vocab.reserve(streamed.vocab.size());
  for (const auto& [key, id] : streamed.vocab) {
    checkId(id, [&, key = key] { return "model.vocab[\"" + std::string(key) + "\"]"; });
    m_vocab.set(key, static_cast<int32_t>(id));
  }
  const int64_t vocabCount0 = static_cast<int64_t>(m_vocab.size());
  int64_t nextAdded = -1;
  for (size_t i = 0; i < addedList.size(); ++i) {
    const std::string f = "added_tokens[" + std::to_string(i) + "]";
    const json& a = addedList[i];
    AddedToken t;
    const json& idJson = c.member(a, f, "id");
    if (!idJson.is_number_integer()) c.fail(f + ".id", "is not an integer id");
    t.id = checkId(idJson.get<int64_t>(), [&] { return f + ".id"; });
    t.content = c.str(a, f, "content");
    if (t.content.empty()) c.fail(f + ".content", "is empty");
    t.singleWord = c.boolOr(a, f, "single_word", false);
    t.lstrip = c.boolOr(a, f, "lstrip", false);
    t.rstrip = c.boolOr(a, f, "rstrip", false);
    t.special = c.boolOr(a, f, "special", false);
    t.normalized = c.boolOr(a, f, "normalized", !t.special);
    // The library ignores the ids written here (it only warns when they differ): a token whose
    // text is in the model's vocabulary takes that id, any other the next id after the vocabulary
    // and the added tokens so far. Real files agree with this; edited ones may not.
    if (m_addedByContent.count(t.content)) continue;
    if (const int32_t* v = m_vocab.find(t.content)) {
      t.id = *v;
    } else {
      const int64_t vocabCount = static_cast<int64_t>(m_vocab.size());
      t.id = nextAdded < 0 ? vocabCount : nextAdded;
      maxId = std::max(maxId, t.id);
    }
    if (t.id >= vocabCount0) nextAdded = std::max(nextAdded, t.id + 1);
    m_addedByContent[t.content] = m_added.size();
    m_added.push_back(std::move(t));
  }
  m_idToToken.assign(static_cast<size_t>(maxId + 1), std::string_view());
  m_isSpecial.assign(static_cast<size_t>(maxId + 1), false);
  m_vocab.forEach([&](std::string_view s, int32_t id) { m_idToToken[id] = s; });
  for (auto& a : m_added) {
    // The library keeps a normalized token in its normalized form: that is what decoding shows.
    if (a.normalized && m_normalizer) a.content = m_normalizer->apply(a.content);
    m_strings.push_back(a.content);
    m_idToToken[a.id] = m_strings.back();
    m_isSpecial[a.id] = a.special;
  }

  m_prefix = c.strOr(model, "model", "continuing_subword_prefix", "");
  m_suffix = c.strOr(model, "model", "end_of_word_suffix", "");
  m_byteFallback = c.boolOr(model, "model", "byte_fallback", false);
  m_fuseUnk = c.boolOr(model, "model", "fuse_unk", false);
  m_ignoreMerges = c.boolOr(model, "model", "ignore_merges", false);
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    const std::string unk = c.str(model, "model", "unk_token");
    const int32_t* id = m_vocab.find(unk);
    if (!id) c.fail("model.unk_token", "\"" + unk + "\" is not in the vocabulary");
    m_unk = *id;
  }
  if (m_prefix.empty() && m_suffix.empty()) {
    m_charIds.assign(kCharTableSize, -1);
    m_vocab.forEach([&](std::string_view s, int32_t id) {
      size_t i = 0;
      const char32_t cp = s.empty() ? unicode::kInvalid : unicode::nextCodePoint(s, i);
      if (cp < kCharTableSize && i == s.size()) m_charIds[cp] = id;
    });
  }

  // Merges, ranked by position (streamed: the DOM holds an empty array in their place).
  if (model.contains("merges") && !model["merges"].is_array())
    c.fail("model.merges", "is not an array");
  m_merges.reserve(streamed.merges.size());
  std::string merged;
  for (size_t i = 0; i < streamed.merges.size(); ++i) {
    const StreamedModel::Merge& m = streamed.merges[i];
    auto field = [i] { return "model.merges[" + std::to_string(i) + "]"; };
    std::string_view a = m.a, b = m.b;
    if (m.kind == StreamedModel::Merge::Kind::Bad)
      c.fail(field(), "expected \"a b\" or [\"a\", \"b\"]");
    if (m.kind == StreamedModel::Merge::Kind::Joined) {
      const size_t sp = m.a.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp + 1 >= m.a.size())
        c.fail(field(), "\"" + std::string(m.a) + "\" is not two tokens separated by a space");
      a = m.a.substr(0, sp);
      b = m.a.substr(sp + 1);
    }
    const int32_t* ia = m_vocab.find(a);
    const int32_t* ib = m_vocab.find(b);
    merged.assign(a);
    merged.append(m_prefix.empty() || b.compare(0, m_prefix.size(), m_prefix) != 0
                      ? b
                      : b.substr(m_prefix.size()));
    const int32_t* im = m_vocab.find(merged);
    if (!ia || !ib || !im)
      c.fail(field(), "names a token that is not in the vocabulary (\"" +
                          std::string(!ia   ? a
                                      : !ib ? b
                                            : merged) +
                          "\")");
    m_merges.set(*ia, *ib, {static_cast<int32_t>(i), *im});
  }

  if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null())
    m_preTokenizer = parsePreTokenizer(c, root["pre_tokenizer"], "pre_tokenizer");
  if (root.contains("decoder") && !root["decoder"].is_null())
    m_decoder = parseDecoder(c, root["decoder"], "decoder");
  if (root.contains("post_processor") && !root["post_processor"].is_null())
    parsePostProcessor(
        c, root["post_processor"], "post_processor",
        [&](const std::string& t) { return tokenId(t); }, m_post);

  // Tries: non-normalized tokens match the raw text, normalized ones the normalized pieces.
  for (size_t i = 0; i < m_added.size(); ++i) {
    const AddedToken& a = m_added[i];
    if (a.normalized) {
      m_normTrie.add(a.content, static_cast<int>(m_normTokenOf.size()));
      m_normTokenOf.push_back(static_cast<int>(i));
    } else {
      m_rawTrie.add(a.content, static_cast<int>(m_rawTokenOf.size()));
      m_rawTokenOf.push_back(static_cast<int>(i));
    }
  }
}

bool endsWithWordChar(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t i = start;
  const char32_t c = unicode::nextCodePoint(s, i);
  return unicode::isAlphanumeric(c) || c == U'_';
}

bool startsWithWordChar(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  const char32_t c = unicode::nextCodePoint(s, i);
  return unicode::isAlphanumeric(c) || c == U'_';
}

void HfTokenizer::splitAdded(std::vector<Piece>&& in, const TokenTrie& trie,
                             const std::vector<int>& tokenOf, std::vector<Piece>& out) const {
  for (Piece& p : in) {
    if (p.addedId >= 0 || trie.empty()) {
      out.push_back(std::move(p));
      continue;
    }
    const std::string& s = p.text;
    size_t from = 0;  // start of the text not yet emitted
    size_t pos = 0;
    while (pos < s.size()) {
      auto [index, end] = trie.longestAt(s, pos);
      if (index < 0) {
        ++pos;
        continue;
      }
      const AddedToken& t = m_added[tokenOf[index]];
      size_t start = pos, stop = end;
      pos = end;  // the search resumes after this match even when it is rejected
      if (t.singleWord) {
        const bool startOk = start == 0 || !endsWithWordChar(std::string_view(s).substr(0, start));
        const bool stopOk =
            stop == s.size() || !startsWithWordChar(std::string_view(s).substr(stop));
        if (!startOk || !stopOk) continue;
      }
      if (t.lstrip) {
        size_t a = start;
        while (a > from) {
          size_t b = a - 1;
          while (b > from && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
          size_t k = b;
          if (!unicode::isWhitespace(unicode::nextCodePoint(s, k))) break;
          a = b;
        }
        start = a;
      }
      if (t.rstrip) {
        while (stop < s.size()) {
          size_t k = stop;
          if (!unicode::isWhitespace(unicode::nextCodePoint(s, k))) break;
          stop = k;
        }
        pos = stop;
      }
      if (start > from) out.push_back({s.substr(from, start - from), -1, p.first && from == 0});
      out.push_back({std::string(), t.id, false});
      from = stop;
    }
    if (from == 0 && !s.empty())
      out.push_back(std::move(p));  // no added token in it: the usual case
    else if (from < s.size())
      out.push_back({s.substr(from), -1, false});
  }
}

void HfTokenizer::mergeWord(std::string_view w, std::vector<int32_t>& ids) const {
  // Scratch space kept per thread: once grown, a word costs no allocation.
  thread_local std::vector<MergeSymbol> sym;
  thread_local std::vector<MergeCandidate> heap;
  sym.clear();
  heap.clear();
  auto push = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, n + 1, true});
  };
  std::optional<int32_t> pendingUnk;
  std::string s;
  for (size_t i = 0; i < w.size();) {
    const size_t start = i;
    const char32_t cp = unicode::nextCodePoint(w, i);
    const bool first = start == 0, last = i >= w.size();
    const std::string_view ch = w.substr(start, i - start);
    int32_t id = -1;
    s.clear();
    if (!m_charIds.empty()) {  // no prefix or suffix: the character alone
      if (cp < m_charIds.size())
        id = m_charIds[cp];
      else if (const int32_t* v = m_vocab.find(ch))
        id = *v;
      if (id < 0) s.assign(ch);
    } else {
      if (!first) s += m_prefix;
      s.append(ch);
      if (last) s += m_suffix;
      if (const int32_t* v = m_vocab.find(s)) id = *v;
    }
    if (id < 0 && m_byteFallback) {  // rare: a character the vocabulary lacks
      std::vector<int32_t> bytes;
      for (unsigned char b : s) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        const int32_t* bt = m_vocab.find(std::string_view(name));
        if (!bt) break;
        bytes.push_back(*bt);
      }
      if (bytes.size() == s.size()) {
        for (int32_t b : bytes) push(b);
        continue;
      }
    }
    if (id >= 0) {
      if (pendingUnk) push(*pendingUnk), pendingUnk.reset();
      push(id);
    } else if (m_unk) {
      if (pendingUnk && !m_fuseUnk) push(*pendingUnk);
      pendingUnk = *m_unk;
    }
  }
  if (pendingUnk) push(*pendingUnk);
  if (!sym.empty()) sym.back().next = -1;

  // Lowest rank first, leftmost on ties (a binary heap); stale entries are skipped when popped.
  auto consider = [&](int32_t pos, int32_t a, int32_t b) {
    if (const MergeTable::Merge* m = m_merges.find(a, b)) {
      heap.push_back({static_cast<uint64_t>(m->rank) << 32 | static_cast<uint32_t>(pos), m->id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i)
    consider(static_cast<int32_t>(i), sym[i].id, sym[i + 1].id);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const MergeCandidate top = heap.back();
    heap.pop_back();
    const int32_t pos = top.pos();
    MergeSymbol& cur = sym[pos];
    if (!cur.alive || cur.next < 0) continue;
    MergeSymbol& right = sym[cur.next];
    const MergeTable::Merge* m = m_merges.find(cur.id, right.id);
    if (!m || m->id != top.newId) continue;
    cur.id = top.newId;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) sym[cur.next].prev = pos;
    if (cur.prev >= 0) consider(cur.prev, sym[cur.prev].id, cur.id);
    if (cur.next >= 0) consider(pos, cur.id, sym[cur.next].id);
  }
  for (const MergeSymbol& x : sym)
    if (x.alive) ids.push_back(x.id);
}

void HfTokenizer::bpeWord(std::string_view word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (m_ignoreMerges) {
    if (const int32_t* id = m_vocab.find(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(m_cacheMutex);
    if (m_cache.find(word, out)) return;
  }
  thread_local std::vector<int32_t> ids;
  ids.clear();
  mergeWord(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(m_cacheMutex);
    // Another thread may have added the word meanwhile: look again (into a scratch vector).
    thread_local std::vector<int64_t> again;
    again.clear();
    if (m_cache.size() < kCacheCapacity && !m_cache.find(word, again)) m_cache.add(word, ids);
  }
}

std::vector<int64_t> HfTokenizer::encode(const std::string& input) const {
  // Text that is not valid UTF-8 is read the way Python hands it to the library: invalid bytes
  // become U+FFFD.
  // The text moves from stage to stage; it is copied once, here.
  std::vector<Piece> pieces, afterRaw, afterNorm;
  pieces.push_back({unicode::isValidUtf8(input) ? input : unicode::fromUtf8Lossy(input), -1, true});
  std::vector<int64_t> out;
  out.reserve(pieces[0].text.size() / 3 + 4);
  splitAdded(std::move(pieces), m_rawTrie, m_rawTokenOf, afterRaw);
  for (Piece& p : afterRaw)
    if (p.addedId < 0 && m_normalizer) p.text = m_normalizer->apply(std::move(p.text));
  splitAdded(std::move(afterRaw), m_normTrie, m_normTokenOf, afterNorm);
  std::vector<Split> splits;
  for (Piece& p : afterNorm) {
    if (p.addedId >= 0) {
      out.push_back(p.addedId);
      continue;
    }
    if (p.text.empty()) continue;
    splits.clear();
    splits.push_back({std::move(p.text), p.first});
    if (m_preTokenizer) m_preTokenizer->apply(splits);
    for (const Split& s : splits) bpeWord(s.text, out);
  }
  return out;
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skipSpecialTokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(m_idToToken.size())) continue;
    if (m_idToToken[id].data() == nullptr) continue;  // a hole in the id space
    if (skipSpecialTokens && m_isSpecial[id]) continue;
    tokens.emplace_back(m_idToToken[id]);
  }
  if (!m_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  m_decoder->apply(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> parseHfTokenizer(const std::string& text, const std::string& source) {
  json root;
  StreamedModel streamed;
  try {
    TokenizerJsonReader reader(root, streamed);
    json::sax_parse(text, &reader);
  } catch (const json::exception& e) {
    throw UserError(source + ": not valid JSON (" + e.what() + ")");
  }
  try {
    return std::make_unique<HfTokenizer>(root, std::move(streamed), source);
  } catch (const json::exception& e) {  // a field of a type no check foresaw: still this file's error
    throw UserError(source + ": a field has an unexpected type (" + e.what() + ")");
  }
}

std::unique_ptr<Tokenizer> loadHfTokenizer(const fs::path& file) {
  UPCYCLE_CHECK(fs::exists(file), "no such file: ", file.string());
  // One read of the known size: readTextFile's stream copy took 0.06-0.1 s for Qwen3's 11 MB here,
  // this 0.02 s.
  std::string text;
  {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(file.c_str(), "rb"), &std::fclose);
    UPCYCLE_CHECK(f != nullptr, "cannot open ", file.string());
    text.resize(static_cast<size_t>(fs::file_size(file)));
    text.resize(std::fread(text.data(), 1, text.size(), f.get()));
  }
  return parseHfTokenizer(text, file.string());
}

}  // namespace upcycle
