#include "train/trainer.h"
#include "model/lora.h"

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "api/runtime.h"
#include "api/torch_errors.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "api/models.h"
#include "data/demo_data.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "dist/process_group.h"
#include "dist/reducer.h"
#include "formats/trainer_outputs.h"
#include "model/model_io.h"
#include "train/fused_adamw.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

double learningRateAt(const TrainOptions& o, int64_t step, int64_t total) {
  if (o.warmupSteps > 0 && step < o.warmupSteps) return o.lr * double(step + 1) / double(o.warmupSteps);
  const int64_t decaySteps = std::max<int64_t>(1, total - o.warmupSteps - 1);
  const double progress = std::min(1.0, double(step - o.warmupSteps) / double(decaySteps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr * (o.minLrRatio + (1.0 - o.minLrRatio) * cosine);
}

void validateTrainOptions(const TrainOptions& o) {
  UPCYCLE_CHECK(o.lr > 0 && std::isfinite(o.lr), "lr must be positive, got ", o.lr);
  UPCYCLE_CHECK(o.beta1 >= 0 && o.beta1 < 1, "beta1 must be in [0, 1), got ", o.beta1);
  UPCYCLE_CHECK(o.beta2 >= 0 && o.beta2 < 1, "beta2 must be in [0, 1), got ", o.beta2);
  UPCYCLE_CHECK(o.eps > 0, "eps must be positive, got ", o.eps);
  UPCYCLE_CHECK(o.weightDecay >= 0, "weight_decay must be non-negative, got ", o.weightDecay);
  UPCYCLE_CHECK(o.warmupSteps >= 0, "warmup_steps must be non-negative, got ", o.warmupSteps);
  UPCYCLE_CHECK(o.minLrRatio >= 0 && o.minLrRatio <= 1, "min_lr_ratio must be in [0, 1], got ", o.minLrRatio);
  UPCYCLE_CHECK(o.batchSize >= 1, "batch_size must be at least 1, got ", o.batchSize);
  UPCYCLE_CHECK(o.gradAccum >= 1, "grad_accum must be at least 1, got ", o.gradAccum);
  UPCYCLE_CHECK(o.maxSteps > 0 || o.epochs > 0, "epochs must be positive, got ", o.epochs);
  UPCYCLE_CHECK(o.maxSteps >= 0, "max_steps must be non-negative, got ", o.maxSteps);
  UPCYCLE_CHECK(o.maxLength == 0 || o.maxLength >= 2, "max_length must be 0 or at least 2, got ", o.maxLength);
  UPCYCLE_CHECK(o.auxLossCoef >= 0, "aux_loss_coef must be non-negative, got ", o.auxLossCoef);
  UPCYCLE_CHECK(o.zLossCoef >= 0, "z_loss_coef must be non-negative, got ", o.zLossCoef);
  UPCYCLE_CHECK(o.saveSteps >= 0, "save_steps must be non-negative, got ", o.saveSteps);
  UPCYCLE_CHECK(o.saveEveryEpochFraction >= 0 && o.saveEveryEpochFraction <= 1,
                "save_every (fraction of an epoch) must be in [0, 1], got ", o.saveEveryEpochFraction);
  UPCYCLE_CHECK(!(o.resume && o.outDir.empty()), "resume needs an output folder");
  resolvePrecision(o.precision, false);  // refuses anything but auto, fp32, bf16
  validateLoraOptions(o.lora, "lora");
}

std::vector<size_t> epochOrder(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed + static_cast<uint64_t>(epoch));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

Batch makeBatch(const std::vector<TokenRecord>& data, const std::vector<size_t>& rows, int64_t maxLength) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 0;
  for (size_t r : rows) {
    int64_t n = static_cast<int64_t>(data[r].inputIds.size());
    T = std::max(T, maxLength > 0 ? std::min(n, maxLength) : n);
  }
  std::vector<int64_t> ids(B * T, 0), labels(B * T, -100), mask(B * T, 0), tags(B, -1);
  Batch b;
  for (int64_t i = 0; i < B; ++i) {
    const TokenRecord& rec = data[rows[i]];
    tags[i] = rec.tag;
    const auto& lab = rec.labels.empty() ? rec.inputIds : rec.labels;
    const int64_t n = std::min<int64_t>(rec.inputIds.size(), T);
    for (int64_t t = 0; t < n; ++t) {
      ids[i * T + t] = rec.inputIds[t];
      labels[i * T + t] = lab[t];
      mask[i * T + t] = 1;
      if (t > 0 && lab[t] != -100) ++b.predictedTokens;
    }
    b.inputTokens += n;
  }
  auto opt = torch::TensorOptions().dtype(torch::kLong);
  b.ids = torch::tensor(ids, opt).view({B, T});
  b.labels = torch::tensor(labels, opt).view({B, T});
  b.mask = torch::tensor(mask, opt).view({B, T});
  b.tags = torch::tensor(tags, opt);
  return b;
}

TokenCounts countTokens(const std::vector<TokenRecord>& data, const size_t* rows, size_t count, int64_t maxLength) {
  TokenCounts c;
  for (size_t i = 0; i < count; ++i) {
    const TokenRecord& rec = data[rows[i]];
    const auto& lab = rec.labels.empty() ? rec.inputIds : rec.labels;
    const int64_t size = static_cast<int64_t>(rec.inputIds.size());
    const int64_t n = maxLength > 0 ? std::min(size, maxLength) : size;  // as makeBatch truncates
    c.input += n;
    for (int64_t t = 1; t < n; ++t) c.predicted += lab[t] != -100;
  }
  return c;
}

namespace {

// Batches travel to a GPU from pinned memory without blocking the host.
torch::Tensor toDevice(const torch::Tensor& t, const torch::Device& dev) {
  return dev.is_cuda() ? t.pin_memory().to(dev, /*non_blocking=*/true) : t;
}

bool nameMatches(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns)
    if (name.find(p) != std::string::npos) return true;
  return false;
}

json metricsJson(const StepMetrics& m) {
  return {{"step", m.step}, {"epoch", m.epoch}, {"loss", m.loss}, {"lm_loss", m.lmLoss},
          {"aux_loss", m.auxLoss}, {"z_loss", m.zLoss}, {"learning_rate", m.lr}, {"grad_norm", m.gradNorm},
          {"tokens_per_s", m.tokensPerSec}, {"stage", m.stage}};
}

StepMetrics metricsFromJson(const json& j) {
  StepMetrics m;
  m.step = j.value("step", int64_t(0));
  m.epoch = j.value("epoch", 0.0);
  m.loss = j.value("loss", 0.0);
  m.lmLoss = j.value("lm_loss", m.loss);
  m.auxLoss = j.value("aux_loss", 0.0);
  m.zLoss = j.value("z_loss", 0.0);
  m.lr = j.value("learning_rate", 0.0);
  m.gradNorm = j.value("grad_norm", 0.0);
  m.tokensPerSec = j.value("tokens_per_s", 0.0);
  m.stage = j.value("stage", std::string());
  return m;
}

// torch::save(optimizer, path) on a full disk throws from the zip writer's destructor, which ends the
// process (std::terminate). The archive is streamed into an AtomicFile instead: a failed write is
// remembered (the zip writer is told all went well, so it finishes quietly) and reported after.
void saveOptimizer(torch::optim::Optimizer& opt, const fs::path& path) {
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  AtomicFile out(path);
  std::string error;
  archive.save_to([&](const void* data, size_t n) -> size_t {
    if (error.empty()) {
      try {
        out.write(data, n);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    return n;
  });
  UPCYCLE_CHECK(error.empty(), error);
  out.commit();
}

// Writes OUT/checkpoint-STEP/ through a temporary folder renamed at the end, so a crash never leaves a
// half-written checkpoint under the real name.
fs::path saveCheckpoint(DecoderLM& model, torch::optim::Optimizer& opt, const TrainOptions& o, int64_t step,
                        double epoch, int64_t totalSteps, const std::vector<StepMetrics>& history,
                        const std::string& precision) {
  const fs::path final = o.outDir / ("checkpoint-" + std::to_string(step));
  const fs::path tmp = o.outDir / ("checkpoint-" + std::to_string(step) + ".tmp");
  fs::remove_all(tmp);
  try {
    if (loraOf(model).enabled()) savePeftAdapter(model, tmp, o.loraBase.string());
    else saveModel(model, tmp);
    copyTokenizerFiles(o.tokenizerFrom, tmp);
    json state = {{"global_step", step}, {"epoch", epoch}, {"max_steps", totalSteps},
                  {"train_batch_size", o.batchSize}, {"gradient_accumulation_steps", o.gradAccum},
                  {"seed", o.seed}, {"precision", precision},
                  {"log_history", json::array()}};
    for (const auto& m : history) state["log_history"].push_back(metricsJson(m));
    writeFileAtomically(tmp / "trainer_state.json", state.dump(1) + "\n");
    saveOptimizer(opt, tmp / "optimizer.pt");
    fs::remove_all(final);
    fs::rename(tmp, final);
  } catch (const std::exception& e) {
    // A full disk or a read-only folder: the partial folder goes (it holds the space a user needs to
    // free), and the error names the checkpoint.
    std::error_code ec;
    fs::remove_all(tmp, ec);
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));  // LibTorch's messages carry a backtrace
    throw UserError("cannot save " + final.string() + ": " + why);
  }
  return final;
}

// A rank's share of the load-balancing loss of the global micro-batch, E * sum_e f_e P_e: f_e from the
// routing counts summed over the ranks, P_e this rank's router probability mass over the global token
// count. The ranks' shares sum to the one-process loss, in value and in gradient. A rank without rows
// in the micro-batch passes no routing and adds zero counts.
torch::Tensor shareOfLoadBalancing(const std::vector<RouterRecord>& routing, int64_t E, const torch::Tensor& tokenMask,
                                   int64_t globalTokens, DistGroup& group) {
  const char* what = "the routing counts of the load-balancing loss";
  if (routing.empty()) {
    auto zeros = torch::zeros({E}, torch::TensorOptions().dtype(torch::kDouble).device(group.device()));
    group.allreduceSum(zeros, what);
    return {};
  }
  const auto [p, idx] = stackedRouting(routing, tokenMask);  // (L*n, E), (L*n, K)
  const double L = static_cast<double>(routing.size()), K = static_cast<double>(idx.size(1));
  auto counts = torch::one_hot(idx.reshape({-1}), E).sum(0).to(torch::kDouble).to(group.device()).contiguous();
  group.allreduceSum(counts, what);
  auto f = (counts / (L * double(globalTokens) * K)).to(p.device(), torch::kFloat);
  auto P = p.sum(0) / (L * double(globalTokens));
  return static_cast<double>(E) * (f * P).sum();
}

// The latest checkpoint-STEP folder of `out` that holds an optimizer state.
std::optional<TrainerCheckpoint> latestResumable(const fs::path& out) {
  if (!fs::is_directory(out)) return std::nullopt;
  std::optional<TrainerCheckpoint> best;
  for (const auto& c : listTrainerCheckpoints(out))
    if (fs::exists(c.path / "optimizer.pt") && fs::exists(c.path / "trainer_state.json")) best = c;
  return best;
}

}  // namespace

