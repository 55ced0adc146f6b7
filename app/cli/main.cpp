// `upcycle`: the headless face of the workbench. Every verb calls the same engine API as the GUI.
// Never includes torch headers: it speaks the engine's plain C++ API.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <cctype>
#include <set>
#include <sstream>

#include "api/pipeline.h"
#include "api/analysis.h"
#include "api/distributed.h"
#include "api/bench.h"
#include "api/inspect.h"
#include "api/models.h"
#include "api/runtime.h"
#include "api/tokenize.h"
#include "api/training.h"
#include "cli/args.h"
#include "cli/progress.h"
#include "core/atomic_file.h"
#include "core/blas_kernels.h"
#include "core/error.h"
#include "data/demo_data.h"
#include "data/prepare.h"
#include "store/run_compare.h"
#include "store/run_summary.h"
#include "store/run_store.h"
#include "store/store_check.h"
#include <nlohmann/json.hpp>
#include <iomanip>

namespace {

using upcycle::cli::Args;
namespace fs = std::filesystem;

const char* kUsage = R"(upcycle - Upcycle Workbench command line

usage: upcycle VERB [options]

verbs:
  inspect PATH [--json]
      A checkpoint folder (or .safetensors file): architecture, dimensions, experts, top-k, parameters
      (total and active per token), dtype, file sizes. A HF Trainer output folder: its checkpoint-STEP
      folders with step, epoch and logged loss.
  eval --model PATH --data FILE.jsonl [--accuracy] [--max-new-tokens N] [--template NAME]
       [--max-length N] [--batch-size N] [--device auto|cpu|cuda] [--dtype float32|bf16|auto] [--json]
      Token-weighted mean next-token cross-entropy and perplexity, per domain when records have one;
      with --accuracy, exact-match accuracy of greedy answers. Any record kind (Alpaca, ShareGPT,
      messages, text, pre-tokenized input_ids); text is tokenized with the model's tokenizer.
      --dtype bf16 loads the weights in bfloat16 (half the memory of float32; router softmax and loss
      stay float32); auto: bf16 when the checkpoint is bf16.
  tokenize --model DIR --jsonl IN.jsonl [--decode] [--chat] [--add-special-tokens]
      The model's tokenizer (byte, SentencePiece tokenizer.model, or tokenizer.json) on one
      {"text": ...} per line, printing one {"ids": [...]} per line; no BOS/EOS unless
      --add-special-tokens. --decode adds "decoded" (special tokens kept). --chat reads
      {"messages": [...], "add_generation_prompt": bool, ...} lines, renders them with the model's
      chat template and prints {"text", "ids"}, or {"error"} for a line whose template raises.
  data generate --out FILE.jsonl [--kind instruct|corpus] [--per-domain N] [--documents N] [--seed S]
      The built-in multi-domain data: instruction records with exact answers in 7 domains, or a
      plain-text corpus of the same domains for pretraining.
  pretrain --out DIR [--corpus FILE] [--documents N] [--max-steps N | --epochs X] [--hidden N] [--ff N]
           [--layers N] [--heads N] [--kv-heads N] [--block N] [training options]
      Pretrain a tiny byte-level Llama on the built-in corpus; checkpoints in DIR/checkpoint-STEP.
  train --model PATH --data FILE --out DIR [--epochs N | --max-steps N] [--save-every FRACTION |
        --save-steps N] [--lr X] [--batch-size N] [--seed S] [training options]
      Fine-tune (instruction-tune) a model; HF checkpoints with trainer_state.json in DIR.
      LoRA: --lora-rank R [--lora-alpha A (2R)] [--lora-targets q,k,v,o,gate,up,down (all)]
        [--lora-dropout P] [--lora-rslora]: the base stays frozen, only the adapters train, and the
        checkpoints are PEFT adapter folders naming the base. A --model that is an adapter folder
        continues that adapter.
      training options: --grad-accum N --warmup N --min-lr-ratio X --weight-decay X --clip X
        --aux-coef X --z-coef X --max-length N --template alpaca|compact|raw --train-on-prompt
        --val-fraction F --train-only PATTERN --freeze PATTERN --resume --device D
  generate --model PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--seed S] [--raw]
           [--template NAME]
      Greedy decoding (or sampling with a temperature) with a KV cache.
  convert --method sparse|drop|noise|scratch|btx|upit|upit_lora --base DENSE --experts E --top-k K --out MOE
          [--seed S] [--router-init uniform_std002|normal_002|uniform|hidden|hidden_avg (these two need --data)]
          [--moe-layer-freq N]
          [--layout mixtral-hub|mixtral-fused]
          drop: [--ratio R] [--shared-indices] [--expert-ff F]    noise: [--noise-std S] [--noise-fraction F]
          btx: --sources DIR,DIR...
          upit: --checkpoints DIR [DIR...] [--num-checkpoints M] [--select even|latest] [--non-ffn average|last]
                [--no-expand] [--parent-rule distance|random|tournament] [--distance cosine_delta|cosine|l2]
                [--alpha-min A] [--alpha-max A] [--dare-p P] [--dare-rescale inverse|l1]
                [--merge linear|task_arithmetic|ties|dare_linear|dare_ties|slerp]
                [--data FILE [--seed-fraction F] [--min-seed N] [--router-epochs N] [--cls-weight A]
                 [--router-lr X] [--template NAME]]
          upit_lora: the upit options, with PEFT adapter folders (LoRA on gate/up/down) as --checkpoints;
                writes the standard MoE (expert e = base FFN + expert e's update), or with --keep-factors
                the LoRA-expert MoE (shared base FFN + per-expert factors)
      Upcycle a dense checkpoint into an MoE checkpoint (Mixtral layout; Qwen3-MoE for qwen3 bases; Qwen2-MoE for qwen2 bases or
      --moe-layer-freq > 1). Bad settings are refused before any work, naming the option.
  create --out DIR [--arch llama|mistral|qwen2|qwen3|mixtral|qwen2_moe|qwen3_moe] [--vocab N]
         [--hidden N] [--ff N] [--layers N] [--heads N] [--kv-heads N] [--experts E] [--top-k K]
         [--tie] [--dtype float32|bfloat16|float16] [--rope-theta X] [--rms-eps X] [--max-positions N]
         [--tokenizer DIR] [--seed S]
      Write a randomly initialized model (for experiments, tests and benchmarks). --tokenizer copies
      DIR's tokenizer files (and its bos/eos/pad ids) instead of attaching the byte tokenizer.
  runs list [--json] | show ID | compare ID ID... [--diff-only] | delete ID | export ID --out DIR
       | rename ID NAME | tag ID TAGS | check [--salvage OUT]        (all take [--db FILE])
       | summary --experiment NAME [--baseline RUN] [--metric M] [--json]
      The run store: every `run` and `demo` records its runs (params, metrics, evaluation, lineage,
      analysis) in a SQLite file, by default ~/.local/share/upcycle-workbench/runs.db. `summary`:
      per run name across seeds, n, mean, sd and the 95% Student-t interval of the mean; with
      --baseline, the paired difference per seed (its t interval, seeds won). M: accuracy (the
      default, %), eval_loss (each optionally :DOMAIN), train_loss, diversity. check: integrity and
      foreign keys (exit 3 when damaged); --salvage copies every row still readable into a new store OUT.
  run EXPERIMENT.yaml [--out DIR] [--device D] [--db FILE] [--seeds 0,1,2 | 0-4] [--repeats N]
      Run a whole experiment (base, data, dense SFT with checkpoints, each method, post-training,
      evaluation) and print per-domain accuracy and loss for every run. --seeds (or the file's
      `seeds:`) repeats the whole pipeline per seed into OUT/seed-S and prints means with 95% CIs;
      --repeats N = seeds seed .. seed+N-1.
  demo [--quick] [--out DIR] [--db FILE] [--seeds LIST] [--repeats N]
      The built-in demo experiment (resources/experiments/demo.yaml; --quick: demo-quick.yaml):
      pretrain a tiny base, instruction-tune it keeping 8 checkpoints, then dense SFT continued,
      sparse upcycling, Drop-Upcycling r=0.5 and UpIT (8 experts from 4 checkpoints + GA), each with
      the same post-training budget; 3 seeds (the base pretrained once), means with 95% CIs.
  analyze --model MOE [--data FILE] [--base DENSE] [--max-records N] [--dtype auto|float32|bf16] [--json]
      Expert similarity per layer (cosine of the flattened FFN weights; of their deltas from --base;
      output CKA on the probe data) and routing on the probe data: shares per expert and domain,
      router entropy, imbalance (max/mean share), co-selection counts. --dtype auto (the default)
      keeps a bf16 checkpoint in bf16: similarity straight from its rows, the probe forward in bf16.
  bench convert [--method sparse|drop] [--experts E] [--base DENSE | --layers L] [--work DIR] [--keep] [--json]
      Streaming conversion of a ~1 GB dense checkpoint (made with d 1024, d_ff 2816, 22 layers unless
      --base) against cp of the same output bytes, each plus sync; peak memory of the convert process.
  bench analysis [--d-model D] [--d-ff F] [--layers L] [--experts E] [--json]
      Expert-similarity analysis and one GA child (merge + DARE) against the measured memory bandwidth.
  bench train [--d-model D] [--d-ff F] [--layers L] [--experts E (0: dense)] [--top-k K] [--seq-len T]
          [--batch B] [--steps N] [--device cpu|cuda] [--precision fp32|bf16] [--optimizer fused|torch|both] [--json]
      Whole training steps through the trainer: tokens/s and model FLOPs utilization (MFU) against the
      measured matmul peak. --optimizer torch: LibTorch's AdamW instead of the trainer's fused one; both:
      the two in alternating runs, and the ratio.
  bench adamw [--d-model D] [--d-ff F] [--layers L] [--experts E] [--rounds N] [--json]
      One AdamW step over bench train's parameters: LibTorch's AdamW against the fused one, side by side.
  bench lora-memory [--model DIR] [--experts E] [--top-k K] [--lora-rank R] [--lora-targets gate,up,down]
      Trainable parameters, gradients and AdamW state of post-training: UpIT with FFN experts against
      LoRA experts, for the demo's base and a Qwen2.5-0.5B-shaped one (or DIR's config).
  bench moe [--d-model D] [--d-ff F] [--experts E] [--top-k K] [--tokens T] [--device cpu|cuda]
            [--precision fp32|bf16] [--vary-routing] [--iterations N] [--json]
      One MoE layer, forward + backward: the grouped path against the naive masked loop of
      transformers' Mixtral, with tokens/s, achieved GFLOP/s and the measured matmul peak. bf16: both
      under bf16 autocast, plus the naive loop in float32. --vary-routing: new inputs every round, so
      every expert's row count changes as in training.
  bench allreduce --nproc N [--sizes-mb 0.25,1,4,16,64] [--iterations N] [--json]
      c10d all-reduce (the gradient reducer's collective) across N processes: median time, algorithm
      and bus bandwidth per size (bench/allreduce_vs_torch.sh runs torch.distributed beside it).
      bench train takes --nproc N too: the same global batch split over N processes.
  bench tokenize --model DIR [--text FILE | --corpus-mb N] [--passes N] [--json]
  bench tokenize --write-corpus FILE [--corpus-mb N] [--seed S]
      The model's tokenizer encoding each line of FILE (default: a generated mixed corpus of 4 MB)
      on one thread: load time, MB/s, tokens/s (bench/tokenize_vs_hf.sh runs HF's next to it).
  version                 Versions of the workbench and LibTorch.

common options: --threads N (intra-op threads; default: all cores)

mixed precision (train, pretrain, run, demo, eval, generate, bench train|moe): --precision auto|fp32|bf16.
  bf16: matmuls in bfloat16 under autocast, float32 master weights, AdamW state, norms, softmaxes,
  router and losses. auto (the default): bf16 on CUDA and on CPUs with AVX-512 BF16 or AMX (see
  `upcycle version`), fp32 elsewhere. Experiment files: `precision:`.

data-parallel (train, pretrain, run, demo): --nproc N starts N processes on this machine (c10d, Gloo on
  the CPU, NCCL on CUDA); under torchrun or SLURM (RANK/WORLD_SIZE/... or SLURM_PROCID/SLURM_NTASKS)
  each process joins its group. --dist-store tcp|file:PATH (default tcp: a TCPStore at MASTER_ADDR:
  MASTER_PORT), --dist-timeout SECONDS (default 300). Results equal the one-process run's.
)";

int cmdInspect(const Args& a) {
  a.allowOnly({"json", "threads"});
  UPCYCLE_CHECK(a.positional().size() == 1, "inspect takes one PATH");
  auto r = upcycle::inspectPath(a.positional()[0]);
  std::cout << (a.has("json") ? upcycle::inspectJson(r) + "\n" : upcycle::inspectText(r));
  return 0;
}

std::atomic<bool> g_cancel{false};
std::vector<std::string> g_argv;  // what data-parallel workers started by --nproc run

// Data-parallel training for a verb's body (a no-op for one process): --nproc N starts ranks 1..N-1
// as copies of this command; torchrun / SLURM environments name the rank instead.
upcycle::DistLaunch distLaunch(const Args& a, const std::string& device) {
  upcycle::DistLaunch l;
  l.nproc = static_cast<int>(a.getInt("nproc", 1));
  UPCYCLE_CHECK(l.nproc >= 1 && l.nproc <= 256, "--nproc must be in [1, 256], got ", l.nproc);
  l.childArgs = g_argv;
  l.childArgs[0] = upcycle::cliExecutable().string();
  l.device = device;
  return l;
}

// Runs `body` inside a data-parallel scope; an error is published to the other ranks before leaving.
template <class F>
auto withDistValue(const Args& a, const std::string& device, F&& body) {
  upcycle::DistScope dist(distLaunch(a, device));
  try {
    return body();
  } catch (const std::exception& e) {
    dist.fail(e.what());
    throw;
  }
}
template <class F>
int withDist(const Args& a, const std::string& device, F&& body) {
  return withDistValue(a, device, std::forward<F>(body));
}
extern "C" void onSigint(int) { g_cancel.store(true); }

int cmdEval(const Args& a) {
  a.allowOnly({"model", "data", "batch-size", "device", "json", "threads", "accuracy", "max-new-tokens",
               "template", "max-length", "dtype", "precision"});
  upcycle::EvalOptions o;
  o.batchSize = a.getInt("batch-size", 8);
  o.device = a.get("device", "auto");
  o.accuracy = a.has("accuracy");
  o.maxNewTokens = a.getInt("max-new-tokens", 32);
  o.promptTemplate = a.get("template", "");
  o.maxLength = a.getInt("max-length", 0);
  o.dtype = a.get("dtype", "float32");
  o.precision = a.get("precision", "auto");
  auto r = upcycle::evaluateModel(a.require("model"), a.require("data"), o);
  std::cout << (a.has("json") ? upcycle::evalJson(r) + "\n" : upcycle::evalText(r));
  return 0;
}

int cmdTokenize(const Args& a) {
  a.allowOnly({"model", "jsonl", "decode", "chat", "add-special-tokens", "threads"});
  upcycle::TokenizeRequest r;
  r.model = a.require("model");
  r.jsonl = a.require("jsonl");
  r.decode = a.has("decode");
  r.chat = a.has("chat");
  r.addSpecialTokens = a.has("add-special-tokens");
  upcycle::tokenizeJsonl(r, std::cout);
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
               "router-epochs", "cls-weight", "router-lr", "template", "device", "keep-factors"});
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
  // `--checkpoints A B C` / `--sources A B`: the folders after the first arrive as positionals.
  const bool fromCheckpoints = upcycle::usesSftCheckpoints(r.method);
  for (const auto& extra : a.positional()) {
    UPCYCLE_CHECK(fromCheckpoints || r.method == "btx", "unexpected argument \"", extra, "\"");
    (fromCheckpoints ? o.checkpoints : r.sources).emplace_back(extra);
  }
  o.keepFactors = a.has("keep-factors");
  o.data = a.get("data", "");
  o.promptTemplate = a.get("template", "");
  o.layout = a.get("layout", "mixtral-hub");
  o.device = a.get("device", "auto");
  if (fromCheckpoints && r.checkpoints == 0) {  // default: every checkpoint given, up to E
    int64_t n = 0;
    for (const auto& c : o.checkpoints)
      n += std::filesystem::exists(c / "config.json") || std::filesystem::exists(c / "adapter_config.json")
               ? 1 : static_cast<int64_t>(upcycle::inspectPath(c).checkpoints.size());
    r.checkpoints = std::max<int64_t>(1, std::min<int64_t>(n, r.experts));
  }
  auto rep = upcycle::convertModel(o);
  std::cout << "wrote " << rep.config.architecture() << " with " << rep.config.numExperts << " experts, top-"
            << rep.config.topK << " to " << rep.out.string() << "\n";
  if (fromCheckpoints) {
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
               "tie", "dtype", "seed", "threads", "rope-theta", "rms-eps", "max-positions", "tokenizer"});
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
  o.ropeTheta = a.getDouble("rope-theta", o.ropeTheta);
  o.rmsNormEps = a.getDouble("rms-eps", o.rmsNormEps);
  o.maxPositionEmbeddings = a.getInt("max-positions", o.maxPositionEmbeddings);
  o.tokenizer = a.get("tokenizer", "");
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  auto c = upcycle::createRandomModel(o);
  std::cout << "wrote a random " << c.architecture() << " to " << o.out.string() << "\n";
  return 0;
}

