#include <chrono>
#include <map>
#include <optional>
#include <cmath>
#include <iomanip>
#include <set>
#include <sstream>

#include "pipeline/build.h"
#include "api/runtime.h"
#include "api/torch_errors.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "dist/process_group.h"
#include "data/demo_data.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "formats/trainer_outputs.h"
#include "model/model_io.h"
#include "train/evaluator.h"
#include "train/trainer.h"
#include "upcycle/methods.h"
#include "upcycle/upit.h"
#include "upcycle/upit_lora.h"
#include "model/lora.h"
#include "analysis/analysis.h"
#include "store/run_store.h"
#include "store/run_summary.h"

namespace upcycle {

namespace fs = std::filesystem;

fs::path findResource(const std::string& relative) {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("UPCYCLE_RESOURCES")) roots.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) roots.push_back(exe.parent_path() / "../share/upcycle-workbench");
#ifdef UPCYCLE_SOURCE_RESOURCES
  roots.emplace_back(UPCYCLE_SOURCE_RESOURCES);
#endif
  for (const auto& r : roots)
    if (fs::exists(r / relative)) return fs::weakly_canonical(r / relative);
  throw UserError("resource " + relative + " not found (set UPCYCLE_RESOURCES to the resources folder)");
}

namespace {

TrainOptions stageOptions(const StageTraining& t, const Experiment& e, uint64_t seed, const fs::path& out,
                          const std::string& stage) {
  TrainOptions o;
  o.lr = t.lr;
  o.batchSize = t.batchSize;
  o.epochs = t.epochs;
  o.maxSteps = t.maxSteps;
  o.saveEveryEpochFraction = t.saveEvery;
  o.warmupSteps = t.warmupSteps;
  o.weightDecay = t.weightDecay;
  o.auxLossCoef = t.auxLossCoef;
  o.zLossCoef = t.zLossCoef;
  o.gradClip = t.gradClip;
  o.maxLength = e.maxLength;
  o.device = e.device;
  o.precision = e.precision;
  o.seed = seed;
  o.outDir = out;
  o.stage = stage;
  return o;
}

MoeShape shapeOf(const RunSpec& r) { return MoeShape{r.experts, r.topK, r.moeLayerFreq, r.expertFf}; }

}  // namespace

namespace {
DecoderLM buildRunModelImpl(const RunSpec& r, const BuildInputs& c, torch::Generator& gen, RunSummary& summary);

// A checkpoint as a plain model: a PEFT adapter's updates merged into its base's weights.
DecoderLM loadMerged(const fs::path& folder) {
  DecoderLM m = loadModel(folder);
  mergeLora(m);
  return m;
}

// Prompts per expert for the `hidden` router init: expert e takes up to 8 training records of the
// e-th domain (modulo the number of domains), in file order.
std::vector<std::vector<std::vector<int64_t>>> promptsByDomain(const std::vector<TokenRecord>& train, int64_t E) {
  std::vector<std::string> domains;
  for (const auto& r : train)
    if (!r.domain.empty() && std::find(domains.begin(), domains.end(), r.domain) == domains.end()) domains.push_back(r.domain);
  std::vector<std::vector<std::vector<int64_t>>> out(E);
  for (int64_t e = 0; e < E; ++e) {
    for (const auto& r : train) {
      if (out[e].size() >= 8) break;
      const bool mine = domains.empty() || r.domain == domains[e % domains.size()];
      if (mine) out[e].push_back(r.inputIds);
    }
  }
  return out;
}
}  // namespace

DecoderLM buildRunModel(const RunSpec& r, const BuildInputs& c, torch::Generator& gen, RunSummary& summary) {
  DecoderLM m = buildRunModelImpl(r, c, gen, summary);
  if (isHiddenRouterInit(r.routerInit) && m->config().isMoe()) {
    UPCYCLE_CHECK(!c.train.empty(), "router_init ", r.routerInit, " needs training data for its prompts");
    initRoutersFromHidden(*m, promptsByDomain(c.train, m->config().numExperts), hiddenPooling(r.routerInit));
  }
  return m;
}

