#include "data/chat_template.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>

#include "core/atomic_file.h"
#include "core/error.h"

// How this file is laid out: text helpers (UTF-8, Python's whitespace and case rules), the value
// model (Python's None/bool/int/float/str/list/tuple/dict plus jinja2's Undefined, Namespace,
// loop and generator objects), Python's str()/repr()/json.dumps() formatting, the lexer (jinja2's
// whitespace control), the parser (jinja2's grammar and precedence), and the renderer.
// Python behaviour is reproduced from the language and jinja2 3.1 semantics; the tests compare
// against Python's jinja2 itself (tests/reference/make_chat_template_fixtures.py).
//
// Known differences from Python, none of which a chat template of the supported models meets:
// - repr() of a string inside a printed list or dict escapes the characters str.isprintable()
//   rejects; that set is approximated (controls, format characters, separators, private use,
//   surrogates and the large unassigned ranges; not every scattered unassigned code point).
// - `is sameas` is identity for objects, value equality for None, booleans and CPython's cached
//   small integers, and false for floats (Python's answer for other numbers depends on caching).
// - Slicing a literal that is no sequence ({{ 3[1:] }}) raises; jinja2's constant folding makes
//   some of those undefined instead.
// - Error messages say what Python says in substance, not word for word.

namespace upcycle {
namespace {

// ---- Limits: no template or context may crash or hang the process; each limit is an error.
constexpr int kMaxParseDepth = 100;   // nested expressions or blocks in the source
constexpr int kMaxRenderDepth = 400;  // nested evaluation (macro recursion included)
constexpr int kMaxValueDepth = 200;   // nested lists / dicts in one value
// Work in one render: a step per statement, expression and loop iteration, an item per list
// item made or walked, a unit per 32 bytes of string made or scanned. Qwen3's template on a chat
// of 6000 messages of 1 KB each costs under two million.
constexpr uint64_t kMaxWork = 20'000'000;
constexpr std::size_t kMaxStringBytes = 64 << 20;  // any one string, the output included
constexpr std::size_t kMaxItems = 10'000'000;      // any one list
constexpr int64_t kMaxRange = 100000;              // jinja2's sandbox refuses larger ranges

// A Python exception raised while rendering; render() adds the source and the line.
struct PyError {
  std::string msg;
};

[[noreturn]] void pyFail(std::string msg) { throw PyError{std::move(msg)}; }

// The work counter of the render running on this thread (null outside a render, e.g. while the
// context is converted). Thread-local so that the value helpers below can charge it without
// a renderer at hand, and so that renders on several threads never share it.
thread_local uint64_t* t_work = nullptr;

void charge(uint64_t units) {
  if (t_work && (*t_work += units) > kMaxWork)
    pyFail("template takes too much work (more than 20 million steps): a runaway loop?");
}

void chargeBytes(std::size_t bytes) { charge(bytes / 32); }

// ---------------------------------------------------------------------------------------------
// UTF-8 and Python's character classes

// Decodes the code point at s[i] of valid UTF-8 and moves i past it.
char32_t nextCp(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int n = b0 >= 0xf0 ? 3 : b0 >= 0xe0 ? 2 : 1;
  char32_t c = b0 & (0x3f >> n);
  for (int k = 1; k <= n && i + k < s.size(); ++k)
    c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
  i += n + 1;
  return c;
}

void appendCp(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool validUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    int n;
    char32_t min;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
      n = 1, min = 0x80;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      n = 2, min = 0x800;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      n = 3, min = 0x10000;
    } else {
      return false;
    }
    char32_t c = b0 & (0x3f >> n);
    for (int k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0) != 0x80) return false;
      c = (c << 6) | (b & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

bool isAscii(std::string_view s) {
  for (char ch : s)
    if (static_cast<unsigned char>(ch) >= 0x80) return false;
  return true;
}

std::u32string toU32(std::string_view s) {
  chargeBytes(s.size());
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) out += nextCp(s, i);
  return out;
}

std::string fromU32(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) appendCp(out, c);
  return out;
}

std::size_t cpCount(std::string_view s) {
  chargeBytes(s.size());
  std::size_t n = 0;
  for (char ch : s) n += (static_cast<unsigned char>(ch) & 0xc0) != 0x80;
  return n;
}

// str.isspace() and Python's regex \s (the same set).
bool isPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

// The line boundaries of str.splitlines().
bool isLineBreak(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e ||
         c == 0x85 || c == 0x2028 || c == 0x2029;
}

// str.rstrip() with no argument, on UTF-8.
std::string_view rstripSpace(std::string_view s) {
  std::size_t end = 0;
  for (std::size_t i = 0; i < s.size();) {
    const char32_t c = nextCp(s, i);
    if (!isPySpace(c)) end = i;
  }
  return s.substr(0, end);
}

bool allSpace(std::string_view s) {
  for (std::size_t i = 0; i < s.size();)
    if (!isPySpace(nextCp(s, i))) return false;
  return true;
}

// ---- Case mapping. Python maps case over all of Unicode; we carry the tables for ASCII, Latin-1,
// Latin Extended-A, Greek, Cyrillic and the full-width Latin letters, treat scripts without case
// (CJK, Arabic, emoji, ...) as Python does, and refuse the remaining cased scripts rather than
// rendering them differently from Python.
struct CaseInfo {
  bool cased = false;  // Python's "cased" (has a case or the Other_Lowercase property)
  bool lower = false;
  bool upper = false;
  char32_t toLower = 0, toUpper = 0;  // simple mappings; the multi-character ones are special-cased
};

[[noreturn]] void refuseCase(char32_t c) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "case mapping of U+%04X is not supported",
                static_cast<unsigned>(c));
  pyFail(buf);
}

CaseInfo pairCase(char32_t c, bool upperIsEven) {
  const bool even = (c % 2) == 0;
  CaseInfo ci;
  ci.cased = true;
  if (even == upperIsEven) {
    ci.upper = true, ci.toUpper = c, ci.toLower = c + 1;
  } else {
    ci.lower = true, ci.toLower = c, ci.toUpper = c - 1;
  }
  return ci;
}

CaseInfo caseOf(char32_t c) {
  CaseInfo ci;
  ci.toLower = ci.toUpper = c;
  auto up = [&](char32_t lower) {
    ci.cased = ci.upper = true, ci.toLower = lower;
    return ci;
  };
  auto low = [&](char32_t upper) {
    ci.cased = ci.lower = true, ci.toUpper = upper;
    return ci;
  };
  if (c < 0x80) {
    if (c >= 'A' && c <= 'Z') return up(c + 32);
    if (c >= 'a' && c <= 'z') return low(c - 32);
    return ci;
  }
  if (c < 0x100) {
    if ((c >= 0xc0 && c <= 0xd6) || (c >= 0xd8 && c <= 0xde)) return up(c + 32);
    if ((c >= 0xe0 && c <= 0xf6) || (c >= 0xf8 && c <= 0xfe)) return low(c - 32);
    if (c == 0xdf) return low(c);               // ß: upper "SS", special-cased
    if (c == 0xff) return low(0x178);           // ÿ
    if (c == 0xb5) return low(0x39c);           // µ -> Greek capital mu
    if (c == 0xaa || c == 0xba) return low(c);  // ª º: lowercase, no mapping
    return ci;
  }
  if (c < 0x180) {
    if (c <= 0x12f || (c >= 0x132 && c <= 0x137) || (c >= 0x14a && c <= 0x177))
      return pairCase(c, true);
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return pairCase(c, false);
    if (c == 0x130) return up(0x69);   // İ: lower "i̇", special-cased
    if (c == 0x131) return low(0x49);  // ı
    if (c == 0x138) return low(c);     // ĸ
    if (c == 0x149) return low(c);     // ŉ: upper "ʼN", special-cased
    if (c == 0x178) return up(0xff);
    if (c == 0x17f) return low(0x53);  // ſ
    return ci;
  }
  if (c >= 0x370 && c < 0x400) {
    if ((c >= 0x391 && c <= 0x3a1) || (c >= 0x3a3 && c <= 0x3ab)) return up(c + 32);
    if ((c >= 0x3b1 && c <= 0x3c1) || (c >= 0x3c3 && c <= 0x3cb)) return low(c - 32);
    if (c == 0x3c2) return low(0x3a3);  // final sigma
    if (c == 0x386) return up(0x3ac);
    if (c >= 0x388 && c <= 0x38a) return up(c + 37);
    if (c == 0x38c) return up(0x3cc);
    if (c == 0x38e || c == 0x38f) return up(c + 63);
    if (c == 0x3ac) return low(0x386);
    if (c >= 0x3ad && c <= 0x3af) return low(c - 37);
    if (c == 0x3cc) return low(0x38c);
    if (c == 0x3cd || c == 0x3ce) return low(c - 63);
    if (c == 0x390 || c == 0x3b0) return low(c);  // ΐ ΰ: three-character uppers, special-cased
    if (c == 0x374 || c == 0x375 || c == 0x37e || c == 0x384 || c == 0x385 || c == 0x387)
      return ci;  // punctuation and accents
    refuseCase(c);
  }
  if (c >= 0x400 && c < 0x500) {
    if (c <= 0x40f) return up(c + 80);
    if (c <= 0x42f) return up(c + 32);
    if (c <= 0x44f) return low(c - 32);
    if (c <= 0x45f) return low(c - 80);
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf) || c >= 0x4d0)
      return pairCase(c, true);
    if (c >= 0x4c1 && c <= 0x4ce) return pairCase(c, false);
    if (c == 0x4c0) return up(0x4cf);
    if (c == 0x4cf) return low(0x4c0);
    return ci;  // 0482-0489: signs and combining marks
  }
  if (c >= 0xff21 && c <= 0xff3a) return up(c + 32);
  if (c >= 0xff41 && c <= 0xff5a) return low(c - 32);
  struct Range {
    char32_t lo, hi;
  };
  static const Range kRefused[] = {
      {0x180, 0x2af},     {0x345, 0x345},     {0x500, 0x52f},     {0x531, 0x587},
      {0x10a0, 0x10ff},   {0x13a0, 0x13ff},   {0x1c80, 0x1cbf},   {0x1d00, 0x1dbf},
      {0x1e00, 0x1fff},   {0x2071, 0x209c},   {0x2100, 0x214f},   {0x2160, 0x2188},
      {0x24b6, 0x24e9},   {0x2c00, 0x2d2f},   {0xa640, 0xa69f},   {0xa720, 0xa7ff},
      {0xab30, 0xabbf},   {0xfb00, 0xfb17},   {0x10400, 0x1044f}, {0x104b0, 0x104ff},
      {0x10570, 0x105bf}, {0x10780, 0x107ba}, {0x10c80, 0x10cff}, {0x118a0, 0x118ff},
      {0x16e40, 0x16e9f}, {0x1d400, 0x1d7ff}, {0x1df00, 0x1dfff}, {0x1e030, 0x1e08f},
      {0x1e900, 0x1e94f}, {0x1f130, 0x1f189},
  };
  for (const Range& r : kRefused)
    if (c >= r.lo && c <= r.hi) refuseCase(c);
  return ci;
}

// Characters Python's Final_Sigma rule skips over (an approximation of Case_Ignorable that covers
// apostrophes, periods and combining marks).
bool caseIgnorable(char32_t c) {
  return c == 0x27 || c == 0x2e || c == 0x3a || c == 0x5e || c == 0x60 || c == 0xa8 || c == 0xad ||
         c == 0xaf || c == 0xb4 || c == 0xb7 || c == 0xb8 || (c >= 0x2b0 && c <= 0x36f) ||
         c == 0x374 || c == 0x375 || c == 0x37a || c == 0x384 || c == 0x385 || c == 0x387 ||
         c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0x2027;
}

void appendUpper(std::u32string& out, char32_t c, bool title) {
  switch (c) {
    case 0xdf:
      out += title ? U"Ss" : U"SS";
      return;
    case 0x149:
      out += U"\u02bcN";
      return;
    case 0x390:
      out += U"\u0399\u0308\u0301";
      return;
    case 0x3b0:
      out += U"\u03a5\u0308\u0301";
      return;
    default:
      out += caseOf(c).toUpper;
  }
}

// Lowercase of s[i], with Python's Final_Sigma rule for capital sigma.
void appendLower(std::u32string& out, std::u32string_view s, std::size_t i) {
  const char32_t c = s[i];
  if (c == 0x130) {
    out += U"i\u0307";
    return;
  }
  if (c == 0x3a3) {
    std::size_t j = i;
    while (j > 0 && caseIgnorable(s[j - 1])) --j;
    bool finalSigma = j > 0 && caseOf(s[j - 1]).cased;
    if (finalSigma) {
      std::size_t k = i + 1;
      while (k < s.size() && caseIgnorable(s[k])) ++k;
      finalSigma = k == s.size() || !caseOf(s[k]).cased;
    }
    out += finalSigma ? char32_t{0x3c2} : char32_t{0x3c3};
    return;
  }
  out += caseOf(c).toLower;
}

std::string pyUpper(std::string_view s) {
  if (isAscii(s)) {
    std::string r(s);
    for (char& ch : r)
      if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
    return r;
  }
  std::u32string out;
  for (char32_t c : toU32(s)) appendUpper(out, c, false);
  return fromU32(out);
}

std::string pyLower(std::string_view s) {
  if (isAscii(s)) {
    std::string r(s);
    for (char& ch : r)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
    return r;
  }
  const std::u32string u = toU32(s);
  std::u32string out;
  for (std::size_t i = 0; i < u.size(); ++i) appendLower(out, u, i);
  return fromU32(out);
}

// str.capitalize(): the first character in title case, the rest lowercased.
std::string pyCapitalize(std::string_view s) {
  const std::u32string u = toU32(s);
  std::u32string out;
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (i == 0)
      appendUpper(out, u[0], true);
    else
      appendLower(out, u, i);
  }
  return fromU32(out);
}

// str.title(): a character after a cased one is lowercased, any other is title-cased.
std::string pyTitle(std::string_view s) {
  const std::u32string u = toU32(s);
  std::u32string out;
  bool prevCased = false;
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (prevCased)
      appendLower(out, u, i);
    else
      appendUpper(out, u[i], true);
    prevCased = caseOf(u[i]).cased;
  }
  return fromU32(out);
}

bool pyIsLower(std::string_view s) {
  bool cased = false;
  for (char32_t c : toU32(s)) {
    const CaseInfo ci = caseOf(c);
    if (ci.upper) return false;
    cased = cased || ci.lower;
  }
  return cased;
}

bool pyIsUpper(std::string_view s) {
  bool cased = false;
  for (char32_t c : toU32(s)) {
    const CaseInfo ci = caseOf(c);
    if (ci.lower) return false;
    cased = cased || ci.upper;
  }
  return cased;
}

// ---------------------------------------------------------------------------------------------
// Values: Python's types as a template sees them. Lists, tuples and dicts are immutable here
// (transformers uses jinja2's ImmutableSandboxedEnvironment), so values share them freely; only a
// namespace() and a generator change after creation.

enum class Kind : uint8_t {
  Undefined,
  None,
  Bool,
  Int,
  Float,
  Str,
  Seq,
  Dict,
  Ns,
  Iter,
  Func,
  Loop
};
// Sequence flavours print differently: [1], (1,), dict_keys([1]), range(0, 1) ...
enum class SeqKind : uint8_t { List, Tuple, Keys, Values, Items, Range };

struct Object {
  virtual ~Object() = default;
};

struct Value {
  Kind kind = Kind::Undefined;
  // Str made by the `safe` filter: markupsafe's Markup, which `+` escapes the other side for and
  // repr() shows as Markup('...'). It prints as itself.
  bool markup = false;
  int64_t i = 0;                         // Int, and Bool as 0 / 1
  double f = 0;                          // Float
  std::shared_ptr<const std::string> s;  // Str; for Undefined, why it is undefined
  std::shared_ptr<Object> o;             // Seq, Dict, Ns, Iter, Func, Loop

  static Value undefined(std::string why) {
    Value v;
    v.s = std::make_shared<const std::string>(std::move(why));
    return v;
  }
  static Value none() {
    Value v;
    v.kind = Kind::None;
    return v;
  }
  static Value boolean(bool b) {
    Value v;
    v.kind = Kind::Bool;
    v.i = b;
    return v;
  }
  static Value integer(int64_t n) {
    Value v;
    v.kind = Kind::Int;
    v.i = n;
    return v;
  }
  static Value real(double d) {
    Value v;
    v.kind = Kind::Float;
    v.f = d;
    return v;
  }
  static Value str(std::string text) {
    if (text.size() > kMaxStringBytes) pyFail("string longer than the 64 MiB limit");
    chargeBytes(text.size());
    Value v;
    v.kind = Kind::Str;
    v.s = std::make_shared<const std::string>(std::move(text));
    return v;
  }
  static Value str(std::string text, bool markup) {
    Value v = str(std::move(text));
    v.markup = markup;
    return v;
  }

  bool isUndefined() const { return kind == Kind::Undefined; }
  bool isNumber() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool isIntLike() const { return kind == Kind::Int || kind == Kind::Bool; }
  const std::string& text() const { return *s; }
  double asDouble() const { return kind == Kind::Float ? f : static_cast<double>(i); }
};

struct SeqObj : Object {
  std::vector<Value> items;
  SeqKind kind = SeqKind::List;
  int depth = 1;
  int64_t start = 0, stop = 0, step = 1;  // Range
};

// Keys compare the Python way (1 == 1.0 == True); `index` maps a canonical form to a position.
struct DictObj : Object {
  std::vector<std::pair<Value, Value>> items;
  std::unordered_map<std::string, std::size_t> index;
  int depth = 1;
};

struct NsObj : Object {
  DictObj attrs;
};

// A generator (select, map, reverse, items ...): iterated once, then empty, as in Python.
struct IterObj : Object {
  std::vector<Value> items;
  std::size_t pos = 0;
  std::string type;  // Python's type name, for messages
  int depth = 1;
};

struct Frame;
struct MacroDef;

enum class FuncKind : uint8_t { Global, Method, Macro, LoopCycle, LoopChanged };

struct FuncObj : Object {
  FuncKind kind = FuncKind::Global;
  std::string name;
  Value self;                       // Method: the object; LoopCycle / LoopChanged: the loop
  const MacroDef* macro = nullptr;  // Macro
  // A macro reads the variables of the scope it was defined in. Weak, so that a macro stored in
  // that same scope forms no reference cycle.
  std::weak_ptr<Frame> closure;
};

struct LoopObj : Object {
  std::shared_ptr<const std::vector<Value>> items;
  int64_t index0 = 0;
  bool changedSeen = false;
  Value lastChanged;
};

int depthOf(const Value& v) {
  switch (v.kind) {
    case Kind::Seq:
      return static_cast<const SeqObj&>(*v.o).depth;
    case Kind::Dict:
      return static_cast<const DictObj&>(*v.o).depth;
    case Kind::Iter:
      return static_cast<const IterObj&>(*v.o).depth;
    default:
      return 0;
  }
}

int childDepth(int current, const Value& child) {
  const int d = std::max(current, depthOf(child) + 1);
  if (d > kMaxValueDepth) pyFail("value nested more than 200 levels deep");
  return d;
}

Value makeSeq(std::vector<Value> items, SeqKind kind = SeqKind::List) {
  if (items.size() > kMaxItems) pyFail("list longer than the 10 million item limit");
  charge(items.size());
  auto seq = std::make_shared<SeqObj>();
  seq->kind = kind;
  seq->items = std::move(items);
  for (const Value& v : seq->items) seq->depth = childDepth(seq->depth, v);
  Value out;
  out.kind = Kind::Seq;
  out.o = std::move(seq);
  return out;
}

Value makeIter(std::vector<Value> items, std::string type) {
  if (items.size() > kMaxItems) pyFail("sequence longer than the 10 million item limit");
  charge(items.size());
  auto it = std::make_shared<IterObj>();
  it->type = std::move(type);
  it->items = std::move(items);
  for (const Value& v : it->items) it->depth = childDepth(it->depth, v);
  Value out;
  out.kind = Kind::Iter;
  out.o = std::move(it);
  return out;
}

Value makeTuple2(Value a, Value b) {
  std::vector<Value> items;
  items.reserve(2);
  items.push_back(std::move(a));
  items.push_back(std::move(b));
  return makeSeq(std::move(items), SeqKind::Tuple);
}

const SeqObj& seqOf(const Value& v) { return static_cast<const SeqObj&>(*v.o); }
const DictObj& dictOf(const Value& v) { return static_cast<const DictObj&>(*v.o); }
NsObj& nsOf(const Value& v) { return static_cast<NsObj&>(*v.o); }
IterObj& iterOf(const Value& v) { return static_cast<IterObj&>(*v.o); }
const FuncObj& funcOf(const Value& v) { return static_cast<const FuncObj&>(*v.o); }
LoopObj& loopOf(const Value& v) { return static_cast<LoopObj&>(*v.o); }

std::string pyFloatRepr(double v);

// Python's type names, for messages that match Python's.
std::string typeName(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::Str:
      return "str";
    case Kind::Seq:
      switch (seqOf(v).kind) {
        case SeqKind::List:
          return "list";
        case SeqKind::Tuple:
          return "tuple";
        case SeqKind::Keys:
          return "dict_keys";
        case SeqKind::Values:
          return "dict_values";
        case SeqKind::Items:
          return "dict_items";
        case SeqKind::Range:
          return "range";
      }
      return "list";
    case Kind::Dict:
      return "dict";
    case Kind::Ns:
      return "Namespace";
    case Kind::Iter:
      return iterOf(v).type;
    case Kind::Func:
      return funcOf(v).kind == FuncKind::Macro ? "Macro" : "builtin_function_or_method";
    case Kind::Loop:
      return "LoopContext";
  }
  return "object";
}