const std::set<std::string> kTrainKeys = {"lr", "batch-size", "grad-accum", "warmup", "min-lr-ratio", "weight-decay",
                                          "clip", "aux-coef", "z-coef", "epochs", "max-steps", "save-every",
                                          "save-steps", "seed", "device", "resume", "train-only", "freeze",
                                          "threads", "out", "nproc", "dist-store", "dist-timeout", "precision"};

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
  o.precision = a.get("precision", "auto");
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
  o.model.hiddenSize = a.getInt("hidden", o.model.hiddenSize);
  o.model.intermediateSize = a.getInt("ff", o.model.intermediateSize);
  o.model.numLayers = a.getInt("layers", o.model.numLayers);
  o.model.numHeads = a.getInt("heads", o.model.numHeads);
  o.model.numKvHeads = a.getInt("kv-heads", o.model.numKvHeads);
  o.blockSize = a.getInt("block", 128);
  return withDist(a, o.train.device, [&] {
    upcycle::cli::ProgressPrinter progress(::isatty(1));
    return reportTraining(upcycle::pretrainTinyBase(o, &progress, &g_cancel), progress);
  });
}

int cmdTrain(const Args& a) {
  auto keys = kTrainKeys;
  keys.insert({"model", "data", "max-length", "template", "train-on-prompt", "val-fraction", "lora-rank",
               "lora-alpha", "lora-targets", "lora-dropout", "lora-rslora"});
  a.allowOnly(keys);
  const std::string model = a.require("model");
  upcycle::TrainOptions o = trainOptions(a, 1e-3);
  if (a.has("lora-rank")) {
    o.lora.rank = a.getInt("lora-rank", 0);
    UPCYCLE_CHECK(o.lora.rank >= 1, "--lora-rank must be at least 1, got ", o.lora.rank);
    o.lora.alpha = a.getDouble("lora-alpha", 2.0 * static_cast<double>(o.lora.rank));
    o.lora.dropout = a.getDouble("lora-dropout", 0.0);
    o.lora.rslora = a.has("lora-rslora");
    if (a.has("lora-targets")) o.lora.targets = upcycle::parseLoraTargets(a.get("lora-targets"));
  } else {
    for (const char* k : {"lora-alpha", "lora-targets", "lora-dropout", "lora-rslora"})
      UPCYCLE_CHECK(!a.has(k), "--", k, " needs --lora-rank");
  }
  upcycle::DataOptions d;
  d.path = a.require("data");
  d.promptTemplate = a.get("template", "");
  d.maxLength = a.getInt("max-length", 0);
  d.trainOnPrompt = a.has("train-on-prompt");
  d.valFraction = a.getDouble("val-fraction", 0.0);
  d.splitSeed = o.seed;
  upcycle::validateTrainOptions(o);  // refuse bad settings before reading data or model
  return withDist(a, o.device, [&] {
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
  });
}

