#pragma once
// Unicode helpers for the tokenizers (torch-free): UTF-8 decoding, normalization forms (utf8proc),
// and the character classes of Rust's `char` that the Hugging Face tokenizers library relies on.
// Thread-safety: free functions, no state.
#include <cstdint>
#include <string>
#include <string_view>

namespace upcycle::unicode {

constexpr char32_t kInvalid = 0xFFFFFFFF;

// The code point starting at s[i]; advances i past it. Invalid or truncated sequences yield
// kInvalid and advance by one byte.
char32_t nextCodePoint(std::string_view s, size_t& i);
void appendUtf8(std::string& out, char32_t cp);
bool isValidUtf8(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string fromUtf8Lossy(std::string_view bytes);

enum class Form { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, Form form);  // invalid UTF-8 is passed through lossily
std::string toLower(std::string_view s);               // per code point, as Rust's to_lowercase
std::string stripAccents(std::string_view s);          // drops nonspacing marks (Mn)

// Rust's char::is_whitespace: the Unicode White_Space property (U+0085 yes, U+FEFF no).
bool isWhitespace(char32_t c);
// Rust's char::is_numeric: general categories Nd, Nl, No.
bool isNumeric(char32_t c);
// Rust's char::is_alphanumeric, approximated as letters (L*), Nl and marks of the Alphabetic
// property's main categories (Mn, Mc), plus numbers.
bool isAlphanumeric(char32_t c);
// Unicode general category P* (the tokenizers' `is_punctuation`), plus ASCII punctuation.
bool isPunctuation(char32_t c);

}  // namespace upcycle::unicode