// The canonical form of a dict key: equal keys in Python (1, 1.0, True) share one form.
std::string hashKey(const Value& v) {
  switch (v.kind) {
    case Kind::Str:
      chargeBytes(v.text().size());
      return "s" + v.text();
    case Kind::Int:
    case Kind::Bool:
      return "i" + std::to_string(v.i);
    case Kind::Float:
      if (std::isfinite(v.f) && v.f == std::floor(v.f) && std::fabs(v.f) < 9.2e18)
        return "i" + std::to_string(static_cast<int64_t>(v.f));
      return "f" + pyFloatRepr(v.f);
    case Kind::None:
      return "n";
    case Kind::Undefined:
      return "u";
    case Kind::Seq:
      if (seqOf(v).kind == SeqKind::Tuple) {
        std::string k = "t(";
        for (const Value& x : seqOf(v).items) k += hashKey(x) + ",";
        return k + ")";
      }
      break;
    default:
      break;
  }
  pyFail("unhashable type: '" + typeName(v) + "'");
}

void dictSet(DictObj& d, Value key, Value value) {
  d.depth = childDepth(childDepth(d.depth, key), value);
  std::string h = hashKey(key);
  auto it = d.index.find(h);
  if (it != d.index.end()) {
    d.items[it->second].second = std::move(value);  // Python keeps the first key object
    return;
  }
  if (d.items.size() >= kMaxItems) pyFail("dict larger than the 10 million item limit");
  d.index.emplace(std::move(h), d.items.size());
  d.items.emplace_back(std::move(key), std::move(value));
}

const Value* dictFind(const DictObj& d, const Value& key) {
  auto it = d.index.find(hashKey(key));
  return it == d.index.end() ? nullptr : &d.items[it->second].second;
}

const Value* dictFindStr(const DictObj& d, const std::string& key) {
  auto it = d.index.find("s" + key);
  return it == d.index.end() ? nullptr : &d.items[it->second].second;
}

Value makeDict(std::shared_ptr<DictObj> d) {
  Value out;
  out.kind = Kind::Dict;
  out.o = std::move(d);
  return out;
}

Value makeFunc(FuncKind kind, std::string name, Value self = Value()) {
  auto fn = std::make_shared<FuncObj>();
  fn->kind = kind;
  fn->name = std::move(name);
  fn->self = std::move(self);
  Value out;
  out.kind = Kind::Func;
  out.o = std::move(fn);
  return out;
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
    case Kind::Int:
      return v.i != 0;
    case Kind::Float:
      return v.f != 0;
    case Kind::Str:
      return !v.s->empty();
    case Kind::Seq:
      return !seqOf(v).items.empty();
    case Kind::Dict:
      return !dictOf(v).items.empty();
    default:
      return true;  // namespaces, generators (even empty ones), functions, loops
  }
}

// ---- Conversion from JSON (the render context).
template <typename Json>
Value fromJson(const Json& j, int depth) {
  if (depth > kMaxValueDepth) pyFail("context nested more than 200 levels deep");
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX))
        pyFail("unsupported: context integer " + std::to_string(u) + " does not fit in 64 bits");
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::real(j.template get<double>());
    case nlohmann::json::value_t::string: {
      const auto& str = j.template get_ref<const std::string&>();
      if (!validUtf8(str)) pyFail("context string is not valid UTF-8");
      return Value::str(str);
    }
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(fromJson(x, depth + 1));
      return makeSeq(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      auto d = std::make_shared<DictObj>();
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!validUtf8(it.key())) pyFail("context key is not valid UTF-8");
        dictSet(*d, Value::str(it.key()), fromJson(it.value(), depth + 1));
      }
      return makeDict(std::move(d));
    }
    default:
      pyFail("context holds binary data, which a template cannot use");
  }
}

// ---------------------------------------------------------------------------------------------
// Python's str(), repr() and json.dumps()

constexpr int kMaxPrintDepth = 2 * kMaxValueDepth + 8;

// repr(float): the shortest digits that read back to the same double; scientific notation when
// the decimal exponent is below -4 or above 15, as CPython's float_repr_style 'short'.
std::string pyFloatRepr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string text(buf);
  std::string out = text[0] == '-' ? "-" : "";
  const std::size_t start = out.size();
  const std::size_t e = text.find('e');
  std::string digits;
  for (std::size_t k = start; k < e; ++k)
    if (text[k] != '.') digits += text[k];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int exp10 = std::atoi(text.c_str() + e + 1);
  const int decpt = exp10 + 1;  // digits d1 d2 ... mean 0.d1d2... * 10^decpt
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    return out + eb;
  }
  if (decpt <= 0) return out + "0." + std::string(-decpt, '0') + digits;
  if (static_cast<std::size_t>(decpt) >= digits.size())
    return out + digits + std::string(decpt - digits.size(), '0') + ".0";
  return out + digits.substr(0, decpt) + "." + digits.substr(decpt);
}

// str.isprintable(), approximated: the control, format, separator, private-use and unassigned
// ranges that matter in practice print as escapes in Python's repr().
bool pyPrintable(char32_t c) {
  if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad) return false;
  if (c < 0x600) return true;
  struct Range {
    char32_t lo, hi;
  };
  static const Range kNot[] = {
      {0x600, 0x605},     {0x61c, 0x61c},      {0x6dd, 0x6dd},     {0x70f, 0x70f},
      {0x890, 0x891},     {0x8e2, 0x8e2},      {0x1680, 0x1680},   {0x180e, 0x180e},
      {0x2000, 0x200f},   {0x2028, 0x202f},    {0x205f, 0x2064},   {0x2066, 0x206f},
      {0x3000, 0x3000},   {0xd800, 0xf8ff},    {0xfdd0, 0xfdef},   {0xfeff, 0xfeff},
      {0xfff0, 0xfffb},   {0xfffe, 0xffff},    {0x110bd, 0x110bd}, {0x110cd, 0x110cd},
      {0x13430, 0x1343f}, {0x1bca0, 0x1bca3},  {0x1d173, 0x1d17a}, {0x323b0, 0xdffff},
      {0xe0000, 0xe00ff}, {0xe01f0, 0x10ffff},
  };
  for (const Range& r : kNot)
    if (c >= r.lo && c <= r.hi) return false;
  return (c & 0xfffe) != 0xfffe;
}

std::string pyStrRepr(const std::string& s) {
  const char quote =
      (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (std::size_t i = 0; i < s.size();) {
    const char32_t c = nextCp(s, i);
    char buf[16];
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (pyPrintable(c)) {
      appendCp(out, c);
    } else {
      if (c <= 0xff)
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      else if (c <= 0xffff)
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      else
        std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    }
  }
  return out + quote;
}

void appendRepr(std::string& out, const Value& v, int depth);

// str(value), as `{{ value }}` prints it.
void appendStr(std::string& out, const Value& v, int depth) {
  if (depth > kMaxPrintDepth) pyFail("value nested too deeply to print");
  switch (v.kind) {
    case Kind::Undefined:
      return;
    case Kind::None:
      out += "None";
      return;
    case Kind::Bool:
      out += v.i ? "True" : "False";
      return;
    case Kind::Int:
      out += std::to_string(v.i);
      return;
    case Kind::Float:
      out += pyFloatRepr(v.f);
      return;
    case Kind::Str:
      out += v.text();
      return;
    case Kind::Seq: {
      const SeqObj& seq = seqOf(v);
      if (seq.kind == SeqKind::Range) {
        out += "range(" + std::to_string(seq.start) + ", " + std::to_string(seq.stop);
        if (seq.step != 1) out += ", " + std::to_string(seq.step);
        out += ")";
        return;
      }
      const char* open = seq.kind == SeqKind::Tuple    ? "("
                         : seq.kind == SeqKind::Keys   ? "dict_keys(["
                         : seq.kind == SeqKind::Values ? "dict_values(["
                         : seq.kind == SeqKind::Items  ? "dict_items(["
                                                       : "[";
      out += open;
      for (std::size_t k = 0; k < seq.items.size(); ++k) {
        if (k) out += ", ";
        appendRepr(out, seq.items[k], depth + 1);
      }
      if (seq.kind == SeqKind::Tuple)
        out += seq.items.size() == 1 ? ",)" : ")";
      else
        out += seq.kind == SeqKind::List ? "]" : "])";
      return;
    }
    case Kind::Dict:
    case Kind::Ns: {
      const DictObj& d = v.kind == Kind::Dict ? dictOf(v) : nsOf(v).attrs;
      out += v.kind == Kind::Ns ? "<Namespace {" : "{";
      for (std::size_t k = 0; k < d.items.size(); ++k) {
        if (k) out += ", ";
        appendRepr(out, d.items[k].first, depth + 1);
        out += ": ";
        appendRepr(out, d.items[k].second, depth + 1);
      }
      out += v.kind == Kind::Ns ? "}>" : "}";
      return;
    }
    default:
      pyFail("cannot print a " + typeName(v) + " object (Python prints its memory address)");
  }
}

void appendRepr(std::string& out, const Value& v, int depth) {
  if (v.kind == Kind::Str && v.markup)
    out += "Markup(" + pyStrRepr(v.text()) + ")";
  else if (v.kind == Kind::Str)
    out += pyStrRepr(v.text());
  else if (v.kind == Kind::Undefined)
    out += "Undefined";
  else
    appendStr(out, v, depth);
}

std::string toStr(const Value& v) {
  if (v.kind == Kind::Str) return v.text();
  std::string out;
  appendStr(out, v, 0);
  return out;
}

bool pyLess(const Value& a, const Value& b);

struct JsonOptions {
  bool ensureAscii = false;
  bool indented = false;
  std::string indent;
  std::string itemSep = ", ", keySep = ": ";
  bool sortKeys = false;
};

void appendJsonString(std::string& out, const std::string& s, bool ensureAscii) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const char32_t c = nextCp(s, i);
    char buf[16];
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || (ensureAscii && c >= 0x7f)) {
          if (c >= 0x10000) {
            const char32_t v = c - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x",
                          static_cast<unsigned>(0xd800 + (v >> 10)),
                          static_cast<unsigned>(0xdc00 + (v & 0x3ff)));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          }
          out += buf;
        } else {
          appendCp(out, c);
        }
    }
  }
  out += '"';
}

std::string jsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return pyFloatRepr(d);
}

void appendJson(std::string& out, const Value& v, const JsonOptions& o, int level) {
  if (level > kMaxPrintDepth) pyFail("value nested too deeply for tojson");
  if (out.size() > kMaxStringBytes) pyFail("tojson output longer than the 64 MiB limit");
  auto newline = [&](int lvl) {
    out += '\n';
    for (int k = 0; k < lvl; ++k) out += o.indent;
  };
  switch (v.kind) {
    case Kind::None:
      out += "null";
      return;
    case Kind::Bool:
      out += v.i ? "true" : "false";
      return;
    case Kind::Int:
      out += std::to_string(v.i);
      return;
    case Kind::Float:
      out += jsonFloat(v.f);
      return;
    case Kind::Str:
      appendJsonString(out, v.text(), o.ensureAscii);
      return;
    case Kind::Seq: {
      const SeqObj& seq = seqOf(v);
      if (seq.kind != SeqKind::List && seq.kind != SeqKind::Tuple) break;
      if (seq.items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      if (o.indented) newline(level + 1);
      for (std::size_t k = 0; k < seq.items.size(); ++k) {
        if (k) {
          out += o.itemSep;
          if (o.indented) newline(level + 1);
        }
        appendJson(out, seq.items[k], o, level + 1);
      }
      if (o.indented) newline(level);
      out += ']';
      return;
    }
    case Kind::Dict: {
      const DictObj& d = dictOf(v);
      if (d.items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : d.items) items.push_back(&kv);
      if (o.sortKeys)
        std::stable_sort(items.begin(), items.end(),
                         [](const auto* a, const auto* b) { return pyLess(a->first, b->first); });
      out += '{';
      if (o.indented) newline(level + 1);
      bool first = true;
      for (const auto* kv : items) {
        if (!first) {
          out += o.itemSep;
          if (o.indented) newline(level + 1);
        }
        first = false;
        const Value& key = kv->first;
        switch (key.kind) {
          case Kind::Str:
            appendJsonString(out, key.text(), o.ensureAscii);
            break;
          case Kind::Float:
            appendJsonString(out, jsonFloat(key.f), false);
            break;
          case Kind::Bool:
            out += key.i ? "\"true\"" : "\"false\"";
            break;
          case Kind::Int:
            out += "\"" + std::to_string(key.i) + "\"";
            break;
          case Kind::None:
            out += "\"null\"";
            break;
          default:
            pyFail("keys must be str, int, float, bool or None, not " + typeName(key));
        }
        out += o.keySep;
        appendJson(out, kv->second, o, level + 1);
      }
      if (o.indented) newline(level);
      out += '}';
      return;
    }
    default:
      break;
  }
  pyFail("Object of type " + typeName(v) + " is not JSON serializable");
}

// ---------------------------------------------------------------------------------------------
// Lexer: jinja2's, with trim_blocks and lstrip_blocks on and keep_trailing_newline off.

enum class Tok : uint8_t {
  Data,
  VarBegin,
  VarEnd,
  BlockBegin,
  BlockEnd,
  Name,
  String,
  Int,
  Float,
  Op,
  Eof
};

struct Token {
  Tok type = Tok::Eof;
  std::string text;  // Data, Name, String (decoded), Op
  int64_t ival = 0;
  double fval = 0;
  int line = 1;
};

std::string describe(const Token& t) {
  switch (t.type) {
    case Tok::Data:
      return "template data";
    case Tok::VarBegin:
      return "begin of print statement";
    case Tok::VarEnd:
      return "end of print statement";
    case Tok::BlockBegin:
      return "begin of statement block";
    case Tok::BlockEnd:
      return "end of statement block";
    case Tok::String:
      return "string";
    case Tok::Int:
      return "integer";
    case Tok::Float:
      return "float";
    case Tok::Eof:
      return "end of template";
    default:
      return t.text;
  }
}

class Lexer {
 public:
  Lexer(const std::string& text, const std::string& source) : m_source(source) {
    // jinja2 reads \r\n and \r as \n, and drops one trailing newline of the template.
    m_src.reserve(text.size());
    for (std::size_t k = 0; k < text.size(); ++k) {
      if (text[k] == '\r') {
        m_src += '\n';
        if (k + 1 < text.size() && text[k + 1] == '\n') ++k;
      } else {
        m_src += text[k];
      }
    }
    if (!m_src.empty() && m_src.back() == '\n') m_src.pop_back();
  }

  std::vector<Token> run() {
    const std::size_t n = m_src.size();
    while (m_pos < n) {
      std::size_t k = m_pos;
      while (k + 1 < n && !(m_src[k] == '{' && std::strchr("{%#", m_src[k + 1]) != nullptr)) ++k;
      if (k + 1 >= n) {
        pushData(std::string_view(m_src).substr(m_pos));
        break;
      }
      const char kind = m_src[k + 1];
      const char sign =
          (k + 2 < n && (m_src[k + 2] == '-' || m_src[k + 2] == '+')) ? m_src[k + 2] : 0;
      std::size_t rawEnd = kind == '%' ? matchRawBegin(k) : 0;
      emitLeadingText(std::string_view(m_src).substr(m_pos, k - m_pos), sign, kind != '{');
      const int tagLine = m_line;
      m_pos = k + 2 + (sign ? 1 : 0);
      if (rawEnd) {
        lexRaw(rawEnd, tagLine);
      } else if (kind == '#') {
        lexComment(tagLine);
      } else {
        lexTag(kind == '{', tagLine);
      }
    }
    Token eof;
    eof.line = m_line;
    m_out.push_back(eof);
    return std::move(m_out);
  }

 private:
  [[noreturn]] void fail(int line, const std::string& msg) const {
    throw UserError(m_source + ", line " + std::to_string(line) + ": syntax error: " + msg);
  }
  [[noreturn]] void unsupported(int line, const std::string& what) const {
    throw UserError(m_source + ", line " + std::to_string(line) +
                    ": unsupported construct: " + what);
  }

  bool startsWith(std::size_t at, const char* lit) const {
    return m_src.compare(at, std::strlen(lit), lit) == 0;
  }

  // Skips Python whitespace from m_pos; returns whether the last character skipped was \n.
  bool skipSpace() {
    bool endsNewline = false;
    while (m_pos < m_src.size()) {
      std::size_t k = m_pos;
      const char32_t c = nextCp(m_src, k);
      if (!isPySpace(c)) break;
      if (c == '\n') ++m_line;
      endsNewline = c == '\n';
      m_pos = k;
    }
    return endsNewline;
  }

  void pushData(std::string_view text) {
    if (text.empty()) return;
    Token t;
    t.type = Tok::Data;
    t.text = std::string(text);
    t.line = m_line;
    m_out.push_back(std::move(t));
    m_line += static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  }

  // The text before a tag, with the tag's whitespace control: "-" strips all whitespace before
  // it; otherwise lstrip_blocks strips spaces and tabs between a line start and a block or
  // comment tag ("+" turns that off).
  void emitLeadingText(std::string_view text, char sign, bool lstripApplies) {
    const int newlines = static_cast<int>(std::count(text.begin(), text.end(), '\n'));
    std::string_view kept = text;
    if (sign == '-') {
      kept = rstripSpace(text);
    } else if (sign != '+' && lstripApplies) {
      const std::size_t nl = text.rfind('\n');
      const std::size_t lpos = nl == std::string_view::npos ? 0 : nl + 1;
      if ((lpos > 0 || m_lineStarting) && lpos < text.size() && allSpace(text.substr(lpos)))
        kept = text.substr(0, lpos);
    }
    const int line = m_line;
    pushData(kept);
    m_line = line + newlines;
    m_lineStarting = false;
  }

  // The offset after any Python whitespace at p.
  std::size_t spaceEnd(std::size_t p) const {
    while (p < m_src.size()) {
      std::size_t k = p;
      if (!isPySpace(nextCp(m_src, k))) break;
      p = k;
    }
    return p;
  }

  // "{% raw %}" (with optional - / + and whitespace) at k: returns the offset after it, or 0.
  std::size_t matchRawBegin(std::size_t k) const {
    std::size_t p = k + 2;
    if (p < m_src.size() && (m_src[p] == '-' || m_src[p] == '+')) ++p;
    p = spaceEnd(p);
    if (!startsWith(p, "raw")) return 0;
    p += 3;
    p = spaceEnd(p);
    if (startsWith(p, "-%}")) {
      p += 3;
      p = spaceEnd(p);
      return p;
    }
    return startsWith(p, "%}") ? p + 2 : 0;
  }

  void lexRaw(std::size_t rawEnd, int tagLine) {
    m_line += static_cast<int>(std::count(m_src.begin() + m_pos, m_src.begin() + rawEnd, '\n'));
    m_lineStarting = rawEnd > 0 && m_src[rawEnd - 1] == '\n';
    m_pos = rawEnd;
    for (std::size_t q = m_src.find("{%", m_pos); q != std::string::npos;
         q = m_src.find("{%", q + 1)) {
      std::size_t p = q + 2;
      const char sign = (p < m_src.size() && (m_src[p] == '-' || m_src[p] == '+')) ? m_src[p] : 0;
      if (sign) ++p;
      p = spaceEnd(p);
      if (!startsWith(p, "endraw")) continue;
      p += 6;
      p = spaceEnd(p);
      std::size_t end;
      if (startsWith(p, "+%}")) {
        end = p + 3;
      } else if (startsWith(p, "-%}")) {
        end = p + 3;
        end = spaceEnd(end);
      } else if (startsWith(p, "%}")) {
        end = p + 2 + (p + 2 < m_src.size() && m_src[p + 2] == '\n');
      } else {
        continue;
      }
      emitLeadingText(std::string_view(m_src).substr(m_pos, q - m_pos), sign, true);
      m_line += static_cast<int>(std::count(m_src.begin() + q, m_src.begin() + end, '\n'));
      m_lineStarting = m_src[end - 1] == '\n';
      m_pos = end;
      return;
    }
    fail(tagLine, "missing end of raw directive");
  }

  void lexComment(int tagLine) {
    const std::size_t q = m_src.find("#}", m_pos);
    if (q == std::string::npos && m_pos >= m_src.size()) return;  // jinja2 accepts a final "{#"
    if (q == std::string::npos) fail(tagLine, "missing end of comment tag");
    char sign = 0;
    if (q > m_pos && (m_src[q - 1] == '-' || m_src[q - 1] == '+')) sign = m_src[q - 1];
    m_line += static_cast<int>(std::count(m_src.begin() + m_pos, m_src.begin() + q, '\n'));
    m_pos = q + 2;
    m_lineStarting = false;
    if (sign == '-') {
      m_lineStarting = skipSpace();
    } else if (sign == 0 && m_pos < m_src.size() && m_src[m_pos] == '\n') {
      ++m_pos, ++m_line;
      m_lineStarting = true;
    }
  }

  void lexTag(bool variable, int tagLine) {
    Token begin;
    begin.type = variable ? Tok::VarBegin : Tok::BlockBegin;
    begin.line = tagLine;
    m_out.push_back(begin);
    std::vector<char> balance;
    const std::size_t n = m_src.size();
    for (;;) {
      if (m_pos >= n)
        fail(tagLine, std::string("unexpected end of template: '") + (variable ? "{{" : "{%") +
                          "' is not closed");
      if (balance.empty()) {
        Token end;
        end.type = variable ? Tok::VarEnd : Tok::BlockEnd;
        end.line = m_line;
        bool matched = true;
        if (!variable && startsWith(m_pos, "+%}")) {
          m_pos += 3;
          m_lineStarting = false;
        } else if (startsWith(m_pos, variable ? "-}}" : "-%}")) {
          m_pos += 3;
          m_lineStarting = skipSpace();
        } else if (startsWith(m_pos, variable ? "}}" : "%}")) {
          m_pos += 2;
          m_lineStarting = false;
          if (!variable && m_pos < n && m_src[m_pos] == '\n') {  // trim_blocks
            ++m_pos, ++m_line;
            m_lineStarting = true;
          }
        } else {
          matched = false;
        }
        if (matched) {
          m_out.push_back(end);
          return;
        }
      }
      const unsigned char c = static_cast<unsigned char>(m_src[m_pos]);
      std::size_t k = m_pos;
      if (isPySpace(nextCp(m_src, k))) {
        skipSpace();
        continue;
      }
      Token t;
      t.line = m_line;
      if (std::isdigit(c)) {
        lexNumber(t);
      } else if (std::isalpha(c) || c == '_') {
        std::size_t e = m_pos;
        while (e < n && (std::isalnum(static_cast<unsigned char>(m_src[e])) || m_src[e] == '_'))
          ++e;
        if (e < n && static_cast<unsigned char>(m_src[e]) >= 0x80)
          unsupported(m_line, "non-ASCII identifiers");
        t.type = Tok::Name;
        t.text = m_src.substr(m_pos, e - m_pos);
        m_pos = e;
      } else if (c == '\'' || c == '"') {
        lexString(t);
      } else if (c >= 0x80) {
        unsupported(m_line, "non-ASCII identifiers");
      } else {
        // Two-character operators first: the longest match wins.
        static const char* kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                     "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                     "|",  ".",  ":",  ",",  ";",  "=",  "<", ">"};
        const char* op = nullptr;
        for (const char* cand : kOps)
          if (startsWith(m_pos, cand)) {
            op = cand;
            break;
          }
        if (!op) fail(m_line, std::string("unexpected char '") + static_cast<char>(c) + "'");
        t.type = Tok::Op;
        t.text = op;
        m_pos += std::strlen(op);
        if (t.text == "{" || t.text == "(" || t.text == "[") {
          balance.push_back(t.text == "{" ? '}' : t.text == "(" ? ')' : ']');
        } else if (t.text == "}" || t.text == ")" || t.text == "]") {
          if (balance.empty()) fail(m_line, "unexpected '" + t.text + "'");
          if (balance.back() != t.text[0])
            fail(m_line, "unexpected '" + t.text + "', expected '" + balance.back() + "'");
          balance.pop_back();
        }
      }
      m_out.push_back(std::move(t));
    }
  }

  // Digits with single underscores between them, from p; returns the end (p if none).
  std::size_t digitRun(std::size_t p, int base) const {
    auto isDigit = [&](char ch) {
      const int v = std::isdigit(static_cast<unsigned char>(ch)) ? ch - '0'
                    : std::isxdigit(static_cast<unsigned char>(ch))
                        ? std::tolower(static_cast<unsigned char>(ch)) - 'a' + 10
                        : 99;
      return v < base;
    };
    if (p >= m_src.size() || !isDigit(m_src[p])) return p;
    std::size_t e = p + 1;
    for (;;) {
      if (e < m_src.size() && isDigit(m_src[e])) {
        ++e;
      } else if (e + 1 < m_src.size() && m_src[e] == '_' && isDigit(m_src[e + 1])) {
        e += 2;
      } else {
        return e;
      }
    }
  }

  void lexNumber(Token& t) {
    const std::size_t p = m_pos, n = m_src.size();
    auto clean = [&](std::size_t a, std::size_t b) {
      std::string s = m_src.substr(a, b - a);
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      return s;
    };
    // Float: digits then a fraction and/or an exponent; never right after a '.'.
    if (p == 0 || m_src[p - 1] != '.') {
      std::size_t e = digitRun(p, 10), f = e;
      bool isFloat = false;
      if (f < n && m_src[f] == '.' && digitRun(f + 1, 10) > f + 1) {
        f = digitRun(f + 1, 10);
        isFloat = true;
      }
      if (f < n && (m_src[f] == 'e' || m_src[f] == 'E')) {
        std::size_t x = f + 1;
        if (x < n && (m_src[x] == '+' || m_src[x] == '-')) ++x;
        if (digitRun(x, 10) > x) {
          f = digitRun(x, 10);
          isFloat = true;
        }
      }
      if (isFloat) {
        t.type = Tok::Float;
        t.fval = std::strtod(clean(p, f).c_str(), nullptr);
        m_pos = f;
        return;
      }
    }
    int base = 10;
    std::size_t start = p, e;
    if (m_src[p] == '0' && p + 1 < n && m_src[p + 1] != 0 &&
        std::strchr("bBoOxX", m_src[p + 1]) != nullptr) {
      const char b = static_cast<char>(std::tolower(static_cast<unsigned char>(m_src[p + 1])));
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      std::size_t q = p + 2;
      if (q < n && m_src[q] == '_') ++q;
      e = digitRun(q, base);
      if (e == q) {
        base = 10, e = p + 1;  // "0" followed by a name
      } else {
        start = p + 2;
      }
    } else if (m_src[p] == '0') {
      e = p + 1;
      while (e < n && (m_src[e] == '0' || (m_src[e] == '_' && e + 1 < n && m_src[e + 1] == '0')))
        e += m_src[e] == '_' ? 2 : 1;
    } else {
      e = digitRun(p, 10);
    }
    const std::string digits = clean(start, e);
    errno = 0;
    const unsigned long long v = std::strtoull(digits.c_str(), nullptr, base);
    if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX))
      unsupported(m_line, "integer literal " + m_src.substr(p, e - p) + " does not fit in 64 bits");
    t.type = Tok::Int;
    t.ival = static_cast<int64_t>(v);
    m_pos = e;
  }

  void lexString(Token& t) {
    const char quote = m_src[m_pos];
    std::size_t e = m_pos + 1;
    while (e < m_src.size() && m_src[e] != quote) e += m_src[e] == '\\' ? 2 : 1;
    if (e >= m_src.size()) fail(m_line, std::string("unexpected char '") + quote + "'");
    const std::string raw = m_src.substr(m_pos + 1, e - m_pos - 1);
    t.type = Tok::String;
    t.text = unescape(raw);
    m_line += static_cast<int>(std::count(raw.begin(), raw.end(), '\n'));
    m_pos = e + 1;
  }

  // Python's str.encode("ascii", "backslashreplace").decode("unicode-escape"), as jinja2 decodes
  // string literals.
  std::string unescape(const std::string& raw) const {
    std::string out;
    auto hex = [&](std::size_t& i, int count, const char* what) {
      char32_t v = 0;
      for (int k = 0; k < count; ++k, ++i) {
        if (i >= raw.size() || !std::isxdigit(static_cast<unsigned char>(raw[i])))
          fail(m_line, std::string("truncated ") + what + " escape");
        const char ch = static_cast<char>(std::tolower(static_cast<unsigned char>(raw[i])));
        v = v * 16 + (std::isdigit(static_cast<unsigned char>(ch)) ? ch - '0' : ch - 'a' + 10);
      }
      return v;
    };
    for (std::size_t i = 0; i < raw.size();) {
      const char32_t c = nextCp(raw, i);
      if (c != '\\') {
        appendCp(out, c);
        continue;
      }
      const char32_t d = nextCp(raw, i);
      char32_t v;
      switch (d) {
        case '\n':
          continue;
        case '\\':
        case '\'':
        case '"':
          v = d;
          break;
        case 'a':
          v = 7;
          break;
        case 'b':
          v = 8;
          break;
        case 'f':
          v = 12;
          break;
        case 'n':
          v = 10;
          break;
        case 'r':
          v = 13;
          break;
        case 't':
          v = 9;
          break;
        case 'v':
          v = 11;
          break;
        case 'x':
          v = hex(i, 2, "\\xXX");
          break;
        case 'u':
          v = hex(i, 4, "\\uXXXX");
          break;
        case 'U':
          v = hex(i, 8, "\\UXXXXXXXX");
          if (v > 0x10ffff) fail(m_line, "illegal Unicode character in a \\U escape");
          break;
        case 'N':
          unsupported(m_line, "\\N{...} escapes");
        default:
          if (d >= '0' && d <= '7') {
            v = d - '0';
            for (int k = 0; k < 2 && i < raw.size() && raw[i] >= '0' && raw[i] <= '7'; ++k, ++i)
              v = v * 8 + (raw[i] - '0');
            break;
          }
          out += '\\';
          if (d >= 0x80) {  // backslashreplace turned the character into an escape's text
            char buf[16];
            std::snprintf(buf, sizeof buf,
                          d <= 0xff     ? "x%02x"
                          : d <= 0xffff ? "u%04x"
                                        : "U%08x",
                          static_cast<unsigned>(d));
            out += buf;
          } else {
            appendCp(out, d);
          }
          continue;
      }
      if (v >= 0xd800 && v <= 0xdfff) unsupported(m_line, "surrogate escapes");
      appendCp(out, v);
    }
    return out;
  }

  const std::string& m_source;
  std::string m_src;
  std::size_t m_pos = 0;
  int m_line = 1;
  bool m_lineStarting = true;
  std::vector<Token> m_out;
};

