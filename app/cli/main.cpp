// `upcycle`: the headless face of the workbench. Every verb calls the same engine API as the GUI.
// Never includes torch headers: it speaks the engine's plain C++ API.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>
#include <set>

#include "api/pipeline.h"
#include "api/inspect.h"
#include "api/models.h"
#include "api/runtime.h"
#include "api/training.h"
#include "cli/args.h"
#include "cli/progress.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "data/demo_data.h"
#include "data/prepare.h"

namespace {

using upcycle::cli::Args;

const char* kUsage = R"(upcycle - Upcycle Workbench command line

usage: upcycle VERB [options]

verbs:
  inspect PATH [--json]
      A checkpoint folder (or .safetensors file): architecture, dimensions, experts, top-k, parameters
      (total and active per token), dtype, file sizes. A HF Trainer output folder: its checkpoint-STEP
      folders with step, epoch and logged loss.
  eval --model PATH --data FILE.jsonl [--accuracy] [--max-new-tokens N] [--template NAME]
       [--max-length N] [--batch-size N] [--device auto|cpu|cuda] [--json]
      Token-weighted mean next-token cross-entropy and perplexity, per domain when records have one;
      with --accuracy, exact-match accuracy of greedy answers. Any record kind (Alpaca, ShareGPT,
      messages, text, pre-tokenized input_ids); text is tokenized with the model's tokenizer.
  data generate --out FILE.jsonl [--kind instruct|corpus] [--per-domain N] [--documents N] [--seed S]
      The built-in multi-domain data: instruction records with exact answers in 7 domains, or a
      plain-text corpus of the same domains for pretraining.
  pretrain --out DIR [--corpus FILE] [--documents N] [--max-steps N | --epochs X] [--hidden N] [--ff N]
           [--layers N] [--heads N] [--kv-heads N] [--block N] [training options]
      Pretrain a tiny byte-level Llama on the built-in corpus; checkpoints in DIR/checkpoint-STEP.
  train --model PATH --data FILE --out DIR [--epochs N | --max-steps N] [--save-every FRACTION |
        --save-steps N] [--lr X] [--batch-size N] [--seed S] [training options]
      Fine-tune (instruction-tune) a model; HF checkpoints with trainer_state.json in DIR.
      training options: --grad-accum N --warmup N --min-lr-ratio X --weight-decay X --clip X
        --aux-coef X --z-coef X --max-length N --template alpaca|compact|raw --train-on-prompt
        --val-fraction F --train-only PATTERN --freeze PATTERN --resume --device D
  generate --model PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--seed S] [--raw]
           [--template NAME]
      Greedy decoding (or sampling with a temperature) with a KV cache.
  convert --method sparse|drop|noise|scratch|btx|upit --base DENSE --experts E --top-k K --out MOE
          [--seed S] [--router-init uniform_std002|normal_002|uniform] [--moe-layer-freq N]
          [--layout mixtral-hub|mixtral-fused]
          drop: [--ratio R] [--shared-indices] [--expert-ff F]    noise: [--noise-std S] [--noise-fraction F]
          btx: --sources DIR,DIR...
          upit: --checkpoints DIR[,DIR...] [--num-checkpoints M] [--select even|latest] [--non-ffn average|last]
                [--no-expand] [--parent-rule distance|random|tournament] [--distance cosine_delta|cosine|l2]
                [--alpha-min A] [--alpha-max A] [--dare-p P] [--dare-rescale inverse|l1]
                [--merge linear|task_arithmetic|ties|dare_linear|dare_ties|slerp]
                [--data FILE [--seed-fraction F] [--min-seed N] [--router-epochs N] [--cls-weight A]
                 [--router-lr X] [--template NAME]]
      Upcycle a dense checkpoint into an MoE checkpoint (Mixtral layout; Qwen2-MoE for qwen2 bases or
      --moe-layer-freq > 1). Bad settings are refused before any work, naming the option.
  create --out DIR [--arch llama|mistral|qwen2|mixtral|qwen2_moe] [--vocab N] [--hidden N] [--ff N]
         [--layers N] [--heads N] [--kv-heads N] [--experts E] [--top-k K] [--tie]
         [--dtype float32|bfloat16|float16] [--seed S]
      Write a randomly initialized model (for experiments, tests and benchmarks).
  run EXPERIMENT.yaml [--out DIR] [--device D]
      Run a whole experiment (base, data, dense SFT with checkpoints, each method, post-training,
      evaluation) and print per-domain accuracy and loss for every run.
  demo [--quick] [--out DIR]
      The built-in demo experiment (resources/experiments/demo.yaml; --quick: demo-quick.yaml):
      pretrain a tiny base, instruction-tune it keeping 8 checkpoints, then dense SFT continued,
      sparse upcycling, Drop-Upcycling r=0.5 and UpIT (8 experts from 4 checkpoints + GA), each with
      the same post-training budget.
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