TrainResult trainDecoder(DecoderLM& model, const std::vector<TokenRecord>& data, const TrainOptions& o,
                         TrainObserver* obs, const std::atomic<bool>* cancel, const TrainHooks& hooks) {
  validateTrainOptions(o);
  UPCYCLE_CHECK(!data.empty(), "no training records");
  const ModelConfig& cfg = model->config();
  for (const TokenRecord& r : data) {
    for (int64_t id : r.inputIds)
      UPCYCLE_CHECK(id >= 0 && id < cfg.vocabSize, "record at line ", r.line, ": token id ", id,
                    " is outside the model's vocabulary (", cfg.vocabSize, ")");
    for (int64_t l : r.labels)
      UPCYCLE_CHECK(l == -100 || (l >= 0 && l < cfg.vocabSize), "record at line ", r.line, ": label ", l,
                    " is neither -100 (ignored) nor in the model's vocabulary (", cfg.vocabSize, ")");
  }
  return withTorchErrors("train", [&] {
    const torch::Device dev = resolveDevice(o.device);
    model->to(dev);
    model->train();
    const std::string precision = resolvePrecision(o.precision, dev.is_cuda());  // fp32 or bf16
    const bool bf16 = precision == "bf16";
    DistGroup* group = DistGroup::current();  // data-parallel when a group is up
    const int rank = group ? group->rank() : 0, world = group ? group->world() : 1;
    // Router jitter: one stream per rank, derived from the run seed and the rank (rank 0's is the
    // one-process stream).
    model->setJitterGenerator(at::detail::createCPUGenerator(o.seed ^ 0x9e3779b97f4a7c15ull ^
                                                             (uint64_t(rank) * 0xbf58476d1ce4e5b9ull)));

    // LoRA: adapters added here (PEFT init from the run's seed) unless the model is already an adapter.
    if (o.lora.enabled()) {
      const LoraOptions have = loraOf(model);
      if (!have.enabled()) {
        torch::Generator init = at::detail::createCPUGenerator(o.seed ^ 0x4c6f5241ull);
        addLora(model, o.lora, init);
      } else {
        UPCYCLE_CHECK(have.rank == o.lora.rank, "the model is already a LoRA adapter of rank ", have.rank,
                      "; lora.rank ", o.lora.rank, " differs (leave it unset to continue the adapter)");
      }
    }
    const bool lora = loraOf(model).enabled();
    // LoRA experts (upit_lora, loramoe): their factors and the routers train; the base stays frozen.
    static const std::vector<std::string> kLoraExpertParams = {"moe.lora_", "moe.router"};
    const bool loraExperts = model->config().loraExperts.enabled();
    if (lora) setLoraGenerator(model, at::detail::createCPUGenerator(o.seed ^ 0x44726f70ull ^ (uint64_t(rank) << 32)));

    // Trainable parameters: decay for matrices, none for vectors (norms, biases). With LoRA, the
    // adapters alone (the base stays frozen and out of the optimizer).
    std::vector<torch::Tensor> decay, noDecay, trainable;
    for (auto& p : model->named_parameters()) {
      const bool selected = lora          ? p.key().find("_lora.") != std::string::npos
                            : loraExperts ? nameMatches(p.key(), kLoraExpertParams) &&
                                                (o.trainOnly.empty() || nameMatches(p.key(), o.trainOnly))
                                          : (o.trainOnly.empty() || nameMatches(p.key(), o.trainOnly));
      const bool train = selected && !nameMatches(p.key(), o.freeze);
      p.value().set_requires_grad(train);
      if (!train) continue;
      (p.value().dim() >= 2 ? decay : noDecay).push_back(p.value());
      trainable.push_back(p.value());
    }
    UPCYCLE_CHECK(!trainable.empty(), "no parameter is left to train (check train_only / freeze patterns)");
    auto base = torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    if (!decay.empty())
      groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                     torch::optim::AdamWOptions(base).weight_decay(o.weightDecay)));
    if (!noDecay.empty())
      groups.emplace_back(noDecay, std::make_unique<torch::optim::AdamWOptions>(
                                       torch::optim::AdamWOptions(base).weight_decay(0.0)));
    std::unique_ptr<torch::optim::AdamW> optimizerOwner =
        o.fusedAdamW ? std::make_unique<FusedAdamW>(std::move(groups), base)
                     : std::make_unique<torch::optim::AdamW>(std::move(groups), base);
    torch::optim::AdamW& optimizer = *optimizerOwner;

    const int64_t N = static_cast<int64_t>(data.size());
    const int64_t microPerEpoch = (N + o.batchSize - 1) / o.batchSize;
    const int64_t stepsPerEpoch = (microPerEpoch + o.gradAccum - 1) / o.gradAccum;
    const int64_t total = o.maxSteps > 0 ? o.maxSteps
                                         : std::max<int64_t>(1, std::llround(std::ceil(o.epochs * stepsPerEpoch - 1e-9)));
    std::set<int64_t> saveAt;
    if (!o.outDir.empty()) {
      if (o.saveSteps > 0)
        for (int64_t s = o.saveSteps; s <= total; s += o.saveSteps) saveAt.insert(s);
      if (o.saveEveryEpochFraction > 0)
        for (int64_t k = 1;; ++k) {
          int64_t s = std::max<int64_t>(1, std::llround(k * o.saveEveryEpochFraction * stepsPerEpoch));
          if (s > total) break;
          saveAt.insert(s);
        }
      if (o.saveFinal) saveAt.insert(total);
      if (isDistWriter()) fs::create_directories(o.outDir);
    }

    TrainResult result;
    int64_t start = 0;
    if (o.resume) {
      if (auto ck = latestResumable(o.outDir)) {
        DecoderLM saved = loadModel(ck->path, {dev, torch::kFloat});
        {
          torch::NoGradGuard ng;
          auto src = saved->named_parameters();
          for (auto& p : model->named_parameters()) p.value().copy_(src[p.key()]);
        }
        torch::load(optimizer, (ck->path / "optimizer.pt").string());
        try {
          json state = json::parse(readTextFile(ck->path / "trainer_state.json"));
          start = state.at("global_step").get<int64_t>();
          for (const auto& h : state.at("log_history")) result.history.push_back(metricsFromJson(h));
        } catch (const json::exception& e) {
          throw UserError((ck->path / "trainer_state.json").string() + ": " + e.what());
        }
        if (obs) obs->onLog("resumed from " + ck->path.string() + " at step " + std::to_string(start));
      } else if (obs) {
        obs->onLog("no checkpoint to resume from in " + o.outDir.string() + "; starting fresh");
      }
    }
    UPCYCLE_CHECK(start <= total, "the checkpoint is at step ", start, ", past the run's ", total, " steps");
    if (obs && bf16 && !dev.is_cuda()) obs->onLog("precision: bf16 (autocast on the CPU, float32 master weights)");
    std::unique_ptr<GradReducer> reducer;
    if (group) {
      broadcastModule(*model);  // every rank starts from rank 0's weights
      reducer = std::make_unique<GradReducer>(*group, trainable);
      if (obs && rank == 0)
        obs->onLog("data-parallel: " + std::to_string(world) + " ranks (" + group->info().backend + ", " +
                   group->info().rendezvous + "), " + std::to_string(reducer->bucketCount()) + " gradient buckets");
    }

    int64_t cachedEpoch = -1;
    std::vector<size_t> order;
    double epochLossSum = 0;
    int64_t epochSteps = 0;
    fs::path lastCheckpoint;
    for (int64_t step = start; step < total; ++step) {
      bool stop = cancel && cancel->load();
      if (group) {  // a cancel on any rank stops every rank before the same step
        std::vector<double> flag{stop ? 1.0 : 0.0};
        allreduceDoubles(flag, "the check at the start of a step");
        stop = flag[0] > 0;
      }
      if (stop) {
        result.cancelled = true;
        break;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const int64_t epoch = step / stepsPerEpoch;
      if (epoch != cachedEpoch) {
        order = epochOrder(data.size(), o.seed, epoch);
        cachedEpoch = epoch;
      }
      const int64_t firstMicro = (step % stepsPerEpoch) * o.gradAccum;
      const int64_t lastMicro = std::min(firstMicro + o.gradAccum, microPerEpoch);
      // The global batch is the one-process batch; rank r takes the r-th of `world` contiguous parts
      // of every micro-batch. Token counts are those of the global batch, so each rank's loss is its
      // share of the global loss and the ranks' gradients sum to the one-process gradient.
      struct Micro {
        Batch batch;
        int64_t rows = 0;
        int64_t globalTokens = 0;  // real tokens of the global micro-batch
      };
      std::vector<Micro> micro;
      int64_t predicted = 0, inputTokens = 0;  // of the global step
      for (int64_t m = firstMicro; m < lastMicro; ++m) {
        const int64_t lo = m * o.batchSize, n = std::min<int64_t>((m + 1) * o.batchSize, N) - lo;
        const int64_t a = lo + n * rank / world, b = lo + n * (rank + 1) / world;
        const TokenCounts global = countTokens(data, order.data() + lo, static_cast<size_t>(n), o.maxLength);
        predicted += global.predicted;
        inputTokens += global.input;
        Micro mb;
        mb.rows = b - a;
        mb.globalTokens = global.input;
        if (mb.rows > 0) mb.batch = makeBatch(data, std::vector<size_t>(order.begin() + a, order.begin() + b), o.maxLength);
        micro.push_back(std::move(mb));
      }
      UPCYCLE_CHECK(predicted > 0, "step ", step + 1, ": no token to predict in this batch");

      optimizer.zero_grad();
      double lmSum = 0, auxSum = 0, zSum = 0, extraSum = 0;
      const double nMicro = static_cast<double>(micro.size());
      for (size_t mi = 0; mi < micro.size(); ++mi) {
        if (reducer && mi + 1 == micro.size()) reducer->arm();  // this backward's gradients are final
        const Micro& mb = micro[mi];
        if (mb.rows == 0) {
          // Nothing of this micro-batch is ours; the routing counts are still summed with the others.
          if (group && cfg.isMoe()) shareOfLoadBalancing({}, cfg.numExperts, {}, 1, *group);
          continue;
        }
        const Batch& b = mb.batch;
        auto ids = toDevice(b.ids, dev), labels = toDevice(b.labels, dev), mask = toDevice(b.mask, dev);
        ForwardOutput out;
        {
          Bf16Autocast autocast(dev, bf16);  // bf16 matmuls, float32 master weights
          out = model->forward(ids, mask);
        }
        NoAutocast fp32(autocastKeys());
        LossSum ls = nextTokenLoss(out.logits, labels);
        auto lm = ls.sum / static_cast<double>(predicted);  // token-weighted over the whole step
        auto objective = hooks.lmWeight * lm;
        // A rank's share of a per-micro-batch token mean: its tokens over the global micro-batch's.
        const double share = group ? double(b.inputTokens) / double(mb.globalTokens) : 1.0;
        if (hooks.extraLoss) {
          auto extra = hooks.extraLoss(out, toDevice(b.tags, dev), mask) * share;
          objective = objective + hooks.extraWeight * extra / nMicro;
          extraSum += extra.item<double>();
        }
        if (!out.routing.empty()) {
          auto tokenMask = mask.reshape({-1}).to(torch::kBool);
          torch::Tensor aux, z;
          if (group) {
            aux = shareOfLoadBalancing(out.routing, cfg.numExperts, tokenMask, mb.globalTokens, *group);
            z = routerZLoss(out.routing, tokenMask) * share;
          } else {
            aux = loadBalancingLoss(out.routing, cfg.numExperts, tokenMask);
            z = routerZLoss(out.routing, tokenMask);
          }
          objective = objective + (o.auxLossCoef * aux + o.zLossCoef * z) / nMicro;
          auxSum += aux.item<double>();
          zSum += z.item<double>();
        }
        lmSum += lm.item<double>();
        objective.backward();
      }
      if (reducer) {
        reducer->finish();
        std::vector<double> sums{lmSum, auxSum, zSum, extraSum};
        allreduceDoubles(sums, "the step's loss reduction");
        lmSum = sums[0], auxSum = sums[1], zSum = sums[2], extraSum = sums[3];
      }
      StepMetrics m;
      m.stage = o.stage;
      m.step = step + 1;
      m.totalSteps = total;
      m.lmLoss = lmSum;
      m.auxLoss = auxSum / nMicro;
      m.zLoss = zSum / nMicro;
      m.extraLoss = extraSum / nMicro;
      m.loss = hooks.lmWeight * m.lmLoss + o.auxLossCoef * m.auxLoss + o.zLossCoef * m.zLoss +
               (hooks.extraLoss ? hooks.extraWeight * m.extraLoss : 0.0);
      if (!std::isfinite(m.loss)) {
        throw UserError("step " + std::to_string(step + 1) + ": the loss became " +
                        (std::isnan(m.loss) ? "NaN" : "Inf") + "; training stopped" +
                        (lastCheckpoint.empty() ? std::string(" (no checkpoint was saved yet)")
                                                : "; the last good checkpoint is " + lastCheckpoint.string()));
      }
      m.gradNorm = torch::nn::utils::clip_grad_norm_(
          trainable, o.gradClip > 0 ? o.gradClip : std::numeric_limits<double>::infinity());
      m.lr = learningRateAt(o, step, total);
      for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(m.lr);
      optimizer.step();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      m.epoch = double(step + 1) / double(stepsPerEpoch);
      m.tokens = inputTokens;
      m.tokensPerSec = secs > 0 ? inputTokens / secs : 0;
      result.history.push_back(m);
      result.steps = step + 1;
      result.finalLoss = m.loss;
      if (obs) obs->onStep(m);
      epochLossSum += m.loss;
      ++epochSteps;
      if (saveAt.count(step + 1)) {
        // Rank 0 writes; every rank knows the folder (all ranks hold the same weights).
        writerWrites("a checkpoint save", [&] { saveCheckpoint(model, optimizer, o, step + 1, m.epoch, total, result.history, precision); });
        lastCheckpoint = o.outDir / ("checkpoint-" + std::to_string(step + 1));
        result.checkpoints.push_back(lastCheckpoint);
        if (obs) obs->onCheckpoint(lastCheckpoint, step + 1);
      }
      if ((step + 1) % stepsPerEpoch == 0) {
        if (obs) obs->onEpochEnd((step + 1) / stepsPerEpoch, epochLossSum / std::max<int64_t>(1, epochSteps));
        epochLossSum = 0;
        epochSteps = 0;
      }
    }
    for (auto& p : model->parameters()) p.set_requires_grad(true);
    model->eval();
    return result;
  });
}