namespace {
DecoderLM buildRunModelImpl(const RunSpec& r, const BuildInputs& c, torch::Generator& gen, RunSummary& summary) {
  auto stage = [&](const std::string& s, const std::string& d) {
    if (c.observer) c.observer->onStage(s, d);
  };
  const std::string& m = r.method;
  if (m == "dense") return loadModel(c.start);
  if (m == "btx") {
    std::vector<DecoderLM> models;
    std::vector<DecoderLMImpl*> ptrs;
    for (const auto& s : r.sources) models.push_back(loadMerged(s));
    for (auto& x : models) ptrs.push_back(x.get());
    return btxUpcycle(ptrs, shapeOf(r), r.routerInit, gen);
  }
  if (m == "upit" || m == "upit_lora") {
    const bool lora = m == "upit_lora";
    const int64_t n = static_cast<int64_t>(c.checkpoints.size());
    const auto chosen = selectCheckpoints(n, r.checkpoints, r.select, r.checkpointList);
    DecoderLM baseModel = loadModel(c.base);
    std::vector<DecoderLM> models;
    std::vector<ExpertFfn> pool;
    std::vector<LoraExpert> loraPool;
    LoraOptions lo;
    for (int64_t i : chosen) {
      const fs::path& ck = c.checkpoints[i];
      models.push_back(loadModel(ck));
      checkSameArchitecture(baseModel->config(), models.back()->config(), "UpIT checkpoint " + ck.string());
      if (lora) {
        UPCYCLE_CHECK(loraOf(models.back()).enabled(), "upit_lora: checkpoint ", ck.string(),
                      " is not a LoRA adapter (give the experiment a lora: section, so that the SFT trains adapters)");
        LoraOptions mine;
        loraPool.push_back(loraExpertOf(models.back(), mine));
        UPCYCLE_CHECK(loraPool.size() == 1 || (mine.rank == lo.rank && mine.targets == lo.targets &&
                                             std::abs(mine.scale() - lo.scale()) < 1e-12),
                      "upit_lora: checkpoint ", ck.string(), " has other LoRA settings (rank, alpha or targets) than the first");
        lo = mine;
      }
      // The adapters' updates go into the weights: attention's into the averaged shared weights, and for
      // upit the FFN expert is the adapted FFN.
      mergeLora(models.back());
      if (!lora) pool.push_back(ffnOf(*models.back()));
      summary.checkpointsUsed.push_back(i + 1);
    }
    stage(m, "experts from SFT checkpoints " + [&] {
      std::string s;
      for (int64_t i : chosen) s += (s.empty() ? "" : ", ") + c.checkpoints[i].filename().string();
      return s;
    }());
    const ExpertFfn baseFfn = ffnOf(*baseModel);
    const int64_t have = static_cast<int64_t>(lora ? loraPool.size() : pool.size());
    if (r.expand && r.experts > have) {
      GaConfig ga;
      ga.parentRule = r.parentRule;
      ga.distance = r.distance;
      ga.alphaMin = r.alphaMin;
      ga.alphaMax = r.alphaMax;
      ga.dareP = r.dareP;
      ga.dareRescale = r.dareRescale;
      ga.mergeOp = r.mergeOp;
      const auto lineage = lora ? expandLoraPool(loraPool, baseFfn, r.experts, ga, lo.scale(), lo.rank, gen)
                                : expandPool(pool, baseFfn, r.experts, ga, gen);
      summary.lineage = lineage;
      stage(m, "grew " + std::to_string(lineage.size()) + " experts by merging (" + r.mergeOp + " + DARE p=" +
                   std::to_string(r.dareP).substr(0, 4) + (lora ? ", back to rank " + std::to_string(lo.rank) + " by SVD" : "") + ")");
    }
    std::vector<DecoderLMImpl*> nonFfn;
    if (r.nonFfn == "last") nonFfn.push_back(models.back().get());
    else for (auto& x : models) nonFfn.push_back(x.get());
    DecoderLM moe = lora ? assembleLoraMoe(nonFfn, *baseModel, loraPool, lo, shapeOf(r), r.routerInit, gen)
                         : assembleMoe(nonFfn, pool, shapeOf(r), r.routerInit, gen);
    if (r.preoptimize && !c.train.empty()) {
      // Seed set: a random seed_fraction of the training records, at least min_seed.
      const int64_t N = static_cast<int64_t>(c.train.size());
      const int64_t k = std::min<int64_t>(N, std::max<int64_t>(r.minSeed, std::llround(r.seedFraction * N)));
      auto pick = torch::randperm(N, gen, torch::kLong).narrow(0, 0, k);
      std::vector<TokenRecord> seeds;
      for (int64_t i = 0; i < k; ++i) seeds.push_back(c.train[pick[i].item<int64_t>()]);
      moe->to(resolveDevice(c.device));
      std::vector<int64_t> bucket;
      if (r.seedAssign == "random") {  // the ablation: each seed sample to an expert drawn uniformly
        const auto draw = torch::randint(r.experts, {k}, gen, torch::kLong);
        for (int64_t i = 0; i < k; ++i) bucket.push_back(draw[i].item<int64_t>());
      } else if (lora) {
        bucket = assignSeedsWith(*moe, r.experts, installLoraExpert(*baseModel, loraPool, lo.scale()), seeds, c.batchSize);
      } else {
        bucket = assignSeeds(*moe, pool, seeds, c.batchSize);
      }
      summary.seedBuckets.assign(r.experts, 0);
      for (size_t i = 0; i < seeds.size(); ++i) {
        seeds[i].tag = bucket[i];
        summary.seedBuckets[bucket[i]] += 1;
      }
      std::string counts;
      for (int64_t b : summary.seedBuckets) counts += (counts.empty() ? "" : " ") + std::to_string(b);
      stage(m, "seed data (" + std::to_string(k) + " samples" + (r.seedAssign == "random" ? ", assigned at random" : "") +
                   ") per expert: " + counts);
      if (std::count(summary.seedBuckets.begin(), summary.seedBuckets.end(), 0) > 0 && c.observer)
        c.observer->onLog("warning: some experts won no seed sample (empty buckets)");
      TrainOptions o;
      o.batchSize = c.batchSize;
      o.device = c.device;
      o.precision = c.precision;
      o.seed = r.seed;
      o.epochs = r.routerEpochs;
      o.lr = r.routerLr;
      o.warmupSteps = 0;
      preoptimizeRouters(moe, seeds, r.clsWeightA, o, c.observer, c.cancel);
    }
    return moe;
  }
  if (m == "loramoe") {
    // LoRAMoE: fresh LoRA experts and routers on the pretrained base, trained by the post stage alone.
    DecoderLM base = loadModel(c.base);
    return freshLoraMoe(*base, c.lora, shapeOf(r), r.routerInit, gen);
  }
  DecoderLM dense = loadMerged(c.start);
  if (m == "sparse") return sparseUpcycle(*dense, shapeOf(r), r.routerInit, gen);
  if (m == "drop") return dropUpcycle(*dense, shapeOf(r), r.routerInit, r.ratio, r.sharedIndices, gen);
  if (m == "noise") return noiseUpcycle(*dense, shapeOf(r), r.routerInit, r.noiseStd, r.noiseFraction, gen);
  if (m == "scratch") return scratchMoe(dense->config(), shapeOf(r), r.routerInit, gen);
  throw InternalError("unknown method " + m);
}
}  // namespace