// ---------------------------------------------------------------------------------------------
// Syntax tree

enum class EK : uint8_t {
  Const,
  Name,
  GetAttr,
  GetItem,
  Slice,
  Call,
  Filter,
  Test,
  Neg,
  Pos,
  Not,
  Bin,
  Concat,
  And,
  Or,
  Compare,
  Cond,
  List,
  Tuple,
  Dict,
  BlockInput  // the text captured by a {% set %} or {% filter %} block, fed to its filters
};
enum class BinOp : uint8_t { Add, Sub, Mul, Div, FloorDiv, Mod, Pow };
enum class CmpOp : uint8_t { Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// One node kind per jinja2 expression. args holds the operands: the object of GetAttr / GetItem
// (then the key), the callee of Call (then the positional arguments), the input of Filter / Test
// (then the arguments), the items of List / Tuple, the keys and values of Dict alternately, the
// three parts of Slice (null when left out), test / then / else of Cond (else may be null).
struct Expr {
  EK kind = EK::Const;
  int line = 0;
  Value value;       // Const
  std::string name;  // Name, GetAttr, Filter, Test
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<CmpOp> cmps;  // Compare: args[k + 1] is compared with cmps[k]
  BinOp bin = BinOp::Add;
};

// An assignment target: a name, names to unpack, or a namespace attribute (names[0].attr).
struct Target {
  std::vector<std::string> names;
  bool unpack = false;
  std::string attr;
};

enum class SK : uint8_t {
  Text,
  Output,
  If,
  For,
  Set,
  SetBlock,
  Macro,
  Break,
  Continue,
  FilterBlock,
  With,
  Generation
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

// Names a scope starts out with as undefined (see ScopeAnalysis).
using Missing = std::vector<std::string>;

struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() parameters
  Body body;
  Missing missing;
};

struct Stmt {
  SK kind = SK::Text;
  int line = 0;
  std::string text;  // Text
  // Output: the value; Set: the value; For: the iterable; SetBlock / FilterBlock: the filters
  // applied to the captured text (null for a plain {% set %} block).
  ExprPtr expr;
  ExprPtr cond;  // For: the `if` filter
  Target target;
  Body body, elseBody;
  std::vector<std::pair<ExprPtr, Body>> branches;  // If / elif
  std::unique_ptr<MacroDef> macro;
  std::vector<std::pair<Target, ExprPtr>> withVars;
  // The scopes this statement opens: the body (a loop iteration, a block), a loop's else and
  // its `if` filter.
  Missing missingInBody, missingInElse, missingInTest;
};

ExprPtr makeExpr(EK kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

// Filters and tests, checked when parsing as jinja2 does. Jinja2 built-ins outside this subset
// are refused by name.
const char* const kFilters[] = {
    "abs",    "attr",   "capitalize", "count",      "d",      "default",    "dictsort", "first",
    "float",  "indent", "int",        "items",      "join",   "last",       "length",   "list",
    "lower",  "map",    "max",        "min",        "reject", "rejectattr", "replace",  "reverse",
    "round",  "safe",   "select",     "selectattr", "sort",   "string",     "sum",      "title",
    "tojson", "trim",   "unique",     "upper"};
const char* const kUnsupportedFilters[] = {
    "batch",    "center",    "e",      "escape",    "filesizeformat", "forceescape",
    "format",   "groupby",   "pprint", "random",    "slice",          "striptags",
    "truncate", "urlencode", "urlize", "wordcount", "wordwrap",       "xmlattr"};
const char* const kTests[] = {
    "defined", "undefined",   "none",    "boolean",  "false",    "true",     "integer",     "float",
    "number",  "string",      "mapping", "sequence", "iterable", "callable", "sameas",      "in",
    "eq",      "equalto",     "==",      "ne",       "!=",       "gt",       "greaterthan", ">",
    "ge",      ">=",          "lt",      "lessthan", "<",        "le",       "<=",          "odd",
    "even",    "divisibleby", "lower",   "upper",    "escaped"};
const char* const kUnsupportedTests[] = {"filter", "test"};

template <std::size_t N>
bool inList(const char* const (&list)[N], const std::string& name) {
  for (const char* s : list)
    if (name == s) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Parser: jinja2's grammar. Precedence, loosest first: `x if c else y`, or, and, not, comparisons
// and `in`, + -, ~, * / // %, **, unary - +, then postfix (.attr [key] (call)), filters `|f` and
// tests `is t`. Filters bind tighter than binary operators: `a + b | trim` trims b only.

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& source)
      : m_toks(std::move(tokens)), m_source(source) {}

  Body parseTemplate() { return subparse({}); }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : m_p(p) {
      if (++m_p.m_depth > kMaxParseDepth)
        m_p.fail(m_p.cur().line, "nesting deeper than 100 levels is not supported");
    }
    ~DepthGuard() { --m_p.m_depth; }
    Parser& m_p;
  };

  [[noreturn]] void fail(int line, const std::string& msg) const {
    throw UserError(m_source + ", line " + std::to_string(line) + ": " + msg);
  }
  [[noreturn]] void unsupported(int line, const std::string& what) const {
    fail(line, "unsupported construct: " + what);
  }

  const Token& cur() const { return m_toks[m_pos]; }
  const Token& look() const { return m_toks[std::min(m_pos + 1, m_toks.size() - 1)]; }
  void advance() {
    if (m_pos + 1 < m_toks.size()) ++m_pos;
  }
  bool isOp(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool isName(const char* name) const { return cur().type == Tok::Name && cur().text == name; }
  bool skipOp(const char* op) {
    if (!isOp(op)) return false;
    advance();
    return true;
  }
  bool skipName(const char* name) {
    if (!isName(name)) return false;
    advance();
    return true;
  }
  void expectOp(const char* op) {
    if (!skipOp(op))
      fail(cur().line, std::string("expected '") + op + "', got '" + describe(cur()) + "'");
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type)
      fail(cur().line, std::string("expected ") + what + ", got '" + describe(cur()) + "'");
    advance();
  }
  std::string expectName() {
    if (cur().type != Tok::Name) fail(cur().line, "expected a name, got '" + describe(cur()) + "'");
    std::string name = cur().text;
    advance();
    return name;
  }

  // ---- Statements

  Body subparse(const std::vector<const char*>& endTags) {
    Body body;
    for (;;) {
      const Token& t = cur();
      if (t.type == Tok::Data) {
        auto s = std::make_unique<Stmt>();
        s->kind = SK::Text;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        advance();
      } else if (t.type == Tok::VarBegin) {
        advance();
        auto s = std::make_unique<Stmt>();
        s->kind = SK::Output;
        s->line = t.line;
        s->expr = parseTuple();
        expect(Tok::VarEnd, "'}}'");
        body.push_back(std::move(s));
      } else if (t.type == Tok::BlockBegin) {
        advance();
        if (cur().type == Tok::Name)
          for (const char* end : endTags)
            if (cur().text == end) return body;
        body.push_back(parseStatement());
        expect(Tok::BlockEnd, "'%}'");
      } else if (t.type == Tok::Eof) {
        if (!endTags.empty()) {
          std::string expected;
          for (const char* end : endTags)
            expected += (expected.empty() ? "'" : " or '") + std::string(end) + "'";
          fail(t.line, "unexpected end of template: expected " + expected + " to close the '" +
                           m_blocks.back().first + "' block opened on line " +
                           std::to_string(m_blocks.back().second));
        }
        return body;
      } else {
        fail(t.line, "unexpected '" + describe(t) + "'");
      }
    }
  }

  // The body of a block up to one of endTags; leaves the end tag's name as the current token.
  Body parseStatements(const std::vector<const char*>& endTags) {
    skipOp(":");
    expect(Tok::BlockEnd, "'%}'");
    return subparse(endTags);
  }

  std::unique_ptr<Stmt> parseStatement() {
    DepthGuard depth(*this);
    const Token& t = cur();
    if (t.type != Tok::Name) fail(t.line, "tag name expected");
    const std::string tag = t.text;
    const int line = t.line;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    m_blocks.emplace_back(tag, line);
    if (tag == "for") {
      parseFor(*s);
    } else if (tag == "if") {
      parseIf(*s);
    } else if (tag == "set") {
      parseSet(*s);
    } else if (tag == "macro") {
      parseMacro(*s);
    } else if (tag == "filter") {
      advance();
      s->kind = SK::FilterBlock;
      s->expr = parseFilter(makeExpr(EK::BlockInput, line), true);
      s->body = parseIsolatedBody({"endfilter"});
      advance();
    } else if (tag == "with") {
      parseWith(*s);
    } else if (tag == "print") {
      advance();
      s->kind = SK::Output;
      s->expr = parseTuple();
    } else if (tag == "break" || tag == "continue") {
      advance();
      if (m_loopDepth == 0) fail(line, "'" + tag + "' outside of a loop");
      s->kind = tag == "break" ? SK::Break : SK::Continue;
    } else if (tag == "generation") {
      advance();
      s->kind = SK::Generation;
      s->body = parseIsolatedBody({"endgeneration"});
      advance();
    } else if (tag == "block" || tag == "extends" || tag == "include" || tag == "import" ||
               tag == "from" || tag == "autoescape" || tag == "call") {
      unsupported(line, "{% " + tag + " %}");
    } else {
      std::string msg = "unknown tag '" + tag + "'";
      if (m_blocks.size() > 1)
        msg += " (the innermost open block is '" + m_blocks[m_blocks.size() - 2].first +
               "' from line " + std::to_string(m_blocks[m_blocks.size() - 2].second) + ")";
      fail(line, msg);
    }
    m_blocks.pop_back();
    return s;
  }

  // A body that runs as a function in jinja2 ({% break %} cannot reach an enclosing loop).
  Body parseIsolatedBody(const std::vector<const char*>& endTags) {
    const int loops = m_loopDepth;
    m_loopDepth = 0;
    Body body = parseStatements(endTags);
    m_loopDepth = loops;
    return body;
  }

  void parseFor(Stmt& s) {
    advance();
    s.kind = SK::For;
    s.target = parseTarget(false, "in");
    if (!skipName("in")) fail(cur().line, "expected 'in', got '" + describe(cur()) + "'");
    s.expr = parseTuple(false, false, "recursive");
    if (skipName("if")) s.cond = parseExpression();
    if (isName("recursive")) unsupported(cur().line, "recursive for loops");
    ++m_loopDepth;
    s.body = parseStatements({"endfor", "else"});
    --m_loopDepth;
    const bool hasElse = cur().text == "else";
    advance();
    if (hasElse) {
      s.elseBody = parseStatements({"endfor"});
      advance();
    }
  }

  void parseIf(Stmt& s) {
    advance();
    s.kind = SK::If;
    for (;;) {
      ExprPtr cond = parseTuple(false, false);
      Body body = parseStatements({"elif", "else", "endif"});
      s.branches.emplace_back(std::move(cond), std::move(body));
      const std::string tag = cur().text;
      advance();
      if (tag == "elif") continue;
      if (tag == "else") {
        s.elseBody = parseStatements({"endif"});
        advance();
      }
      break;
    }
  }

  void parseSet(Stmt& s) {
    advance();
    s.target = parseTarget(true, nullptr);
    if (skipOp("=")) {
      s.kind = SK::Set;
      s.expr = parseTuple();
      return;
    }
    s.kind = SK::SetBlock;
    if (isOp("|")) s.expr = parseFilter(makeExpr(EK::BlockInput, s.line), false);
    s.body = parseIsolatedBody({"endset"});
    advance();
  }

  void parseMacro(Stmt& s) {
    advance();
    s.kind = SK::Macro;
    s.macro = std::make_unique<MacroDef>();
    MacroDef& m = *s.macro;
    m.name = expectName();
    expectOp("(");
    while (!isOp(")")) {
      if (!m.params.empty()) expectOp(",");
      m.params.push_back(expectName());
      if (skipOp("="))
        m.defaults.push_back(parseExpression());
      else if (!m.defaults.empty())
        fail(cur().line, "non-default argument follows default argument");
    }
    expectOp(")");
    ++m_macroDepth;
    m.body = parseIsolatedBody({"endmacro"});
    --m_macroDepth;
    advance();
  }

  void parseWith(Stmt& s) {
    advance();
    s.kind = SK::With;
    while (cur().type != Tok::BlockEnd) {
      if (!s.withVars.empty()) expectOp(",");
      Target t = parseTarget(false, nullptr);
      expectOp("=");
      s.withVars.emplace_back(std::move(t), parseExpression());
    }
    s.body = parseStatements({"endwith"});
    advance();
  }

  // A name, names to unpack (`a, b` or `(a, b)`), or with `withNamespace` a namespace attribute.
  Target parseTarget(bool withNamespace, const char* endName) {
    Target t;
    if (withNamespace && cur().type == Tok::Name && look().type == Tok::Op && look().text == ".") {
      t.names.push_back(cur().text);
      advance();
      advance();
      t.attr = expectName();
      return t;
    }
    const bool paren = skipOp("(");
    for (;;) {
      if (cur().type != Tok::Name || cur().text == "true" || cur().text == "false" ||
          cur().text == "none" || cur().text == "True" || cur().text == "False" ||
          cur().text == "None")
        fail(cur().line, "can't assign to '" + describe(cur()) + "'");
      t.names.push_back(cur().text);
      advance();
      if (!skipOp(",")) break;
      t.unpack = true;
      if (cur().type == Tok::BlockEnd || (paren && isOp(")")) || (endName && isName(endName)) ||
          isOp("="))
        break;
    }
    if (paren) expectOp(")");
    return t;
  }

  // ---- Expressions

  bool isTupleEnd(const char* endName) const {
    return cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || isOp(")") ||
           (endName && isName(endName));
  }

