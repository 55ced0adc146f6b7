#include "data/tokenizer.h"
#include "formats/peft_adapter.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/hf_tokenizer.h"
#include "formats/hf_config.h"

// AddressSanitizer refuses RTLD_DEEPBIND (it would bind the library's malloc past ASan's), so the
// sanitize preset loads the shim without it. In a program that links LibTorch, LibTorch's libprotobuf
// then interposes on SentencePiece's and loading a .model fails with protobuf's version error (a clean
// `upcycle: error:`); the torch-free SentencePiece tests still run under ASan, and the CLI's
// SentencePiece test is left out of the sanitize test preset (CMakePresets.json).
#if defined(__SANITIZE_ADDRESS__)
constexpr int kDeepBind = 0;
#else
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif

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

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids, bool skipSpecialTokens) const {
  std::string out;
  for (int64_t id : ids) {
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
    else if (!skipSpecialTokens && id == kBos) out += "<s>";
    else if (!skipSpecialTokens && id == kEos) out += "</s>";
    else if (!skipSpecialTokens && id == kPad) out += "<pad>";
  }
  return out;
}

std::vector<int64_t> Tokenizer::encodeWithSpecialTokens(const std::string& text) const {
  std::vector<int64_t> out;
  if (bos) out.push_back(*bos);
  auto ids = encode(text);
  out.insert(out.end(), ids.begin(), ids.end());
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
  int (*piece)(void*, int, char*, int);
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
      h = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);
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
    a.piece = reinterpret_cast<decltype(a.piece)>(sym("upcycle_spm_piece"));
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
  std::string decode(const std::vector<int64_t>& ids, bool skipSpecialTokens) const override {
    // SentencePiece drops control tokens when decoding; kept, they are written as their pieces.
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      char* text = nullptr;
      size_t len = 0;
      UPCYCLE_CHECK(m_api.decode(m_handle, run.data(), run.size(), &text, &len) == 0,
                    "SentencePiece could not decode ids");
      out.append(text, len);
      m_api.freeBuffer(text);
      run.clear();
    };
    for (int64_t id : ids) {
      if (id < 0 || id >= m_size) continue;
      const bool special = id == bos || id == eos || id == pad;
      if (!special) {
        run.push_back(static_cast<int>(id));
      } else if (!skipSpecialTokens) {
        flush();
        char piece[256] = {0};
        if (m_api.piece(m_handle, static_cast<int>(id), piece, sizeof piece) == 0) out += piece;
      }
    }
    flush();
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
  } catch (const json::exception& e) {
    throw UserError(p.string() + ": not valid JSON (" + e.what() + ")");
  }
}

}  // namespace

std::unique_ptr<Tokenizer> loadSentencePiece(const fs::path& file) {
  return std::make_unique<SentencePieceTokenizer>(file);
}

namespace {

// A token string of tokenizer_config.json: "<|im_end|>" or {"content": "<|im_end|>", ...}.
std::optional<std::string> tokenString(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

std::shared_ptr<const Tokenizer> readTokenizer(const fs::path& folder) {
  std::unique_ptr<Tokenizer> tok;
  auto tcfg = readJsonIfExists(folder / "tokenizer_config.json");
  bool fromJson = false;
  if (tcfg && tcfg->value("tokenizer_class", std::string()) == "UpcycleByteTokenizer") {
    tok = std::make_unique<ByteTokenizer>();
  } else if (fs::exists(folder / "tokenizer.json")) {
    tok = loadHfTokenizer(folder / "tokenizer.json");
    fromJson = true;
  } else if (fs::exists(folder / "tokenizer.model")) {
    tok = loadSentencePiece(folder / "tokenizer.model");
  } else {
    throw UserError(folder.string() + ": no tokenizer (expected tokenizer.json, tokenizer.model, or "
                    "tokenizer_config.json naming UpcycleByteTokenizer); pre-tokenize the data with "
                    "\"input_ids\" instead");
  }
  if (fromJson) {
    // BOS is whatever the post-processor puts first (Llama 3: <|begin_of_text|>; Qwen: nothing).
    tok->bos.reset();
    const auto withSpecials = tok->encodeWithSpecialTokens("");
    if (!withSpecials.empty()) tok->bos = withSpecials.front();
    if (tcfg) {
      for (auto [key, slot] : {std::pair{"eos_token", &tok->eos}, std::pair{"pad_token", &tok->pad}})
        if (auto s = tokenString(*tcfg, key)) {
          auto id = tok->tokenId(*s);
          UPCYCLE_CHECK(id, (folder / "tokenizer_config.json").string(), ": ", key, " \"", *s,
                        "\" is not a token of tokenizer.json");
          *slot = id;
        }
    }
  }
  if (fs::exists(folder / "config.json")) {
    ModelConfig c = loadHfConfig(folder);
    if (c.bosTokenId && !fromJson) tok->bos = c.bosTokenId;
    if (c.eosTokenId) tok->eos = c.eosTokenId;
    if (c.padTokenId) tok->pad = c.padTokenId;
  }
  return std::shared_ptr<const Tokenizer>(std::move(tok));
}

// Identifies the tokenizer files as they are now: a changed or replaced file loads afresh.
std::string tokenizerStamp(const fs::path& folder) {
  std::ostringstream os;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "config.json"}) {
    std::error_code ec;
    const auto p = folder / name;
    const auto size = fs::file_size(p, ec);
    if (ec) continue;
    const auto time = fs::last_write_time(p, ec).time_since_epoch().count();
    os << name << ':' << size << ':' << time << ';';
  }
  return os.str();
}

}  // namespace

fs::path tokenizerFolder(const fs::path& model) {
  if (!isPeftAdapter(model) || fs::exists(model / "tokenizer.json") || fs::exists(model / "tokenizer.model") ||
      fs::exists(model / "tokenizer_config.json"))
    return model;
  const PeftAdapterInfo info = readPeftAdapterConfig(model);
  UPCYCLE_CHECK(!info.basePath.empty(), model.string(), ": an adapter without a tokenizer, and its base \"",
                info.baseName, "\" (base_model_name_or_path) is not a folder here");
  return info.basePath;
}

std::shared_ptr<const Tokenizer> loadTokenizer(const fs::path& given) {
  const fs::path folder = tokenizerFolder(given);  // an adapter without a tokenizer reads its base's
  static std::mutex mutex;
  static std::map<std::string, std::pair<std::string, std::shared_ptr<const Tokenizer>>> cache;
  std::error_code ec;
  const std::string key = fs::weakly_canonical(folder, ec).string();
  const std::string stamp = tokenizerStamp(folder);
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end() && it->second.first == stamp) return it->second.second;
  }
  auto tok = readTokenizer(folder);
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() >= 8) cache.clear();  // a handful of models per process; keep memory bounded
  cache[key] = {stamp, tok};
  return tok;
}

std::string describeTokenizer(const fs::path& folder) {
  auto tok = loadTokenizer(folder);
  std::string n = std::to_string(tok->vocabSize());
  for (int i = static_cast<int>(n.size()) - 3; i > 0; i -= 3) n.insert(static_cast<size_t>(i), ",");
  return tok->kind() + ", " + n + " tokens";
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
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "chat_template.jinja", "generation_config.json"}) {
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
