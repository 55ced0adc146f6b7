#include "api/demo.h"

#include <fstream>
#include <random>

#include "core/atomic_file.h"

namespace upcycle {

namespace fs = std::filesystem;

DemoReport runDemo(const fs::path& outDir, uint64_t seed, const std::function<void(const std::string&)>& log) {
  fs::create_directories(outDir);
  DemoReport r;
  r.denseDir = outDir / "dense";
  r.moeDir = outDir / "moe-sparse";
  r.dataFile = outDir / "probe.jsonl";

  log("1/4 creating a tiny random Llama (d_model 64, 2 layers, vocab 256)");
  CreateOptions create;
  create.out = r.denseDir;
  create.seed = seed;
  createRandomModel(create);

  log("2/4 writing 48 pre-tokenized probe records in 3 domains");
  std::mt19937_64 rng(seed + 1);
  std::string lines;
  const char* domains[] = {"alpha", "beta", "gamma"};
  for (int i = 0; i < 48; ++i) {
    std::uniform_int_distribution<int> len(8, 32), tok(0, 255);
    std::string ids;
    const int n = len(rng);
    for (int t = 0; t < n; ++t) ids += (t ? "," : "") + std::to_string(tok(rng));
    lines += std::string("{\"input_ids\": [") + ids + "], \"domain\": \"" + domains[i % 3] + "\"}\n";
  }
  writeFileAtomically(r.dataFile, lines);

  log("3/4 sparse upcycling to 8 experts, top-2 (Mixtral layout)");
  ConvertOptions conv;
  conv.base = r.denseDir;
  conv.out = r.moeDir;
  conv.experts = 8;
  conv.topK = 2;
  conv.seed = seed;
  convertModel(conv);

  log("4/4 evaluating both on the probe records");
  EvalOptions ev;
  ev.device = "auto";
  r.dense = evaluateModel(r.denseDir, r.dataFile, ev);
  r.moe = evaluateModel(r.moeDir, r.dataFile, ev);
  return r;
}

}  // namespace upcycle