std::atomic<bool> g_cancel{false};
extern "C" void onSigint(int) { g_cancel.store(true); }

int cmdEval(const Args& a) {
  a.allowOnly({"model", "data", "batch-size", "device", "json", "threads", "accuracy", "max-new-tokens",
               "template", "max-length"});
  upcycle::EvalOptions o;
  o.batchSize = a.getInt("batch-size", 8);
  o.device = a.get("device", "auto");
  o.accuracy = a.has("accuracy");
  o.maxNewTokens = a.getInt("max-new-tokens", 32);
  o.promptTemplate = a.get("template", "");
  o.maxLength = a.getInt("max-length", 0);
  auto r = upcycle::evaluateModel(a.require("model"), a.require("data"), o);
  std::cout << (a.has("json") ? upcycle::evalJson(r) + "\n" : upcycle::evalText(r));
  return 0;
}

std::vector<std::filesystem::path> pathList(const std::string& s) {
  std::vector<std::filesystem::path> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = s.find(',', pos);
    const std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

int cmdConvert(const Args& a) {
  a.allowOnly({"method", "base", "out", "experts", "top-k", "seed", "router-init", "moe-layer-freq", "layout",
               "threads", "ratio", "shared-indices", "expert-ff", "noise-std", "noise-fraction", "sources",
               "checkpoints", "num-checkpoints", "select", "non-ffn", "no-expand", "parent-rule", "distance",
               "alpha-min", "alpha-max", "dare-p", "dare-rescale", "merge", "data", "seed-fraction", "min-seed",
               "router-epochs", "cls-weight", "router-lr", "template", "device"});
  upcycle::ConvertOptions o;
  upcycle::RunSpec& r = o.run;
  r.method = a.get("method", "sparse");
  r.name = r.method;
  r.experts = a.getInt("experts", 8);
  r.topK = a.getInt("top-k", 2);
  r.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  r.routerInit = a.get("router-init", "uniform_std002");
  r.moeLayerFreq = a.getInt("moe-layer-freq", 1);
  r.ratio = a.getDouble("ratio", 0.5);
  r.sharedIndices = a.has("shared-indices");
  r.expertFf = a.getInt("expert-ff", 0);
  r.noiseStd = a.getDouble("noise-std", 0.02);
  r.noiseFraction = a.getDouble("noise-fraction", 0.5);
  r.sources = pathList(a.get("sources", ""));
  r.checkpoints = a.getInt("num-checkpoints", 0);
  r.select = a.get("select", "even");
  r.nonFfn = a.get("non-ffn", "average");
  r.expand = !a.has("no-expand");
  r.parentRule = a.get("parent-rule", "distance");
  r.distance = a.get("distance", "cosine_delta");
  r.alphaMin = a.getDouble("alpha-min", 0.0);
  r.alphaMax = a.getDouble("alpha-max", 1.0);
  r.dareP = a.getDouble("dare-p", 0.3);
  r.dareRescale = a.get("dare-rescale", "inverse");
  r.mergeOp = a.get("merge", "linear");
  r.seedFraction = a.getDouble("seed-fraction", 0.01);
  r.minSeed = a.getInt("min-seed", 32);
  r.routerEpochs = a.getDouble("router-epochs", 4);
  r.clsWeightA = a.getDouble("cls-weight", 0.5);
  r.routerLr = a.getDouble("router-lr", 1e-3);
  o.base = a.get("base", "");
  o.out = a.require("out");
  o.checkpoints = pathList(a.get("checkpoints", ""));
  o.data = a.get("data", "");
  o.promptTemplate = a.get("template", "");
  o.layout = a.get("layout", "mixtral-hub");
  o.device = a.get("device", "auto");
  if (r.method == "upit" && r.checkpoints == 0) {  // default: every checkpoint given, up to E
    int64_t n = 0;
    for (const auto& c : o.checkpoints)
      n += std::filesystem::exists(c / "config.json") ? 1 : static_cast<int64_t>(upcycle::inspectPath(c).checkpoints.size());
    r.checkpoints = std::max<int64_t>(1, std::min<int64_t>(n, r.experts));
  }
  auto rep = upcycle::convertModel(o);
  std::cout << "wrote " << rep.config.architecture() << " with " << rep.config.numExperts << " experts, top-"
            << rep.config.topK << " to " << rep.out.string() << "\n";
  if (r.method == "upit") {
    std::cout << "experts from checkpoints";
    for (auto c : rep.checkpointsUsed) std::cout << " #" << c;
    std::cout << ", " << rep.lineage << " grown by merging";
    if (!rep.seedBuckets.empty()) {
      std::cout << "; seed samples per expert:";
      for (auto b : rep.seedBuckets) std::cout << " " << b;
    }
    std::cout << "\n";
  }
  return 0;
}

int cmdCreate(const Args& a) {
  a.allowOnly({"out", "arch", "vocab", "hidden", "ff", "layers", "heads", "kv-heads", "experts", "top-k",
               "tie", "dtype", "seed", "threads"});
  upcycle::CreateOptions o;
  o.out = a.require("out");
  o.modelType = a.get("arch", "llama");
  o.vocabSize = a.getInt("vocab", 264);
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

const std::set<std::string> kTrainKeys = {"lr", "batch-size", "grad-accum", "warmup", "min-lr-ratio", "weight-decay",
                                          "clip", "aux-coef", "z-coef", "epochs", "max-steps", "save-every",
                                          "save-steps", "seed", "device", "resume", "train-only", "freeze",
                                          "threads", "out"};

upcycle::TrainOptions trainOptions(const Args& a, double defaultLr) {
  upcycle::TrainOptions o;
  o.lr = a.getDouble("lr", defaultLr);
  o.batchSize = a.getInt("batch-size", 16);
  o.gradAccum = a.getInt("grad-accum", 1);
  o.warmupSteps = a.getInt("warmup", 10);
  o.minLrRatio = a.getDouble("min-lr-ratio", 0.1);
  o.weightDecay = a.getDouble("weight-decay", 0.0);
  o.gradClip = a.getDouble("clip", 1.0);
  o.auxLossCoef = a.getDouble("aux-coef", 0.01);
  o.zLossCoef = a.getDouble("z-coef", 0.0);
  o.epochs = a.getDouble("epochs", 1.0);
  o.maxSteps = a.getInt("max-steps", 0);
  o.saveEveryEpochFraction = a.getDouble("save-every", 0.0);
  o.saveSteps = a.getInt("save-steps", 0);
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  o.device = a.get("device", "auto");
  o.resume = a.has("resume");
  if (a.has("train-only")) o.trainOnly = {a.get("train-only")};
  if (a.has("freeze")) o.freeze = {a.get("freeze")};
  o.outDir = a.require("out");
  return o;
}

int reportTraining(const upcycle::TrainResult& r, upcycle::cli::ProgressPrinter& progress) {
  progress.finish();
  if (r.cancelled) std::printf("cancelled at step %lld; resume with --resume\n", static_cast<long long>(r.steps));
  else std::printf("finished %lld steps, final loss %.4f\n", static_cast<long long>(r.steps), r.finalLoss);
  if (!r.checkpoints.empty()) std::printf("model: %s\n", r.checkpoints.back().string().c_str());
  return r.cancelled ? 130 : 0;
}

int cmdData(const Args& a) {
  a.allowOnly({"out", "kind", "per-domain", "documents", "seed", "threads"});
  UPCYCLE_CHECK(a.positional().size() == 1 && a.positional()[0] == "generate", "usage: upcycle data generate --out FILE");
  const std::string kind = a.get("kind", "instruct");
  const uint64_t seed = static_cast<uint64_t>(a.getInt("seed", 0));
  const std::string out = a.require("out");
  if (kind == "instruct") {
    auto s = upcycle::generateDemoInstructions(seed, a.getInt("per-domain", 300));
    upcycle::writeFileAtomically(out, upcycle::demoInstructionsJsonl(s));
    std::printf("wrote %zu instruction records in %zu domains to %s\n", s.size(), upcycle::demoDomains().size(), out.c_str());
  } else if (kind == "corpus") {
    auto d = upcycle::generateDemoCorpus(seed, a.getInt("documents", 4000));
    upcycle::writeFileAtomically(out, upcycle::demoCorpusJsonl(d));
    std::printf("wrote %zu corpus documents to %s\n", d.size(), out.c_str());
  } else {
    throw upcycle::UserError("--kind must be instruct or corpus, got \"" + kind + "\"");
  }
  return 0;
}

int cmdPretrain(const Args& a) {
  auto keys = kTrainKeys;
  keys.insert({"corpus", "documents", "hidden", "ff", "layers", "heads", "kv-heads", "block"});
  a.allowOnly(keys);
  upcycle::PretrainOptions o;
  o.train = trainOptions(a, 3e-3);
  if (!a.has("max-steps") && !a.has("epochs")) o.train.maxSteps = 300;
  if (!a.has("save-steps") && !a.has("save-every")) o.train.saveSteps = 0;
  o.out = o.train.outDir;
  o.corpus = a.get("corpus", "");
  o.documents = a.getInt("documents", 4000);
  o.hiddenSize = a.getInt("hidden", 128);
  o.intermediateSize = a.getInt("ff", 344);
  o.numLayers = a.getInt("layers", 4);
  o.numHeads = a.getInt("heads", 4);
  o.numKvHeads = a.getInt("kv-heads", 2);
  o.blockSize = a.getInt("block", 128);
  upcycle::cli::ProgressPrinter progress(::isatty(1));
  return reportTraining(upcycle::pretrainTinyBase(o, &progress, &g_cancel), progress);
}

int cmdTrain(const Args& a) {
  auto keys = kTrainKeys;
  keys.insert({"model", "data", "max-length", "template", "train-on-prompt", "val-fraction"});
  a.allowOnly(keys);
  const std::string model = a.require("model");
  upcycle::TrainOptions o = trainOptions(a, 1e-3);
  upcycle::DataOptions d;
  d.path = a.require("data");
  d.promptTemplate = a.get("template", "");
  d.maxLength = a.getInt("max-length", 0);
  d.trainOnPrompt = a.has("train-on-prompt");
  d.valFraction = a.getDouble("val-fraction", 0.0);
  d.splitSeed = o.seed;
  upcycle::validateTrainOptions(o);  // refuse bad settings before reading data or model
  upcycle::PreparedData data = upcycle::prepareData(model, d);
  o.maxLength = d.maxLength;
  std::printf("%zu training records (%lld dropped), %zu validation, template %s\n", data.train.size(),
              static_cast<long long>(data.dropped), data.val.size(), data.promptTemplate.c_str());
  upcycle::cli::ProgressPrinter progress(::isatty(1));
  upcycle::TrainResult r = upcycle::trainModel(model, data.train, o, &progress, &g_cancel);
  const int rc = reportTraining(r, progress);
  if (!data.val.empty() && !r.checkpoints.empty()) {
    upcycle::EvalOptions eo;
    eo.device = o.device;
    eo.accuracy = true;
    std::cout << "validation:\n" << upcycle::evalText(upcycle::evaluateModelOnRecords(r.checkpoints.back(), data.val, eo));
  }
  return rc;
}

int cmdGenerate(const Args& a) {
  a.allowOnly({"model", "prompt", "max-new-tokens", "temperature", "seed", "raw", "template", "device", "threads"});
  upcycle::GenerateRequest r;
  r.model = a.require("model");
  r.prompt = a.require("prompt");
  r.maxNewTokens = a.getInt("max-new-tokens", 64);
  r.temperature = a.getDouble("temperature", 0.0);
  r.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  r.raw = a.has("raw");
  r.promptTemplate = a.get("template", "");
  r.device = a.get("device", "auto");
  std::cout << upcycle::generateText(r) << "\n";
  return 0;
}

class PipelinePrinter : public upcycle::PipelineObserver {
 public:
  explicit PipelinePrinter(bool terminal) : m_progress(terminal) {}
  void onStep(const upcycle::StepMetrics& m) override { m_progress.onStep(m); }
  void onCheckpoint(const std::filesystem::path& f, int64_t s) override { m_progress.onCheckpoint(f, s); }
  void onEpochEnd(int64_t e, double l) override { m_progress.onEpochEnd(e, l); }
  void onLog(const std::string& m) override { m_progress.onLog(m); }
  void onStage(const std::string& stage, const std::string& detail) override {
    m_progress.onLog("== " + stage + ": " + detail);
  }
  void onRunFinished(const upcycle::RunSummary& r) override {
    char buf[256];
    std::snprintf(buf, sizeof buf, "== %s finished: eval loss %.4f, accuracy %.1f%%, %.0f s", r.name.c_str(),
                  r.eval.overall.loss, 100.0 * r.eval.overall.accuracy, r.seconds);
    m_progress.onLog(buf);
  }
  void finish() { m_progress.finish(); }

 private:
  upcycle::cli::ProgressPrinter m_progress;
};

int runAndReport(upcycle::Experiment e, const Args& a) {
  if (a.has("out")) e.out = a.get("out");
  if (a.has("device")) e.device = a.get("device");
  std::printf("experiment %s -> %s (%zu runs)\n", e.name.c_str(), e.out.string().c_str(), e.runs.size());
  PipelinePrinter printer(::isatty(1));
  const auto t0 = std::chrono::steady_clock::now();
  upcycle::ExperimentReport r = upcycle::runExperiment(e, &printer, &g_cancel);
  printer.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string table = upcycle::experimentTable(r);
  std::printf("\n%s\ntotal %.0f s%s; outputs in %s\n", table.c_str(), secs, r.cancelled ? " (cancelled)" : "",
              e.out.string().c_str());
  upcycle::writeFileAtomically(e.out / "results.txt", table);
  return r.cancelled ? 130 : 0;
}

int cmdRun(const Args& a) {
  a.allowOnly({"out", "device", "threads", "db"});
  UPCYCLE_CHECK(a.positional().size() == 1, "usage: upcycle run EXPERIMENT.yaml [--out DIR]");
  return runAndReport(upcycle::loadExperiment(a.positional()[0]), a);
}

int cmdDemo(const Args& a) {
  a.allowOnly({"out", "quick", "threads", "db", "device"});
  const auto file = upcycle::findResource(a.has("quick") ? "experiments/demo-quick.yaml" : "experiments/demo.yaml");
  return runAndReport(upcycle::loadExperiment(file), a);
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
    Args args(argc, argv, 2, {"json", "quick", "tie", "diff-only", "accuracy", "resume", "raw", "train-on-prompt",
                              "shared-indices", "no-expand"});
    std::signal(SIGINT, onSigint);  // training stops at the next step boundary
    upcycle::configureRuntime(static_cast<int>(args.getInt("threads", 0)));
    if (verb == "inspect") return cmdInspect(args);
    if (verb == "eval") return cmdEval(args);
    if (verb == "convert") return cmdConvert(args);
    if (verb == "create") return cmdCreate(args);
    if (verb == "demo") return cmdDemo(args);
    if (verb == "run") return cmdRun(args);
    if (verb == "data") return cmdData(args);
    if (verb == "pretrain") return cmdPretrain(args);
    if (verb == "train") return cmdTrain(args);
    if (verb == "generate") return cmdGenerate(args);
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
