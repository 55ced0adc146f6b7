#pragma once
// An experiment: the whole pipeline in one YAML file that the CLI (`upcycle run`) and the GUI share.
// Torch-free. Thread-safety: plain values and free functions.
//
//   name: demo
//   seed: 0                     # every random draw of the run derives from it
//   seeds: [0, 1, 2]            # or repeats: 3 (= seed, seed+1, seed+2): the whole pipeline once per
//                               # seed, into out/seed-S, each (run, seed) one stored run
//   device: auto                # auto | cpu | cuda
//   threads: 0                  # intra-op threads (0 = all cores)
//   nproc: 1                    # data-parallel processes on this machine (c10d; see api/distributed.h)
//   precision: auto             # auto | fp32 | bf16 mixed precision (api/runtime.h)
//   out: out/demo
//   base: {pretrain: {seed: 0,   # optional on base.pretrain, data and sft: pin the stage to one seed
//                               # across repeats (computed once and shared when its inputs are too)
//          steps: 600, documents: 6000, hidden: 128, ff: 344, layers: 4, heads: 4,
//          kv_heads: 2, block: 128, lr: 3.0e-3, batch_size: 16}}     # or {path: /models/llama}
//   data: {generate: {per_domain: 300, eval_per_domain: 40}, template: compact}
//         # or {train: FILE, eval: FILE, template: alpaca, max_length: 512}
//   sft: {epochs: 2, save_every: 0.25, lr: 2.0e-3, batch_size: 32}   # dense instruction tuning
//        # or {checkpoints: [out/sft/checkpoint-7, ...]}: existing SFT checkpoints, no training
//   lora: {rank: 8, alpha: 16, dropout: 0.05, targets: [gate, up, down]}  # optional: the SFT trains LoRA
//                               # adapters (PEFT checkpoints); upit_lora and loramoe runs need it
//   post: {epochs: 1, lr: 1.0e-3, batch_size: 32, aux_loss_coef: 0.01}  # the same budget for every run
//   eval: {accuracy: true, max_new_tokens: 16}
//   runs:
//     - {name: dense-sft, method: dense}
//     - {name: sparse, method: sparse, experts: 8, top_k: 2}
//     - {name: drop, method: drop, experts: 8, top_k: 2, ratio: 0.5}
//     - {name: upit, method: upit, experts: 8, top_k: 2, checkpoints: 4,
//        ga: {parent_rule: distance, alpha: [0, 1], dare_p: 0.3, merge: linear},
//        router: {seed_fraction: 0.01, min_seed: 32, epochs: 4, a: 0.5, lr: 1.0e-3,
//                 assign: loss}}   # or random (the ablation)
//     - {name: upit-lora, method: upit_lora, experts: 8, top_k: 2, checkpoints: 4}  # the same keys as upit;
//                               # experts are the SFT's LoRA adapters over the shared base FFN
//     - {name: loramoe, method: loramoe, experts: 8, top_k: 2}  # fresh LoRA experts on the base
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "api/lora.h"