namespace {
class Recorder;
// What a repeat computed that a later repeat may take instead of recomputing: the stages whose seed the
// experiment pins (and whose inputs are pinned too) give the same result in every repeat.
struct SharedStages {
  fs::path trainFile, evalFile;  // generated data, data.seed pinned
  fs::path base;                 // pretrained base, base.pretrain.seed pinned
  std::vector<fs::path> sft;     // SFT checkpoints, sft.seed pinned on pinned data and base
};
ExperimentReport runExperimentStages(const Experiment& e, PipelineObserver* obs, const std::atomic<bool>* cancel,
                                     Recorder& recorder, SharedStages& shared,
                                     const std::vector<std::pair<std::string, std::string>>& repeatParams);
}  // namespace

namespace {

// Forwards every event to the user's observer and records it in the store (when there is one).
class Recorder : public PipelineObserver {
 public:
  Recorder(PipelineObserver* user, RunStore* store) : m_user(user), m_store(store) {}
  // A destructor must not throw (that ends the process): whatever could not be flushed by now is lost
  // with the run that failed (scripts/disk_full.sh found a full store doing exactly that).
  ~Recorder() override {
    try {
      flush();
    } catch (...) {
    }
  }
  void begin(const std::string& name, const std::string& experiment, const std::string& method, uint64_t seed,
             const std::string& device, const std::vector<std::pair<std::string, std::string>>& params) {
    flush();
    m_run = m_store ? m_store->beginRun(name, experiment, method, seed, device, params) : 0;
  }
  void end(const std::string& status) {
    flush();
    if (m_store && m_run) m_store->finishRun(m_run, status);
    m_run = 0;
  }
  // On the way out of an error: record the status if the store can still be written, and never
  // replace the error being reported by the store's own (on a full disk both fail). A run whose
  // status could not be written shows as interrupted once its process is gone.
  void endAfterError(const std::string& status) noexcept {
    try {
      flush();
    } catch (...) {
    }
    try {
      if (m_store && m_run) m_store->finishRun(m_run, status);
    } catch (...) {
    }
    m_run = 0;
  }
  int64_t run() const { return m_run; }
  RunStore* store() const { return m_run ? m_store : nullptr; }
  void flush() {
    std::vector<MetricPoint> batch;
    batch.swap(m_buffer);  // a batch the store refused is not offered again
    if (m_store && m_run && !batch.empty()) m_store->addMetrics(m_run, batch);
  }
  void onStep(const StepMetrics& m) override {
    if (m_user) m_user->onStep(m);
    if (!m_store || !m_run) return;
    for (auto [k, v] : {std::pair<const char*, double>{"loss", m.loss}, {"lm_loss", m.lmLoss}, {"aux_loss", m.auxLoss},
                        {"z_loss", m.zLoss}, {"cls_loss", m.extraLoss}, {"lr", m.lr}, {"grad_norm", m.gradNorm},
                        {"tokens_per_s", m.tokensPerSec}})
      m_buffer.push_back({m.stage, k, m.step, v});
    if (m.step % 10 == 0 || m.step == m.totalSteps) flush();  // a crash loses at most 10 steps
  }
  void onCheckpoint(const std::filesystem::path& f, int64_t step) override {
    if (m_user) m_user->onCheckpoint(f, step);
    if (m_store && m_run) m_store->addArtifact(m_run, "checkpoint", f.string());
  }
  void onEpochEnd(int64_t e, double l) override {
    if (m_user) m_user->onEpochEnd(e, l);
  }
  void onLog(const std::string& msg) override {
    if (m_user) m_user->onLog(msg);
    if (m_store && m_run) m_store->addLog(m_run, msg);
  }
  void onStage(const std::string& stage, const std::string& detail) override {
    if (m_user) m_user->onStage(stage, detail);
    if (m_store && m_run) m_store->addLog(m_run, stage + ": " + detail);
  }
  void onRunFinished(const RunSummary& r) override {
    if (m_user) m_user->onRunFinished(r);
  }
  void onRepeatFinished(const ExperimentReport& r) override {
    if (m_user) m_user->onRepeatFinished(r);
  }

