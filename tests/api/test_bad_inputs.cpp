// Inputs a mutation probe of the CLI found mishandled (issue 19's list), each now one clear error
// naming the file, field or value, and nothing written: a base whose tensors disagree with its
// config (read past a buffer before), a header whose byte count wraps, sizes that allocated
// gigabytes or divided by zero, and library messages instead of ours.
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "formats/safetensors.h"
#include "test_util.h"

using namespace upcycle;
using nlohmann::json;
namespace fs = std::filesystem;
using test::TempDir;

namespace {

struct Result {
  int rc = -1;
  std::string out, err;
};

Result cli(const std::string& args) {
  TempDir tmp;
  const std::string cmd = std::string(UPCYCLE_CLI) + " " + args + " 2>" + (tmp / "err").string();
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = test::readBytes(tmp / "err");
  return r;
}

void expectError(const Result& r, std::initializer_list<std::string> needles) {
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_EQ(r.err.rfind("upcycle: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  for (const auto& n : needles)
    EXPECT_NE(r.err.find(n), std::string::npos) << "missing \"" << n << "\" in " << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
}

// A tiny dense Llama written by `upcycle create`, then one tensor replaced (or removed) by hand.
fs::path tinyBase(const TempDir& dir, const std::string& extra = "") {
  const fs::path out = dir / "base";
  const Result r = cli("create --out " + out.string() +
                       " --hidden 16 --ff 24 --layers 2 --heads 2 --kv-heads 1 " + extra);
  EXPECT_EQ(r.rc, 0) << r.err;
  return out;
}

// Rewrites model.safetensors with `name` given `shape` (zeros) or, with an empty shape, left out.
void replaceTensor(const fs::path& model, const std::string& name,
                   const std::vector<int64_t>& shape) {
  const fs::path file = model / "model.safetensors";
  std::vector<std::string> names;
  std::vector<DType> dtypes;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::string> bytes;
  {
    SafetensorsFile f(file);
    for (const TensorView& v : f.tensors()) {
      if (v.name == name && shape.empty()) continue;
      names.push_back(v.name);
      if (v.name == name) {
        int64_t numel = 1;
        for (int64_t d : shape) numel *= d;
        dtypes.push_back(DType::F32);
        shapes.push_back(shape);
        bytes.emplace_back(static_cast<size_t>(numel * 4), '\0');
      } else {
        dtypes.push_back(v.dtype);
        shapes.push_back(v.shape);
        bytes.emplace_back(reinterpret_cast<const char*>(v.data), v.nbytes);
      }
    }
  }
  std::vector<TensorWrite> w(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    w[i].name = names[i];
    w[i].dtype = dtypes[i];
    w[i].shape = shapes[i];
    w[i].data = bytes[i].data();
  }
  writeSafetensors(file, w);
}

}  // namespace

TEST(BadInputs, StreamingConversionChecksEveryTensorAgainstTheConfig) {
  struct Case {
    std::string tensor;
    std::vector<int64_t> shape;  // empty: removed
    std::string needle;
  };
  for (const Case& c :
       {Case{"model.layers.0.mlp.gate_proj.weight", {1}, "has shape [1], expected [24, 16]"},
        Case{"model.layers.1.mlp.gate_proj.weight", {2, 2}, "has shape [2, 2], expected [24, 16]"},
        Case{"model.embed_tokens.weight", {}, "no tensor \"model.embed_tokens.weight\""},
        Case{"model.layers.1.self_attn.q_proj.weight",
             {},
             "no tensor \"model.layers.1.self_attn.q_proj.weight\""},
        Case{"model.embed_tokens.weight", {264, 8}, "expected [264, 16]"}}) {
    TempDir dir;
    const fs::path base = tinyBase(dir);
    replaceTensor(base, c.tensor, c.shape);
    for (const char* method : {"sparse", "drop"}) {
      const Result r = cli("convert --method " + std::string(method) + " --base " + base.string() +
                           " --experts 4 --top-k 2 --out " + (dir / "moe").string());
      expectError(r, {base.string(), c.needle});
      EXPECT_FALSE(fs::exists(dir / "moe" / "model.safetensors"))
          << c.tensor << ": a checkpoint was written";
    }
  }
}

TEST(BadInputs, AHeaderWhoseByteCountWrapsIsRefused) {
  TempDir dir;
  const fs::path m = tinyBase(dir);
  // 2^62 float32 values are 2^64 bytes: the count used to wrap to 0 and match data_offsets [0, 0].
  test::writeBytes(
      m / "model.safetensors",
      test::safetensorsBytes(
          R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", ""));
  expectError(cli("inspect " + m.string()), {"model.safetensors", "overflows a 64-bit byte count"});
  test::writeBytes(
      m / "model.safetensors",
      test::safetensorsBytes(
          R"({"x":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", ""));
  expectError(cli("inspect " + m.string()), {"overflows"});
}

TEST(BadInputs, ConfigSizesAreBoundedBeforeAnythingIsAllocated) {
  TempDir dir;
  const fs::path base = tinyBase(dir);
  json cfg = json::parse(test::readBytes(base / "config.json"));
  const json original = cfg;
  test::writeBytes(dir / "data.jsonl", "{\"text\": \"hello\"}\n");
  for (auto [key, value, needle] :
       {std::tuple<const char*, json, std::string>{
            "num_hidden_layers", 1000000000,
            "num_hidden_layers = 1000000000 is above the limit of 1024"},
        {"num_hidden_layers", 1000000000000000000, "num_hidden_layers = 1000000000000000000"},
        {"vocab_size", int64_t(1) << 40, "vocab_size"},
        {"eos_token_id", -5, "eos_token_id = -5 is outside the vocabulary"},
        {"max_position_embeddings", -4, "max_position_embeddings must be positive"}}) {
    cfg = original;
    cfg[key] = value;
    test::writeBytes(base / "config.json", cfg.dump());
    expectError(cli("eval --model " + base.string() + " --data " + (dir / "data.jsonl").string()),
                {needle});
    expectError(cli("convert --method sparse --base " + base.string() +
                    " --experts 4 --top-k 2 --out " + (dir / "o").string()),
                {needle});
  }
}

TEST(BadInputs, ArgumentsAndExperimentsOutOfRange) {
  TempDir dir;
  expectError(cli("create --out " + (dir / "m").string() + " --layers 1000000000"),
              {"num_hidden_layers", "1024"});
  expectError(
      cli("data generate --out " + (dir / "d.jsonl").string() + " --per-domain 1000000000000"),
      {"samples per domain must be in [1, 1000000]"});
  expectError(cli("inspect " + dir.path().string() + " --threads 100000"),
              {"threads must be at most 1024"});
  const auto exp = [&](const std::string& base, const std::string& runs) {
    test::writeBytes(dir / "e.yaml", "name: x\nbase: {pretrain: " + base + "}\nruns:\n" + runs);
    return cli("run " + (dir / "e.yaml").string() + " --db " + (dir / "runs.db").string() +
               " --out " + (dir / "out").string());
  };
  expectError(exp("{steps: 1, heads: 0}", "  - {name: d, method: dense}\n"),
              {"base.pretrain.heads must be in [1, 256], got 0"});
  expectError(exp("{steps: 1, kv_heads: 0}", "  - {name: d, method: dense}\n"),
              {"base.pretrain.kv_heads must be in [1, 256], got 0"});
  expectError(exp("{steps: 1}", "  - {name: s, method: sparse, experts: 100000, top_k: 2}\n"),
              {"runs[0].experts must be in [1, 1024], got 100000"});
  EXPECT_FALSE(fs::exists(dir / "out")) << "a refused experiment wrote nothing";
  const Result verb = cli("frobnicate");
  EXPECT_EQ(verb.rc, 2);
  EXPECT_EQ(verb.err.rfind("upcycle: error: unknown verb \"frobnicate\"", 0), 0u) << verb.err;
  // --help after a verb is that verb's usage, not "option --help needs a value".
  const Result help = cli("runs summary --help");
  EXPECT_EQ(help.rc, 0) << help.err;
  EXPECT_NE(help.out.find("summary --experiment NAME"), std::string::npos) << help.out;
  EXPECT_EQ(help.out.find("  convert"), std::string::npos) << "only the runs verb's lines";
  const Result run = cli("run --help");
  EXPECT_EQ(run.rc, 0) << run.err;
  EXPECT_EQ(run.out.find("runs list"), std::string::npos) << "run is not runs: " << run.out;
  const Result unknown = cli("frobnicate --help");
  EXPECT_EQ(unknown.rc, 2);
  EXPECT_EQ(unknown.err.rfind("upcycle: error: unknown verb \"frobnicate\"", 0), 0u) << unknown.err;
  const Result sentence = cli("router --help");  // a word that starts a line of the usage outside the verbs
  EXPECT_EQ(sentence.rc, 2) << sentence.out;
}

TEST(BadInputs, GenerationStopsAtTheContextAndRecordsAreTruncatedToIt) {
  TempDir dir;
  const fs::path model = tinyBase(dir, "--max-positions 32");
  // A billion new tokens asked for: greedy decoding ends at the 32-token context, quickly.
  const Result r =
      cli("generate --model " + model.string() + " --prompt abc --raw --max-new-tokens 1000000000");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_LE(r.out.size(), 32u * 4 + 1) << "more bytes than the context can hold: " << r.out.size();
  expectError(cli("generate --model " + model.string() + " --prompt abc --max-new-tokens -1"),
              {"max_new_tokens must be non-negative"});
  // A record of 5000 bytes trains on its first 32 tokens; a negative max length is refused.
  test::writeBytes(dir / "long.jsonl", "{\"text\": \"" + std::string(5000, 'a') + "\"}\n");
  const Result t =
      cli("train --model " + model.string() + " --data " + (dir / "long.jsonl").string() +
          " --out " + (dir / "t").string() + " --max-steps 1 --batch-size 1 --precision fp32");
  EXPECT_EQ(t.rc, 0) << t.err;
  expectError(cli("train --model " + model.string() + " --data " + (dir / "long.jsonl").string() +
                  " --out " + (dir / "t2").string() + " --max-steps 1 --max-length -5"),
              {"max_length must be 0"});
}

// Reading verbs never write: `runs list` of a store that does not exist says so and creates
// nothing.
TEST(BadInputs, ReadingTheStoreCreatesNothing) {
  TempDir dir;
  const fs::path db = dir / "nonexistent" / "dir" / "runs.db";
  const Result r = cli("runs list --db " + db.string());
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("no runs (no run store at"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "nonexistent"));
  expectError(cli("runs show 1 --db " + db.string()), {"no run store at"});
  EXPECT_FALSE(fs::exists(dir / "nonexistent"));
}

// A FIFO named as a checkpoint or a data file is refused at once instead of blocking for ever.
TEST(BadInputs, OnlyRegularFilesAreRead) {
  TempDir dir;
  const fs::path base = tinyBase(dir);
  ASSERT_EQ(::mkfifo((dir / "data.jsonl").c_str(), 0644), 0);
  expectError(cli("eval --model " + base.string() + " --data " + (dir / "data.jsonl").string()),
              {"data.jsonl", "not a regular file"});
  fs::remove(base / "model.safetensors");
  ASSERT_EQ(::mkfifo((base / "model.safetensors").c_str(), 0644), 0);
  expectError(cli("inspect " + base.string()), {"model.safetensors is not a regular file"});
}

// Experiment files: a repeated key is refused (yaml-cpp would silently read the first), and a
// relative output folder may not climb out of the working folder.
TEST(BadInputs, ExperimentFilesRefuseDuplicateKeysAndEscapingOutputs) {
  TempDir dir;
  test::writeBytes(dir / "dup.yaml",
                   "name: x\nseed: 1\nname: y\nbase: {pretrain: {steps: 1}}\nruns:\n  - {name: d, "
                   "method: dense}\n");
  expectError(cli("run " + (dir / "dup.yaml").string() + " --db " + (dir / "r.db").string()),
              {"dup.yaml", "key \"name\" appears twice (line 3)"});
  test::writeBytes(
      dir / "dup2.yaml",
      "name: x\nbase: {pretrain: {steps: 1, steps: 2}}\nruns:\n  - {name: d, method: dense}\n");
  expectError(cli("run " + (dir / "dup2.yaml").string() + " --db " + (dir / "r.db").string()),
              {"key \"steps\" appears twice"});
  test::writeBytes(dir / "esc.yaml",
                   "name: x\nout: ../../..\nbase: {pretrain: {steps: 1}}\nruns:\n  - {name: d, "
                   "method: dense}\n");
  expectError(cli("run " + (dir / "esc.yaml").string() + " --db " + (dir / "r.db").string()),
              {"out \"../../..\" leaves the working folder"});
  EXPECT_FALSE(fs::exists(dir / "r.db")) << "nothing recorded for a refused experiment";
}

// Token ids and labels of pre-tokenized records: a u64 too large for an id is named as written (it
// read as -1 before), a negative label other than -100 is refused.
TEST(BadInputs, TokenIdsAndLabelsOutOfRange) {
  TempDir dir;
  const fs::path base = tinyBase(dir);
  test::writeBytes(dir / "big.jsonl", "{\"input_ids\": [1, 18446744073709551615]}\n");
  expectError(cli("eval --model " + base.string() + " --data " + (dir / "big.jsonl").string()),
              {"18446744073709551615, too large for a token id"});
  test::writeBytes(dir / "lab.jsonl", "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 5, -7]}\n");
  expectError(cli("train --model " + base.string() + " --data " + (dir / "lab.jsonl").string() +
                  " --out " + (dir / "t").string() + " --max-steps 1"),
              {"label -7 is neither a token id nor -100"});
}

// Found by fuzzing (scripts/fuzz.sh): a JSON number too large for a double made nlohmann throw
// out_of_range, not parse_error, and it escaped every parser; a YAML map used as a key made
// yaml-cpp throw "bad conversion". Each is now the file's error.
TEST(BadInputs, FuzzFindingsNumberOverflowAndComplexYamlKeys) {
  TempDir dir;
  const fs::path base = tinyBase(dir);
  test::writeBytes(dir / "huge.jsonl", "{\"text\": \"a\", \"x\": 55555e555}\n");
  expectError(cli("eval --model " + base.string() + " --data " + (dir / "huge.jsonl").string()),
              {"huge.jsonl:1: not valid JSON", "number overflow"});
  std::string cfg = test::readBytes(base / "config.json");
  cfg.insert(cfg.find('{') + 1, "\"extra\": 6666e666666, ");
  test::writeBytes(base / "config.json", cfg);
  expectError(cli("inspect " + base.string()), {"config.json", "number overflow"});
  test::writeBytes(
      dir / "key.yaml",
      "name: x\nbase: {pretrain: {steps: 1}}\nruns:\n  - {name: d, method: dense}: {a: 1}\n");
  expectError(cli("run " + (dir / "key.yaml").string() + " --db " + (dir / "r.db").string()),
              {"key.yaml", "not a plain name (line 4)"});
}

// `convert --router-init hidden` used to stream like the other inits and silently write
// uniform_std002 routers; it now runs the prompts (--data) through the model, or says it needs
// them.
TEST(BadInputs, HiddenRouterInitIsNeverSilentlyIgnored) {
  TempDir dir;
  const fs::path base = tinyBase(dir);
  expectError(cli("convert --method sparse --base " + base.string() +
                  " --experts 2 --top-k 1 --router-init hidden --out " + (dir / "moe").string()),
              {"router_init hidden needs training data"});
  test::writeBytes(dir / "d.jsonl",
                   "{\"instruction\": \"abc\", \"output\": \"x\", \"domain\": \"a\"}\n"
                   "{\"instruction\": \"xyz\", \"output\": \"y\", \"domain\": \"b\"}\n");
  const Result r = cli("convert --method sparse --base " + base.string() +
                       " --experts 2 --top-k 1 --router-init hidden --data " +
                       (dir / "d.jsonl").string() + " --out " + (dir / "moe").string());
  ASSERT_EQ(r.rc, 0) << r.err;
  CheckpointFiles f(dir / "moe");
  const TensorView& g = f.tensor("model.layers.0.block_sparse_moe.gate.weight");  // (2, 16) float32
  ASSERT_EQ(g.dtype, DType::F32);
  const float* w = reinterpret_cast<const float*>(g.data);
  for (int e = 0; e < 2; ++e) {
    double n = 0;
    for (int i = 0; i < 16; ++i) n += double(w[e * 16 + i]) * w[e * 16 + i];
    EXPECT_NEAR(std::sqrt(n), 1.0, 1e-5) << "expert " << e << "'s row is a normalised hidden state";
  }
}