  ExprPtr parseTuple(bool explicitParens = false, bool withCondexpr = true,
                     const char* endName = nullptr) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool isTuple = false;
    for (;;) {
      if (!items.empty()) expectOp(",");
      if (isTupleEnd(endName)) break;
      items.push_back(withCondexpr ? parseExpression() : parseOr());
      if (isOp(","))
        isTuple = true;
      else
        break;
    }
    if (!isTuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicitParens)
        fail(cur().line, "expected an expression, got '" + describe(cur()) + "'");
    }
    auto e = makeExpr(EK::Tuple, line);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parseExpression() {
    DepthGuard depth(*this);
    ExprPtr e = parseOr();
    while (isName("if")) {
      const int line = cur().line;
      advance();
      auto c = makeExpr(EK::Cond, line);
      c->args.push_back(parseOr());
      c->args.push_back(std::move(e));
      c->args.push_back(skipName("else") ? parseExpression() : nullptr);
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(EK kind, ExprPtr a, ExprPtr b, int line) {
    auto e = makeExpr(kind, line);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parseOr() {
    ExprPtr e = parseAnd();
    while (isName("or")) {
      const int line = cur().line;
      advance();
      e = binary(EK::Or, std::move(e), parseAnd(), line);
    }
    return e;
  }

  ExprPtr parseAnd() {
    ExprPtr e = parseNot();
    while (isName("and")) {
      const int line = cur().line;
      advance();
      e = binary(EK::And, std::move(e), parseNot(), line);
    }
    return e;
  }

  ExprPtr parseNot() {
    if (isName("not")) {
      DepthGuard depth(*this);
      auto e = makeExpr(EK::Not, cur().line);
      advance();
      e->args.push_back(parseNot());
      return e;
    }
    return parseCompare();
  }

  ExprPtr parseCompare() {
    const int line = cur().line;
    ExprPtr first = parseMath1();
    ExprPtr cmp;
    for (;;) {
      CmpOp op;
      if (isOp("==")) {
        op = CmpOp::Eq;
      } else if (isOp("!=")) {
        op = CmpOp::Ne;
      } else if (isOp("<")) {
        op = CmpOp::Lt;
      } else if (isOp("<=")) {
        op = CmpOp::Le;
      } else if (isOp(">")) {
        op = CmpOp::Gt;
      } else if (isOp(">=")) {
        op = CmpOp::Ge;
      } else if (isName("in")) {
        op = CmpOp::In;
      } else if (isName("not") && look().type == Tok::Name && look().text == "in") {
        advance();
        op = CmpOp::NotIn;
      } else {
        break;
      }
      advance();
      if (!cmp) {
        cmp = makeExpr(EK::Compare, line);
        cmp->args.push_back(std::move(first));
      }
      cmp->cmps.push_back(op);
      cmp->args.push_back(parseMath1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr arith(BinOp op, ExprPtr a, ExprPtr b, int line) {
    auto e = binary(EK::Bin, std::move(a), std::move(b), line);
    e->bin = op;
    return e;
  }

  ExprPtr parseMath1() {
    ExprPtr e = parseConcat();
    while (isOp("+") || isOp("-")) {
      const BinOp op = isOp("+") ? BinOp::Add : BinOp::Sub;
      const int line = cur().line;
      advance();
      e = arith(op, std::move(e), parseConcat(), line);
    }
    return e;
  }

  ExprPtr parseConcat() {
    const int line = cur().line;
    ExprPtr e = parseMath2();
    if (!isOp("~")) return e;
    auto c = makeExpr(EK::Concat, line);
    c->args.push_back(std::move(e));
    while (skipOp("~")) c->args.push_back(parseMath2());
    return c;
  }

  ExprPtr parseMath2() {
    ExprPtr e = parsePow();
    for (;;) {
      BinOp op;
      if (isOp("*")) {
        op = BinOp::Mul;
      } else if (isOp("/")) {
        op = BinOp::Div;
      } else if (isOp("//")) {
        op = BinOp::FloorDiv;
      } else if (isOp("%")) {
        op = BinOp::Mod;
      } else {
        return e;
      }
      const int line = cur().line;
      advance();
      e = arith(op, std::move(e), parsePow(), line);
    }
  }

  ExprPtr parsePow() {
    ExprPtr e = parseUnary(true);
    while (isOp("**")) {
      const int line = cur().line;
      advance();
      e = arith(BinOp::Pow, std::move(e), parseUnary(true), line);
    }
    return e;
  }

  ExprPtr parseUnary(bool withFilter) {
    DepthGuard depth(*this);
    ExprPtr e;
    if (isOp("-") || isOp("+")) {
      e = makeExpr(isOp("-") ? EK::Neg : EK::Pos, cur().line);
      advance();
      e->args.push_back(parseUnary(false));
    } else {
      e = parsePrimary();
    }
    e = parsePostfix(std::move(e));
    if (withFilter) e = parseFilterExpr(std::move(e));
    return e;
  }

  ExprPtr parsePrimary() {
    const Token& t = cur();
    const int line = t.line;
    ExprPtr e;
    switch (t.type) {
      case Tok::Name:
        e = makeExpr(EK::Const, line);
        if (t.text == "true" || t.text == "True") {
          e->value = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::none();
        } else {
          if (m_macroDepth > 0 && (t.text == "varargs" || t.text == "kwargs" || t.text == "caller"))
            unsupported(line, "'" + t.text + "' in a macro");
          e->kind = EK::Name;
          e->name = t.text;
        }
        advance();
        return e;
      case Tok::String: {
        std::string text;
        while (cur().type == Tok::String) {
          text += cur().text;
          advance();
        }
        e = makeExpr(EK::Const, line);
        e->value = Value::str(std::move(text));
        return e;
      }
      case Tok::Int:
      case Tok::Float:
        e = makeExpr(EK::Const, line);
        e->value = t.type == Tok::Int ? Value::integer(t.ival) : Value::real(t.fval);
        advance();
        return e;
      case Tok::Op:
        if (t.text == "(") {
          advance();
          e = parseTuple(true);
          expectOp(")");
          return e;
        }
        if (t.text == "[" || t.text == "{") {
          const bool isDict = t.text == "{";
          const char* close = isDict ? "}" : "]";
          e = makeExpr(isDict ? EK::Dict : EK::List, line);
          advance();
          while (!isOp(close)) {
            if (!e->args.empty()) expectOp(",");
            if (isOp(close)) break;
            e->args.push_back(parseExpression());
            if (isDict) {
              expectOp(":");
              e->args.push_back(parseExpression());
            }
          }
          expectOp(close);
          return e;
        }
        break;
      default:
        break;
    }
    fail(line, "unexpected '" + describe(t) + "'");
  }

  ExprPtr parsePostfix(ExprPtr e) {
    for (;;) {
      if (isOp(".") || isOp("[")) {
        e = parseSubscript(std::move(e));
      } else if (isOp("(")) {
        e = parseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parseFilterExpr(ExprPtr e) {
    for (;;) {
      if (isOp("|")) {
        e = parseFilter(std::move(e), false);
      } else if (isName("is")) {
        e = parseTest(std::move(e));
      } else if (isOp("(")) {
        e = parseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parseSubscript(ExprPtr obj) {
    const int line = cur().line;
    if (skipOp(".")) {
      const Token& t = cur();
      if (t.type == Tok::Name) {
        auto e = makeExpr(EK::GetAttr, line);
        e->args.push_back(std::move(obj));
        e->name = t.text;
        advance();
        return e;
      }
      if (t.type != Tok::Int) fail(t.line, "expected name or number");
      auto e = makeExpr(EK::GetItem, line);
      e->args.push_back(std::move(obj));
      auto key = makeExpr(EK::Const, t.line);
      key->value = Value::integer(t.ival);
      e->args.push_back(std::move(key));
      advance();
      return e;
    }
    expectOp("[");
    auto e = makeExpr(EK::GetItem, line);
    e->args.push_back(std::move(obj));
    e->args.push_back(parseSubscribed());
    if (isOp(",")) unsupported(cur().line, "subscripts with several keys (x[a, b])");
    expectOp("]");
    return e;
  }

  ExprPtr parseSubscribed() {
    const int line = cur().line;
    ExprPtr first;
    if (!isOp(":")) {
      first = parseExpression();
      if (!isOp(":")) return first;
    }
    advance();  // the first ':'
    auto s = makeExpr(EK::Slice, line);
    s->args.push_back(std::move(first));
    s->args.push_back(isOp(":") || isOp("]") || isOp(",") ? nullptr : parseExpression());
    ExprPtr step;
    if (skipOp(":") && !isOp("]") && !isOp(",")) step = parseExpression();
    s->args.push_back(std::move(step));
    return s;
  }

  void parseCallArgs(Expr& e) {
    const int line = cur().line;
    expectOp("(");
    bool requireComma = false;
    while (!isOp(")")) {
      if (requireComma) {
        expectOp(",");
        if (isOp(")")) break;
      }
      if (isOp("*") || isOp("**")) unsupported(cur().line, "*args / **kwargs in a call");
      if (cur().type == Tok::Name && look().type == Tok::Op && look().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        e.kwargs.emplace_back(std::move(key), parseExpression());
      } else {
        if (!e.kwargs.empty()) fail(line, "invalid syntax for function call expression");
        e.args.push_back(parseExpression());
      }
      requireComma = true;
    }
    expectOp(")");
  }

  ExprPtr parseCall(ExprPtr callee) {
    auto e = makeExpr(EK::Call, cur().line);
    e->args.push_back(std::move(callee));
    parseCallArgs(*e);
    return e;
  }

  std::string dottedName() {
    std::string name = expectName();
    while (skipOp(".")) name += "." + expectName();
    return name;
  }

  ExprPtr parseFilter(ExprPtr input, bool startInline) {
    while (isOp("|") || startInline) {
      if (!startInline) advance();
      startInline = false;
      const int line = cur().line;
      const std::string name = dottedName();
      if (!inList(kFilters, name)) {
        if (inList(kUnsupportedFilters, name)) unsupported(line, "the '" + name + "' filter");
        fail(line, "no filter named '" + name + "'");
      }
      auto e = makeExpr(EK::Filter, line);
      e->name = name;
      e->args.push_back(std::move(input));
      if (isOp("(")) parseCallArgs(*e);
      input = std::move(e);
    }
    return input;
  }

  ExprPtr parseTest(ExprPtr subject) {
    const int line = cur().line;
    advance();  // is
    const bool negated = skipName("not");
    const std::string name = dottedName();
    if (!inList(kTests, name)) {
      if (inList(kUnsupportedTests, name)) unsupported(line, "the '" + name + "' test");
      fail(line, "no test named '" + name + "'");
    }
    auto e = makeExpr(EK::Test, line);
    e->name = name;
    e->args.push_back(std::move(subject));
    if (isOp("(")) {
      parseCallArgs(*e);
    } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                cur().type == Tok::Float || isOp("[") || isOp("{")) &&
               !isName("else") && !isName("or") && !isName("and")) {
      if (isName("is")) fail(cur().line, "you cannot chain multiple tests with is");
      e->args.push_back(parsePostfix(parsePrimary()));
    }
    if (!negated) return e;
    auto n = makeExpr(EK::Not, line);
    n->args.push_back(std::move(e));
    return n;
  }

  std::vector<Token> m_toks;
  std::size_t m_pos = 0;
  const std::string& m_source;
  int m_depth = 0;
  int m_loopDepth = 0;
  int m_macroDepth = 0;
  std::vector<std::pair<std::string, int>> m_blocks;  // open tags and their lines, for messages
};

// ---------------------------------------------------------------------------------------------
// Scope analysis. jinja2 binds names when it compiles: within a scope, a name that is assigned
// somewhere in that scope, was not read there before the assignment, and is not a variable of
// any enclosing scope, starts out undefined, even when the render context has it:
//   {% for m in messages %}{% set y %}{{ x }}{% endset %}{% set x = 1 %}{% endfor %}
// renders y empty whatever the context's x. This pass reproduces jinja2's symbol tracking
// (jinja2/idtracking.py: loads, stores, parameters, and the merge after if / elif / else) to
// find those names; the renderer defines them as undefined when it opens the scope, and
// otherwise looks names up from the innermost scope outwards, which binds as jinja2 does.

class ScopeAnalysis {
 public:
  Missing analyzeRoot(const Body& body) {
    Symbols root;
    for (const auto& s : body) visitStmt(*s, root);
    analyzeChildren(body, root);
    return root.missing();
  }

 private:
  enum class Load : uint8_t { Param, Resolve, Alias, Undefined };

  struct Symbols {
    const Symbols* parent = nullptr;
    std::map<std::string, Load> loads;  // the names this scope has its own variable for
    std::set<std::string> stores;

    bool findRef(const std::string& name) const {
      for (const Symbols* s = this; s; s = s->parent)
        if (s->loads.count(name)) return true;
      return false;
    }
    void load(const std::string& name) {
      if (!findRef(name)) loads[name] = Load::Resolve;
    }
    void store(const std::string& name) {
      stores.insert(name);
      if (!loads.count(name))
        loads[name] = parent && parent->findRef(name) ? Load::Alias : Load::Undefined;
    }
    void param(const std::string& name) {
      stores.insert(name);
      loads[name] = Load::Param;
    }
    // After an if: a name assigned in some branches only starts out as the enclosing value.
    void branchUpdate(const std::vector<Symbols>& branches) {
      std::map<std::string, std::size_t> counts;
      for (const Symbols& b : branches)
        for (const std::string& name : b.stores)
          if (!stores.count(name)) ++counts[name];
      for (const Symbols& b : branches) {
        for (const auto& kv : b.loads) loads[kv.first] = kv.second;
        stores.insert(b.stores.begin(), b.stores.end());
      }
      for (const auto& kv : counts) {
        if (kv.second == branches.size()) continue;
        loads[kv.first] = parent && parent->findRef(kv.first) ? Load::Alias : Load::Resolve;
      }
    }
    Missing missing() const {
      Missing out;
      for (const auto& kv : loads)
        if (kv.second == Load::Undefined) out.push_back(kv.first);
      return out;
    }
  };

  static void visitExpr(const Expr* e, Symbols& sym) {
    if (!e) return;
    if (e->kind == EK::Name) sym.load(e->name);
    for (const auto& a : e->args) visitExpr(a.get(), sym);
    for (const auto& kv : e->kwargs) visitExpr(kv.second.get(), sym);
  }

  static void storeTarget(const Target& t, Symbols& sym) {
    if (!t.attr.empty()) {
      sym.load(t.names[0]);  // a namespace attribute reads the namespace's name
      return;
    }
    for (const std::string& name : t.names) sym.store(name);
  }

  // What a scope sees of one statement: not the insides of the scopes it opens.
  static void visitStmt(const Stmt& s, Symbols& sym) {
    switch (s.kind) {
      case SK::Output:
        visitExpr(s.expr.get(), sym);
        return;
      case SK::If:
        visitIf(s, 0, sym);
        return;
      case SK::For:
        visitExpr(s.expr.get(), sym);
        return;
      case SK::Set:
        visitExpr(s.expr.get(), sym);
        storeTarget(s.target, sym);
        return;
      case SK::SetBlock:
        storeTarget(s.target, sym);
        return;
      case SK::Macro:
        sym.store(s.macro->name);
        return;
      case SK::FilterBlock:
        visitExpr(s.expr.get(), sym);
        return;
      case SK::With:
        for (const auto& wv : s.withVars) visitExpr(wv.second.get(), sym);
        return;
      default:
        return;
    }
  }

  // jinja2 keeps elifs as nested ifs in one branch: if-body, the elifs, else.
  static void visitIf(const Stmt& s, std::size_t branch, Symbols& sym) {
    visitExpr(s.branches[branch].first.get(), sym);
    std::vector<Symbols> parts(3, sym);
    for (const auto& st : s.branches[branch].second) visitStmt(*st, parts[0]);
    if (branch == 0) {
      for (std::size_t k = 1; k < s.branches.size(); ++k) visitIf(s, k, parts[1]);
      for (const auto& st : s.elseBody) visitStmt(*st, parts[2]);
    }
    sym.branchUpdate(parts);
  }

  // The scopes opened by the statements of `body` (an analysed scope `sym`), in any if branch.
  void analyzeChildren(const Body& body, const Symbols& sym) {
    for (const auto& sp : body) {
      Stmt& s = *sp;
      switch (s.kind) {
        case SK::If:
          for (const auto& branch : s.branches) analyzeChildren(branch.second, sym);
          analyzeChildren(s.elseBody, sym);
          break;
        case SK::For: {
          Symbols loop = child(sym);
          loop.param("loop");
          for (const std::string& name : s.target.names) loop.param(name);
          s.missingInBody = analyzeBody(s.body, loop);
          if (!s.elseBody.empty()) s.missingInElse = analyzeBody(s.elseBody, child(sym));
          if (s.cond) {
            Symbols test = child(sym);
            for (const std::string& name : s.target.names) test.param(name);
            visitExpr(s.cond.get(), test);
            s.missingInTest = test.missing();
          }
          break;
        }
        case SK::Macro: {
          Symbols m = child(sym);
          for (const std::string& p : s.macro->params) m.param(p);
          for (const auto& d : s.macro->defaults) visitExpr(d.get(), m);
          s.macro->missing = analyzeBody(s.macro->body, m);
          break;
        }
        case SK::SetBlock:
        case SK::Generation:
          s.missingInBody = analyzeBody(s.body, child(sym));
          break;
        case SK::FilterBlock: {
          Symbols f = child(sym);
          for (const auto& st : s.body) visitStmt(*st, f);
          visitExpr(s.expr.get(), f);
          analyzeChildren(s.body, f);
          s.missingInBody = f.missing();
          break;
        }
        case SK::With: {
          Symbols w = child(sym);
          for (const auto& wv : s.withVars)
            for (const std::string& name : wv.first.names) w.param(name);
          s.missingInBody = analyzeBody(s.body, w);
          break;
        }
        default:
          break;
      }
    }
  }

  static Symbols child(const Symbols& parent) {
    Symbols s;
    s.parent = &parent;
    return s;
  }

  Missing analyzeBody(const Body& body, Symbols sym) {
    for (const auto& st : body) visitStmt(*st, sym);
    analyzeChildren(body, sym);
    return sym.missing();
  }
};

// ---------------------------------------------------------------------------------------------
// Python semantics on values

[[noreturn]] void failUndefined(const Value& v) { pyFail(v.s ? *v.s : "undefined value"); }

// Python's integers are unbounded; ours stop at 64 bits and say so.
[[noreturn]] void failIntOverflow() { pyFail("unsupported construct: an integer beyond 64 bits"); }

int64_t checkedAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) failIntOverflow();
  return r;
}
int64_t checkedSub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) failIntOverflow();
  return r;
}
int64_t checkedMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) failIntOverflow();
  return r;
}

bool pyEq(const Value& a, const Value& b, int depth = 0) {
  if (depth > kMaxPrintDepth) pyFail("values nested too deeply to compare");
  if (a.isNumber() && b.isNumber()) {
    if (a.isIntLike() && b.isIntLike()) return a.i == b.i;
    if (a.isIntLike() || b.isIntLike()) {
      const int64_t n = a.isIntLike() ? a.i : b.i;
      const double d = a.isIntLike() ? b.f : a.f;
      if (d == std::floor(d) && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d) == n;
      return false;
    }
    return a.f == b.f;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::Str:
      if (a.s == b.s) return true;
      chargeBytes(std::min(a.text().size(), b.text().size()));
      return a.text() == b.text();
    case Kind::Seq: {
      const SeqObj &x = seqOf(a), &y = seqOf(b);
      const bool listLike =
          x.kind == SeqKind::List || x.kind == SeqKind::Tuple || x.kind == SeqKind::Range;
      if (x.kind != y.kind) return false;
      if (x.kind == SeqKind::Values) return a.o == b.o;
      if (x.items.size() != y.items.size()) return false;
      if (listLike) {
        for (std::size_t k = 0; k < x.items.size(); ++k)
          if (!pyEq(x.items[k], y.items[k], depth + 1)) return false;
        return true;
      }
      for (const Value& v : x.items) {  // keys / items views compare as sets
        bool found = false;
        for (const Value& w : y.items) found = found || pyEq(v, w, depth + 1);
        if (!found) return false;
      }
      return true;
    }
    case Kind::Dict: {
      const DictObj &x = dictOf(a), &y = dictOf(b);
      if (x.items.size() != y.items.size()) return false;
      for (const auto& kv : x.items) {
        const Value* other = dictFind(y, kv.first);
        if (!other || !pyEq(kv.second, *other, depth + 1)) return false;
      }
      return true;
    }
    default:
      return a.o == b.o;
  }
}

// a < b; `op` names the operator for the TypeError Python raises on unorderable types.
bool pyLessOp(const Value& a, const Value& b, const char* op, int depth = 0) {
  if (depth > kMaxPrintDepth) pyFail("values nested too deeply to compare");
  if (a.isNumber() && b.isNumber()) {
    if (a.isIntLike() && b.isIntLike()) return a.i < b.i;
    return a.asDouble() < b.asDouble();
  }
  if (a.kind == Kind::Str && b.kind == Kind::Str) {
    chargeBytes(std::min(a.text().size(), b.text().size()));
    return a.text() < b.text();
  }
  if (a.kind == Kind::Seq && b.kind == Kind::Seq && seqOf(a).kind == seqOf(b).kind &&
      (seqOf(a).kind == SeqKind::List || seqOf(a).kind == SeqKind::Tuple)) {
    const auto &x = seqOf(a).items, &y = seqOf(b).items;
    for (std::size_t k = 0; k < x.size() && k < y.size(); ++k)
      if (!pyEq(x[k], y[k], depth + 1)) return pyLessOp(x[k], y[k], op, depth + 1);
    return x.size() < y.size();
  }
  if (a.isUndefined()) failUndefined(a);
  if (b.isUndefined()) failUndefined(b);
  pyFail(std::string("'") + op + "' not supported between instances of '" + typeName(a) +
         "' and '" + typeName(b) + "'");
}

bool pyLess(const Value& a, const Value& b) { return pyLessOp(a, b, "<"); }

std::size_t pyLen(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return 0;
    case Kind::Str:
      return cpCount(v.text());
    case Kind::Seq:
      return seqOf(v).items.size();
    case Kind::Dict:
      return dictOf(v).items.size();
    case Kind::Loop:
      return loopOf(v).items->size();
    default:
      pyFail("object of type '" + typeName(v) + "' has no len()");
  }
}

// The code points of a string as one-character strings.
std::vector<Value> strChars(const std::string& s) {
  std::vector<Value> out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t start = i;
    nextCp(s, i);
    out.push_back(Value::str(s.substr(start, i - start)));
  }
  return out;
}

// iter(v) drained into a list; a generator is used up.
std::vector<Value> iterate(const Value& v) {
  if (v.kind == Kind::Seq) charge(seqOf(v).items.size());
  if (v.kind == Kind::Dict) charge(dictOf(v).items.size());
  switch (v.kind) {
    case Kind::Undefined:
      return {};
    case Kind::Str:
      return strChars(v.text());
    case Kind::Seq:
      return seqOf(v).items;
    case Kind::Dict: {
      std::vector<Value> keys;
      for (const auto& kv : dictOf(v).items) keys.push_back(kv.first);
      return keys;
    }
    case Kind::Iter: {
      IterObj& it = iterOf(v);
      std::vector<Value> rest(it.items.begin() + static_cast<std::ptrdiff_t>(it.pos),
                              it.items.end());
      it.pos = it.items.size();
      return rest;
    }
    case Kind::Loop:
      return *loopOf(v).items;
    default:
      pyFail("'" + typeName(v) + "' object is not iterable");
  }
}

bool pyContains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::Undefined:
      return false;
    case Kind::Str:
      if (item.kind != Kind::Str)
        pyFail("'in <string>' requires string as left operand, not " + typeName(item));
      chargeBytes(container.text().size());
      return container.text().find(item.text()) != std::string::npos;
    case Kind::Seq:
      charge(seqOf(container).items.size());
      for (const Value& v : seqOf(container).items)
        if (pyEq(v, item)) return true;
      return false;
    case Kind::Dict:
      return dictFind(dictOf(container), item) != nullptr;
    case Kind::Iter: {
      IterObj& it = iterOf(container);
      while (it.pos < it.items.size())
        if (pyEq(it.items[it.pos++], item)) return true;
      return false;
    }
    default:
      pyFail("argument of type '" + typeName(container) + "' is not iterable");
  }
}