int cmdGenerate(const Args& a) {
  a.allowOnly({"model", "prompt", "max-new-tokens", "temperature", "seed", "raw", "template", "device", "threads", "precision"});
  upcycle::GenerateRequest r;
  r.model = a.require("model");
  r.prompt = a.require("prompt");
  r.maxNewTokens = a.getInt("max-new-tokens", 64);
  r.temperature = a.getDouble("temperature", 0.0);
  r.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  r.raw = a.has("raw");
  r.promptTemplate = a.get("template", "");
  r.device = a.get("device", "auto");
  r.precision = a.get("precision", "auto");
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
    // Accuracy only when the experiment measured it (eval.accuracy: false leaves it NaN).
    char acc[48] = "";
    if (std::isfinite(r.eval.overall.accuracy))
      std::snprintf(acc, sizeof acc, ", accuracy %.1f%%", 100.0 * r.eval.overall.accuracy);
    std::snprintf(buf, sizeof buf, "== %s finished: eval loss %.4f%s, %.0f s", r.name.c_str(), r.eval.overall.loss, acc,
                  r.seconds);
    m_progress.onLog(buf);
  }
  // Each seed's table as soon as it is done: the first results come after one repeat, not all.
  void onRepeatFinished(const upcycle::ExperimentReport& r) override {
    const uint64_t seed = r.runs.empty() ? 0 : r.runs.front().seed;
    m_progress.onLog("== seed " + std::to_string(seed) + " done:\n" + upcycle::experimentTable(r));
  }
  void finish() { m_progress.finish(); }

 private:
  upcycle::cli::ProgressPrinter m_progress;
};