TrainResult trainModel(const fs::path& modelPath, const std::vector<TokenRecord>& data, const TrainOptions& o,
                       TrainObserver* observer, const std::atomic<bool>* cancel) {
  validateTrainOptions(o);
  DecoderLM model = withTorchErrors("load", [&] { return loadModel(modelPath); });
  TrainOptions withTokenizer = o;
  std::error_code ec;
  // Continuing an adapter: its checkpoints name the same base.
  withTokenizer.loraBase = isPeftAdapter(modelPath) ? readPeftAdapterConfig(modelPath).basePath
                                                    : fs::weakly_canonical(fs::absolute(modelPath), ec);
  if (withTokenizer.tokenizerFrom.empty()) withTokenizer.tokenizerFrom = tokenizerFolder(modelPath);
  return trainDecoder(model, data, withTokenizer, observer, cancel);
}

}  // namespace upcycle

namespace upcycle {

TrainResult pretrainTinyBase(const PretrainOptions& o, TrainObserver* observer, const std::atomic<bool>* cancel) {
  UPCYCLE_CHECK(!o.out.empty(), "pretrain needs an output folder");
  UPCYCLE_CHECK(o.blockSize >= 8, "block size must be at least 8, got ", o.blockSize);
  const fs::path init = o.out / "init";
  CreateOptions c = o.model;
  c.out = init;
  c.seed = o.train.seed;
  fs::path corpus = o.corpus.empty() ? o.out / "corpus.jsonl" : o.corpus;
  writerWrites("writing the initial model", [&] {  // data-parallel: rank 0 writes, the others wait
    fs::create_directories(o.out);
    createRandomModel(c);
    if (o.corpus.empty()) writeFileAtomically(corpus, demoCorpusJsonl(generateDemoCorpus(o.train.seed, o.documents)));
  });
  DataOptions d;
  d.path = corpus;
  d.packBlock = o.blockSize;
  PreparedData data = prepareData(init, d);
  if (observer)
    observer->onLog("pretraining on " + std::to_string(data.train.size()) + " packed blocks of " +
                    std::to_string(o.blockSize) + " tokens from " + corpus.string());
  TrainOptions t = o.train;
  t.outDir = o.out;
  t.stage = "pretrain";
  return trainModel(init, data.train, t, observer, cancel);
}

}  // namespace upcycle