[[noreturn]] void binopTypeError(const char* op, const Value& a, const Value& b) {
  if (a.isUndefined()) failUndefined(a);
  if (b.isUndefined()) failUndefined(b);
  if (std::strcmp(op, "+") == 0 && (a.kind == Kind::Str || a.kind == Kind::Seq))
    pyFail("can only concatenate " + typeName(a) + " (not \"" + typeName(b) + "\") to " +
           typeName(a));
  pyFail(std::string("unsupported operand type(s) for ") + op + ": '" + typeName(a) + "' and '" +
         typeName(b) + "'");
}

double floatMod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0) {
    if ((b < 0) != (m < 0)) m += b;
  } else {
    m = std::copysign(0.0, b);
  }
  return m;
}

// Python's float floor division (float_divmod): exact for the remainder, then floored.
double floatFloorDiv(double a, double b) {
  const double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0;
  if (div != 0) {
    double floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
    return floordiv;
  }
  return std::copysign(0.0, a / b);
}

Value repeatSeq(const Value& seq, int64_t n) {
  const auto& items = seqOf(seq).items;
  std::vector<Value> out;
  if (n > 0 && !items.empty()) {
    if (static_cast<uint64_t>(n) > kMaxItems / items.size())
      pyFail("list longer than the 10 million item limit");
    for (int64_t k = 0; k < n; ++k) out.insert(out.end(), items.begin(), items.end());
  }
  return makeSeq(std::move(out), seqOf(seq).kind);
}

Value repeatStr(const std::string& s, int64_t n) {
  if (n <= 0 || s.empty()) return Value::str("");
  if (static_cast<uint64_t>(n) > kMaxStringBytes / s.size())
    pyFail("string longer than the 64 MiB limit");
  std::string out;
  out.reserve(s.size() * static_cast<std::size_t>(n));
  for (int64_t k = 0; k < n; ++k) out += s;
  return Value::str(std::move(out));
}

// markupsafe.escape(), for what `+` adds to a Markup string.
std::string htmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

[[noreturn]] void unsupportedMarkup(const std::string& what) {
  pyFail("unsupported construct: " + what + " on a string marked |safe (a Markup string)");
}

[[noreturn]] void unsupportedPercent() {
  pyFail("unsupported construct: printf-style formatting with '%' on a string");
}

Value pyBinary(BinOp op, const Value& a, const Value& b) {
  const bool ints = a.isIntLike() && b.isIntLike();
  const bool nums = a.isNumber() && b.isNumber();
  switch (op) {
    case BinOp::Add:
      if (ints) return Value::integer(checkedAdd(a.i, b.i));
      if (nums) return Value::real(a.asDouble() + b.asDouble());
      if (a.kind == Kind::Str && b.kind == Kind::Str) {
        if (a.text().size() + b.text().size() > kMaxStringBytes)
          pyFail("string longer than the 64 MiB limit");
        if (a.markup || b.markup)  // Markup escapes the plain side
          return Value::str((a.markup ? a.text() : htmlEscape(a.text())) +
                                (b.markup ? b.text() : htmlEscape(b.text())),
                            true);
        return Value::str(a.text() + b.text());
      }
      if (a.kind == Kind::Seq && b.kind == Kind::Seq && seqOf(a).kind == seqOf(b).kind &&
          (seqOf(a).kind == SeqKind::List || seqOf(a).kind == SeqKind::Tuple)) {
        std::vector<Value> items = seqOf(a).items;
        items.insert(items.end(), seqOf(b).items.begin(), seqOf(b).items.end());
        return makeSeq(std::move(items), seqOf(a).kind);
      }
      binopTypeError("+", a, b);
    case BinOp::Sub:
      if (ints) return Value::integer(checkedSub(a.i, b.i));
      if (nums) return Value::real(a.asDouble() - b.asDouble());
      binopTypeError("-", a, b);
    case BinOp::Mul: {
      if (ints) return Value::integer(checkedMul(a.i, b.i));
      if (nums) return Value::real(a.asDouble() * b.asDouble());
      const Value* seq = b.isIntLike() ? &a : a.isIntLike() ? &b : nullptr;
      const Value* count = b.isIntLike() ? &b : &a;
      if (seq && seq->kind == Kind::Str) {
        Value r = repeatStr(seq->text(), count->i);
        r.markup = seq->markup;
        return r;
      }
      if (seq && seq->kind == Kind::Seq &&
          (seqOf(*seq).kind == SeqKind::List || seqOf(*seq).kind == SeqKind::Tuple))
        return repeatSeq(*seq, count->i);
      binopTypeError("*", a, b);
    }
    case BinOp::Div:
      if (nums) {
        if (b.asDouble() == 0) pyFail("division by zero");
        return Value::real(a.asDouble() / b.asDouble());
      }
      binopTypeError("/", a, b);
    case BinOp::FloorDiv:
      if (ints) {
        if (b.i == 0) pyFail("integer division or modulo by zero");
        if (a.i == INT64_MIN && b.i == -1) failIntOverflow();
        int64_t q = a.i / b.i;
        if ((a.i % b.i != 0) && ((a.i < 0) != (b.i < 0))) --q;
        return Value::integer(q);
      }
      if (nums) {
        if (b.asDouble() == 0) pyFail("float floor division by zero");
        return Value::real(floatFloorDiv(a.asDouble(), b.asDouble()));
      }
      binopTypeError("//", a, b);
    case BinOp::Mod:
      if (ints) {
        if (b.i == 0) pyFail("integer division or modulo by zero");
        if (b.i == -1) return Value::integer(0);
        int64_t m = a.i % b.i;
        if (m != 0 && ((m < 0) != (b.i < 0))) m += b.i;
        return Value::integer(m);
      }
      if (nums) {
        if (b.asDouble() == 0) pyFail("float modulo");
        return Value::real(floatMod(a.asDouble(), b.asDouble()));
      }
      if (a.kind == Kind::Str) unsupportedPercent();
      binopTypeError("%", a, b);
    case BinOp::Pow:
      if (ints && b.i >= 0) {
        int64_t r = 1, base = a.i, e = b.i;
        while (e > 0) {  // square-and-multiply, every step checked
          if (e & 1) r = checkedMul(r, base);
          e >>= 1;
          if (e > 0) base = checkedMul(base, base);
        }
        return Value::integer(r);
      }
      if (nums) {
        const double x = a.asDouble(), y = b.asDouble();
        if (x == 0 && y < 0) pyFail("0.0 cannot be raised to a negative power");
        if (x < 0 && y != std::floor(y))
          pyFail(
              "unsupported construct: a negative number to a fractional power (a complex number)");
        return Value::real(std::pow(x, y));
      }
      binopTypeError("**", a, b);
  }
  pyFail("unknown operator");
}

// ---- Python's str methods, on UTF-8 (indices count code points).

std::string pyStrip(const std::string& s, const Value* chars, bool left, bool right) {
  std::u32string set;
  const bool space = chars == nullptr || chars->kind == Kind::None;
  if (!space) {
    if (chars->kind != Kind::Str) pyFail("strip arg must be None or str");
    set = toU32(chars->text());
  }
  const std::u32string u = toU32(s);
  auto drop = [&](char32_t c) {
    return space ? isPySpace(c) : set.find(c) != std::u32string::npos;
  };
  std::size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  if (b == 0 && e == u.size()) return s;
  return fromU32(std::u32string_view(u).substr(b, e - b));
}

std::vector<Value> pySplit(const std::string& s, const Value* sep, int64_t maxsplit,
                           bool fromRight) {
  std::vector<Value> out;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep == nullptr || sep->kind == Kind::None) {
    const std::u32string u = toU32(s);
    const auto n = static_cast<int64_t>(u.size());
    auto sub = [&](int64_t a, int64_t b) {
      return Value::str(fromU32(std::u32string_view(u).substr(a, b - a)));
    };
    if (!fromRight) {
      int64_t i = 0;
      while (maxsplit-- > 0) {
        while (i < n && isPySpace(u[i])) ++i;
        if (i == n) break;
        const int64_t j = i++;
        while (i < n && !isPySpace(u[i])) ++i;
        out.push_back(sub(j, i));
      }
      if (i < n) {
        while (i < n && isPySpace(u[i])) ++i;
        if (i != n) out.push_back(sub(i, n));
      }
    } else {
      int64_t i = n - 1;
      while (maxsplit-- > 0) {
        while (i >= 0 && isPySpace(u[i])) --i;
        if (i < 0) break;
        const int64_t j = i--;
        while (i >= 0 && !isPySpace(u[i])) --i;
        out.push_back(sub(i + 1, j + 1));
      }
      if (i >= 0) {
        while (i >= 0 && isPySpace(u[i])) --i;
        if (i >= 0) out.push_back(sub(0, i + 1));
      }
      std::reverse(out.begin(), out.end());
    }
    return out;
  }
  if (sep->kind != Kind::Str) pyFail("must be str or None, not " + typeName(*sep));
  const std::string& d = sep->text();
  if (d.empty()) pyFail("empty separator");
  if (!fromRight) {
    std::size_t pos = 0;
    while (maxsplit-- > 0) {
      const std::size_t hit = s.find(d, pos);
      if (hit == std::string::npos) break;
      out.push_back(Value::str(s.substr(pos, hit - pos)));
      pos = hit + d.size();
    }
    out.push_back(Value::str(s.substr(pos)));
  } else {
    std::size_t end = s.size();
    while (maxsplit-- > 0 && end >= d.size()) {
      const std::size_t hit = s.rfind(d, end - d.size());
      if (hit == std::string::npos) break;
      out.push_back(Value::str(s.substr(hit + d.size(), end - hit - d.size())));
      end = hit;
    }
    out.push_back(Value::str(s.substr(0, end)));
    std::reverse(out.begin(), out.end());
  }
  return out;
}

std::string pyReplace(const std::string& s, const std::string& from, const std::string& to,
                      int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (from.empty()) {  // Python inserts `to` before every character and at the end
    std::size_t i = 0;
    while (i < s.size() && count > 0) {
      out += to;
      --count;
      const std::size_t start = i;
      nextCp(s, i);
      out.append(s, start, i - start);
      if (out.size() > kMaxStringBytes) pyFail("string longer than the 64 MiB limit");
    }
    if (i < s.size())
      out.append(s, i, std::string::npos);
    else if (count > 0)
      out += to;
    return out;
  }
  std::size_t pos = 0;
  while (count-- > 0) {
    const std::size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    if (out.size() > kMaxStringBytes) pyFail("string longer than the 64 MiB limit");
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::vector<std::string> pySplitlines(const std::string& s, bool keepends) {
  const std::u32string u = toU32(s);
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < u.size();) {
    if (!isLineBreak(u[i])) {
      ++i;
      continue;
    }
    std::size_t eol = i + ((u[i] == '\r' && i + 1 < u.size() && u[i + 1] == '\n') ? 2 : 1);
    out.push_back(fromU32(std::u32string_view(u).substr(start, (keepends ? eol : i) - start)));
    start = i = eol;
  }
  if (start < u.size()) out.push_back(fromU32(std::u32string_view(u).substr(start)));
  return out;
}

// The normalised bounds of a[start:stop:step]; nullopt for indices that are not integers or None
// (a TypeError in Python).
struct SliceBounds {
  int64_t begin, end, step;
  std::vector<std::size_t> indices() const {
    std::vector<std::size_t> out;
    if (step > 0)
      for (int64_t k = begin; k < end; k += step) out.push_back(static_cast<std::size_t>(k));
    else
      for (int64_t k = begin; k > end; k += step) out.push_back(static_cast<std::size_t>(k));
    return out;
  }
};

std::optional<SliceBounds> sliceBounds(std::size_t len, const Value& start, const Value& stop,
                                       const Value& step) {
  auto isIndex = [](const Value& v) { return v.kind == Kind::None || v.isIntLike(); };
  if (!isIndex(start) || !isIndex(stop) || !isIndex(step)) return std::nullopt;
  const int64_t n = static_cast<int64_t>(len);
  const int64_t st = step.kind == Kind::None ? 1 : step.i;
  if (st == 0) pyFail("slice step cannot be zero");
  auto adjust = [&](const Value& v, int64_t dflt) {
    if (v.kind == Kind::None) return dflt;
    int64_t x = v.i;
    if (x < 0) {
      x += n;
      if (x < 0) x = st < 0 ? -1 : 0;
    } else if (x >= n) {
      x = st < 0 ? n - 1 : n;
    }
    return x;
  };
  return SliceBounds{adjust(start, st < 0 ? n - 1 : 0), adjust(stop, st < 0 ? -1 : n), st};
}

// The [start, end) code point window of str.find / count / startswith arguments, in bytes;
// nullopt when start lies past the end (Python then matches nothing, not even "").
std::optional<std::pair<std::size_t, std::size_t>> strWindow(const std::string& s,
                                                             const Value* start, const Value* end) {
  const auto n = static_cast<int64_t>(cpCount(s));
  auto index = [&](const Value* v, int64_t dflt) {
    if (v == nullptr || v->kind == Kind::None) return dflt;
    if (!v->isIntLike()) pyFail("slice indices must be integers or None");
    int64_t x = v->i;
    if (x < 0) x = std::max<int64_t>(0, x + n);
    return std::min(x, n);
  };
  int64_t rawStart = 0;
  if (start && start->isIntLike()) rawStart = start->i < 0 ? start->i + n : start->i;
  if (rawStart > n) return std::nullopt;
  const int64_t b = index(start, 0), e = std::max(b, index(end, n));
  auto byteAt = [&](int64_t cp) {
    std::size_t i = 0;
    for (int64_t k = 0; k < cp; ++k) nextCp(s, i);
    return i;
  };
  return std::make_pair(byteAt(b), byteAt(e));
}

// ---------------------------------------------------------------------------------------------
// Renderer

// A scope. jinja2 gives each loop iteration, macro call, {% with %}, {% set %} / {% filter %}
// block and {% generation %} block its own scope; {% if %} shares its parent's. An assignment
// writes to the innermost scope, so a loop cannot change a variable outside it (hence
// namespace()). A name is looked up from the innermost scope outwards, then in the context,
// then among the globals; ScopeAnalysis says which names a scope starts out without.
struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<std::string, Value>> vars;

  void set(const std::string& name, Value v) {
    for (auto& kv : vars)
      if (kv.first == name) {
        kv.second = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// Binds arguments to parameters as a Python def does; one pointer per parameter, null when the
// caller left it out.
std::vector<const Value*> bindArgs(const std::string& fn, const CallArgs& a,
                                   std::initializer_list<const char*> params,
                                   std::size_t required) {
  const std::vector<const char*> names(params);
  std::vector<const Value*> out(names.size(), nullptr);
  if (a.pos.size() > names.size())
    pyFail(fn + "() takes at most " + std::to_string(names.size()) + " argument(s) (" +
           std::to_string(a.pos.size()) + " given)");
  for (std::size_t k = 0; k < a.pos.size(); ++k) out[k] = &a.pos[k];
  for (const auto& kv : a.kw) {
    std::size_t k = 0;
    while (k < names.size() && kv.first != names[k]) ++k;
    if (k == names.size()) pyFail(fn + "() got an unexpected keyword argument '" + kv.first + "'");
    if (out[k]) pyFail(fn + "() got multiple values for argument '" + kv.first + "'");
    out[k] = &kv.second;
  }
  for (std::size_t k = 0; k < required; ++k)
    if (!out[k]) pyFail(fn + "() missing required argument '" + names[k] + "'");
  return out;
}

int64_t intArg(const Value* v, int64_t dflt, const char* what) {
  if (v == nullptr || v->kind == Kind::None) return dflt;
  if (!v->isIntLike()) pyFail(std::string(what) + " must be an integer, not " + typeName(*v));
  return v->i;
}

bool boolArg(const Value* v, bool dflt) { return v == nullptr ? dflt : truthy(*v); }

const char* const kStrMethods[] = {
    "capitalize",   "casefold",    "center",    "count",      "encode",       "endswith",
    "expandtabs",   "find",        "format",    "format_map", "index",        "isalnum",
    "isalpha",      "isascii",     "isdecimal", "isdigit",    "isidentifier", "islower",
    "isnumeric",    "isprintable", "isspace",   "istitle",    "isupper",      "join",
    "ljust",        "lower",       "lstrip",    "maketrans",  "partition",    "removeprefix",
    "removesuffix", "replace",     "rfind",     "rindex",     "rjust",        "rpartition",
    "rsplit",       "rstrip",      "split",     "splitlines", "startswith",   "strip",
    "swapcase",     "title",       "translate", "upper",      "zfill"};
const char* const kDictMethods[] = {"clear", "copy",    "fromkeys",   "get",    "items", "keys",
                                    "pop",   "popitem", "setdefault", "update", "values"};
// What ImmutableSandboxedEnvironment refuses: methods that would change a dict or list.
const char* const kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update"};
const char* const kListMethods[] = {"append", "clear", "copy",   "count",   "extend", "index",
                                    "insert", "pop",   "remove", "reverse", "sort"};
const char* const kListMutators[] = {"append", "clear",  "extend",  "insert",
                                     "pop",    "remove", "reverse", "sort"};
const char* const kLoopAttrs[] = {"index",    "index0", "revindex", "revindex0", "first",
                                  "last",     "length", "depth",    "depth0",    "previtem",
                                  "nextitem", "cycle",  "changed"};

std::string objectRepr(const Value& obj) {
  return obj.kind == Kind::None ? "None" : typeName(obj) + " object";
}

Value attrUndefined(const Value& obj, const std::string& name) {
  return Value::undefined("'" + objectRepr(obj) + "' has no attribute '" + name + "'");
}

Value unsafeUndefined(const Value& obj, const std::string& name) {
  return Value::undefined("access to attribute '" + name + "' of '" + typeName(obj) +
                          "' object is unsafe.");
}

// A namespace attribute may not hold a namespace, a macro or a loop: values could then reach
// themselves, which Python handles and reference counting would not.
void checkStorable(const Value& v, int depth = 0) {
  if (depth > kMaxPrintDepth) pyFail("value nested too deeply");
  switch (v.kind) {
    case Kind::Ns:
    case Kind::Func:
    case Kind::Loop:
      pyFail("unsupported construct: storing a " + typeName(v) + " in a namespace");
    case Kind::Seq:
      for (const Value& x : seqOf(v).items) checkStorable(x, depth + 1);
      return;
    case Kind::Dict:
      for (const auto& kv : dictOf(v).items) {
        checkStorable(kv.first, depth + 1);
        checkStorable(kv.second, depth + 1);
      }
      return;
    case Kind::Iter:
      for (const Value& x : iterOf(v).items) checkStorable(x, depth + 1);
      return;
    default:
      return;
  }
}

Value ignoreCase(const Value& v) { return v.kind == Kind::Str ? Value::str(pyLower(v.text())) : v; }

// Python's int(str, base) and float(str); nullopt where Python raises ValueError.
std::optional<int64_t> parsePyInt(const std::string& text, int base) {
  const std::string stripped = pyStrip(text, nullptr, true, true);
  std::string_view s = stripped;
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  auto prefixBase = [&](char c) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c == 'x' ? 16 : c == 'o' ? 8 : c == 'b' ? 2 : 0;
  };
  bool hadPrefix = false;
  if (s.size() >= 2 && s[0] == '0' && prefixBase(s[1]) && (base == 0 || base == prefixBase(s[1]))) {
    base = prefixBase(s[1]);
    s.remove_prefix(2);
    hadPrefix = true;
  }
  if (base == 0) {
    base = 10;
    if (s.size() > 1 && s[0] == '0' && s.find_first_not_of("0_") != std::string_view::npos)
      return std::nullopt;  // "010" is not a base-0 literal
  }
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  bool lastDigit = hadPrefix;  // an underscore may follow a prefix
  bool any = false;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '_') {
      if (!lastDigit || k + 1 == s.size()) return std::nullopt;
      lastDigit = false;
      continue;
    }
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (std::isalpha(static_cast<unsigned char>(c))) {
      d = std::tolower(static_cast<unsigned char>(c)) - 'a' + 10;
    } else {
      return std::nullopt;
    }
    if (d >= base) return std::nullopt;
    if (v > (static_cast<uint64_t>(INT64_MAX) + 1 - d) / base)
      pyFail("unsupported construct: integer '" + text + "' does not fit in 64 bits");
    v = v * base + d;
    lastDigit = any = true;
  }
  if (!any) return std::nullopt;
  if (!neg && v > static_cast<uint64_t>(INT64_MAX))
    pyFail("unsupported construct: integer '" + text + "' does not fit in 64 bits");
  return neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
}