 private:
  PipelineObserver* m_user;
  RunStore* m_store;
  int64_t m_run = 0;
  std::vector<MetricPoint> m_buffer;
};

// The experiment's settings flattened, keeping only this run's entry of `runs` (as "run.*").
std::vector<std::pair<std::string, std::string>> runParams(const Experiment& e, int64_t index) {
  std::vector<std::pair<std::string, std::string>> out;
  if (const DistInfo d = distInfo(); d.active) {  // how the run was trained, beside what it was
    out.emplace_back("distributed.world_size", std::to_string(d.world));
    out.emplace_back("distributed.backend", d.backend);
  }
  // What `precision: auto` meant on this machine (it depends on the CPU).
  out.emplace_back("precision.resolved", resolvePrecision(e.precision, resolveDevice(e.device).is_cuda()));
  const std::string mine = "runs[" + std::to_string(index) + "]";
  for (auto& [k, v] : flattenYaml(experimentYaml(e))) {
    if (k.rfind("runs[", 0) != 0) out.emplace_back(k, v);
    else if (index >= 0 && k.rfind(mine, 0) == 0) out.emplace_back("run" + k.substr(mine.size()), v);
  }
  // The file names a run's seed only when it pins one; the store keeps the seed the run used.
  if (index >= 0 && !e.runs[index].seedSet) out.emplace_back("run.seed", std::to_string(e.runs[index].seed));
  return out;
}

void recordRun(RunStore& store, int64_t id, const RunSummary& s) {
  std::vector<EvalRow> rows;
  auto row = [](const std::string& d, const EvalFigures& f) {
    return EvalRow{d, f.loss, f.perplexity, f.answered ? f.accuracy : 0.0, f.tokens, f.answered};
  };
  rows.push_back(row("", s.eval.overall));
  for (const auto& [d, f] : s.eval.domains) rows.push_back(row(d, f));
  store.addEval(id, rows);
  if (!s.model.empty()) store.addArtifact(id, "model", s.model.string());
  if (!s.lineage.empty()) store.addLineage(id, s.lineage);
  std::vector<BlobRow> blobs;
  auto add = [&](const std::string& kind, int64_t layer, const std::string& domain, const Matrix& m) {
    if (!m.empty()) blobs.push_back({kind, layer, domain, m.rows, m.cols, m.values});
  };
  // Kinds: weight_similarity, delta_similarity, output_cka, routing_shares (per domain too),
  // coselection, routing_stats; "converted/<kind>" holds the same right after conversion.
  for (const auto& [prefix, a] : {std::pair<std::string, const AnalysisReport*>{"", &s.analysis}, {"converted/", &s.converted}}) {
    for (const auto& sim : a->similarity) {
      add(prefix + "weight_similarity", sim.layer, "", sim.weights);
      add(prefix + "delta_similarity", sim.layer, "", sim.deltas);
      add(prefix + "output_cka", sim.layer, "", sim.cka);
    }
    for (const auto& rl : a->routing) {
      add(prefix + "routing_shares", rl.layer, "", Matrix{1, static_cast<int64_t>(rl.shares.size()), rl.shares});
      for (const auto& [d, sh] : rl.domainShares)
        add(prefix + "routing_shares", rl.layer, d, Matrix{1, static_cast<int64_t>(sh.size()), sh});
      add(prefix + "coselection", rl.layer, "", rl.coselection);
      // 1 x 3: mean per-token router entropy, entropy of the shares (nats), imbalance (max / mean share).
      add(prefix + "routing_stats", rl.layer, "", Matrix{1, 3, {rl.entropy, rl.shareEntropy, rl.imbalance}});
    }
  }
  if (!s.seedBuckets.empty()) {
    std::vector<double> b(s.seedBuckets.begin(), s.seedBuckets.end());
    add("seed_buckets", -1, "", Matrix{1, static_cast<int64_t>(b.size()), b});
  }
  if (!blobs.empty()) store.addBlobs(id, blobs);
  if (!s.analysis.similarity.empty())
    store.addMetrics(id, {{"analysis", "diversity", 0, s.analysis.diversity},
                          {"analysis", "converted_diversity", 0, s.converted.diversity}});

  store.addMetrics(id, {{"eval", "loss", 0, s.eval.overall.loss},
                        {"eval", "accuracy", 0, s.eval.overall.answered ? s.eval.overall.accuracy : 0.0}});
}

}  // namespace