namespace upcycle {

struct StageTraining {
  double epochs = 1.0;
  int64_t maxSteps = 0;
  double saveEvery = 0;  // fraction of an epoch
  double lr = 1e-3;
  int64_t batchSize = 32;
  int64_t warmupSteps = 10;
  double weightDecay = 0.0;
  double auxLossCoef = 0.01;
  double zLossCoef = 0.0;
  double gradClip = 1.0;
};

struct RunSpec {
  std::string name;
  std::string method = "sparse";  // dense | sparse | drop | noise | scratch | btx | upit | upit_lora | loramoe
  int64_t experts = 8;
  int64_t topK = 2;
  int64_t moeLayerFreq = 1;
  int64_t expertFf = 0;           // drop only: fine-grained experts (0 = the dense d_ff)
  std::string routerInit = "uniform_std002";
  uint64_t seed = 0;              // default: the experiment's seed (the repeat's, with seeds:)
  bool seedSet = false;           // the file pins this run's seed: the same in every repeat
  // drop / noise
  double ratio = 0.5;
  bool sharedIndices = false;
  double noiseStd = 0.02;
  double noiseFraction = 0.5;
  // btx
  std::vector<std::filesystem::path> sources;
  // upit (SPEC §5)
  int64_t checkpoints = 4;        // how many SFT checkpoints become experts (M)
  std::string select = "even";    // even | latest | list
  std::vector<int64_t> checkpointList;
  std::string nonFfn = "average"; // average | last
  bool expand = true;
  std::string parentRule = "distance";
  std::string distance = "cosine_delta";
  double alphaMin = 0.0, alphaMax = 1.0;
  double dareP = 0.3;
  std::string dareRescale = "inverse";
  std::string mergeOp = "linear";
  bool preoptimize = true;
  double seedFraction = 0.01;
  int64_t minSeed = 32;
  double routerEpochs = 4;
  double clsWeightA = 0.5;        // a in a * L_lm + (1 - a) * L_cls
  double routerLr = 1e-3;
  // Which expert each seed sample trains the router towards: "loss" (the expert with the lowest loss on
  // it, the paper's rule) or "random" (uniformly at random: the paper's ablation).
  std::string seedAssign = "loss";
};

// A stage's own seed, when the file pins it (the same across repeats); otherwise the repeat's seed.
struct StageSeed {
  bool set = false;
  uint64_t value = 0;
  uint64_t orRepeat(uint64_t repeat) const { return set ? value : repeat; }
};

struct Experiment {
  std::string name = "experiment";
  uint64_t seed = 0;
  // seeds: [..] (or repeats: N = seed .. seed+N-1): the pipeline once per seed. Empty: just `seed`.
  std::vector<uint64_t> seeds;
  StageSeed dataSeed, baseSeed, sftSeed;  // data.seed, base.pretrain.seed, sft.seed
  std::string device = "auto";
  int threads = 0;
  int nproc = 1;  // > 1: rank 0 of nproc data-parallel processes (the others run `upcycle run`)
  std::string precision = "auto";  // auto | fp32 | bf16 for every training and evaluation stage
  std::filesystem::path out = "out/experiment";
  // base
  std::filesystem::path basePath;
  bool pretrain = false;
  int64_t pretrainSteps = 600, pretrainDocuments = 6000, hidden = 128, ff = 344, layers = 4, heads = 4,
          kvHeads = 2, block = 128, pretrainBatch = 16;
  double pretrainLr = 3e-3;
  // data
  bool generateData = true;
  int64_t perDomain = 300, evalPerDomain = 40;
  std::filesystem::path trainData, evalData;
  std::string promptTemplate = "compact";
  int64_t maxLength = 0;
  // stages
  bool sft = true;
  StageTraining sftTraining{2.0, 0, 0.25, 2e-3, 32};
  // sft: {checkpoints: [DIR, ...]}: use these existing dense checkpoints (in training order) instead of
  // running the SFT stage; the GUI's Checkpoints panel writes them.
  std::vector<std::filesystem::path> sftCheckpoints;
  // lora: the SFT stage trains LoRA adapters (its checkpoints are PEFT folders); rank 0 = full SFT.
  // Also the rank, alpha and FFN targets of loramoe's fresh experts.
  LoraOptions lora{0, 16, 0, false, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}};
  StageTraining post{1.0, 0, 0, 1e-3, 32};
  // post: {corpus: {documents: N, block: B}}: post-train every run on N documents of the built-in
  // corpus packed in blocks of B tokens (continued pretraining, as in Drop-Upcycling) instead of the
  // instruction data, and evaluate the loss on N / 10 held-out documents. 0: the instruction data.
  int64_t postCorpusDocuments = 0, postCorpusBlock = 128;
  bool evalAccuracy = true;
  int64_t maxNewTokens = 16;
  std::vector<RunSpec> runs;
  std::filesystem::path sourceFile;  // where it was read from (for messages)
};

// Methods whose experts are intermediate SFT checkpoints (upit, upit_lora).
bool usesSftCheckpoints(const std::string& method);

// "0,1,2", "0-4" or a mix ("0-2, 7"): the seeds of --seeds and the workbench's Seeds field; errors
// name `what`.
std::vector<uint64_t> parseSeedList(const std::string& text, const std::string& what);
// repeats: N / --repeats N: first .. first + N - 1; N outside [1, 1000] is refused naming `what`.
std::vector<uint64_t> repeatSeedsFrom(uint64_t first, int64_t n, const std::string& what);
// The seeds the experiment repeats over: `seeds`, or {seed} when it is empty.
std::vector<uint64_t> repeatSeeds(const Experiment& e);
// One repeat: `seed` set to s, `seeds` cleared, every run without its own seed on s, and `out` in
// out/seed-S when the experiment has more than one seed. Pinned stage seeds are kept.
Experiment experimentForSeed(const Experiment& e, uint64_t s);

// Reads and validates; throws UserError naming the file and the key ("runs[2].ratio: ...").
Experiment loadExperiment(const std::filesystem::path& path);
Experiment parseExperiment(const std::string& yamlText, const std::string& context);
// Refuses bad settings before any work starts, naming the field.
void validateExperiment(const Experiment& e);
// One run's settings; `field` prefixes the names ("runs[2]"), `ctx` the file.
void validateRunSpec(const RunSpec& r, const std::string& field, const std::string& ctx);
// The experiment as YAML (what the GUI saves, and what every run records).
std::string experimentYaml(const Experiment& e);

}  // namespace upcycle
