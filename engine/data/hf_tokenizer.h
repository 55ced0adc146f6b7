#pragma once
// Hugging Face `tokenizer.json` (the tokenizers library's format), read completely and encoded as
// that library encodes it. Torch-free.
//
// Pipeline, as in the library: added tokens are cut out of the raw text (longest match first,
// honouring lstrip/rstrip/single_word); the rest is normalized piece by piece, normalized added
// tokens are cut out of that, the pre-tokenizer splits it into words, and the model turns each
// word into ids. The post-processor adds BOS/EOS only when asked (add_special_tokens).
//
// Supported: model BPE (byte_fallback, ignore_merges, fuse_unk, unk_token, continuing_subword_prefix,
// end_of_word_suffix, merges as "a b" strings or [a, b] pairs); normalizers NFC/NFD/NFKC/NFKD,
// Lowercase, StripAccents, Strip, Prepend, Replace, Sequence; pre-tokenizers ByteLevel, Split,
// Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, Sequence; post-processors
// TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence; decoders ByteLevel,
// ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence. Anything else (Unigram, WordPiece, a
// Precompiled normalizer, ...) is refused with an error naming the file and the field.
// Thread-safety: a loaded tokenizer is immutable apart from an internal, locked word cache;
// encode/decode may run on any thread.
#include <filesystem>
#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace upcycle {

// Parses tokenizer.json text; `source` (the path) prefixes every error.
std::unique_ptr<Tokenizer> parseHfTokenizer(const std::string& jsonText, const std::string& source);
std::unique_ptr<Tokenizer> loadHfTokenizer(const std::filesystem::path& tokenizerJson);

}  // namespace upcycle
