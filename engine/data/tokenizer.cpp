#include "data/tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "formats/hf_config.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

ByteTokenizer::ByteTokenizer() {
  bos = kBos;
  eos = kEos;
  pad = kPad;
}

std::vector<int64_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  out.reserve(text.size());
  for (unsigned char c : text) out.push_back(c);
  return out;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids)
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
  return out;
}

namespace {

// SentencePiece through libupcycle_spm (see data/spm_shim.cpp for why it is loaded at run time).
struct SpmApi {
  void* (*load)(const char*, char*, int);
  void (*free)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*);
  int (*decode)(void*, const int*, size_t, char**, size_t*);
  void (*freeBuffer)(void*);
  int (*info)(void*, int);
};

fs::path executableDir() {
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

const SpmApi& spmApi() {
  static const SpmApi api = [] {
    std::vector<fs::path> candidates;
    if (const char* env = std::getenv("UPCYCLE_SPM_SHIM")) candidates.emplace_back(env);
    const fs::path exe = executableDir();
    candidates.push_back(exe / "libupcycle_spm.so");
    candidates.push_back(exe / "../lib/upcycle/libupcycle_spm.so");
#ifdef UPCYCLE_SPM_SHIM_BUILD_PATH
    candidates.emplace_back(UPCYCLE_SPM_SHIM_BUILD_PATH);
#endif
#ifdef UPCYCLE_SPM_SHIM_INSTALL_PATH
    candidates.emplace_back(UPCYCLE_SPM_SHIM_INSTALL_PATH);
#endif
    void* h = nullptr;
    std::string tried;
    for (const auto& c : candidates) {
      tried += " " + c.string();
      if (!fs::exists(c)) continue;
      h = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      tried += std::string(" (") + ::dlerror() + ")";
    }
    UPCYCLE_CHECK(h, "SentencePiece support (libupcycle_spm.so) was not found; looked at:", tried);
    SpmApi a{};
    auto sym = [&](const char* name) {
      void* p = ::dlsym(h, name);
      UPCYCLE_CHECK(p, "libupcycle_spm.so lacks ", name);
      return p;
    };
    a.load = reinterpret_cast<decltype(a.load)>(sym("upcycle_spm_load"));
    a.free = reinterpret_cast<decltype(a.free)>(sym("upcycle_spm_free"));
    a.encode = reinterpret_cast<decltype(a.encode)>(sym("upcycle_spm_encode"));
    a.decode = reinterpret_cast<decltype(a.decode)>(sym("upcycle_spm_decode"));
    a.freeBuffer = reinterpret_cast<decltype(a.freeBuffer)>(sym("upcycle_spm_free_buffer"));
    a.info = reinterpret_cast<decltype(a.info)>(sym("upcycle_spm_info"));
    return a;
  }();
  return api;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const fs::path& file) : m_api(spmApi()) {
    UPCYCLE_CHECK(fs::exists(file), "no such file: ", file.string());
    char err[512] = {0};
    m_handle = m_api.load(file.c_str(), err, sizeof err);
    UPCYCLE_CHECK(m_handle, file.string(), ": not a SentencePiece model (", err, ")");
    auto id = [&](int which) -> std::optional<int64_t> {
      const int v = m_api.info(m_handle, which);
      return v >= 0 ? std::optional<int64_t>(v) : std::nullopt;
    };
    bos = id(1);
    eos = id(2);
    pad = id(3);
    m_size = m_api.info(m_handle, 0);
  }
  ~SentencePieceTokenizer() override { m_api.free(m_handle); }
  std::string kind() const override { return "sentencepiece"; }
  std::vector<int64_t> encode(const std::string& text) const override {
    int* ids = nullptr;
    size_t n = 0;
    UPCYCLE_CHECK(m_api.encode(m_handle, text.data(), text.size(), &ids, &n) == 0,
                  "SentencePiece could not encode the text");
    std::vector<int64_t> out(ids, ids + n);
    m_api.freeBuffer(ids);
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> v;
    for (int64_t id : ids)
      if (id >= 0 && id < m_size && id != bos && id != eos && id != pad) v.push_back(static_cast<int>(id));
    char* text = nullptr;
    size_t len = 0;
    UPCYCLE_CHECK(m_api.decode(m_handle, v.data(), v.size(), &text, &len) == 0, "SentencePiece could not decode ids");
    std::string out(text, len);
    m_api.freeBuffer(text);
    return out;
  }
  int64_t vocabSize() const override { return m_size; }

 private:
  const SpmApi& m_api;
  void* m_handle = nullptr;
  int64_t m_size = 0;
};