int runAndReport(upcycle::Experiment e, const Args& a) {
  if (a.has("out")) e.out = a.get("out");
  UPCYCLE_CHECK(!(a.has("seeds") && a.has("repeats")), "give --seeds or --repeats, not both");
  if (a.has("seeds")) e.seeds = upcycle::parseSeedList(a.get("seeds"), "--seeds");
  if (a.has("repeats")) e.seeds = upcycle::repeatSeedsFrom(e.seed, a.getInt("repeats", 1), "--repeats");
  if (a.has("device")) e.device = a.get("device");
  if (a.has("nproc")) e.nproc = static_cast<int>(a.getInt("nproc", 1));
  if (a.has("precision")) e.precision = a.get("precision");
  // A data-parallel worker (rank > 0) neither records nor writes: rank 0 does.
  const bool writer = upcycle::distFromEnvironment().rank == 0;
  upcycle::validateExperiment(e);
  const size_t repeats = upcycle::repeatSeeds(e).size();
  std::printf("experiment %s -> %s (%zu runs%s)\n", e.name.c_str(), e.out.string().c_str(), e.runs.size(),
              repeats > 1 ? (" x " + std::to_string(repeats) + " seeds").c_str() : "");
  PipelinePrinter printer(::isatty(1));
  const auto t0 = std::chrono::steady_clock::now();
  const std::filesystem::path db = a.has("db") ? std::filesystem::path(a.get("db")) : upcycle::RunStore::defaultPath();
  std::optional<upcycle::RunStore> store;
  if (writer) {
    store.emplace(db);
    if (store->interruptedOnOpen() > 0)
      std::printf("note: %lld earlier run(s) in %s were interrupted\n", static_cast<long long>(store->interruptedOnOpen()),
                  db.string().c_str());
    std::printf("recording into %s\n", db.string().c_str());
  }
  upcycle::ExperimentReport r = upcycle::runExperiment(e, &printer, &g_cancel, store ? &*store : nullptr);
  printer.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string table = upcycle::experimentTable(r);
  std::printf("\n%s\ntotal %.0f s%s; outputs in %s\n", table.c_str(), secs, r.cancelled ? " (cancelled)" : "",
              e.out.string().c_str());
  if (writer) upcycle::writeFileAtomically(e.out / "results.txt", table);
  return r.cancelled ? 130 : 0;
}

int cmdRun(const Args& a) {
  a.allowOnly({"out", "device", "threads", "db", "nproc", "dist-store", "dist-timeout", "precision", "seeds", "repeats"});
  UPCYCLE_CHECK(a.positional().size() == 1, "usage: upcycle run EXPERIMENT.yaml [--out DIR]");
  return runAndReport(upcycle::loadExperiment(a.positional()[0]), a);
}

int cmdDemo(const Args& a) {
  a.allowOnly({"out", "quick", "threads", "db", "device", "nproc", "dist-store", "dist-timeout", "precision", "seeds", "repeats"});
  const auto file = upcycle::findResource(a.has("quick") ? "experiments/demo-quick.yaml" : "experiments/demo.yaml");
  return runAndReport(upcycle::loadExperiment(file), a);
}

int cmdAnalyze(const Args& a) {
  a.allowOnly({"model", "data", "base", "json", "threads", "device", "max-records", "template", "dtype"});
  upcycle::AnalyzeOptions o;
  o.data = a.get("data", "");
  o.base = a.get("base", "");
  o.device = a.get("device", "auto");
  o.maxProbeRecords = a.getInt("max-records", 256);
  o.promptTemplate = a.get("template", "");
  o.dtype = a.get("dtype", "auto");
  auto r = upcycle::analyzeModel(a.require("model"), o);
  std::cout << (a.has("json") ? upcycle::analysisJson(r) + "\n" : upcycle::analysisText(r));
  return 0;
}


int64_t runId(const std::string& s) {
  size_t pos = 0;
  int64_t v = -1;
  try {
    v = std::stoll(s, &pos);
  } catch (...) {
    pos = 0;
  }
  UPCYCLE_CHECK(pos == s.size() && v > 0, "run id must be a positive integer, got \"", s, "\"");
  return v;
}

// `runs check`: never opens the store through RunStore (which would mark runs or migrate), never writes it.
int cmdRunsCheck(const Args& a, const std::filesystem::path& db) {
  UPCYCLE_CHECK(a.positional().size() == 1, "usage: upcycle runs check [--db FILE] [--salvage OUT]");
  const auto c = upcycle::checkStore(db);
  std::printf("%s: %s\n", db.string().c_str(), c.ok ? "ok" : "DAMAGED");
  for (size_t i = 0; i < c.problems.size() && i < 20; ++i) std::printf("  %s\n", c.problems[i].c_str());
  if (c.problems.size() > 20) std::printf("  ... and %zu more\n", c.problems.size() - 20);
  for (const auto& [t, n] : c.tableRows) std::printf("  %-16s %10lld rows\n", t.c_str(), static_cast<long long>(n));
  if (a.has("salvage")) {
    const std::filesystem::path out = a.get("salvage");
    const auto r = upcycle::salvageStore(db, out);
    std::printf("salvaged into %s%s:\n", out.string().c_str(),
                r.pageScan ? (" (leaf pages scanned at " + std::to_string(r.pageSize) + " bytes a page)").c_str() : "");
    if (!r.sqliteError.empty()) std::printf("  SQLite could not read the schema: %s\n", r.sqliteError.c_str());
    for (const auto& t : r.tables)
      std::printf("  %-16s %10lld rows (%lld from the page scan, %lld damaged places skipped)\n", t.table.c_str(),
                  static_cast<long long>(t.rows), static_cast<long long>(t.fromPages), static_cast<long long>(t.readErrors));
    if (r.placeholderRuns)
      std::printf("  %lld runs whose own row was lost are kept as \"salvaged run N\" for their rows\n",
                  static_cast<long long>(r.placeholderRuns));
  }
  return c.ok ? 0 : 3;
}