ExperimentReport runExperiment(const Experiment& e, PipelineObserver* userObs, const std::atomic<bool>* cancel,
                               RunStore* store) {
  validateExperiment(e);  // bad settings are refused before anything is recorded or written
  // Data-parallel: join the group the environment names (torchrun, SLURM, or our own workers), or
  // with nproc > 1 start it: this process is rank 0 and ranks 1.. run `upcycle run` on the same
  // experiment, written to a temporary file.
  std::optional<DistScope> dist;
  std::optional<TempFile> workerExperiment;
  if (!distInfo().active && (e.nproc > 1 || distFromEnvironment().world > 1)) {
    DistLaunch l;
    l.nproc = e.nproc;
    l.device = e.device;
    if (distFromEnvironment().world == 1) {
      workerExperiment.emplace("upcycle-experiment", ".yaml", experimentYaml(e));
      l.childArgs = {cliExecutable().string(), "run", workerExperiment->path().string(), "--out", e.out.string()};
      if (e.threads > 0) l.childArgs.insert(l.childArgs.end(), {"--threads", std::to_string(e.threads)});
    }
    dist.emplace(l);
  }
  if (!isDistWriter()) store = nullptr;  // rank 0 alone records
  Recorder recorder(userObs, store);
  PipelineObserver* obs = &recorder;
  const std::vector<uint64_t> seeds = repeatSeeds(e);
  ExperimentReport total;
  total.out = e.out;
  SharedStages shared;
  try {
    for (size_t i = 0; i < seeds.size(); ++i) {
      if (cancel && cancel->load()) {
        total.cancelled = true;
        break;
      }
      const Experiment one = experimentForSeed(e, seeds[i]);
      std::vector<std::pair<std::string, std::string>> repeat;
      if (seeds.size() > 1) {
        std::string list;
        for (uint64_t s : seeds) list += (list.empty() ? "" : ",") + std::to_string(s);
        repeat = {{"repeat.index", std::to_string(i)}, {"repeat.count", std::to_string(seeds.size())}, {"repeat.seeds", list}};
        obs->onStage("seed", "seed " + std::to_string(seeds[i]) + " (" + std::to_string(i + 1) + " of " +
                                 std::to_string(seeds.size()) + ") into " + one.out.string());
      }
      auto params = runParams(one, -1);
      params.insert(params.end(), repeat.begin(), repeat.end());
      recorder.begin(e.name + ":base", e.name, "base", one.seed, e.device, params);
      ExperimentReport rep = runExperimentStages(one, obs, cancel, recorder, shared, repeat);
      recorder.end(rep.cancelled ? "cancelled" : "finished");
      if (seeds.size() > 1 && !rep.cancelled) obs->onRepeatFinished(rep);
      total.baseModel = rep.baseModel;
      total.sftCheckpoints = rep.sftCheckpoints;
      for (auto& r : rep.runs) total.runs.push_back(std::move(r));
      if (rep.cancelled) {
        total.cancelled = true;
        break;
      }
      total.seeds.push_back(seeds[i]);
    }
    return total;
  } catch (const std::exception& ex) {
    recorder.endAfterError("failed");
    if (dist) dist->fail(ex.what());
    throw;
  } catch (...) {
    recorder.endAfterError("failed");
    throw;
  }
}