std::optional<double> parsePyFloat(const std::string& text) {
  const std::string stripped = pyStrip(text, nullptr, true, true);
  if (!isAscii(stripped)) return std::nullopt;
  std::string_view s = stripped;
  std::string lower = pyLower(stripped);
  std::string_view word = lower;
  if (!word.empty() && (word[0] == '+' || word[0] == '-')) word.remove_prefix(1);
  const bool neg = !lower.empty() && lower[0] == '-';
  if (word == "inf" || word == "infinity") return neg ? -HUGE_VAL : HUGE_VAL;
  if (word == "nan") return std::nan("");
  // digitpart ("." digitpart?)? exponent? with single underscores between digits
  std::string clean;
  std::size_t k = 0;
  if (k < s.size() && (s[k] == '+' || s[k] == '-')) clean += s[k++];
  auto digits = [&]() {
    std::size_t n = 0;
    while (k < s.size()) {
      if (std::isdigit(static_cast<unsigned char>(s[k]))) {
        clean += s[k++], ++n;
      } else if (s[k] == '_' && n > 0 && k + 1 < s.size() &&
                 std::isdigit(static_cast<unsigned char>(s[k + 1]))) {
        ++k;
      } else {
        break;
      }
    }
    return n;
  };
  std::size_t mantissa = digits();
  if (k < s.size() && s[k] == '.') {
    clean += s[k++];
    mantissa += digits();
  }
  if (mantissa == 0) return std::nullopt;
  if (k < s.size() && (s[k] == 'e' || s[k] == 'E')) {
    clean += s[k++];
    if (k < s.size() && (s[k] == '+' || s[k] == '-')) clean += s[k++];
    if (digits() == 0) return std::nullopt;
  }
  if (k != s.size()) return std::nullopt;
  return std::strtod(clean.c_str(), nullptr);
}

// time.strftime on the local time, plus datetime's %f (microseconds).
std::string strftimeNow(const std::string& format) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::tm tm{};
  const time_t secs = ts.tv_sec;
  localtime_r(&secs, &tm);
  std::string fmt;
  for (std::size_t k = 0; k < format.size(); ++k) {
    if (format[k] == '%' && k + 1 < format.size()) {
      if (format[k + 1] == 'f') {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%06ld", static_cast<long>(ts.tv_nsec / 1000));
        fmt += buf;
        ++k;
        continue;
      }
      fmt += format[k];
      fmt += format[++k];
      continue;
    }
    fmt += format[k];
  }
  if (fmt.empty()) return "";
  for (std::size_t cap = 256; cap <= (1u << 20); cap *= 4) {
    std::string buf(cap, '\0');
    const std::size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
    if (n > 0) return buf.substr(0, n);
  }
  return "";
}

class Renderer {
 public:
  Renderer(const std::string& source, const Body& body, const Missing& rootMissing, Value context)
      : m_source(source), m_body(body), m_rootMissing(rootMissing), m_context(std::move(context)) {}

  ChatRender run() {
    ChatRender result;
    struct WorkScope {  // this render's counter, for the value helpers on this thread
      explicit WorkScope(uint64_t* counter) : m_saved(t_work) { t_work = counter; }
      ~WorkScope() { t_work = m_saved; }
      uint64_t* m_saved;
    } work(&m_work);
    try {
      if (m_context.kind != Kind::Dict) pyFail("the render context must be a JSON object");
      m_frame = std::make_shared<Frame>();
      markMissing(m_rootMissing);
      m_top = &result.text;
      exec(m_body, result.text);
      result.generationSpans = std::move(m_spans);
    } catch (const PyError& e) {
      throw UserError(m_source + ", line " + std::to_string(m_line) + ": " + e.msg);
    }
    return result;
  }

 private:
  enum class Flow { Normal, Break, Continue };

  // Counts nesting and steps: deep recursion and runaway loops become errors, not crashes.
  struct Depth {
    explicit Depth(Renderer& r) : m_r(r) {
      if (++m_r.m_depth > kMaxRenderDepth) pyFail("template recursion deeper than 400 levels");
      charge(1);
    }
    ~Depth() { --m_r.m_depth; }
    Renderer& m_r;
  };

  struct Scope {
    Scope(Renderer& r, std::shared_ptr<Frame> parent) : m_r(r), m_saved(r.m_frame) {
      auto f = std::make_shared<Frame>();
      f->parent = std::move(parent);
      m_r.m_frame = std::move(f);
    }
    ~Scope() { m_r.m_frame = std::move(m_saved); }
    Renderer& m_r;
    std::shared_ptr<Frame> m_saved;
  };

  void markMissing(const Missing& names) {
    for (const std::string& name : names)
      m_frame->set(name, Value::undefined("'" + name + "' is undefined"));
  }

  static void checkSize(const std::string& out) {
    if (out.size() > kMaxStringBytes) pyFail("output longer than the 64 MiB limit");
  }

  // ---- Statements