int cmdRuns(const Args& a) {
  a.allowOnly({"db", "json", "diff-only", "out", "threads", "experiment", "baseline", "metric", "salvage"});
  UPCYCLE_CHECK(!a.positional().empty(), "usage: upcycle runs list|show|compare|summary|delete|export|rename|tag|check ...");
  const std::string sub = a.positional()[0];
  const auto& pos = a.positional();
  // Reading verbs open the store read-only: they never create a folder or a file, nor upgrade one.
  const bool reads = sub == "list" || sub == "show" || sub == "compare" || sub == "export" || sub == "summary";
  const std::filesystem::path db = a.has("db") ? std::filesystem::path(a.get("db")) : upcycle::RunStore::defaultPath();
  if (sub == "list" && !std::filesystem::exists(db)) {
    std::printf("no runs (no run store at %s yet)\n", db.string().c_str());
    return 0;
  }
  if (sub == "check") return cmdRunsCheck(a, db);
  std::optional<upcycle::RunStore> opened;
  if (reads) opened.emplace(db, upcycle::RunStore::ReadOnly{});
  else opened.emplace(db);
  upcycle::RunStore& store = *opened;
  using nlohmann::json;
  if (sub == "list") {
    auto runs = store.listRuns();
    if (a.has("json")) {
      json arr = json::array();
      for (const auto& r : runs)
        arr.push_back({{"id", r.id}, {"name", r.name}, {"experiment", r.experiment}, {"status", r.status},
                       {"method", r.method}, {"started", r.started}, {"finished", r.finished}, {"seed", r.seed},
                       {"tags", r.tags}, {"final_metrics", r.finalMetrics}});
      std::cout << arr.dump(2) << "\n";
      return 0;
    }
    std::printf("%-5s %-22s %-12s %-9s %-12s %-20s %9s %9s\n", "id", "name", "experiment", "method", "status", "started",
                "eval loss", "accuracy");
    for (const auto& r : runs) {
      auto f = [&](const char* k) {
        auto it = r.finalMetrics.find(k);
        return it == r.finalMetrics.end() ? std::string("-") : (std::ostringstream() << std::fixed << std::setprecision(4) << it->second).str();
      };
      std::printf("%-5lld %-22s %-12s %-9s %-12s %-20s %9s %9s\n", static_cast<long long>(r.id), r.name.c_str(),
                  r.experiment.c_str(), r.method.c_str(), r.status.c_str(), r.started.c_str(), f("eval/loss").c_str(),
                  f("eval/accuracy").c_str());
    }
    return 0;
  }
  if (sub == "show") {
    UPCYCLE_CHECK(pos.size() == 2, "usage: upcycle runs show ID");
    auto d = store.run(runId(pos[1]));
    std::printf("run %lld: %s (%s, %s)\nexperiment %s, seed %llu, started %s, finished %s\n",
                static_cast<long long>(d.run.id), d.run.name.c_str(), d.run.method.c_str(), d.run.status.c_str(),
                d.run.experiment.c_str(), static_cast<unsigned long long>(d.run.seed), d.run.started.c_str(),
                d.run.finished.c_str());
    std::printf("\nfinal metrics:\n");
    for (const auto& [k, v] : d.run.finalMetrics) std::printf("  %-30s %g\n", k.c_str(), v);
    if (!d.eval.empty()) {
      std::printf("\nevaluation:\n  %-14s %9s %9s %9s\n", "domain", "loss", "ppl", "accuracy");
      for (const auto& e : d.eval)
        std::printf("  %-14s %9.4f %9.3f %9.3f\n", e.domain.empty() ? "(overall)" : e.domain.c_str(), e.loss, e.perplexity, e.accuracy);
    }
    for (const auto& l : d.lineage)
      std::printf("lineage: expert %lld = %s(%lld, %lld), alpha %.3f, DARE p %.2f\n", static_cast<long long>(l.child),
                  l.mergeOp.c_str(), static_cast<long long>(l.parentA), static_cast<long long>(l.parentB), l.alpha, l.dareP);
    for (const auto& [k, p] : d.artifacts) std::printf("%s: %s\n", k.c_str(), p.c_str());
    std::printf("\nparams:\n");
    for (const auto& [k, v] : d.params) std::printf("  %-40s %s\n", k.c_str(), v.c_str());
    return 0;
  }
  if (sub == "compare") {
    UPCYCLE_CHECK(pos.size() >= 3, "usage: upcycle runs compare ID ID... [--diff-only]");
    std::vector<upcycle::RunDetail> runs;
    for (size_t i = 1; i < pos.size(); ++i) runs.push_back(store.run(runId(pos[i])));
    std::printf("  %-38s", "param");
    for (const auto& r : runs) std::printf(" %-18s", ("#" + std::to_string(r.run.id) + " " + r.run.name).substr(0, 18).c_str());
    std::printf("\n");
    for (const auto& row : upcycle::compareParams(runs, a.has("diff-only"))) {
      std::printf("%s %-38s", row.differs ? "*" : " ", row.key.substr(0, 38).c_str());
      for (const auto& v : row.values) std::printf(" %-18s", v.substr(0, 18).c_str());
      std::printf("\n");
    }
    std::set<std::string> metrics;
    for (const auto& r : runs)
      for (const auto& [k, v] : r.run.finalMetrics) metrics.insert(k);
    std::printf("\n  %-38s\n", "final metrics");
    for (const auto& k : metrics) {
      std::printf("  %-38s", k.substr(0, 38).c_str());
      for (const auto& r : runs) {
        auto it = r.run.finalMetrics.find(k);
        if (it == r.run.finalMetrics.end()) std::printf(" %-18s", "-");
        else std::printf(" %-18.6g", it->second);
      }
      std::printf("\n");
    }
    return 0;
  }
  if (sub == "summary") {
    UPCYCLE_CHECK(pos.size() == 1, "usage: upcycle runs summary --experiment NAME [--baseline RUN] [--metric M] [--json]");
    const auto s = upcycle::summarizeExperiment(store, a.require("experiment"), a.get("metric", "accuracy"), a.get("baseline", ""));
    std::cout << (a.has("json") ? upcycle::summaryJson(s) + "\n" : upcycle::summaryText(s));
    return 0;
  }
  if (sub == "delete") {
    UPCYCLE_CHECK(pos.size() == 2, "usage: upcycle runs delete ID");
    store.deleteRun(runId(pos[1]));
    std::printf("deleted run %s\n", pos[1].c_str());
    return 0;
  }
  if (sub == "rename" || sub == "tag") {
    UPCYCLE_CHECK(pos.size() == 3, "usage: upcycle runs ", sub, " ID TEXT");
    const int64_t id = runId(pos[1]);
    store.run(id);  // exists?
    if (sub == "rename") store.setName(id, pos[2]);
    else store.setTags(id, pos[2]);
    return 0;
  }
  if (sub == "export") {
    UPCYCLE_CHECK(pos.size() == 2, "usage: upcycle runs export ID --out DIR");
    const std::filesystem::path out = a.require("out");
    auto d = store.run(runId(pos[1]));
    std::string model;
    for (const auto& [k, p] : d.artifacts)
      if (k == "model") model = p;
    UPCYCLE_CHECK(!model.empty(), "run ", pos[1], " has no final model artifact");
    UPCYCLE_CHECK(std::filesystem::exists(model), "run ", pos[1], "'s model folder is gone: ", model);
    std::filesystem::create_directories(out);
    for (const auto& f : std::filesystem::directory_iterator(model)) {
      const std::string name = f.path().filename().string();
      if (name == "optimizer.pt" || name == "trainer_state.json" || !f.is_regular_file()) continue;
      // Copied to a temporary name, renamed when whole: a full disk or a read-only folder leaves
      // neither a partial file under the final name nor the temporary.
      upcycle::copyFileAtomically(f.path(), out / name);
    }
    std::printf("exported run %s (%s) to %s\n", pos[1].c_str(), model.c_str(), out.string().c_str());
    return 0;
  }
  throw upcycle::UserError("unknown runs command \"" + sub + "\" (list, show, compare, summary, delete, export, rename, tag, check)");
}

// Runs argv as a child process, its stdout discarded; returns its wall time and peak resident memory (KiB).
// Throws on failure.
struct ChildStats {
  double seconds = 0;
  long maxRssKib = 0;
};
ChildStats runChild(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  UPCYCLE_CHECK(pid >= 0, "fork failed");
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);  // the children's output would break --json
    if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);
    ::execvp(args[0], args.data());
    std::_Exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  ChildStats s;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.maxRssKib = usage.ru_maxrss;
  UPCYCLE_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bench: \"", argv[0], " ", argv.size() > 1 ? argv[1] : "",
                "\" failed (status ", status, ")");
  return s;
}