namespace {
ExperimentReport runExperimentStages(const Experiment& e, PipelineObserver* obs, const std::atomic<bool>* cancel,
                                     Recorder& recorder, SharedStages& shared,
                                     const std::vector<std::pair<std::string, std::string>>& repeatParams) {
  validateExperiment(e);
  // Each stage's seed: the repeat's, unless the file pins the stage.
  const uint64_t dataSeed = e.dataSeed.orRepeat(e.seed), baseSeed = e.baseSeed.orRepeat(e.seed),
                 sftSeed = e.sftSeed.orRepeat(e.seed);
  const bool dataPinned = e.generateData ? e.dataSeed.set : (e.dataSeed.set || !e.evalData.empty());
  const bool basePinned = !e.pretrain || e.baseSeed.set;
  if (e.threads > 0) configureRuntime(e.threads);
  ExperimentReport report;
  report.out = e.out;
  writerWrites("writing experiment.yaml", [&] {  // data-parallel: rank 0 writes, the others wait
    fs::create_directories(e.out);
    writeFileAtomically(e.out / "experiment.yaml", experimentYaml(e));
  });
  BuildInputs c;
  c.device = e.device;
  c.precision = e.precision;
  c.batchSize = e.post.batchSize;
  c.lora = e.lora;
  c.observer = obs;
  c.cancel = cancel;
  std::vector<TokenRecord> evalRecords;
  auto stage = [&](const std::string& s, const std::string& d) {
    if (obs) obs->onStage(s, d);
  };

  // Data.
  fs::path trainFile = e.trainData, evalFile = e.evalData;
  if (e.generateData && dataPinned && !shared.trainFile.empty()) {
    trainFile = shared.trainFile;
    evalFile = shared.evalFile;
    stage("data", "the data of pinned seed " + std::to_string(dataSeed) + " in " + trainFile.parent_path().string());
  } else if (e.generateData) {
    trainFile = e.out / "data/train.jsonl";
    evalFile = e.out / "data/eval.jsonl";
    writerWrites("writing the data", [&] {
      fs::create_directories(e.out / "data");
      writeFileAtomically(trainFile, demoInstructionsJsonl(generateDemoInstructions(dataSeed + 1, e.perDomain)));
      writeFileAtomically(evalFile, demoInstructionsJsonl(generateDemoInstructions(dataSeed + 7919, e.evalPerDomain)));
    });
    stage("data", std::to_string(e.perDomain * 7) + " training and " + std::to_string(e.evalPerDomain * 7) +
                        " evaluation records in " + (e.out / "data").string());
    if (dataPinned) {
      shared.trainFile = trainFile;
      shared.evalFile = evalFile;
    }
  }

  // Base.
  if (e.pretrain && basePinned && !shared.base.empty()) {
    c.base = shared.base;
    stage("pretrain", "the base of pinned seed " + std::to_string(baseSeed) + ": " + c.base.string());
  } else if (e.pretrain) {
    stage("pretrain", "a tiny byte-level Llama on the built-in corpus");
    PretrainOptions p;
    p.out = e.out / "base";
    p.documents = e.pretrainDocuments;
    p.model.hiddenSize = e.hidden;
    p.model.intermediateSize = e.ff;
    p.model.numLayers = e.layers;
    p.model.numHeads = e.heads;
    p.model.numKvHeads = e.kvHeads;
    p.model.promptTemplate = e.promptTemplate;
    p.blockSize = e.block;
    p.train = stageOptions(StageTraining{1.0, e.pretrainSteps, 0, e.pretrainLr, e.pretrainBatch}, e, baseSeed, {}, "pretrain");
    TrainResult r = pretrainTinyBase(p, obs, cancel);
    if (r.cancelled || r.checkpoints.empty()) {
      report.cancelled = true;
      return report;
    }
    c.base = r.checkpoints.back();
    if (basePinned) shared.base = c.base;
  } else {
    c.base = e.basePath;
  }
  report.baseModel = c.base;

  DataOptions d;
  d.path = trainFile;
  d.promptTemplate = e.promptTemplate;
  d.maxLength = e.maxLength;
  d.valFraction = evalFile.empty() ? 0.1 : 0.0;
  d.splitSeed = dataSeed;
  PreparedData train = prepareData(c.base, d);
  c.train = std::move(train.train);
  if (evalFile.empty()) {
    evalRecords = std::move(train.val);
  } else {
    d.path = evalFile;
    d.valFraction = 0;
    evalRecords = prepareData(c.base, d).train;
  }
  auto tok = loadTokenizer(c.base);

  // Dense instruction tuning with intermediate checkpoints.
  c.start = c.base;
  if (e.sft && !e.sftCheckpoints.empty()) {
    stage("sft", "using " + std::to_string(e.sftCheckpoints.size()) + " existing checkpoints (no training)");
    c.checkpoints = e.sftCheckpoints;
    report.sftCheckpoints = c.checkpoints;
    c.start = c.checkpoints.back();
  } else if (e.sft && e.sftSeed.set && dataPinned && basePinned && !shared.sft.empty()) {
    c.checkpoints = shared.sft;
    report.sftCheckpoints = c.checkpoints;
    c.start = c.checkpoints.back();
    stage("sft", "the checkpoints of pinned seed " + std::to_string(sftSeed) + " in " + c.start.parent_path().string());
  } else if (e.sft) {
    stage("sft", "dense instruction tuning, a checkpoint every " + std::to_string(e.sftTraining.saveEvery).substr(0, 4) + " epoch");
    TrainOptions o = stageOptions(e.sftTraining, e, sftSeed, e.out / "sft", "sft");
    o.tokenizerFrom = c.base;
    o.lora = e.lora;  // rank 0: full SFT; else PEFT adapter checkpoints on the base
    std::error_code ec;
    o.loraBase = fs::weakly_canonical(fs::absolute(c.base), ec);
    TrainResult r = withTorchErrors("sft", [&] {
      DecoderLM m = loadModel(c.base);
      return trainDecoder(m, c.train, o, obs, cancel);
    });
    if (r.cancelled) {
      report.cancelled = true;
      return report;
    }
    for (const auto& ck : listTrainerCheckpoints(e.out / "sft")) c.checkpoints.push_back(ck.path);
    report.sftCheckpoints = c.checkpoints;
    c.start = c.checkpoints.back();
    if (e.sftSeed.set && dataPinned && basePinned) shared.sft = c.checkpoints;
  }

  // Post-training data: the instruction data, or (post.corpus) packed blocks of the built-in corpus with
  // a held-out part for the evaluation loss, drawn from the data seed.
  const std::vector<TokenRecord>* postTrain = &c.train;
  const std::vector<TokenRecord>* postEval = &evalRecords;
  std::vector<TokenRecord> corpusTrain, corpusEval;
  if (e.postCorpusDocuments > 0) {
    const fs::path trainCorpus = e.out / "data/post-corpus.jsonl", evalCorpus = e.out / "data/post-corpus-eval.jsonl";
    const int64_t evalDocs = std::max<int64_t>(8, e.postCorpusDocuments / 10);
    writerWrites("writing the post-training corpus", [&] {
      fs::create_directories(e.out / "data");
      writeFileAtomically(trainCorpus, demoCorpusJsonl(generateDemoCorpus(dataSeed + 104729, e.postCorpusDocuments)));
      writeFileAtomically(evalCorpus, demoCorpusJsonl(generateDemoCorpus(dataSeed + 1299709, evalDocs)));
    });
    DataOptions cd;
    cd.path = trainCorpus;
    cd.packBlock = e.postCorpusBlock;
    corpusTrain = prepareData(c.base, cd).train;
    cd.path = evalCorpus;
    corpusEval = prepareData(c.base, cd).train;
    postTrain = &corpusTrain;
    postEval = &corpusEval;
    stage("data", "post-training on " + std::to_string(corpusTrain.size()) + " corpus blocks of " +
                      std::to_string(e.postCorpusBlock) + " tokens (" + std::to_string(corpusEval.size()) + " held out)");
  }

  // The runs, each post-trained with the same budget. The shared stages' record ends here.
  recorder.end("finished");
  for (size_t runIndex = 0; runIndex < e.runs.size(); ++runIndex) {
    const RunSpec& r = e.runs[runIndex];
    if (cancel && cancel->load()) {
      report.cancelled = true;
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    RunSummary s;
    s.name = r.name;
    s.method = r.method;
    s.seed = e.seed;
    // Stored under the repeat's seed (the run's own, when pinned, is in its params as run.seed).
    auto params = runParams(e, static_cast<int64_t>(runIndex));
    params.insert(params.end(), repeatParams.begin(), repeatParams.end());
    recorder.begin(r.name, e.name, r.method, e.seed, e.device, params);
    stage("run", r.name + " (" + r.method + ")");
    TrainResult post = withTorchErrors(r.name.c_str(), [&] {
      torch::Generator gen = at::detail::createCPUGenerator(r.seed);
      DecoderLM model = buildRunModel(r, c, gen, s);
      std::vector<TokenRecord> probe(postEval->begin(), postEval->begin() + std::min<size_t>(postEval->size(), 256));
      DecoderLM reference{nullptr};
      if (model->config().isMoe()) {
        // The dense model the experts are compared with: the base for LoRA experts (their updates are the
        // deltas), else the model the run started from (an adapter's updates merged).
        reference = loadModel(model->config().loraExperts.enabled() ? c.base : c.start, {resolveDevice(e.device), torch::kFloat});
        mergeLora(reference);
        model->to(resolveDevice(e.device));
        s.converted = analyzeDecoder(*model, reference->config().isMoe() ? nullptr : reference.get(), probe);
      }
      TrainOptions o = stageOptions(e.post, e, r.seed, e.out / "runs" / r.name, "post:" + r.name);
      o.tokenizerFrom = c.base;
      TrainResult tr = trainDecoder(model, *postTrain, o, obs, cancel);
      if (!tr.cancelled) {
        EvalOptions eo;
        eo.accuracy = e.evalAccuracy && e.postCorpusDocuments == 0;  // corpus blocks have no answers
        eo.maxNewTokens = e.maxNewTokens;
        eo.batchSize = e.post.batchSize;
        eo.precision = e.precision;
        s.eval = evaluateRecords(*model, *postEval, eo, tok.get());
        if (reference) s.analysis = analyzeDecoder(*model, reference->config().isMoe() ? nullptr : reference.get(), probe);
      }
      return tr;
    });
    if (post.cancelled) {
      recorder.end("cancelled");
      report.cancelled = true;
      break;
    }
    s.steps = post.steps;
    s.finalTrainLoss = post.finalLoss;
    s.model = post.checkpoints.empty() ? fs::path() : post.checkpoints.back();
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    recorder.flush();
    if (RunStore* st = recorder.store()) {
      s.storeId = recorder.run();
      recordRun(*st, s.storeId, s);
    }
    recorder.end("finished");
    if (obs) obs->onRunFinished(s);
    report.runs.push_back(std::move(s));
  }
  return report;
}

}  // namespace

namespace {
// Several seeds: per run name and domain, the mean across seeds and the half-width of its 95% t interval.
std::string seedsTable(const ExperimentReport& r, const std::set<uint64_t>& seeds) {
  std::vector<std::string> names;
  std::map<std::string, std::vector<const RunSummary*>> byName;
  std::set<std::string> domains;
  for (const auto& run : r.runs) {
    if (!byName.count(run.name)) names.push_back(run.name);
    byName[run.name].push_back(&run);
    for (const auto& [d, f] : run.eval.domains) domains.insert(d);
  }
  const bool acc = r.runs[0].eval.overall.answered > 0;
  std::ostringstream os;
  os << (acc ? "Exact-match accuracy (%)" : "Evaluation loss") << " per domain: mean +- half-width of the 95% t interval over "
     << seeds.size() << " seeds (";
  for (auto it = seeds.begin(); it != seeds.end(); ++it) os << (it == seeds.begin() ? "" : ", ") << *it;
  os << "), after the same post-training budget:\n\n";
  os << std::left << std::setw(12) << "domain";
  for (const auto& n : names) os << std::setw(20) << n;
  os << "\n";
  auto cell = [&](const std::vector<const RunSummary*>& runs, const std::string& domain) -> std::string {
    std::vector<double> v;
    for (const RunSummary* run : runs) {
      const EvalFigures* f = domain.empty() ? &run->eval.overall
                                            : (run->eval.domains.count(domain) ? &run->eval.domains.at(domain) : nullptr);
      if (f) v.push_back(acc ? 100.0 * f->accuracy : f->loss);
    }
    if (v.empty()) return "-";
    const SampleStats st = sampleStats(v);
    std::ostringstream c;
    c << std::fixed << std::setprecision(acc ? 1 : 3) << st.mean;
    if (st.n >= 2) c << " +- " << (st.hi - st.mean);
    return c.str();
  };
  for (const auto& d : domains) {
    os << std::left << std::setw(12) << d;
    for (const auto& n : names) os << std::setw(20) << cell(byName[n], d);
    os << "\n";
  }
  os << std::left << std::setw(12) << "overall";
  for (const auto& n : names) os << std::setw(20) << cell(byName[n], "");
  os << "\n" << std::setw(12) << "time";
  for (const auto& n : names) {
    double secs = 0;
    for (const RunSummary* run : byName[n]) secs += run->seconds;
    std::ostringstream t;
    t << std::fixed << std::setprecision(0) << secs / byName[n].size() << " s/seed";
    os << std::setw(20) << t.str();
  }
  os << "\n";
  return os.str();
}
}  // namespace

std::string experimentTable(const ExperimentReport& r) {
  std::ostringstream os;
  if (r.runs.empty()) return "no finished runs\n";
  std::set<uint64_t> seeds;
  for (const auto& run : r.runs) seeds.insert(run.seed);
  if (seeds.size() > 1) return seedsTable(r, seeds);
  std::set<std::string> domains;
  for (const auto& run : r.runs)
    for (const auto& [d, f] : run.eval.domains) domains.insert(d);
  const bool acc = r.runs[0].eval.overall.answered > 0;
  os << "Exact-match accuracy (loss) per domain, after the same post-training budget:\n\n";
  os << std::left << std::setw(12) << "domain";
  for (const auto& run : r.runs) os << std::setw(20) << run.name;
  os << "\n";
  auto cell = [&](const EvalFigures& f) {
    std::ostringstream c;
    c << std::fixed;
    if (acc) c << std::setprecision(1) << 100.0 * f.accuracy << "% ";
    c << "(" << std::setprecision(3) << f.loss << ")";
    return c.str();
  };
  for (const auto& d : domains) {
    os << std::left << std::setw(12) << d;
    for (const auto& run : r.runs) os << std::setw(20) << (run.eval.domains.count(d) ? cell(run.eval.domains.at(d)) : "-");
    os << "\n";
  }
  os << std::left << std::setw(12) << "overall";
  for (const auto& run : r.runs) os << std::setw(20) << cell(run.eval.overall);
  os << "\n" << std::setw(12) << "time";
  for (const auto& run : r.runs) {
    std::ostringstream t;
    t << std::fixed << std::setprecision(0) << run.seconds << " s, " << run.steps << " steps";
    os << std::setw(20) << t.str();
  }
  os << "\n";
  return os.str();
}

}  // namespace upcycle