  Flow exec(const Body& body, std::string& out) {
    for (const auto& s : body) {
      const Flow f = execStmt(*s, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow execStmt(const Stmt& s, std::string& out) {
    Depth depth(*this);
    m_line = s.line;
    switch (s.kind) {
      case SK::Text:
        out += s.text;
        chargeBytes(s.text.size());
        checkSize(out);
        return Flow::Normal;
      case SK::Output: {
        const Value v = eval(*s.expr);
        m_line = s.line;
        appendStr(out, v, 0);
        checkSize(out);
        return Flow::Normal;
      }
      case SK::If:
        for (const auto& branch : s.branches)
          if (truthy(eval(*branch.first))) return exec(branch.second, out);
        return exec(s.elseBody, out);
      case SK::For:
        return execFor(s, out);
      case SK::Set:
        assign(s.target, eval(*s.expr));
        return Flow::Normal;
      case SK::SetBlock:
      case SK::FilterBlock: {
        std::string captured;
        {
          Scope scope(*this, m_frame);
          markMissing(s.missingInBody);
          exec(s.body, captured);
        }
        m_line = s.line;
        m_blockInput = Value::str(std::move(captured));
        Value v = s.expr ? eval(*s.expr) : m_blockInput;
        m_blockInput = Value();
        if (s.kind == SK::SetBlock) {
          assign(s.target, std::move(v));
        } else {
          appendStr(out, v, 0);
          checkSize(out);
        }
        return Flow::Normal;
      }
      case SK::Macro: {
        Value fn = makeFunc(FuncKind::Macro, s.macro->name);
        auto& f = static_cast<FuncObj&>(*fn.o);
        f.macro = s.macro.get();
        f.closure = m_frame;
        m_frame->set(s.macro->name, std::move(fn));
        return Flow::Normal;
      }
      case SK::Break:
        return Flow::Break;
      case SK::Continue:
        return Flow::Continue;
      case SK::With: {
        std::vector<Value> values;
        for (const auto& wv : s.withVars) values.push_back(eval(*wv.second));
        Scope scope(*this, m_frame);
        markMissing(s.missingInBody);
        for (std::size_t k = 0; k < values.size(); ++k) assign(s.withVars[k].first, values[k]);
        return exec(s.body, out);
      }
      case SK::Generation: {
        // transformers records where the block's text lands in the final output.
        const std::size_t begin = out.size();
        {
          Scope scope(*this, m_frame);
          markMissing(s.missingInBody);
          exec(s.body, out);
        }
        if (&out == m_top) m_spans.emplace_back(begin, out.size());
        return Flow::Normal;
      }
    }
    return Flow::Normal;
  }

  Flow execFor(const Stmt& s, std::string& out) {
    const Value iterable = eval(*s.expr);
    m_line = s.line;
    std::shared_ptr<const std::vector<Value>> shared;
    std::vector<Value> items;
    if (iterable.kind == Kind::Seq && !s.cond) {  // lists are immutable: loop over them in place
      charge(seqOf(iterable).items.size());
      shared = std::shared_ptr<const std::vector<Value>>(iterable.o, &seqOf(iterable).items);
    } else {
      items = iterate(iterable);
    }
    if (s.cond) {  // `for x in xs if cond`: filtered before the loop, so loop.length counts
                   // only the items kept
      std::vector<Value> kept;
      for (Value& item : items) {
        Scope scope(*this, m_frame);
        markMissing(s.missingInTest);
        assign(s.target, item);
        if (!truthy(eval(*s.cond))) continue;
        if (!s.target.unpack) {
          kept.push_back(std::move(item));
          continue;
        }
        std::vector<Value> parts;  // jinja2's filter yields the unpacked names as a tuple
        for (const std::string& name : s.target.names) parts.push_back(lookup(name));
        kept.push_back(makeSeq(std::move(parts), SeqKind::Tuple));
      }
      items = std::move(kept);
    }
    if (!shared) shared = std::make_shared<const std::vector<Value>>(std::move(items));
    if (shared->empty()) {
      Scope scope(*this, m_frame);
      markMissing(s.missingInElse);
      return exec(s.elseBody, out);
    }
    auto loop = std::make_shared<LoopObj>();
    loop->items = std::move(shared);
    Value loopValue;
    loopValue.kind = Kind::Loop;
    loopValue.o = loop;
    const std::size_t n = loop->items->size();
    for (std::size_t k = 0; k < n; ++k) {
      charge(1);
      loop->index0 = static_cast<int64_t>(k);
      Scope scope(*this, m_frame);
      markMissing(s.missingInBody);
      m_frame->set("loop", loopValue);
      assign(s.target, (*loop->items)[k]);
      if (exec(s.body, out) == Flow::Break) break;
    }
    return Flow::Normal;
  }

  void assign(const Target& t, Value v) {
    if (!t.attr.empty()) {
      const Value ns = lookup(t.names[0]);
      if (ns.kind != Kind::Ns) pyFail("cannot assign attribute on non-namespace object");
      checkStorable(v);
      dictSet(nsOf(ns).attrs, Value::str(t.attr), std::move(v));
      return;
    }
    if (!t.unpack) {
      m_frame->set(t.names[0], std::move(v));
      return;
    }
    std::vector<Value> items = iterate(v);
    if (items.size() < t.names.size())
      pyFail("not enough values to unpack (expected " + std::to_string(t.names.size()) + ", got " +
             std::to_string(items.size()) + ")");
    if (items.size() > t.names.size())
      pyFail("too many values to unpack (expected " + std::to_string(t.names.size()) + ")");
    for (std::size_t k = 0; k < items.size(); ++k) m_frame->set(t.names[k], std::move(items[k]));
  }

  Value lookup(const std::string& name) const {
    for (const Frame* f = m_frame.get(); f; f = f->parent.get())
      for (const auto& kv : f->vars)
        if (kv.first == name) return kv.second;
    if (const Value* v = dictFindStr(dictOf(m_context), name)) return *v;
    static const char* const kGlobals[] = {"range",        "dict",   "namespace", "raise_exception",
                                           "strftime_now", "lipsum", "cycler",    "joiner"};
    if (inList(kGlobals, name)) return makeFunc(FuncKind::Global, name);
    return Value::undefined("'" + name + "' is undefined");
  }

  // ---- Expressions

  CallArgs evalArgs(const Expr& e, std::size_t first) {
    CallArgs a;
    for (std::size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
    for (const auto& kv : e.kwargs) a.kw.emplace_back(kv.first, eval(*kv.second));
    m_line = e.line;
    return a;
  }

  Value eval(const Expr& e) {
    Depth depth(*this);
    m_line = e.line;
    switch (e.kind) {
      case EK::Const:
        return e.value;
      case EK::Name:
        return lookup(e.name);
      case EK::BlockInput:
        return m_blockInput;
      case EK::GetAttr: {
        const Value obj = eval(*e.args[0]);
        m_line = e.line;
        return getAttr(obj, e.name);
      }
      case EK::GetItem: {
        const Value obj = eval(*e.args[0]);
        const Expr& key = *e.args[1];
        if (key.kind == EK::Slice) {
          Value parts[3];
          for (int k = 0; k < 3; ++k) parts[k] = key.args[k] ? eval(*key.args[k]) : Value::none();
          m_line = e.line;
          return getSlice(obj, parts[0], parts[1], parts[2]);
        }
        const Value k = eval(key);
        m_line = e.line;
        return getItem(obj, k);
      }
      case EK::Call: {
        const Value fn = eval(*e.args[0]);
        const CallArgs a = evalArgs(e, 1);
        return call(fn, a);
      }
      case EK::Filter: {
        const Value input = eval(*e.args[0]);
        const CallArgs a = evalArgs(e, 1);
        return applyFilter(e.name, input, a);
      }
      case EK::Test: {
        const Value input = eval(*e.args[0]);
        const CallArgs a = evalArgs(e, 1);
        return Value::boolean(applyTest(e.name, input, a));
      }
      case EK::Neg:
      case EK::Pos: {
        const Value v = eval(*e.args[0]);
        m_line = e.line;
        if (v.isUndefined()) failUndefined(v);
        if (v.isIntLike()) return Value::integer(e.kind == EK::Neg ? checkedSub(0, v.i) : v.i);
        if (v.kind == Kind::Float) return Value::real(e.kind == EK::Neg ? -v.f : v.f);
        pyFail(std::string("bad operand type for unary ") + (e.kind == EK::Neg ? "-" : "+") +
               ": '" + typeName(v) + "'");
      }
      case EK::Not:
        return Value::boolean(!truthy(eval(*e.args[0])));
      case EK::Bin: {
        const Value a = eval(*e.args[0]);
        const Value b = eval(*e.args[1]);
        m_line = e.line;
        return pyBinary(e.bin, a, b);
      }
      case EK::Concat: {
        std::vector<Value> parts;
        std::size_t bytes = 0;
        for (const auto& part : e.args) {
          parts.push_back(eval(*part));
          if (parts.back().kind == Kind::Str) bytes += parts.back().text().size();
        }
        m_line = e.line;
        if (bytes > kMaxStringBytes) pyFail("string longer than the 64 MiB limit");
        std::string out;
        out.reserve(bytes);
        for (const Value& v : parts) {
          appendStr(out, v, 0);
          checkSize(out);
        }
        return Value::str(std::move(out));
      }
      case EK::And: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? eval(*e.args[1]) : a;
      }
      case EK::Or: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? a : eval(*e.args[1]);
      }
      case EK::Compare: {
        Value left = eval(*e.args[0]);
        for (std::size_t k = 0; k < e.cmps.size(); ++k) {
          Value right = eval(*e.args[k + 1]);
          m_line = e.line;
          if (!compare(e.cmps[k], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case EK::Cond:
        if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
        if (e.args[2]) return eval(*e.args[2]);
        return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                                " evaluated to false and no else section was defined.");
      case EK::List:
      case EK::Tuple: {
        std::vector<Value> items;
        items.reserve(e.args.size());
        for (const auto& x : e.args) items.push_back(eval(*x));
        return makeSeq(std::move(items), e.kind == EK::List ? SeqKind::List : SeqKind::Tuple);
      }
      case EK::Dict: {
        auto d = std::make_shared<DictObj>();
        for (std::size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          Value value = eval(*e.args[k + 1]);
          m_line = e.line;
          dictSet(*d, std::move(key), std::move(value));
        }
        return makeDict(std::move(d));
      }
      case EK::Slice:
        break;
    }
    pyFail("internal error: unexpected expression");
  }

  static bool compare(CmpOp op, const Value& a, const Value& b) {
    switch (op) {
      case CmpOp::Eq:
        return pyEq(a, b);
      case CmpOp::Ne:
        return !pyEq(a, b);
      case CmpOp::Lt:
        return pyLessOp(a, b, "<");
      case CmpOp::Le:
        return pyLessOp(a, b, "<=") || pyEq(a, b);
      case CmpOp::Gt:
        return pyLessOp(b, a, ">");
      case CmpOp::Ge:
        return pyLessOp(b, a, ">=") || pyEq(a, b);
      case CmpOp::In:
        return pyContains(b, a);
      case CmpOp::NotIn:
        return !pyContains(b, a);
    }
    return false;
  }

  // ---- Attribute and item access, as jinja2's sandbox does it: `obj.name` tries Python's
  // attribute (a method) then the key; `obj[key]` tries the key then the attribute; a miss is
  // Undefined, but anything done to an Undefined's attributes raises.

  static std::optional<Value> pythonAttr(const Value& obj, const std::string& name) {
    switch (obj.kind) {
      case Kind::Dict:
        if (inList(kDictMethods, name))
          return inList(kDictMutators, name) ? unsafeUndefined(obj, name)
                                             : makeFunc(FuncKind::Method, name, obj);
        return std::nullopt;
      case Kind::Str:
        if (inList(kStrMethods, name)) return makeFunc(FuncKind::Method, name, obj);
        return std::nullopt;
      case Kind::Seq: {
        const SeqObj& seq = seqOf(obj);
        if (seq.kind == SeqKind::List && inList(kListMethods, name))
          return inList(kListMutators, name) ? unsafeUndefined(obj, name)
                                             : makeFunc(FuncKind::Method, name, obj);
        if ((seq.kind == SeqKind::Tuple || seq.kind == SeqKind::Range) &&
            (name == "count" || name == "index"))
          return makeFunc(FuncKind::Method, name, obj);
        if (seq.kind == SeqKind::Range && (name == "start" || name == "stop" || name == "step"))
          return Value::integer(name == "start" ? seq.start : name == "stop" ? seq.stop : seq.step);
        return std::nullopt;
      }
      case Kind::Ns:
        if (const Value* v = dictFindStr(nsOf(obj).attrs, name)) return *v;
        return std::nullopt;
      case Kind::Loop:
        if (inList(kLoopAttrs, name)) return loopAttr(obj, name);
        return std::nullopt;
      default:
        return std::nullopt;
    }
  }

  static Value loopAttr(const Value& loopValue, const std::string& name) {
    const LoopObj& l = loopOf(loopValue);
    const auto n = static_cast<int64_t>(l.items->size());
    const int64_t i = l.index0;
    if (name == "index") return Value::integer(i + 1);
    if (name == "index0") return Value::integer(i);
    if (name == "revindex") return Value::integer(n - i);
    if (name == "revindex0") return Value::integer(n - i - 1);
    if (name == "first") return Value::boolean(i == 0);
    if (name == "last") return Value::boolean(i == n - 1);
    if (name == "length") return Value::integer(n);
    if (name == "depth") return Value::integer(1);
    if (name == "depth0") return Value::integer(0);
    if (name == "previtem")
      return i > 0 ? (*l.items)[i - 1] : Value::undefined("there is no previous item");
    if (name == "nextitem")
      return i + 1 < n ? (*l.items)[i + 1] : Value::undefined("there is no next item");
    return makeFunc(name == "cycle" ? FuncKind::LoopCycle : FuncKind::LoopChanged, name, loopValue);
  }

  static Value getAttr(const Value& obj, const std::string& name) {
    if (obj.isUndefined()) failUndefined(obj);
    if (auto v = pythonAttr(obj, name)) return *v;
    if (obj.kind == Kind::Dict)
      if (const Value* v = dictFindStr(dictOf(obj), name)) return *v;
    return attrUndefined(obj, name);
  }

  static Value getItem(const Value& obj, const Value& key) {
    if (obj.isUndefined()) failUndefined(obj);
    switch (obj.kind) {
      case Kind::Dict:
        if (key.kind != Kind::Seq && key.kind != Kind::Dict && key.kind != Kind::Ns &&
            key.kind != Kind::Iter && key.kind != Kind::Func && key.kind != Kind::Loop)
          if (const Value* v = dictFind(dictOf(obj), key)) return *v;
        break;
      case Kind::Seq: {
        const SeqObj& seq = seqOf(obj);
        if (key.isIntLike() && seq.kind != SeqKind::Keys && seq.kind != SeqKind::Values &&
            seq.kind != SeqKind::Items) {
          int64_t idx = key.i;
          const auto n = static_cast<int64_t>(seq.items.size());
          if (idx < 0) idx += n;
          if (idx >= 0 && idx < n) return seq.items[static_cast<std::size_t>(idx)];
        }
        break;
      }
      case Kind::Str:
        if (key.isIntLike()) {
          const std::string& s = obj.text();
          const auto n = static_cast<int64_t>(cpCount(s));
          int64_t idx = key.i;
          if (idx < 0) idx += n;
          if (idx >= 0 && idx < n) {
            std::size_t i = 0;
            for (int64_t k = 0; k < idx; ++k) nextCp(s, i);
            const std::size_t start = i;
            nextCp(s, i);
            return Value::str(s.substr(start, i - start), obj.markup);
          }
        }
        break;
      default:
        break;
    }
    if (key.kind == Kind::Str) {
      if (auto v = pythonAttr(obj, key.text())) return *v;
      return attrUndefined(obj, key.text());
    }
    std::string k;
    appendRepr(k, key, 0);
    return Value::undefined(objectRepr(obj) + " has no element " + k);
  }

  // jinja2 compiles a slice to Python's own subscript, not to the sandbox's getitem: errors raise.
  static Value getSlice(const Value& obj, const Value& a, const Value& b, const Value& c) {
    if (obj.isUndefined()) failUndefined(obj);
    auto bounds = [&](std::size_t len) {
      auto r = sliceBounds(len, a, b, c);
      if (!r) pyFail("slice indices must be integers or None or have an __index__ method");
      return *r;
    };
    if (obj.kind == Kind::Str) {
      const std::string& s = obj.text();
      if (isAscii(s)) {
        const SliceBounds sb = bounds(s.size());
        if (sb.step == 1)
          return Value::str(sb.end > sb.begin ? s.substr(sb.begin, sb.end - sb.begin) : "",
                            obj.markup);
        std::string out;
        for (std::size_t k : sb.indices()) out += s[k];
        return Value::str(std::move(out), obj.markup);
      }
      const std::u32string u = toU32(s);
      std::string out;
      for (std::size_t k : bounds(u.size()).indices()) appendCp(out, u[k]);
      return Value::str(std::move(out), obj.markup);
    }
    if (obj.kind == Kind::Dict) pyFail("unhashable type: 'slice'");
    if (obj.kind != Kind::Seq || seqOf(obj).kind == SeqKind::Keys ||
        seqOf(obj).kind == SeqKind::Values || seqOf(obj).kind == SeqKind::Items)
      pyFail("'" + typeName(obj) + "' object is not subscriptable");
    const SeqObj& seq = seqOf(obj);
    const SliceBounds sb = bounds(seq.items.size());
    std::vector<Value> items;
    for (std::size_t k : sb.indices()) items.push_back(seq.items[k]);
    Value out = makeSeq(std::move(items), seq.kind);
    if (seq.kind == SeqKind::Range) {
      auto& r = static_cast<SeqObj&>(*out.o);
      r.start = seq.start + sb.begin * seq.step;
      r.stop = seq.start + sb.end * seq.step;
      r.step = seq.step * sb.step;
    }
    return out;
  }

  // ---- Calls

  Value call(const Value& fn, const CallArgs& a) {
    if (fn.isUndefined()) failUndefined(fn);
    if (fn.kind != Kind::Func) pyFail("'" + typeName(fn) + "' object is not callable");
    const FuncObj& f = funcOf(fn);
    switch (f.kind) {
      case FuncKind::Global:
        return callGlobal(f.name, a);
      case FuncKind::Method:
        return callMethod(f.self, f.name, a);
      case FuncKind::Macro:
        return callMacro(f, a);
      case FuncKind::LoopCycle: {
        if (!a.kw.empty()) pyFail("cycle() takes no keyword arguments");
        if (a.pos.empty()) pyFail("no items for cycling given");
        return a.pos[static_cast<std::size_t>(loopOf(f.self).index0) % a.pos.size()];
      }
      case FuncKind::LoopChanged: {
        if (!a.kw.empty()) pyFail("changed() takes no keyword arguments");
        LoopObj& l = loopOf(f.self);
        Value current = makeSeq(a.pos, SeqKind::Tuple);
        if (l.changedSeen && pyEq(l.lastChanged, current)) return Value::boolean(false);
        l.changedSeen = true;
        l.lastChanged = std::move(current);
        return Value::boolean(true);
      }
    }
    pyFail("internal error: unknown function");
  }

  Value callGlobal(const std::string& name, const CallArgs& a) {
    if (name == "raise_exception") {
      const auto p = bindArgs(name, a, {"message"}, 1);
      pyFail("raise_exception: " + toStr(*p[0]));
    }
    if (name == "strftime_now") {
      const auto p = bindArgs(name, a, {"format"}, 1);
      if (p[0]->kind != Kind::Str)
        pyFail("strftime() argument 1 must be str, not " + typeName(*p[0]));
      return Value::str(strftimeNow(p[0]->text()));
    }
    if (name == "namespace" || name == "dict") {
      auto d = std::make_shared<DictObj>();
      if (a.pos.size() > 1) pyFail(name + "() expected at most 1 positional argument");
      if (!a.pos.empty()) {
        const Value& src = a.pos[0];
        if (src.kind == Kind::Dict) {
          for (const auto& kv : dictOf(src).items) dictSet(*d, kv.first, kv.second);
        } else {
          for (const Value& pair : iterate(src)) {
            std::vector<Value> kv = iterate(pair);
            if (kv.size() != 2) pyFail(name + "() sequence elements must have length 2");
            dictSet(*d, kv[0], kv[1]);
          }
        }
      }
      for (const auto& kv : a.kw) dictSet(*d, Value::str(kv.first), kv.second);
      if (name == "dict") return makeDict(std::move(d));
      auto ns = std::make_shared<NsObj>();
      for (const auto& kv : d->items) {
        checkStorable(kv.second);
        if (kv.first.kind != Kind::Str) pyFail("namespace() keywords must be strings");
      }
      ns->attrs = std::move(*d);
      Value out;
      out.kind = Kind::Ns;
      out.o = std::move(ns);
      return out;
    }
    if (name == "range") {
      if (!a.kw.empty()) pyFail("range() takes no keyword arguments");
      if (a.pos.empty() || a.pos.size() > 3)
        pyFail("range expected 1 to 3 arguments, got " + std::to_string(a.pos.size()));
      for (const Value& v : a.pos)
        if (!v.isIntLike())
          pyFail("'" + typeName(v) + "' object cannot be interpreted as an integer");
      const int64_t start = a.pos.size() == 1 ? 0 : a.pos[0].i;
      const int64_t stop = a.pos.size() == 1 ? a.pos[0].i : a.pos[1].i;
      const int64_t step = a.pos.size() == 3 ? a.pos[2].i : 1;
      if (step == 0) pyFail("range() arg 3 must not be zero");
      const long double span = static_cast<long double>(stop) - start;
      const long double count = std::max<long double>(0, std::ceil(span / step));
      if (count > kMaxRange)
        pyFail("range too big: the sandbox refuses ranges of more than 100000 items");
      std::vector<Value> items;
      items.reserve(static_cast<std::size_t>(count));
      for (int64_t k = 0; k < static_cast<int64_t>(count); ++k)
        items.push_back(Value::integer(start + k * step));
      Value out = makeSeq(std::move(items), SeqKind::Range);
      auto& r = static_cast<SeqObj&>(*out.o);
      r.start = start, r.stop = stop, r.step = step;
      return out;
    }
    pyFail("unsupported construct: the global function " + name + "()");
  }

  Value callMacro(const FuncObj& f, const CallArgs& a) {
    const MacroDef& m = *f.macro;
    std::shared_ptr<Frame> closure = f.closure.lock();
    if (!closure) pyFail("macro '" + m.name + "' is called after the block that defined it ended");
    if (a.pos.size() > m.params.size())
      pyFail("macro '" + m.name + "' takes not more than " + std::to_string(m.params.size()) +
             " argument(s)");
    Scope scope(*this, closure);
    markMissing(m.missing);
    std::vector<bool> given(m.params.size(), false);
    for (std::size_t k = 0; k < a.pos.size(); ++k) {
      m_frame->set(m.params[k], a.pos[k]);
      given[k] = true;
    }
    for (const auto& kv : a.kw) {
      const auto it = std::find(m.params.begin(), m.params.end(), kv.first);
      if (it == m.params.end())
        pyFail("macro '" + m.name + "' takes no keyword argument '" + kv.first + "'");
      const auto k = static_cast<std::size_t>(it - m.params.begin());
      if (given[k])
        pyFail("macro '" + m.name + "' got multiple values for argument '" + kv.first + "'");
      m_frame->set(kv.first, kv.second);
      given[k] = true;
    }
    const std::size_t firstDefault = m.params.size() - m.defaults.size();
    for (std::size_t k = 0; k < m.params.size(); ++k) {
      if (given[k]) continue;
      m_frame->set(m.params[k], k >= firstDefault ? eval(*m.defaults[k - firstDefault])
                                                  : Value::undefined("parameter '" + m.params[k] +
                                                                     "' was not provided"));
    }
    std::string out;
    exec(m.body, out);
    return Value::str(std::move(out));
  }

  Value callMethod(const Value& self, const std::string& name, const CallArgs& a) {
    if (self.kind == Kind::Str && self.markup) {
      // markupsafe returns Markup from the case and strip methods, and escapes replace()'s
      // arguments; the methods returning numbers or booleans behave as on str.
      static const char* const kKeep[] = {"upper", "lower", "title", "capitalize"};
      static const char* const kPlain[] = {"startswith", "endswith", "find",  "rfind",
                                           "index",      "rindex",   "count", "isspace",
                                           "islower",    "isupper"};
      if (inList(kKeep, name) || ((name == "strip" || name == "lstrip" || name == "rstrip") &&
                                  a.pos.empty() && a.kw.empty())) {
        Value r = callStrMethod(self.text(), name, a);
        r.markup = true;
        return r;
      }
      if (name == "replace") {
        CallArgs escaped = a;
        for (Value& v : escaped.pos)
          if (v.kind == Kind::Str && !v.markup) v = Value::str(htmlEscape(v.text()));
        Value r = callStrMethod(self.text(), name, escaped);
        r.markup = true;
        return r;
      }
      if (!inList(kPlain, name)) unsupportedMarkup("the method str." + name + "()");
    }
    if (self.kind == Kind::Str) return callStrMethod(self.text(), name, a);
    if (self.kind == Kind::Dict) {
      const DictObj& d = dictOf(self);
      if (name == "get") {
        const auto p = bindArgs(name, a, {"key", "default"}, 1);
        const Value* v = dictFind(d, *p[0]);
        return v ? *v : p[1] ? *p[1] : Value::none();
      }
      if (name == "items" || name == "keys" || name == "values") {
        bindArgs(name, a, {}, 0);
        std::vector<Value> items;
        for (const auto& kv : d.items)
          items.push_back(name == "items"  ? makeTuple2(kv.first, kv.second)
                          : name == "keys" ? kv.first
                                           : kv.second);
        return makeSeq(std::move(items), name == "items"  ? SeqKind::Items
                                         : name == "keys" ? SeqKind::Keys
                                                          : SeqKind::Values);
      }
      if (name == "copy") {
        bindArgs(name, a, {}, 0);
        auto copy = std::make_shared<DictObj>(d);
        return makeDict(std::move(copy));
      }
    }
    if (self.kind == Kind::Seq) {
      const auto& items = seqOf(self).items;
      if (name == "copy") {
        bindArgs(name, a, {}, 0);
        return makeSeq(items);
      }
      if (name == "count") {
        const auto p = bindArgs(name, a, {"value"}, 1);
        int64_t n = 0;
        for (const Value& v : items) n += pyEq(v, *p[0]);
        return Value::integer(n);
      }
      if (name == "index") {
        const auto p = bindArgs(name, a, {"value", "start", "stop"}, 1);
        const auto len = static_cast<int64_t>(items.size());
        auto clampIndex = [&](const Value* v, int64_t dflt) {
          int64_t x = intArg(v, dflt, "slice index");
          if (x < 0) x = std::max<int64_t>(0, x + len);
          return std::min(x, len);
        };
        for (int64_t k = clampIndex(p[1], 0), e = clampIndex(p[2], len); k < e; ++k)
          if (pyEq(items[static_cast<std::size_t>(k)], *p[0])) return Value::integer(k);
        pyFail("value is not in " + typeName(self));
      }
    }
    pyFail("unsupported construct: the method " + typeName(self) + "." + name + "()");
  }

  Value callStrMethod(const std::string& s, const std::string& name, const CallArgs& a) {
    if (name == "startswith" || name == "endswith") {
      const auto p = bindArgs(name, a, {"prefix", "start", "end"}, 1);
      const auto window = strWindow(s, p[1], p[2]);
      std::vector<Value> options;
      if (p[0]->kind == Kind::Str) {
        options.push_back(*p[0]);
      } else if (p[0]->kind == Kind::Seq && seqOf(*p[0]).kind == SeqKind::Tuple) {
        options = seqOf(*p[0]).items;
      } else {
        pyFail(name + " first arg must be str or a tuple of str, not " + typeName(*p[0]));
      }
      for (const Value& o : options)
        if (o.kind != Kind::Str)
          pyFail("tuple for " + name + " must only contain str, not " + typeName(o));
      if (!window) return Value::boolean(false);
      const std::string_view sub =
          std::string_view(s).substr(window->first, window->second - window->first);
      for (const Value& o : options) {
        const std::string& x = o.text();
        if (x.size() > sub.size()) continue;
        if (name == "startswith" ? sub.substr(0, x.size()) == x
                                 : sub.substr(sub.size() - x.size()) == x)
          return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const auto p = bindArgs(name, a, {"chars"}, 0);
      return Value::str(pyStrip(s, p[0], name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      const auto p = bindArgs(name, a, {"sep", "maxsplit"}, 0);
      return makeSeq(pySplit(s, p[0], intArg(p[1], -1, "maxsplit"), name == "rsplit"));
    }
    if (name == "replace") {
      const auto p = bindArgs(name, a, {"old", "new", "count"}, 2);
      if (p[0]->kind != Kind::Str || p[1]->kind != Kind::Str)
        pyFail("replace() arguments must be str");
      return Value::str(pyReplace(s, p[0]->text(), p[1]->text(), intArg(p[2], -1, "count")));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      bindArgs(name, a, {}, 0);
      return Value::str(name == "upper"   ? pyUpper(s)
                        : name == "lower" ? pyLower(s)
                        : name == "title" ? pyTitle(s)
                                          : pyCapitalize(s));
    }
    if (name == "isspace" || name == "islower" || name == "isupper") {
      bindArgs(name, a, {}, 0);
      if (name == "isspace") return Value::boolean(!s.empty() && allSpace(s));
      return Value::boolean(name == "islower" ? pyIsLower(s) : pyIsUpper(s));
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "rindex" ||
        name == "count") {
      const auto p = bindArgs(name, a, {"sub", "start", "end"}, 1);
      if (p[0]->kind != Kind::Str) pyFail("must be str, not " + typeName(*p[0]));
      const std::string& sub = p[0]->text();
      chargeBytes(s.size());
      const auto window = strWindow(s, p[1], p[2]);
      if (name == "count") {
        if (!window) return Value::integer(0);
        const std::string_view w =
            std::string_view(s).substr(window->first, window->second - window->first);
        if (sub.empty()) return Value::integer(static_cast<int64_t>(cpCount(w) + 1));
        int64_t n = 0;
        for (std::size_t pos = w.find(sub); pos != std::string_view::npos;
             pos = w.find(sub, pos + sub.size()))
          ++n;
        return Value::integer(n);
      }
      std::size_t hit = std::string::npos;
      if (window) {
        const std::string_view w =
            std::string_view(s).substr(window->first, window->second - window->first);
        const std::size_t rel = (name == "find" || name == "index") ? w.find(sub) : w.rfind(sub);
        if (rel != std::string_view::npos) hit = window->first + rel;
      }
      if (hit == std::string::npos) {
        if (name == "index" || name == "rindex") pyFail("substring not found");
        return Value::integer(-1);
      }
      return Value::integer(static_cast<int64_t>(cpCount(std::string_view(s).substr(0, hit))));
    }
    if (name == "join") {
      const auto p = bindArgs(name, a, {"iterable"}, 1);
      std::string out;
      std::size_t k = 0;
      for (const Value& v : iterate(*p[0])) {
        if (v.kind != Kind::Str)
          pyFail("sequence item " + std::to_string(k) + ": expected str instance, " + typeName(v) +
                 " found");
        if (k++) out += s;
        out += v.text();
        checkSize(out);
      }
      return Value::str(std::move(out));
    }
    if (name == "splitlines") {
      const auto p = bindArgs(name, a, {"keepends"}, 0);
      std::vector<Value> lines;
      for (std::string& line : pySplitlines(s, boolArg(p[0], false)))
        lines.push_back(Value::str(std::move(line)));
      return makeSeq(std::move(lines));
    }
    if (name == "removeprefix" || name == "removesuffix") {
      const auto p = bindArgs(name, a, {"affix"}, 1);
      if (p[0]->kind != Kind::Str) pyFail(name + "() argument must be str");
      const std::string& x = p[0]->text();
      if (name == "removeprefix")
        return Value::str(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
      return Value::str(s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0
                            ? s.substr(0, s.size() - x.size())
                            : s);
    }
    pyFail("unsupported construct: the method str." + name + "()");
  }

  // ---- Filters (jinja2's, and transformers' tojson)

  // The parts of an attribute path "a.b.0" (digits become indices), as jinja2's attrgetter.
  static std::vector<Value> attributeParts(const Value* attribute) {
    std::vector<Value> parts;
    if (attribute == nullptr || attribute->kind == Kind::None) return parts;
    if (attribute->kind != Kind::Str) {
      parts.push_back(*attribute);
      return parts;
    }
    const std::string& s = attribute->text();
    std::size_t start = 0;
    for (;;) {
      const std::size_t dot = s.find('.', start);
      const std::string part =
          s.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                       [](char c) { return c >= '0' && c <= '9'; });
      if (digits && part.size() < 19)
        parts.push_back(Value::integer(std::stoll(part)));
      else
        parts.push_back(Value::str(part));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return parts;
  }

  static Value followPath(Value item, const std::vector<Value>& parts,
                          const Value* dflt = nullptr) {
    for (const Value& part : parts) {
      item = getItem(item, part);
      if (dflt && dflt->kind != Kind::None && item.isUndefined()) item = *dflt;
    }
    return item;
  }

  // Sort keys compared as Python compares the lists make_multi_attrgetter returns.
  static bool keysLess(const std::vector<Value>& a, const std::vector<Value>& b) {
    for (std::size_t k = 0; k < a.size() && k < b.size(); ++k)
      if (!pyEq(a[k], b[k])) return pyLess(a[k], b[k]);
    return a.size() < b.size();
  }

  Value applyFilter(const std::string& name, const Value& v, const CallArgs& a) {
    if (name == "abs") {
      bindArgs(name, a, {}, 0);
      if (v.isIntLike()) return Value::integer(v.i < 0 ? checkedSub(0, v.i) : v.i);
      if (v.kind == Kind::Float) return Value::real(std::fabs(v.f));
      if (v.isUndefined()) failUndefined(v);
      pyFail("bad operand type for abs(): '" + typeName(v) + "'");
    }
    if (name == "attr") {
      const auto p = bindArgs(name, a, {"name"}, 1);
      if (p[0]->kind != Kind::Str) pyFail("attribute name must be string");
      if (v.isUndefined()) failUndefined(v);
      if (auto r = pythonAttr(v, p[0]->text())) return *r;
      return attrUndefined(v, p[0]->text());
    }
    if (name == "capitalize" || name == "lower" || name == "upper" || name == "title") {
      bindArgs(name, a, {}, 0);
      const std::string s = toStr(v);
      const bool markup = v.kind == Kind::Str && v.markup;  // Markup's methods return Markup
      if (name == "capitalize") return Value::str(pyCapitalize(s), markup);
      if (name == "lower") return Value::str(pyLower(s), markup);
      if (name == "upper") return Value::str(pyUpper(s), markup);
      return Value::str(jinjaTitle(s));
    }
    if (name == "count" || name == "length") {
      bindArgs(name, a, {}, 0);
      return Value::integer(static_cast<int64_t>(pyLen(v)));
    }
    if (name == "d" || name == "default") {
      const auto p = bindArgs(name, a, {"default_value", "boolean"}, 0);
      if (v.isUndefined() || (boolArg(p[1], false) && !truthy(v)))
        return p[0] ? *p[0] : Value::str("");
      return v;
    }
    if (name == "dictsort") {
      const auto p = bindArgs(name, a, {"case_sensitive", "by", "reverse"}, 0);
      if (v.isUndefined()) failUndefined(v);
      if (v.kind != Kind::Dict) pyFail("'" + typeName(v) + "' object has no attribute 'items'");
      std::size_t pos = 0;
      if (p[1]) {
        if (p[1]->kind == Kind::Str && p[1]->text() == "value")
          pos = 1;
        else if (!(p[1]->kind == Kind::Str && p[1]->text() == "key"))
          pyFail("You can only sort by either \"key\" or \"value\"");
      }
      const bool caseSensitive = boolArg(p[0], false);
      std::vector<std::pair<Value, std::vector<Value>>> rows;
      for (const auto& kv : dictOf(v).items) {
        const Value& k = pos == 0 ? kv.first : kv.second;
        rows.emplace_back(makeTuple2(kv.first, kv.second),
                          std::vector<Value>{caseSensitive ? k : ignoreCase(k)});
      }
      return sortedRows(std::move(rows), boolArg(p[2], false));
    }
    if (name == "first") {
      bindArgs(name, a, {}, 0);
      const Value empty = Value::undefined("No first item, sequence was empty.");
      switch (v.kind) {
        case Kind::Iter: {
          IterObj& it = iterOf(v);
          return it.pos < it.items.size() ? it.items[it.pos++] : empty;
        }
        case Kind::Str:
          return v.text().empty() ? empty : strChars(v.text().substr(0, 4))[0];
        case Kind::Seq:
          return seqOf(v).items.empty() ? empty : seqOf(v).items.front();
        case Kind::Dict:
          return dictOf(v).items.empty() ? empty : dictOf(v).items.front().first;
        default: {
          std::vector<Value> items = iterate(v);
          return items.empty() ? empty : items.front();
        }
      }
    }
    if (name == "last") {
      bindArgs(name, a, {}, 0);
      if (v.kind == Kind::Iter) pyFail("'" + typeName(v) + "' object is not reversible");
      if (v.kind == Kind::Ns || v.kind == Kind::Func || v.kind == Kind::Loop || v.isNumber() ||
          v.kind == Kind::None)
        pyFail("'" + typeName(v) + "' object is not reversible");
      std::vector<Value> items = iterate(v);
      return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
    }
    if (name == "float") {
      const auto p = bindArgs(name, a, {"default"}, 0);
      const Value dflt = p[0] ? *p[0] : Value::real(0.0);
      if (v.isUndefined()) failUndefined(v);
      if (v.kind == Kind::Float) return v;
      if (v.isIntLike()) return Value::real(static_cast<double>(v.i));
      if (v.kind == Kind::Str) {
        const auto d = parsePyFloat(v.text());
        return d ? Value::real(*d) : dflt;
      }
      return dflt;
    }
    if (name == "int") {
      const auto p = bindArgs(name, a, {"default", "base"}, 0);
      const Value dflt = p[0] ? *p[0] : Value::integer(0);
      if (v.isUndefined()) failUndefined(v);
      if (v.isIntLike()) return Value::integer(v.i);
      auto fromDouble = [&](double d) {
        if (std::isnan(d)) return dflt;
        if (std::isinf(d)) pyFail("cannot convert float infinity to integer");
        if (std::fabs(d) >= 9.2e18) failIntOverflow();
        return Value::integer(static_cast<int64_t>(d));
      };
      if (v.kind == Kind::Float) return fromDouble(v.f);
      if (v.kind == Kind::Str) {
        const int64_t base = intArg(p[1], 10, "base");
        if (base != 0 && (base < 2 || base > 36)) pyFail("int() base must be >= 2 and <= 36, or 0");
        if (const auto n = parsePyInt(v.text(), static_cast<int>(base))) return Value::integer(*n);
        if (const auto d = parsePyFloat(v.text())) return fromDouble(*d);
      }
      return dflt;
    }
    if (name == "indent") {
      const auto p = bindArgs(name, a, {"width", "first", "blank"}, 0);
      if (v.isUndefined()) failUndefined(v);
      if (v.markup) unsupportedMarkup("the indent filter");
      if (v.kind != Kind::Str)
        pyFail("unsupported operand type(s) for +=: '" + typeName(v) + "' and 'str'");
      std::string indention;
      if (p[0] && p[0]->kind == Kind::Str)
        indention = p[0]->text();
      else
        indention = repeatStr(" ", intArg(p[0], 4, "width")).text();
      const std::vector<std::string> lines = pySplitlines(v.text() + "\n", false);
      std::string out;
      if (boolArg(p[2], false)) {
        for (std::size_t k = 0; k < lines.size(); ++k)
          out += (k ? "\n" + indention : "") + lines[k];
      } else {
        for (std::size_t k = 0; k < lines.size(); ++k) {
          if (k) out += "\n" + (lines[k].empty() ? "" : indention);
          out += lines[k];
        }
      }
      if (boolArg(p[1], false)) out = indention + out;
      return Value::str(std::move(out));
    }
    if (name == "items") {
      bindArgs(name, a, {}, 0);
      if (v.isUndefined()) return makeIter({}, "generator");
      if (v.kind != Kind::Dict) pyFail("Can only get item pairs from a mapping.");
      std::vector<Value> items;
      for (const auto& kv : dictOf(v).items) items.push_back(makeTuple2(kv.first, kv.second));
      return makeIter(std::move(items), "generator");
    }
    if (name == "join") {
      const auto p = bindArgs(name, a, {"d", "attribute"}, 0);
      const std::string sep = p[0] ? toStr(*p[0]) : "";
      const std::vector<Value> parts = attributeParts(p[1]);
      std::string out;
      bool first = true;
      for (const Value& item : iterate(v)) {
        if (!first) out += sep;
        first = false;
        appendStr(out, p[1] ? followPath(item, parts) : item, 0);
        checkSize(out);
      }
      return Value::str(std::move(out));
    }
    if (name == "list") {
      bindArgs(name, a, {}, 0);
      return makeSeq(iterate(v));
    }
    if (name == "map") return mapFilter(v, a);
    if (name == "max" || name == "min") {
      const auto p = bindArgs(name, a, {"case_sensitive", "attribute"}, 0);
      const std::vector<Value> items = iterate(v);
      if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
      const std::vector<Value> parts = attributeParts(p[1]);
      const bool caseSensitive = boolArg(p[0], false);
      auto key = [&](const Value& item) {
        Value k = followPath(item, parts);
        return caseSensitive ? k : ignoreCase(k);
      };
      std::size_t best = 0;
      Value bestKey = key(items[0]);
      for (std::size_t k = 1; k < items.size(); ++k) {
        Value candidate = key(items[k]);
        const bool better =
            name == "min" ? pyLessOp(candidate, bestKey, "<") : pyLessOp(bestKey, candidate, ">");
        if (better) best = k, bestKey = std::move(candidate);
      }
      return items[best];
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr")
      return selectFilter(v, a, name == "reject" || name == "rejectattr",
                          name == "selectattr" || name == "rejectattr");
    if (name == "replace") {
      const auto p = bindArgs(name, a, {"old", "new", "count"}, 2);
      return Value::str(pyReplace(toStr(v), toStr(*p[0]), toStr(*p[1]), intArg(p[2], -1, "count")));
    }
    if (name == "reverse") {
      bindArgs(name, a, {}, 0);
      if (v.kind == Kind::Str) {
        std::u32string u = toU32(v.text());
        std::reverse(u.begin(), u.end());
        return Value::str(fromU32(u), v.markup);
      }
      if (v.kind == Kind::Iter) {  // not reversible: jinja2 falls back to a reversed list
        std::vector<Value> items = iterate(v);
        std::reverse(items.begin(), items.end());
        return makeSeq(std::move(items));
      }
      if (v.kind != Kind::Undefined && v.kind != Kind::Seq && v.kind != Kind::Dict)
        pyFail("argument must be iterable");
      std::vector<Value> items = iterate(v);
      std::reverse(items.begin(), items.end());
      return makeIter(std::move(items), v.kind == Kind::Seq && seqOf(v).kind == SeqKind::List
                                            ? "list_reverseiterator"
                                            : "reversed");
    }
    if (name == "round") {
      const auto p = bindArgs(name, a, {"precision", "method"}, 0);
      const int64_t precision = intArg(p[0], 0, "precision");
      const std::string method = p[1] ? toStr(*p[1]) : "common";
      if (method != "common" && method != "ceil" && method != "floor")
        pyFail("method must be common, ceil or floor");
      if (v.isUndefined()) failUndefined(v);
      if (!v.isNumber()) pyFail("type " + typeName(v) + " doesn't define __round__ method");
      if (precision < 0) pyFail("unsupported construct: round() to a negative precision");
      if (method == "common") {
        if (v.isIntLike()) return Value::integer(v.i);
        if (!std::isfinite(v.f) || precision > 320) return v;
        char buf[400];
        std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(precision), v.f);
        return Value::real(std::strtod(buf, nullptr));
      }
      const double scale = std::pow(10.0, static_cast<double>(precision));
      const double x = v.asDouble() * scale;
      return Value::real((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
    }
    if (name == "safe") {
      bindArgs(name, a, {}, 0);
      return Value::str(toStr(v), true);
    }
    if (name == "string") {
      bindArgs(name, a, {}, 0);
      return v.kind == Kind::Str ? v : Value::str(toStr(v));
    }
    if (name == "sort") {
      const auto p = bindArgs(name, a, {"reverse", "case_sensitive", "attribute"}, 0);
      const bool caseSensitive = boolArg(p[1], false);
      std::vector<std::vector<Value>> paths;
      if (p[2] && p[2]->kind == Kind::Str) {
        const std::string& spec = p[2]->text();
        std::size_t start = 0;
        for (;;) {
          const std::size_t comma = spec.find(',', start);
          const Value part =
              Value::str(spec.substr(start, comma == std::string::npos ? comma : comma - start));
          paths.push_back(attributeParts(&part));
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      } else {
        paths.push_back(attributeParts(p[2]));
      }
      std::vector<std::pair<Value, std::vector<Value>>> rows;
      for (Value& item : iterate(v)) {
        std::vector<Value> keys;
        for (const auto& path : paths) {
          Value k = followPath(item, path);
          keys.push_back(caseSensitive ? k : ignoreCase(k));
        }
        rows.emplace_back(std::move(item), std::move(keys));
      }
      return sortedRows(std::move(rows), boolArg(p[0], false));
    }
    if (name == "sum") {
      const auto p = bindArgs(name, a, {"attribute", "start"}, 0);
      Value total = p[1] ? *p[1] : Value::integer(0);
      if (total.kind == Kind::Str) pyFail("sum() can't sum strings [use ''.join(seq) instead]");
      const std::vector<Value> parts = attributeParts(p[0]);
      for (const Value& item : iterate(v))
        total = pyBinary(BinOp::Add, total, p[0] ? followPath(item, parts) : item);
      return total;
    }
    if (name == "tojson") {
      const auto p = bindArgs(name, a, {"ensure_ascii", "indent", "separators", "sort_keys"}, 0);
      JsonOptions o;
      o.ensureAscii = boolArg(p[0], false);
      if (p[1] && p[1]->kind != Kind::None) {
        o.indented = true;
        if (p[1]->kind == Kind::Str)
          o.indent = p[1]->text();
        else if (p[1]->isIntLike())
          o.indent = repeatStr(" ", p[1]->i).text();
        else
          pyFail("can't multiply sequence by non-int of type '" + typeName(*p[1]) + "'");
        o.itemSep = ",";
      }
      if (p[2] && p[2]->kind != Kind::None) {
        const std::vector<Value> seps = iterate(*p[2]);
        if (seps.size() != 2 || seps[0].kind != Kind::Str || seps[1].kind != Kind::Str)
          pyFail("separators must be a pair of strings");
        o.itemSep = seps[0].text();
        o.keySep = seps[1].text();
      }
      o.sortKeys = boolArg(p[3], false);
      std::string out;
      appendJson(out, v, o, 0);
      return Value::str(std::move(out));
    }
    if (name == "trim") {
      const auto p = bindArgs(name, a, {"chars"}, 0);
      const bool markup = v.kind == Kind::Str && v.markup;
      if (markup && p[0] && p[0]->kind != Kind::None) unsupportedMarkup("trim(chars)");
      return Value::str(pyStrip(toStr(v), p[0], true, true), markup);
    }
    if (name == "unique") {
      const auto p = bindArgs(name, a, {"case_sensitive", "attribute"}, 0);
      const std::vector<Value> parts = attributeParts(p[1]);
      const bool caseSensitive = boolArg(p[0], false);
      std::unordered_map<std::string, bool> seen;
      std::vector<Value> out;
      for (Value& item : iterate(v)) {
        Value k = followPath(item, parts);
        if (!caseSensitive) k = ignoreCase(k);
        if (seen.emplace(hashKey(k), true).second) out.push_back(std::move(item));
      }
      return makeIter(std::move(out), "generator");
    }
    if (inList(kUnsupportedFilters, name))
      pyFail("unsupported construct: the '" + name + "' filter");
    pyFail("no filter named '" + name + "'");
  }

  // jinja2's title filter: each word (split at whitespace, '-', and opening brackets) gets its
  // first character uppercased and the rest lowercased.
  static std::string jinjaTitle(const std::string& s) {
    const std::u32string u = toU32(s);
    auto isBoundary = [](char32_t c) {
      return isPySpace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    };
    std::string out;
    std::size_t k = 0;
    while (k < u.size()) {
      std::size_t e = k;
      const bool boundary = isBoundary(u[k]);
      while (e < u.size() && isBoundary(u[e]) == boundary) ++e;
      const std::u32string_view item = std::u32string_view(u).substr(k, e - k);
      if (boundary) {
        out += fromU32(item);
      } else {
        out += pyUpper(fromU32(item.substr(0, 1)));
        out += pyLower(fromU32(item.substr(1)));
      }
      k = e;
    }
    return out;
  }

  // A stable sort on precomputed keys; `reverse` keeps equal items in their original order, as
  // Python's sorted(reverse=True) does.
  static Value sortedRows(std::vector<std::pair<Value, std::vector<Value>>> rows, bool reverse) {
    std::stable_sort(rows.begin(), rows.end(), [reverse](const auto& x, const auto& y) {
      return reverse ? keysLess(y.second, x.second) : keysLess(x.second, y.second);
    });
    std::vector<Value> out;
    for (auto& row : rows) out.push_back(std::move(row.first));
    return makeSeq(std::move(out));
  }

  Value mapFilter(const Value& v, const CallArgs& a) {
    if (!truthy(v)) return makeIter({}, "generator");
    std::vector<Value> out;
    if (a.pos.empty()) {
      const Value* attribute = nullptr;
      const Value* dflt = nullptr;
      for (const auto& kv : a.kw) {
        if (kv.first == "attribute")
          attribute = &kv.second;
        else if (kv.first == "default")
          dflt = &kv.second;
        else
          pyFail("Unexpected keyword argument '" + kv.first + "'");
      }
      if (!attribute) pyFail("map requires a filter argument");
      const std::vector<Value> parts = attributeParts(attribute);
      for (const Value& item : iterate(v)) out.push_back(followPath(item, parts, dflt));
    } else {
      if (a.pos[0].kind != Kind::Str) pyFail("map requires a filter name");
      const std::string filter = a.pos[0].text();
      if (!inList(kFilters, filter)) {
        if (inList(kUnsupportedFilters, filter))
          pyFail("unsupported construct: the '" + filter + "' filter");
        pyFail("no filter named '" + filter + "'");
      }
      CallArgs rest;
      rest.pos.assign(a.pos.begin() + 1, a.pos.end());
      rest.kw = a.kw;
      for (const Value& item : iterate(v)) out.push_back(applyFilter(filter, item, rest));
    }
    return makeIter(std::move(out), "generator");
  }

  Value selectFilter(const Value& v, const CallArgs& a, bool reject, bool byAttribute) {
    if (!truthy(v)) return makeIter({}, "generator");
    std::size_t next = 0;
    std::vector<Value> parts;
    if (byAttribute) {
      if (a.pos.empty()) pyFail("Missing parameter for attribute name");
      parts = attributeParts(&a.pos[0]);
      next = 1;
    }
    std::string test;
    CallArgs testArgs;
    if (a.pos.size() > next) {
      if (a.pos[next].kind != Kind::Str) pyFail("the test name must be a string");
      test = a.pos[next].text();
      if (!inList(kTests, test)) {
        if (inList(kUnsupportedTests, test))
          pyFail("unsupported construct: the '" + test + "' test");
        pyFail("no test named '" + test + "'");
      }
      testArgs.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(next) + 1, a.pos.end());
      testArgs.kw = a.kw;
    }
    std::vector<Value> out;
    for (Value& item : iterate(v)) {
      const Value subject = byAttribute ? followPath(item, parts) : item;
      const bool ok = test.empty() ? truthy(subject) : applyTest(test, subject, testArgs);
      if (ok != reject) out.push_back(std::move(item));
    }
    return makeIter(std::move(out), "generator");
  }

  // ---- Tests

  bool applyTest(const std::string& name, const Value& v, const CallArgs& a) {
    auto noArgs = [&]() { bindArgs(name, a, {}, 0); };
    if (name == "defined") return noArgs(), !v.isUndefined();
    if (name == "undefined") return noArgs(), v.isUndefined();
    if (name == "none") return noArgs(), v.kind == Kind::None;
    if (name == "boolean") return noArgs(), v.kind == Kind::Bool;
    if (name == "false") return noArgs(), v.kind == Kind::Bool && !v.i;
    if (name == "true") return noArgs(), v.kind == Kind::Bool && v.i;
    if (name == "integer") return noArgs(), v.kind == Kind::Int;
    if (name == "float") return noArgs(), v.kind == Kind::Float;
    if (name == "number") return noArgs(), v.isNumber();
    if (name == "string") return noArgs(), v.kind == Kind::Str;
    if (name == "mapping") return noArgs(), v.kind == Kind::Dict;
    if (name == "sequence") {
      noArgs();
      if (v.kind == Kind::Seq) {
        const SeqKind k = seqOf(v).kind;
        return k == SeqKind::List || k == SeqKind::Tuple || k == SeqKind::Range;
      }
      return v.kind == Kind::Str || v.kind == Kind::Dict || v.isUndefined();
    }
    if (name == "iterable") {
      noArgs();
      return v.isUndefined() || v.kind == Kind::Str || v.kind == Kind::Seq ||
             v.kind == Kind::Dict || v.kind == Kind::Iter || v.kind == Kind::Loop;
    }
    if (name == "callable") {
      noArgs();
      return v.kind == Kind::Func || v.isUndefined() || v.kind == Kind::Loop;
    }
    if (name == "sameas") {
      const Value& o = *bindArgs(name, a, {"other"}, 1)[0];
      if (v.kind != o.kind) return false;
      switch (v.kind) {
        case Kind::None:
          return true;
        case Kind::Bool:
          return v.i == o.i;
        case Kind::Int:  // CPython caches the small integers
          return v.i == o.i && v.i >= -5 && v.i <= 256;
        case Kind::Str:
          return v.s == o.s;
        case Kind::Float:
        case Kind::Undefined:
          return false;
        default:
          return v.o == o.o;
      }
    }
    if (name == "in") return pyContains(*bindArgs(name, a, {"seq"}, 1)[0], v);
    static const std::pair<const char*, CmpOp> kCompareTests[] = {
        {"eq", CmpOp::Eq},          {"equalto", CmpOp::Eq}, {"==", CmpOp::Eq},
        {"ne", CmpOp::Ne},          {"!=", CmpOp::Ne},      {"gt", CmpOp::Gt},
        {"greaterthan", CmpOp::Gt}, {">", CmpOp::Gt},       {"ge", CmpOp::Ge},
        {">=", CmpOp::Ge},          {"lt", CmpOp::Lt},      {"lessthan", CmpOp::Lt},
        {"<", CmpOp::Lt},           {"le", CmpOp::Le},      {"<=", CmpOp::Le}};
    for (const auto& t : kCompareTests)
      if (name == t.first) return compare(t.second, v, *bindArgs(name, a, {"b"}, 1)[0]);
    if (name == "odd" || name == "even") {
      noArgs();
      return pyEq(pyBinary(BinOp::Mod, v, Value::integer(2)), Value::integer(name == "odd"));
    }
    if (name == "divisibleby")
      return pyEq(pyBinary(BinOp::Mod, v, *bindArgs(name, a, {"num"}, 1)[0]), Value::integer(0));
    if (name == "escaped") return noArgs(), v.kind == Kind::Str && v.markup;
    if (name == "lower") return noArgs(), pyIsLower(toStr(v));
    if (name == "upper") return noArgs(), pyIsUpper(toStr(v));
    if (inList(kUnsupportedTests, name)) pyFail("unsupported construct: the '" + name + "' test");
    pyFail("no test named '" + name + "'");
  }

  const std::string& m_source;
  const Body& m_body;
  const Missing& m_rootMissing;
  Value m_context;
  std::shared_ptr<Frame> m_frame;
  const std::string* m_top = nullptr;
  std::vector<std::pair<std::size_t, std::size_t>> m_spans;
  Value m_blockInput;
  int m_depth = 0;
  uint64_t m_work = 0;
  int m_line = 1;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API

struct ChatTemplate::Impl {
  std::string source;
  Body body;
  Missing rootMissing;
};

ChatTemplate::ChatTemplate(const std::string& text, std::string source)
    : m_impl(std::make_unique<Impl>()) {
  m_impl->source = std::move(source);
  UPCYCLE_CHECK(validUtf8(text), m_impl->source, ": the template is not valid UTF-8");
  Lexer lexer(text, m_impl->source);
  Parser parser(lexer.run(), m_impl->source);
  m_impl->body = parser.parseTemplate();
  m_impl->rootMissing = ScopeAnalysis().analyzeRoot(m_impl->body);
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

const std::string& ChatTemplate::source() const { return m_impl->source; }

namespace {

template <typename Json>
Value contextValue(const Json& context, const std::string& source) {
  try {
    return fromJson(context, 0);
  } catch (const PyError& e) {
    throw UserError(source + ": " + e.msg);
  }
}

}  // namespace

std::string ChatTemplate::render(const nlohmann::json& context) const {
  return Renderer(m_impl->source, m_impl->body, m_impl->rootMissing,
                  contextValue(context, m_impl->source))
      .run()
      .text;
}

std::string ChatTemplate::renderOrdered(const nlohmann::ordered_json& context) const {
  return renderWithSpans(context).text;
}

ChatRender ChatTemplate::renderWithSpans(const nlohmann::ordered_json& context) const {
  return Renderer(m_impl->source, m_impl->body, m_impl->rootMissing,
                  contextValue(context, m_impl->source))
      .run();
}

std::optional<ChatTemplateFile> findChatTemplate(const std::filesystem::path& folder) {
  ChatTemplateFile out;
  const std::filesystem::path jinjaPath = folder / "chat_template.jinja";
  const std::filesystem::path configPath = folder / "tokenizer_config.json";
  const bool hasJinja = std::filesystem::is_regular_file(jinjaPath);
  const bool hasConfig = std::filesystem::is_regular_file(configPath);
  nlohmann::json config;
  if (hasConfig) {
    try {
      config = nlohmann::json::parse(readTextFile(configPath));
    } catch (const nlohmann::json::exception& e) {
      throw UserError(configPath.string() + ": not valid JSON: " + e.what());
    }
    UPCYCLE_CHECK(config.is_object(), configPath.string(), ": expected a JSON object");
    auto token = [&](const char* key) -> std::string {
      if (!config.contains(key) || config[key].is_null()) return "";
      const nlohmann::json& t = config[key];
      if (t.is_string()) return t.get<std::string>();
      UPCYCLE_CHECK(t.is_object() && t.contains("content") && t["content"].is_string(),
                    configPath.string(), ": ", key,
                    " must be a string or an object with a string \"content\", got ", t.dump());
      return t["content"].get<std::string>();
    };
    out.bosToken = token("bos_token");
    out.eosToken = token("eos_token");
  }
  if (hasJinja) {
    out.text = readTextFile(jinjaPath);
    out.source = jinjaPath.string();
    return out;
  }
  if (!hasConfig || !config.contains("chat_template") || config["chat_template"].is_null())
    return std::nullopt;
  const nlohmann::json& ct = config["chat_template"];
  const std::string where = configPath.string() + ": chat_template";
  if (ct.is_string()) {
    out.text = ct.get<std::string>();
    out.source = where;
    return out;
  }
  UPCYCLE_CHECK(ct.is_array(), where,
                " must be a string or a list of {\"name\", \"template\"}, got ", ct.type_name());
  std::string names;
  for (const auto& entry : ct) {
    UPCYCLE_CHECK(entry.is_object() && entry.contains("name") && entry["name"].is_string() &&
                      entry.contains("template") && entry["template"].is_string(),
                  where, ": every entry must be {\"name\": string, \"template\": string}");
    const std::string name = entry["name"].get<std::string>();
    if (name == "default") {
      out.text = entry["template"].get<std::string>();
      out.source = where + "[default]";
      return out;
    }
    names += (names.empty() ? "" : ", ") + name;
  }
  throw UserError(where + ": no template named \"default\" (the file has: " + names + ")");
}

}  // namespace upcycle