uint64_t folderBytes(const fs::path& p) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(p))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// upcycle bench convert: streaming sparse/drop conversion of a ~1 GB dense checkpoint against `cp` of
// the same output bytes, each in its own process (peak memory from wait4), each followed by `sync`.
int cmdBenchConvert(const Args& a) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const fs::path work = a.get("work", (fs::temp_directory_path() / ("upcycle-bench-convert-" + std::to_string(::getpid()))).string());
  fs::create_directories(work);
  fs::path base = a.get("base", "");
  const int64_t layers = a.getInt("layers", 22);
  if (base.empty()) {
    // d 1024, d_ff 2816, 16 heads (8 KV): 47 MB of float32 per layer; 22 layers are about 1 GB. Made by
    // a child: a forked child's peak RSS (wait4) starts at its parent's resident size, so this process
    // must stay small.
    base = work / "dense";
    if (!fs::exists(base / "config.json"))
      runChild({self, "create", "--out", base.string(), "--arch", "llama", "--hidden", "1024", "--ff", "2816", "--layers",
                std::to_string(layers), "--heads", "16", "--kv-heads", "8"});
  }
  const std::string method = a.get("method", "drop");
  const std::string experts = std::to_string(a.getInt("experts", 8));
  const fs::path out = work / ("moe-" + method), copy = work / "copy";
  fs::remove_all(out);
  fs::remove_all(copy);
  const ChildStats idle = runChild({self, "version"});
  runChild({"sync"});
  ChildStats conv = runChild({self, "convert", "--method", method, "--base", base.string(), "--experts", experts, "--top-k",
                              std::to_string(a.getInt("top-k", 2)), "--out", out.string(), "--threads",
                              std::to_string(a.getInt("threads", 0))});
  const ChildStats convSync = runChild({"sync"});
  conv.seconds += convSync.seconds;
  ChildStats cp = runChild({"cp", "-r", out.string(), copy.string()});
  const ChildStats cpSync = runChild({"sync"});
  cp.seconds += cpSync.seconds;
  const uint64_t outBytes = folderBytes(out), denseBytes = folderBytes(base);
  const double denseLayerBytes = 4.0 * (2.0 * 1024 * 1024 + 2.0 * 1024 * 512 + 3.0 * 1024 * 2816);
  nlohmann::json j = {{"method", method}, {"experts", std::stoi(experts)}, {"dense_bytes", denseBytes}, {"output_bytes", outBytes},
                      {"convert_seconds", conv.seconds}, {"cp_seconds", cp.seconds},
                      {"convert_gb_per_s", outBytes / conv.seconds / 1e9}, {"cp_gb_per_s", outBytes / cp.seconds / 1e9},
                      {"speed_vs_cp", cp.seconds / conv.seconds}, {"convert_peak_rss_mb", conv.maxRssKib / 1024.0},
                      {"idle_rss_mb", idle.maxRssKib / 1024.0}, {"dense_layer_mb", denseLayerBytes / 1048576.0},
                      {"peak_over_idle_in_dense_layers", (conv.maxRssKib - idle.maxRssKib) * 1024.0 / denseLayerBytes}};
  if (!a.has("keep")) fs::remove_all(work);
  if (a.has("json")) {
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("%s upcycling, %s experts: %.2f GB dense -> %.2f GB written\n", method.c_str(), experts.c_str(), denseBytes / 1e9,
                outBytes / 1e9);
    std::printf("convert + sync: %6.2f s (%.2f GB/s)   cp + sync: %6.2f s (%.2f GB/s)   speed vs cp: %.2fx\n", conv.seconds,
                outBytes / conv.seconds / 1e9, cp.seconds, outBytes / cp.seconds / 1e9, cp.seconds / conv.seconds);
    std::printf("peak memory of convert: %.0f MB (an idle upcycle process: %.0f MB; one dense layer: %.0f MB)\n",
                conv.maxRssKib / 1024.0, idle.maxRssKib / 1024.0, denseLayerBytes / 1048576.0);
  }
  return 0;
}

// upcycle bench tokenize: see engine/api/bench.h; the HF peer is bench/tokenize_vs_hf.sh.
int cmdBenchTokenize(const Args& a) {
  const int64_t corpusBytes = static_cast<int64_t>(a.getDouble("corpus-mb", 4.0) * 1e6);
  const uint64_t seed = static_cast<uint64_t>(a.getInt("seed", 0));
  if (a.has("write-corpus")) {
    upcycle::writeFileAtomically(a.get("write-corpus", ""), upcycle::tokenizeBenchCorpus(corpusBytes, seed));
    return 0;
  }
  UPCYCLE_CHECK(a.has("model"), "bench tokenize needs --model DIR (or --write-corpus FILE)");
  upcycle::TokenizeBenchOptions o;
  o.model = a.get("model", "");
  o.text = a.get("text", "");
  o.corpusBytes = corpusBytes;
  o.seed = seed;
  o.passes = a.getInt("passes", 3);
  const auto r = upcycle::benchTokenize(o);
  if (a.has("json")) {
    std::cout << upcycle::tokenizeBenchJson(r) << "\n";
  } else {
    std::printf("%s from %s: loaded in %.3f s\n", r.tokenizerKind.c_str(), o.model.string().c_str(), r.loadSeconds);
    std::printf("%s: %.2f MB in %lld lines -> %lld tokens, 1 thread\n", o.text.empty() ? "generated corpus" : o.text.c_str(),
                r.bytes / 1e6, static_cast<long long>(r.lines), static_cast<long long>(r.tokens));
    std::printf("median of %lld passes: %.3f s, %.2f MB/s, %.0f tokens/s (first pass %.3f s)\n",
                static_cast<long long>(o.passes), r.seconds, r.mbPerS, r.tokensPerS, r.passSeconds.front());
  }
  return 0;
}

int cmdBenchAllreduce(const Args& a) {
  upcycle::AllreduceBenchOptions o;
  if (a.has("sizes-mb")) {
    o.sizesMb.clear();
    std::string list = a.get("sizes-mb");
    for (size_t p = 0; p <= list.size();) {
      const size_t q = std::min(list.find(',', p), list.size());
      const std::string item = list.substr(p, q - p);
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(item, &used);
      } catch (...) {
        used = 0;
      }
      UPCYCLE_CHECK(!item.empty() && used == item.size(), "--sizes-mb must be numbers separated by commas, got \"", item, "\"");
      o.sizesMb.push_back(v);
      p = q + 1;
    }
  }
  o.iterations = a.getInt("iterations", 20);
  const auto r = upcycle::benchAllreduce(o);
  if (a.has("json")) {
    std::cout << upcycle::allreduceBenchJson(r) << "\n";
    return 0;
  }
  std::printf("all-reduce (sum, float32) over %d ranks, %s; median of %lld\n", r.world, r.backend.c_str(),
              static_cast<long long>(o.iterations));
  std::printf("%10s %12s %14s %14s\n", "MB", "ms", "algo GB/s", "bus GB/s");
  for (const auto& x : r.rows)
    std::printf("%10.2f %12.3f %14.2f %14.2f\n", x.mb, 1e3 * x.seconds, x.algoGbPerS, x.busGbPerS);
  return 0;
}

// Trainable parameters and optimizer state of post-training, UpIT with FFN experts against UpIT-LoRA,
// for the demo's base and a Qwen2.5-0.5B-shaped one (or --model DIR). Arithmetic on the configs.
int cmdBenchLoraMemory(const Args& a) {
  const int64_t E = a.getInt("experts", 8), K = a.getInt("top-k", 2);
  upcycle::LoraOptions lora;
  lora.rank = a.getInt("lora-rank", 8);
  lora.alpha = 2.0 * static_cast<double>(lora.rank);
  lora.targets = upcycle::parseLoraTargets(a.get("lora-targets", "gate,up,down"));
  upcycle::validateLoraOptions(lora, "--lora-rank / --lora-targets");
  std::vector<std::pair<std::string, upcycle::ModelConfig>> bases;
  if (a.has("model")) {
    bases.push_back({a.get("model", ""), upcycle::loadHfConfig(a.get("model", ""))});
  } else {
    const upcycle::ModelConfig demo = upcycle::createConfig(upcycle::tinyBase());  // the demo's base
    bases.push_back({"demo base (d 128, 4 layers)", demo});
    upcycle::ModelConfig q;  // Qwen2.5-0.5B's config.json
    q.modelType = "qwen2";
    q.vocabSize = 151936;
    q.hiddenSize = 896;
    q.intermediateSize = 4864;
    q.numLayers = 24;
    q.numHeads = 14;
    q.numKvHeads = 2;
    q.headDim = 64;
    q.attentionBias = true;
    q.tieWordEmbeddings = true;
    bases.push_back({"Qwen2.5-0.5B shape (d 896, 24 layers)", q});
  }
  std::printf("post-training an MoE of E = %lld experts, top-%lld; LoRA experts of rank %lld on", static_cast<long long>(E),
              static_cast<long long>(K), static_cast<long long>(lora.rank));
  for (const auto& t : lora.targets) std::printf(" %s", t.c_str());
  std::printf("\n%-40s %-10s %14s %14s %12s %14s\n", "base", "experts", "parameters", "trainable", "gradients", "AdamW state");
  auto mb = [](int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); };
  for (const auto& [name, cfg] : bases) {
    for (const bool withLora : {false, true}) {
      const upcycle::ModelConfig moe = upcycle::upitMoeConfig(cfg, E, K, withLora ? &lora : nullptr);
      const upcycle::TrainableMemory m = upcycle::trainableMemory(moe);
      std::printf("%-40s %-10s %14lld %14lld %9.1f MB %11.1f MB\n", name.c_str(), withLora ? "LoRA" : "full FFN",
                  static_cast<long long>(m.total), static_cast<long long>(m.trainable), mb(m.gradientBytes),
                  mb(m.optimizerBytes));
    }
  }
  return 0;
}

