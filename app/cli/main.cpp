// `upcycle`: the headless face of the workbench. Every verb calls the same engine API as the GUI.
// Never includes torch headers: it speaks the engine's plain C++ API.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <iostream>

#include "api/demo.h"
#include "api/inspect.h"
#include "api/models.h"
#include "api/runtime.h"
#include "cli/args.h"
#include "core/error.h"

namespace {

using upcycle::cli::Args;

const char* kUsage = R"(upcycle - Upcycle Workbench command line

usage: upcycle VERB [options]

verbs:
  inspect PATH [--json]
      A checkpoint folder (or .safetensors file): architecture, dimensions, experts, top-k, parameters
      (total and active per token), dtype, file sizes. A HF Trainer output folder: its checkpoint-STEP
      folders with step, epoch and logged loss.
  eval --model PATH --data FILE.jsonl [--batch-size N] [--device auto|cpu|cuda] [--json]
      Token-weighted mean next-token cross-entropy and perplexity, per domain when records have one.
      Records: {"input_ids": [...], "labels"?: [...], "domain"?: "..."}.
  convert --method sparse --base DENSE --experts E --top-k K --out MOE [--seed S]
          [--router-init uniform_std002|normal_002|uniform] [--moe-layer-freq N]
          [--layout mixtral-hub|mixtral-fused]
      Upcycle a dense checkpoint into an MoE checkpoint (Mixtral layout; Qwen2-MoE for qwen2 bases).
  create --out DIR [--arch llama|mistral|qwen2|mixtral|qwen2_moe] [--vocab N] [--hidden N] [--ff N]
         [--layers N] [--heads N] [--kv-heads N] [--experts E] [--top-k K] [--tie]
         [--dtype float32|bfloat16|float16] [--seed S]
      Write a randomly initialized model (for experiments, tests and benchmarks).
  demo [--out DIR] [--seed S] [--quick]
      The built-in demo experiment.
  version                 Versions of the workbench and LibTorch.

common options: --threads N (intra-op threads; default: all cores)
)";

int cmdInspect(const Args& a) {
  a.allowOnly({"json", "threads"});
  UPCYCLE_CHECK(a.positional().size() == 1, "inspect takes one PATH");
  auto r = upcycle::inspectPath(a.positional()[0]);
  std::cout << (a.has("json") ? upcycle::inspectJson(r) + "\n" : upcycle::inspectText(r));
  return 0;
}

int cmdEval(const Args& a) {
  a.allowOnly({"model", "data", "batch-size", "device", "json", "threads"});
  upcycle::EvalOptions o;
  o.batchSize = a.getInt("batch-size", 8);
  o.device = a.get("device", "auto");
  auto r = upcycle::evaluateModel(a.require("model"), a.require("data"), o);
  std::cout << (a.has("json") ? upcycle::evalJson(r) + "\n" : upcycle::evalText(r));
  return 0;
}

int cmdConvert(const Args& a) {
  a.allowOnly({"method", "base", "out", "experts", "top-k", "seed", "router-init", "moe-layer-freq",
               "layout", "threads", "json"});
  upcycle::ConvertOptions o;
  o.method = a.get("method", "sparse");
  o.base = a.require("base");
  o.out = a.require("out");
  o.experts = a.getInt("experts", 8);
  o.topK = a.getInt("top-k", 2);
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  o.routerInit = a.get("router-init", "uniform_std002");
  o.moeLayerFreq = a.getInt("moe-layer-freq", 1);
  o.layout = a.get("layout", "mixtral-hub");
  auto r = upcycle::convertModel(o);
  std::cout << "wrote " << r.config.architecture() << " with " << r.config.numExperts << " experts, top-"
            << r.config.topK << " to " << r.out.string() << "\n";
  return 0;
}

int cmdCreate(const Args& a) {
  a.allowOnly({"out", "arch", "vocab", "hidden", "ff", "layers", "heads", "kv-heads", "experts", "top-k",
               "tie", "dtype", "seed", "threads"});
  upcycle::CreateOptions o;
  o.out = a.require("out");
  o.modelType = a.get("arch", "llama");
  o.vocabSize = a.getInt("vocab", 256);
  o.hiddenSize = a.getInt("hidden", 64);
  o.intermediateSize = a.getInt("ff", 172);
  o.numLayers = a.getInt("layers", 2);
  o.numHeads = a.getInt("heads", 4);
  o.numKvHeads = a.getInt("kv-heads", 2);
  o.experts = a.getInt("experts", 0);
  o.topK = a.getInt("top-k", 2);
  o.tieWordEmbeddings = a.has("tie");
  o.dtype = a.get("dtype", "float32");
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  auto c = upcycle::createRandomModel(o);
  std::cout << "wrote a random " << c.architecture() << " to " << o.out.string() << "\n";
  return 0;
}

int cmdDemo(const Args& a) {
  a.allowOnly({"out", "seed", "quick", "threads", "db"});
  const std::string out = a.get("out", "out/demo");
  auto log = [](const std::string& s) { std::cout << "[demo] " << s << std::endl; };
  auto r = upcycle::runDemo(out, static_cast<uint64_t>(a.getInt("seed", 0)), log);
  std::printf("\n%-28s %10s %12s\n", "model", "loss", "perplexity");
  std::printf("%-28s %10.6f %12.4f\n", "dense (random Llama)", r.dense.overall.loss, r.dense.overall.perplexity);
  std::printf("%-28s %10.6f %12.4f\n", "sparse upcycled 8x top-2", r.moe.overall.loss, r.moe.overall.perplexity);
  std::printf("\nper domain (dense / MoE):\n");
  for (const auto& [d, f] : r.dense.domains)
    std::printf("  %-10s %10.6f %10.6f\n", d.c_str(), f.loss, r.moe.domains.at(d).loss);
  std::printf("\nSPEC §1 invariant: identical experts with renormalized top-k compute the dense function;\n"
              "|loss difference| = %.3g. Outputs are in %s\n",
              std::abs(r.dense.overall.loss - r.moe.overall.loss), out.c_str());
  return 0;
}

int cmdVersion() {
  auto info = upcycle::runtimeInfo();
  std::cout << "upcycle " << UPCYCLE_VERSION << "\nLibTorch " << info.torchVersion << " ("
            << (info.cudaAvailable ? "CUDA available" : "CPU") << ", " << info.intraOpThreads
            << " intra-op threads)\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string verb = argv[1];
  try {
    Args args(argc, argv, 2, {"json", "quick", "tie", "diff-only"});
    upcycle::configureRuntime(static_cast<int>(args.getInt("threads", 0)));
    if (verb == "inspect") return cmdInspect(args);
    if (verb == "eval") return cmdEval(args);
    if (verb == "convert") return cmdConvert(args);
    if (verb == "create") return cmdCreate(args);
    if (verb == "demo") return cmdDemo(args);
    if (verb == "version" || verb == "--version") return cmdVersion();
    std::cerr << "upcycle: unknown verb \"" << verb << "\" (try: upcycle help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    auto nl = msg.find('\n');  // one clear line, never a backtrace
    if (nl != std::string::npos) msg.resize(nl);
    std::cerr << "upcycle: error: " << msg << "\n";
    return 1;
  }
}