std::optional<json> readJsonIfExists(const fs::path& p) {
  if (!fs::exists(p)) return std::nullopt;
  try {
    return json::parse(readTextFile(p));
  } catch (const json::parse_error& e) {
    throw UserError(p.string() + ": not valid JSON (" + e.what() + ")");
  }
}

}  // namespace

std::unique_ptr<Tokenizer> loadSentencePiece(const fs::path& file) {
  return std::make_unique<SentencePieceTokenizer>(file);
}

std::unique_ptr<Tokenizer> loadTokenizer(const fs::path& folder) {
  std::unique_ptr<Tokenizer> tok;
  auto tcfg = readJsonIfExists(folder / "tokenizer_config.json");
  if (fs::exists(folder / "tokenizer.model")) {
    tok = loadSentencePiece(folder / "tokenizer.model");
  } else if (tcfg && tcfg->value("tokenizer_class", std::string()) == "UpcycleByteTokenizer") {
    tok = std::make_unique<ByteTokenizer>();
  } else {
    UPCYCLE_CHECK(!fs::exists(folder / "tokenizer.json"), folder.string(),
                  ": tokenizer.json (byte-level BPE) is not supported yet; tokenizer.model "
                  "(SentencePiece) and the built-in byte tokenizer are");
    throw UserError(folder.string() + ": no tokenizer (expected tokenizer.model, or tokenizer_config.json "
                    "naming UpcycleByteTokenizer); pre-tokenize the data with \"input_ids\" instead");
  }
  if (fs::exists(folder / "config.json")) {
    ModelConfig c = loadHfConfig(folder);
    if (c.bosTokenId) tok->bos = c.bosTokenId;
    if (c.eosTokenId) tok->eos = c.eosTokenId;
    if (c.padTokenId) tok->pad = c.padTokenId;
  }
  return tok;
}

void writeByteTokenizerConfig(const fs::path& folder, const std::string& promptTemplate) {
  json j = {{"tokenizer_class", "UpcycleByteTokenizer"},
            {"bos_token_id", ByteTokenizer::kBos},
            {"eos_token_id", ByteTokenizer::kEos},
            {"pad_token_id", ByteTokenizer::kPad}};
  if (!promptTemplate.empty()) j["upcycle_prompt_template"] = promptTemplate;
  fs::create_directories(folder);
  writeFileAtomically(folder / "tokenizer_config.json", j.dump(2) + "\n");
}

void copyTokenizerFiles(const fs::path& from, const fs::path& to) {
  if (from.empty() || !fs::exists(from)) return;
  if (fs::exists(to) && fs::equivalent(from, to)) return;
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    if (!fs::exists(from / name)) continue;
    fs::create_directories(to);
    writeFileAtomically(to / name, readTextFile(from / name));
  }
}

std::optional<std::string> storedPromptTemplate(const fs::path& folder) {
  auto j = readJsonIfExists(folder / "tokenizer_config.json");
  if (j && j->contains("upcycle_prompt_template") && (*j)["upcycle_prompt_template"].is_string())
    return (*j)["upcycle_prompt_template"].get<std::string>();
  return std::nullopt;
}

}  // namespace upcycle