int cmdBench(const Args& a) {
  if (!a.positional().empty() && a.positional()[0] == "lora-memory") {
    a.allowOnly({"experts", "top-k", "lora-rank", "lora-targets", "model"});
    return cmdBenchLoraMemory(a);
  }
  a.allowOnly({"d-model", "d-ff", "experts", "top-k", "tokens", "threads", "device", "json", "iterations", "seed", "layers",
               "heads", "kv-heads", "seq-len", "batch", "steps", "method", "base", "work", "keep", "model", "text",
               "passes", "corpus-mb", "write-corpus", "nproc", "sizes-mb", "dist-store", "dist-timeout", "precision",
               "vary-routing", "optimizer", "rounds"});
  UPCYCLE_CHECK(a.positional().size() == 1 &&
                    (a.positional()[0] == "moe" || a.positional()[0] == "train" || a.positional()[0] == "convert" ||
                     a.positional()[0] == "adamw" ||
                     a.positional()[0] == "analysis" || a.positional()[0] == "tokenize" ||
                     a.positional()[0] == "allreduce"),
                "usage: upcycle bench moe|train|adamw|convert|analysis|tokenize|allreduce|lora-memory [options]");
  if (a.positional()[0] == "allreduce") return withDist(a, a.get("device", "cpu"), [&] { return cmdBenchAllreduce(a); });
  if (a.positional()[0] == "tokenize") return cmdBenchTokenize(a);  // no BLAS involved
  if (!a.has("json")) std::printf("BLAS: %s\n", upcycle::runtimeInfo().blas.c_str());
  if (a.positional()[0] == "convert") return cmdBenchConvert(a);
  if (a.positional()[0] == "analysis") {
    upcycle::AnalysisBenchOptions o;
    o.dModel = a.getInt("d-model", 1024);
    o.dFf = a.getInt("d-ff", 2816);
    o.layers = a.getInt("layers", 4);
    o.experts = a.getInt("experts", 8);
    o.iterations = a.getInt("iterations", 3);
    auto r = upcycle::benchAnalysis(o);
    if (a.has("json")) {
      std::cout << upcycle::analysisBenchJson(r) << "\n";
    } else {
      std::printf("%lld experts of %.0f MB (d %lld, d_ff %lld, %lld layers), %d threads; memory bandwidth %.2f GB/s\n",
                  static_cast<long long>(o.experts), r.expertBytes / 1048576.0, static_cast<long long>(o.dModel),
                  static_cast<long long>(o.dFf), static_cast<long long>(o.layers), r.threads, r.bandwidthGbPerS);
      std::printf("similarity analysis (weights + deltas): %.2f s, %.2f GB/s = %.0f%% of bandwidth; Gram matrices %.1f GFLOP/s (float64)\n",
                  r.analysisSeconds, r.analysisGbPerS, 100 * r.analysisGbPerS / r.bandwidthGbPerS, r.analysisGflops);
      std::printf("GA child (linear merge + DARE p 0.3):   %.2f s, %.2f GB/s = %.0f%% of bandwidth; its DARE masks alone %.2f s\n",
                  r.mergeSeconds, r.mergeGbPerS, 100 * r.mergeGbPerS / r.bandwidthGbPerS, r.maskSeconds);
    }
    return 0;
  }
  if (a.positional()[0] == "adamw") {
    upcycle::AdamWBenchOptions o;
    o.dModel = a.getInt("d-model", 256);
    o.dFf = a.getInt("d-ff", 688);
    o.layers = a.getInt("layers", 4);
    o.experts = a.getInt("experts", 8);
    o.rounds = a.getInt("rounds", 7);
    o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
    auto r = upcycle::benchAdamW(o);
    if (a.has("json")) {
      std::cout << upcycle::adamWBenchJson(r) << "\n";
    } else {
      std::printf("AdamW step over %lld parameters (d %lld, d_ff %lld, %lld layers, E %lld), %d threads\n",
                  static_cast<long long>(r.params), static_cast<long long>(o.dModel), static_cast<long long>(o.dFf),
                  static_cast<long long>(o.layers), static_cast<long long>(o.experts), r.threads);
      std::printf("LibTorch AdamW: %8.2f ms\nfused AdamW:    %8.2f ms (%.1f GB/s moved)\nspeedup: %.2fx; "
                  "parameters after %lld rounds differ by at most %.2g (relative)\n",
                  1e3 * r.torchSeconds, 1e3 * r.fusedSeconds, r.fusedGbPerS, r.speedup,
                  static_cast<long long>(o.rounds + 2), r.maxRelDiff);
    }
    return 0;
  }
  if (a.positional()[0] == "train") {
    upcycle::TrainBenchOptions o;
    o.dModel = a.getInt("d-model", 256);
    o.dFf = a.getInt("d-ff", 688);
    o.layers = a.getInt("layers", 4);
    o.heads = a.getInt("heads", 4);
    o.kvHeads = a.getInt("kv-heads", 2);
    o.experts = a.getInt("experts", 8);
    o.topK = a.getInt("top-k", 2);
    o.seqLen = a.getInt("seq-len", 256);
    o.batch = a.getInt("batch", 8);
    o.steps = a.getInt("steps", 6);
    o.device = a.get("device", "cpu");
    o.precision = a.get("precision", "fp32");
    const std::string optimizer = a.get("optimizer", "fused");
    UPCYCLE_CHECK(optimizer == "fused" || optimizer == "torch" || optimizer == "both",
                  "--optimizer must be fused, torch or both, got \"", optimizer, "\"");
    o.fusedAdamW = optimizer != "torch";
    o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
    if (optimizer == "both") {
      // Side by side: three rounds of (LibTorch's AdamW, fused), each a whole bench run; medians.
      UPCYCLE_CHECK(!a.has("nproc"), "--optimizer both runs in one process (leave out --nproc)");
      std::vector<double> libtorch, fused;
      for (int round = 0; round < 3; ++round) {
        for (bool f : {false, true}) {
          o.fusedAdamW = f;
          (f ? fused : libtorch).push_back(upcycle::benchTrain(o).secondsPerStep);
        }
      }
      std::sort(libtorch.begin(), libtorch.end());
      std::sort(fused.begin(), fused.end());
      std::printf("training step, d %lld, d_ff %lld, %lld layers, E %lld, %s: LibTorch AdamW %.1f ms, fused %.1f ms "
                  "(medians of 3 alternating runs): %.2fx\n",
                  static_cast<long long>(o.dModel), static_cast<long long>(o.dFf), static_cast<long long>(o.layers),
                  static_cast<long long>(o.experts), o.precision.c_str(), 1e3 * libtorch[1], 1e3 * fused[1],
                  libtorch[1] / fused[1]);
      return 0;
    }
    auto r = withDistValue(a, o.device, [&] { return upcycle::benchTrain(o); });
    if (a.has("json")) {
      std::cout << upcycle::trainBenchJson(r) << "\n";
    } else {
      if (r.world > 1) std::printf("data-parallel: %d processes, the global batch split among them\n", r.world);
      std::printf("training step, d %lld, d_ff %lld, %lld layers, %s, batch %lld x %lld tokens, %d threads, %s\n",
                  static_cast<long long>(o.dModel), static_cast<long long>(o.dFf), static_cast<long long>(o.layers),
                  o.experts > 0 ? ("E" + std::to_string(o.experts) + " top-" + std::to_string(o.topK)).c_str() : "dense",
                  static_cast<long long>(o.batch), static_cast<long long>(o.seqLen), r.threads, o.device.c_str());
      std::printf("params %lld total, %lld active per token; %.3g training FLOPs per token\n",
                  static_cast<long long>(r.totalParams), static_cast<long long>(r.activeParams), r.flopsPerToken);
      std::printf("%.1f ms per step, %.0f tokens/s, %.1f GFLOP/s = MFU %.1f%% of the %.1f GFLOP/s %s matmul peak\n",
                  1e3 * r.secondsPerStep, r.tokensPerS, r.achievedGflops, 100 * r.mfu, r.matmulPeakGflops,
                  r.precision.c_str());
      if (r.fp32PeakGflops > 0) std::printf("(the fp32 matmul peak at the same shape: %.1f GFLOP/s)\n", r.fp32PeakGflops);
    }
    return 0;
  }
  upcycle::MoeBenchOptions o;
  o.dModel = a.getInt("d-model", 256);
  o.dFf = a.getInt("d-ff", 688);
  o.experts = a.getInt("experts", 8);
  o.topK = a.getInt("top-k", 2);
  o.tokens = a.getInt("tokens", 2048);
  o.device = a.get("device", "cpu");
  o.precision = a.get("precision", "fp32");
  o.varyRouting = a.has("vary-routing");
  o.iterations = a.getInt("iterations", 10);
  o.seed = static_cast<uint64_t>(a.getInt("seed", 0));
  auto r = upcycle::benchMoe(o);
  if (a.has("json")) {
    std::cout << upcycle::moeBenchJson(r) << "\n";
  } else {
    std::printf("MoE layer fwd+bwd, d %lld, d_ff %lld, E %lld, top-%lld, %lld tokens, %d threads, %s\n",
                static_cast<long long>(o.dModel), static_cast<long long>(o.dFf), static_cast<long long>(o.experts),
                static_cast<long long>(o.topK), static_cast<long long>(o.tokens), r.threads, o.device.c_str());
    std::printf("grouped: %8.2f ms  %9.0f tok/s  %6.1f GFLOP/s (%.0f%% of the %.1f GFLOP/s matmul peak)\n",
                1e3 * r.groupedSeconds, r.tokensPerS, r.achievedGflops, 100 * r.achievedGflops / r.matmulPeakGflops,
                r.matmulPeakGflops);
    std::printf("naive:   %8.2f ms  %9.0f tok/s  %6.1f GFLOP/s\nspeedup vs naive (%s): %.2fx\n", 1e3 * r.naiveSeconds,
                r.naiveTokensPerS, r.naiveGflops, o.precision.c_str(), r.speedup);
    if (r.naiveFp32Seconds > 0)
      std::printf("naive fp32: %8.2f ms; speedup vs naive fp32: %.2fx (fp32 matmul peak %.1f GFLOP/s)\n",
                  1e3 * r.naiveFp32Seconds, r.speedupVsNaiveFp32, r.fp32PeakGflops);
  }
  return 0;
}

