#include "data/unicode_text.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

namespace upcycle::unicode {

char32_t nextCodePoint(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  const unsigned char c = p[i];
  if (c < 0x80) {
    ++i;
    return c;
  }
  int len = 0;
  char32_t cp = 0, min = 0;
  if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
  else {
    ++i;
    return kInvalid;
  }
  if (i + len > n) {
    ++i;
    return kInvalid;
  }
  for (int k = 1; k < len; ++k) {
    if ((p[i + k] & 0xC0) != 0x80) {
      ++i;
      return kInvalid;
    }
    cp = (cp << 6) | (p[i + k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return kInvalid;
  }
  i += len;
  return cp;
}

void appendUtf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool isValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();)
    if (nextCodePoint(s, i) == kInvalid) return false;
  return true;
}

// The WHATWG / Rust rule: a "maximal subpart" of an ill-formed sequence (a lead byte followed by
// as many valid continuation bytes as fit its constraints) is replaced by one U+FFFD.
std::string fromUtf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    if (nextCodePoint(s, j) != kInvalid) {
      out.append(s.substr(i, j - i));
      i = j;
      continue;
    }
    const unsigned char c = p[i];
    size_t len = 1;
    auto cont = [&](size_t k, unsigned char lo, unsigned char hi) {
      return i + k < n && p[i + k] >= lo && p[i + k] <= hi;
    };
    if (c >= 0xC2 && c <= 0xDF) {
      len = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      if (cont(1, lo, hi)) len = cont(2, 0x80, 0xBF) ? 3 : 2;
    } else if (c >= 0xF0 && c <= 0xF4) {
      const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      if (cont(1, lo, hi)) len = cont(2, 0x80, 0xBF) ? (cont(3, 0x80, 0xBF) ? 4 : 3) : 2;
    }
    out += "\xEF\xBF\xBD";
    i += len;
  }
  return out;
}

namespace {

std::string mapWith(std::string_view s, int options) {
  const std::string valid = isValidUtf8(s) ? std::string(s) : fromUtf8Lossy(s);
  utf8proc_uint8_t* result = nullptr;
  const auto len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid.data()),
                                static_cast<utf8proc_ssize_t>(valid.size()), &result,
                                static_cast<utf8proc_option_t>(options));
  if (len < 0) return valid;
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(result, &std::free);
  return std::string(reinterpret_cast<const char*>(result), static_cast<size_t>(len));
}

bool isAscii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

std::string normalize(std::string_view s, Form form) {
  if (isAscii(s)) return std::string(s);  // every normalization form leaves ASCII unchanged
  switch (form) {
    case Form::NFC: return mapWith(s, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case Form::NFD: return mapWith(s, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case Form::NFKC: return mapWith(s, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case Form::NFKD: return mapWith(s, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  return std::string(s);
}

std::string toLower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = nextCodePoint(s, i);
    if (c == kInvalid) {
      out.append(s.substr(start, i - start));
    } else if (c == 0x130) {
      out += "i\xCC\x87";  // Rust: U+0130 lowercases to "i" + U+0307
    } else {
      appendUtf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

std::string stripAccents(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = nextCodePoint(s, i);
    if (c != kInvalid && utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_MN) continue;
    out.append(s.substr(start, i - start));
  }
  return out;
}

bool isWhitespace(char32_t c) {
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool isNumeric(char32_t c) {
  if (c == kInvalid) return false;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

bool isAlphanumeric(char32_t c) {
  if (c == kInvalid) return false;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) || cat == UTF8PROC_CATEGORY_MN ||
         cat == UTF8PROC_CATEGORY_MC || isNumeric(c);
}

bool isPunctuation(char32_t c) {
  if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
                       (c >= 0x7B && c <= 0x7E);
  if (c == kInvalid) return false;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

}  // namespace upcycle::unicode
