// `upcycle bench tokenize`: a model folder's tokenizer encoding a text file line by line, and the
// generated corpus it uses when no file is given. Torch-free (part of upcycle_formats).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "api/bench.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "data/unicode_text.h"

namespace upcycle {

namespace {

// splitmix64: the corpus must be the same bytes on every platform and standard library, which
// std::uniform_int_distribution does not promise.
class Rng {
 public:
  explicit Rng(uint64_t seed) : m_state(seed) {}
  uint64_t next() {
    uint64_t z = (m_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
  template <typename T, size_t N>
  const T& pick(const T (&items)[N]) { return items[below(N)]; }

 private:
  uint64_t m_state;
};

constexpr const char* kCommonWords[] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they",
    "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when",
    "will", "would", "who", "so", "no", "model", "experts", "training", "tokens", "layer", "router",
    "weights", "between", "through", "however", "because", "language", "without", "upcycling", "dense",
    "sparse", "merging", "checkpoint", "learning", "rate", "schedule", "evaluation", "benchmark", "dataset"};
constexpr const char* kSyllables[] = {
    "ka", "ri", "mo", "ten", "sha", "lu", "ver", "qua", "dis", "pro", "ble", "tion", "ing", "ment", "st",
    "tr", "ex", "com", "pre", "un", "re", "ly", "ous", "al", "ic", "ar", "or", "en", "est", "ph", "ght",
    "zy", "xo", "kw", "ae", "oo", "ei", "th", "ck", "mb"};
constexpr const char* kContractions[] = {"don't", "it's", "we'll", "they're", "I've", "she'd", "can't", "I'm"};
constexpr const char* kPunct[] = {".", ",", ";", ":", "!", "?", " -", " (", ")", "\"", "'", "...", " --"};
constexpr const char* kCodeKeywords[] = {
    "if", "for", "while", "return", "const", "auto", "int64_t", "std::vector<float>", "def", "self", "None",
    "import", "torch", "nn.Linear", "lambda", "struct", "template", "static_cast<int>", "nullptr", "true"};
constexpr const char* kCodeOps[] = {" = ", " == ", " += ", " -> ", "::", ".", ", ", "(", ")", "[", "]", " { ",
                                    " }", "; ", " && ", " || ", " << ", " * ", " / ", "->", ": ", "#"};
constexpr const char* kLatinExtra[] = {"é", "è", "ü", "ö", "ä", "ß", "ñ", "ç", "ø", "å", "œ", "ł", "ž", "ğ", "ı"};
constexpr const char* kEmoji[] = {
    "😀", "😂", "🤗", "🚀", "🔥", "👍", "🎉", "💡", "🐍", "🦀", "❤️", "✨", "👍🏽", "👨‍👩‍👧", "🇫🇷", "🏳️‍🌈", "☕", "⚡"};
constexpr const char* kSpaces[] = {" ", "  ", "    ", "\t", "\t\t", "        ", " \t ", "\xC2\xA0", "\xE3\x80\x80"};

void appendCp(std::string& s, char32_t cp) { unicode::appendUtf8(s, cp); }

// A word from the long tail: syllables, so that most are rare but still merge into known pieces.
std::string rareWord(Rng& r) {
  std::string w;
  const size_t n = 2 + r.below(4);
  for (size_t i = 0; i < n; ++i) w += r.pick(kSyllables);
  return w;
}

std::string proseWord(Rng& r) {
  const size_t k = r.below(100);
  if (k < 62) {
    // Zipf-like: low indices far more often.
    const size_t n = sizeof kCommonWords / sizeof *kCommonWords;
    return kCommonWords[std::min(r.below(n), r.below(n))];
  }
  if (k < 67) return r.pick(kContractions);
  if (k < 70) return std::to_string(r.below(k < 69 ? 100 : 100000));
  std::string w = rareWord(r);
  if (k < 74) w[0] = static_cast<char>(w[0] - 'a' + 'A');
  if (k == 74) std::transform(w.begin(), w.end(), w.begin(), [](char c) { return static_cast<char>(c - 'a' + 'A'); });
  return w;
}

void prose(Rng& r, std::string& line, size_t words) {
  for (size_t i = 0; i < words; ++i) {
    std::string w = proseWord(r);
    if (i == 0 && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 'a' + 'A');
    if (i) line += ' ';
    line += w;
    if (r.chance(12)) line += r.pick(kPunct);
  }
  line += '.';
}

void code(Rng& r, std::string& line) {
  line.append(4 * r.below(5), ' ');
  const size_t n = 3 + r.below(9);
  for (size_t i = 0; i < n; ++i) {
    const size_t k = r.below(10);
    if (k < 3) line += r.pick(kCodeKeywords);
    else if (k < 5) line += rareWord(r) + "_" + rareWord(r);          // snake_case
    else if (k < 6) line += "m" + rareWord(r) + "Count";              // camelCase
    else if (k < 7) line += std::to_string(r.below(4096));
    else if (k < 8) line += "\"" + rareWord(r) + " %d\\n\"";
    else line += r.pick(kCodeOps);
  }
  if (r.chance(30)) line += "  // " + rareWord(r) + " " + rareWord(r);
}

void digits(Rng& r, std::string& line) {
  const size_t n = 3 + r.below(10);
  for (size_t i = 0; i < n; ++i) {
    if (i) line += r.chance(50) ? " " : ", ";
    switch (r.below(6)) {
      case 0: line += std::to_string(r.next() % 1000000000000ull); break;               // long runs
      case 1: line += std::to_string(r.below(10000)) + "." + std::to_string(r.below(1000)); break;
      case 2: line += "20" + std::to_string(10 + r.below(20)) + "-0" + std::to_string(1 + r.below(9)) + "-1" +
                      std::to_string(r.below(10)); break;
      case 3: line += "+1 (" + std::to_string(200 + r.below(800)) + ") 555-" + std::to_string(1000 + r.below(9000)); break;
      case 4: line += std::to_string(r.below(100)) + "%"; break;
      default: {
        char hex[24];
        std::snprintf(hex, sizeof hex, "0x%08llx", static_cast<unsigned long long>(r.next() & 0xFFFFFFFFull));
        line += hex;
      }
    }
  }
}

void cjk(Rng& r, std::string& line) {
  const size_t n = 10 + r.below(60);
  const size_t script = r.below(4);
  for (size_t i = 0; i < n; ++i) {
    if (script == 0 || (script == 1 && r.chance(50))) {
      // Common Han characters sit low in the block; draw most from its first 3000.
      appendCp(line, 0x4E00 + static_cast<char32_t>(r.chance(80) ? r.below(3000) : r.below(20000)));
    } else if (script == 1) {
      appendCp(line, 0x3041 + static_cast<char32_t>(r.below(0x56)));  // hiragana
    } else if (script == 2) {
      appendCp(line, 0xAC00 + static_cast<char32_t>(r.below(2000)));  // hangul syllables
      if (r.chance(30)) line += ' ';
    } else {
      appendCp(line, 0x30A1 + static_cast<char32_t>(r.below(0x59)));  // katakana
    }
    if (r.chance(8)) line += r.chance(50) ? "\xEF\xBC\x8C" : "\xE3\x80\x82";  // ， 。
  }
}

void emoji(Rng& r, std::string& line) {
  const size_t n = 3 + r.below(10);
  for (size_t i = 0; i < n; ++i) {
    if (i) line += ' ';
    if (r.chance(50)) line += proseWord(r);
    line += r.pick(kEmoji);
    if (r.chance(30)) line += r.pick(kEmoji);
  }
}

void whitespace(Rng& r, std::string& line) {
  const size_t n = 3 + r.below(8);
  for (size_t i = 0; i < n; ++i) {
    line += r.pick(kSpaces);
    if (r.chance(20)) line.append(1 + r.below(40), ' ');
    line += proseWord(r);
  }
  if (r.chance(50)) line.append(1 + r.below(8), ' ');  // trailing spaces
}

void longWords(Rng& r, std::string& line) {
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  switch (r.below(4)) {
    case 0: {  // a hash or a base64 blob
      const size_t n = 40 + r.below(400);
      for (size_t i = 0; i < n; ++i) line += kB64[r.below(64)];
      break;
    }
    case 1:  // a URL
      line += "https://example.org/" + rareWord(r) + "/" + rareWord(r) + "?q=" + rareWord(r) + "&id=" +
              std::to_string(r.next() % 1000000) + "#" + rareWord(r);
      break;
    case 2: {  // a compound word
      const size_t n = 8 + r.below(40);
      for (size_t i = 0; i < n; ++i) line += rareWord(r);
      break;
    }
    default:  // a repeated character
      line.append(20 + r.below(300), "-=_*~."[r.below(6)]);
  }
}

void multilingual(Rng& r, std::string& line) {
  const size_t n = 4 + r.below(12);
  for (size_t i = 0; i < n; ++i) {
    if (i) line += ' ';
    switch (r.below(4)) {
      case 0: {  // Latin with diacritics
        std::string w = rareWord(r);
        line += w.substr(0, 2) + r.pick(kLatinExtra) + w.substr(2);
        break;
      }
      case 1:  // Cyrillic
        for (size_t k = 0, m = 3 + r.below(7); k < m; ++k) appendCp(line, 0x430 + static_cast<char32_t>(r.below(32)));
        break;
      case 2:  // Greek
        for (size_t k = 0, m = 3 + r.below(7); k < m; ++k) appendCp(line, 0x3B1 + static_cast<char32_t>(r.below(25)));
        break;
      default:  // Arabic
        for (size_t k = 0, m = 3 + r.below(6); k < m; ++k) appendCp(line, 0x627 + static_cast<char32_t>(r.below(36)));
    }
  }
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

std::string tokenizeBenchCorpus(int64_t bytes, uint64_t seed) {
  UPCYCLE_CHECK(bytes > 0, "corpus size must be positive, not ", bytes);
  Rng r(seed ^ 0x746F6B656E697A65ull);  // "tokenize"
  std::string out;
  out.reserve(static_cast<size_t>(bytes) + 70'000);
  size_t nextLong = 0;
  std::string line;
  while (out.size() < static_cast<size_t>(bytes)) {
    line.clear();
    if (out.size() >= nextLong) {
      // One long paragraph per 512 KB: for tokenizers without a pre-tokenizer split (Gemma 3) a
      // line is a single BPE word, and a quadratic merge loop would show here.
      prose(r, line, 4000 + r.below(6000));
      nextLong += 512 * 1024;
    } else {
      const size_t k = r.below(100);
      if (k < 40) prose(r, line, 5 + r.below(40));
      else if (k < 60) code(r, line);
      else if (k < 68) digits(r, line);
      else if (k < 78) cjk(r, line);
      else if (k < 84) emoji(r, line);
      else if (k < 90) whitespace(r, line);
      else if (k < 95) longWords(r, line);
      else multilingual(r, line);
    }
    out += line;
    out += '\n';
  }
  return out;
}

TokenizeBenchResult benchTokenize(const TokenizeBenchOptions& o) {
  UPCYCLE_CHECK(o.passes >= 1, "--passes must be at least 1, not ", o.passes);
  TokenizeBenchResult r;
  r.options = o;
  const std::string text = o.text.empty() ? tokenizeBenchCorpus(o.corpusBytes, o.seed) : readTextFile(o.text);
  // Lines as the peer script splits them: on '\n'; a final newline ends the last line.
  std::vector<std::string> lines;
  for (size_t a = 0; a < text.size();) {
    size_t b = text.find('\n', a);
    if (b == std::string::npos) b = text.size();
    lines.emplace_back(text, a, b - a);
    a = b + 1;
  }
  r.bytes = static_cast<int64_t>(text.size());
  r.lines = static_cast<int64_t>(lines.size());

  const auto t0 = std::chrono::steady_clock::now();
  auto tok = loadTokenizer(o.model);
  r.loadSeconds = secondsSince(t0);
  r.tokenizerKind = tok->kind();

  for (int64_t p = 0; p < o.passes; ++p) {
    int64_t tokens = 0, idSum = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& line : lines) {
      const std::vector<int64_t> ids = tok->encode(line);
      tokens += static_cast<int64_t>(ids.size());
      for (int64_t id : ids) idSum += id;
    }
    r.passSeconds.push_back(secondsSince(start));
    UPCYCLE_ASSERT(p == 0 || (tokens == r.tokens && idSum == r.idSum), "tokenize bench: pass ", p,
                   " gave other ids than pass 0");
    r.tokens = tokens;
    r.idSum = idSum;
  }
  r.seconds = median(r.passSeconds);
  r.mbPerS = static_cast<double>(r.bytes) / 1e6 / r.seconds;
  r.tokensPerS = static_cast<double>(r.tokens) / r.seconds;
  return r;
}

std::string tokenizeBenchJson(const TokenizeBenchResult& r) {
  nlohmann::json j = {{"model", r.options.model.string()},
                      {"text", r.options.text.empty() ? std::string("(generated)") : r.options.text.string()},
                      {"tokenizer", r.tokenizerKind},
                      {"threads", 1},
                      {"bytes", r.bytes},
                      {"lines", r.lines},
                      {"tokens", r.tokens},
                      {"id_sum", r.idSum},
                      {"load_seconds", r.loadSeconds},
                      {"pass_seconds", r.passSeconds},
                      {"seconds", r.seconds},
                      {"mb_per_s", r.mbPerS},
                      {"tokens_per_s", r.tokensPerS}};
  return j.dump(2);
}

}  // namespace upcycle