int cmdVersion() {
  auto info = upcycle::runtimeInfo();
  std::cout << "upcycle " << UPCYCLE_VERSION << "\nLibTorch " << info.torchVersion << " ("
            << (info.cudaAvailable ? "CUDA available" : "CPU") << ", " << info.intraOpThreads
            << " intra-op threads)\nBLAS " << info.blas << "\nCPU bf16: " << info.cpuBf16 << "; precision auto = "
            << (info.cudaAvailable ? "bf16 on CUDA, " : "") << info.precision << " on the CPU\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);  // may re-execute the program once, with faster OpenBLAS kernels
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string verb = argv[1];
  // `upcycle VERB --help` (the last argument): that verb's part of the usage. Verbs are the lines of
  // the "verbs:" section that start with two spaces and the verb; a description runs to the next verb.
  if (argc > 2 && std::string(argv[argc - 1]) == "--help") {
    std::istringstream usage(kUsage);
    std::string line, block;
    bool inVerbs = false, in = false;
    while (std::getline(usage, line)) {
      if (line == "verbs:") {
        inVerbs = true;
        continue;
      }
      if (!inVerbs) continue;
      if (line.empty()) break;  // the end of the verbs section
      if (line.size() > 2 && line[0] == ' ' && line[1] == ' ' && std::islower(static_cast<unsigned char>(line[2])))
        in = line.compare(2, verb.size(), verb) == 0 && (line.size() == 2 + verb.size() || line[2 + verb.size()] == ' ');
      if (in) block += line + "\n";
    }
    if (block.empty()) {
      std::cerr << "upcycle: error: unknown verb \"" << verb << "\" (try: upcycle help)\n";
      return 2;
    }
    std::cout << "usage:\n" << block;
    return 0;
  }
  g_argv.assign(argv, argv + argc);
  int distRank = 0;
  try {
    Args args(argc, argv, 2, {"json", "keep", "quick", "tie", "diff-only", "accuracy", "resume", "raw", "train-on-prompt",
                              "shared-indices", "no-expand", "keep-factors", "decode", "chat", "add-special-tokens", "vary-routing"});
    std::signal(SIGINT, onSigint);  // training stops at the next step boundary
    // Data-parallel: --dist-store / --dist-timeout reach every rank through the environment, and
    // ranks > 0 keep quiet (rank 0 reports; their errors still go to standard error).
    if (args.has("dist-store")) ::setenv("UPCYCLE_DIST_STORE", args.get("dist-store").c_str(), 1);
    if (args.has("dist-timeout")) ::setenv("UPCYCLE_DIST_TIMEOUT", args.get("dist-timeout").c_str(), 1);
    distRank = upcycle::distFromEnvironment().rank;
    if (distRank > 0 && !std::freopen("/dev/null", "w", stdout)) throw upcycle::UserError("cannot silence rank output");
    upcycle::configureRuntime(static_cast<int>(args.getInt("threads", 0)));
    if (verb == "inspect") return cmdInspect(args);
    if (verb == "eval") return cmdEval(args);
    if (verb == "tokenize") return cmdTokenize(args);
    if (verb == "convert") return cmdConvert(args);
    if (verb == "create") return cmdCreate(args);
    if (verb == "demo") return cmdDemo(args);
    if (verb == "run") return cmdRun(args);
    if (verb == "analyze") return cmdAnalyze(args);
    if (verb == "runs") return cmdRuns(args);
    if (verb == "bench") return cmdBench(args);
    if (verb == "data") return cmdData(args);
    if (verb == "pretrain") return cmdPretrain(args);
    if (verb == "train") return cmdTrain(args);
    if (verb == "generate") return cmdGenerate(args);
    if (verb == "version" || verb == "--version") return cmdVersion();
    std::cerr << "upcycle: error: unknown verb \"" << verb << "\" (try: upcycle help)\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "upcycle: error: " << (distRank > 0 ? "rank " + std::to_string(distRank) + ": " : "")
              << "out of memory (a size in the input may be larger than this machine can hold)\n";
    return 1;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    auto nl = msg.find('\n');  // one clear line, never a backtrace
    if (nl != std::string::npos) msg.resize(nl);
    std::cerr << "upcycle: error: " << (distRank > 0 ? "rank " + std::to_string(distRank) + ": " : "") << msg << "\n";
    return 1;
  }
}
