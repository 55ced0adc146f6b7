// libupcycle_spm: SentencePiece behind a C interface, loaded at run time with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by data/tokenizer.cpp.
//
// Why: Debian's libsentencepiece exports its own copy of protobuf-lite. Linked into a process that
// also loads libprotobuf (LibTorch pulls it in through libonnx_proto), its symbols interpose on
// libprotobuf's and the process crashes in a static initializer before main(). Loading it locally
// and deep-bound keeps the two protobufs apart.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
void setError(char* err, int len, const std::string& msg) {
  if (err && len > 0) {
    std::strncpy(err, msg.c_str(), static_cast<size_t>(len) - 1);
    err[len - 1] = '\0';
  }
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* upcycle_spm_load(const char* path, char* err, int errLen) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    setError(err, errLen, status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void upcycle_spm_free(void* h) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(h);
}

// ids: malloc'd array owned by the caller (free with upcycle_spm_free_buffer). Returns 0 on success.
__attribute__((visibility("default"))) int upcycle_spm_encode(void* h, const char* text, size_t len, int** ids,
                                                              size_t* n) {
  std::vector<int> out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string(text, len), &out);
  if (!status.ok()) return 1;
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
  if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 0;
}

// text: malloc'd, NUL-terminated, length in *len. Returns 0 on success.
__attribute__((visibility("default"))) int upcycle_spm_decode(void* h, const int* ids, size_t n, char** text,
                                                              size_t* len) {
  std::string out;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) return 1;
  *len = out.size();
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.c_str(), out.size() + 1);
  return 0;
}

__attribute__((visibility("default"))) void upcycle_spm_free_buffer(void* p) { std::free(p); }

// The piece of one id, NUL-terminated into buf (truncated to len - 1). Returns 0 on success.
__attribute__((visibility("default"))) int upcycle_spm_piece(void* h, int id, char* buf, int len) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  if (id < 0 || id >= sp->GetPieceSize() || len <= 0) return 1;
  setError(buf, len, sp->IdToPiece(id));
  return 0;
}

// which: 0 = piece count, 1 = bos, 2 = eos, 3 = pad, 4 = unk (-1 when absent)
__attribute__((visibility("default"))) int upcycle_spm_info(void* h, int which) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  switch (which) {
    case 0: return sp->GetPieceSize();
    case 1: return sp->bos_id();
    case 2: return sp->eos_id();
    case 3: return sp->pad_id();
    case 4: return sp->unk_id();
    default: return -1;
  }
}
}
