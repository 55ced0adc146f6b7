#include "train/evaluator.h"

#include <cmath>
#include <map>
#include <numeric>

#include "api/runtime.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "dist/process_group.h"
#include "model/model_io.h"

namespace upcycle {

namespace {
std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}
}  // namespace

bool exactMatch(const std::string& generated, const std::string& answer) { return trim(generated) == trim(answer); }

std::vector<int64_t> generateTokens(DecoderLMImpl& model, const std::vector<int64_t>& prompt,
                                    const GenerateOptions& o, torch::Generator* gen) {
  UPCYCLE_CHECK(!prompt.empty(), "generation needs a non-empty prompt");
  UPCYCLE_CHECK(o.temperature >= 0, "temperature must be non-negative, got ", o.temperature);
  UPCYCLE_CHECK(o.maxNewTokens >= 0, "max_new_tokens must be non-negative, got ", o.maxNewTokens);
  // Generation stops at the model's context (max_position_embeddings), whatever was asked for.
  const int64_t context = model.config().maxPositionEmbeddings;
  UPCYCLE_CHECK(static_cast<int64_t>(prompt.size()) < context, "the prompt (", prompt.size(),
                " tokens) fills the model's context of ", context, " tokens");
  const int64_t budget = std::min<int64_t>(o.maxNewTokens, context - static_cast<int64_t>(prompt.size()));
  torch::NoGradGuard ng;
  const auto dev = model.lmHeadWeight().device();
  KVCache cache;
  auto ids = torch::tensor(prompt, torch::kLong).view({1, -1}).to(dev);
  std::vector<int64_t> out;
  for (int64_t t = 0; t < budget; ++t) {
    auto logits = model.forwardCached(ids, cache).logits.select(1, -1).squeeze(0);  // (V)
    int64_t next;
    if (o.temperature == 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      auto probs = torch::softmax(logits.cpu() / o.temperature, -1);
      next = gen ? torch::multinomial(probs, 1, false, *gen).item<int64_t>()
                 : torch::multinomial(probs, 1).item<int64_t>();
    }
    if (o.eos && next == *o.eos) break;
    out.push_back(next);
    ids = torch::tensor({next}, torch::kLong).view({1, 1}).to(dev);
  }
  return out;
}

std::vector<RecordLoss> recordLosses(DecoderLMImpl& model, const std::vector<TokenRecord>& records,
                                     int64_t batchSize) {
  UPCYCLE_CHECK(batchSize >= 1, "batch size must be at least 1, got ", batchSize);
  const bool wasTraining = model.is_training();
  model.eval();
  torch::NoGradGuard noGrad;
  const auto device = model.lmHeadWeight().device();
  const int64_t V = model.config().vocabSize;
  for (const TokenRecord& r : records)
    for (int64_t id : r.inputIds)
      UPCYCLE_CHECK(id < V, "record at line ", r.line, ": token id ", id, " is outside the model's vocabulary (", V, ")");
  // Batches of similar length waste the least padding.
  std::vector<size_t> order(records.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return records[a].inputIds.size() < records[b].inputIds.size();
  });
  std::vector<RecordLoss> out(records.size());
  for (size_t start = 0; start < order.size(); start += batchSize) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(batchSize));
    const int64_t B = static_cast<int64_t>(end - start);
    int64_t T = 0;
    for (size_t i = start; i < end; ++i) T = std::max<int64_t>(T, records[order[i]].inputIds.size());
    std::vector<int64_t> ids(B * T, 0), labels(B * T, -100), mask(B * T, 0);
    for (int64_t b = 0; b < B; ++b) {
      const TokenRecord& r = records[order[start + b]];
      const auto& lab = r.labels.empty() ? r.inputIds : r.labels;
      for (size_t t = 0; t < r.inputIds.size(); ++t) {
        ids[b * T + t] = r.inputIds[t];
        labels[b * T + t] = lab[t];
        mask[b * T + t] = 1;
      }
    }
    auto lopt = torch::TensorOptions().dtype(torch::kLong);
    auto idT = torch::tensor(ids, lopt).view({B, T}).to(device);
    auto maskT = torch::tensor(mask, lopt).view({B, T}).to(device);
    auto target = torch::tensor(labels, lopt).view({B, T}).narrow(1, 1, T - 1).to(device);
    auto logits = model.forward(idT, maskT).logits.narrow(1, 0, T - 1);  // (B, T-1, V)
    auto ce = torch::nn::functional::cross_entropy(
        logits.reshape({-1, V}), target.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
    auto perRow = ce.view({B, T - 1}).sum(1).to(torch::kDouble).cpu();
    auto count = (target != -100).sum(1).cpu();
    for (int64_t b = 0; b < B; ++b) out[order[start + b]] = {perRow[b].item<double>(), count[b].item<int64_t>()};
  }
  if (wasTraining) model.train();
  return out;
}

EvalReport evaluateRecords(DecoderLMImpl& model, const std::vector<TokenRecord>& records, const EvalOptions& o,
                           const Tokenizer* tok) {
  UPCYCLE_CHECK(!records.empty(), "no records to evaluate");
  const auto device = model.lmHeadWeight().device();
  Bf16Autocast autocast(device, resolvePrecision(o.precision, device.is_cuda()) == "bf16");
  // Data-parallel: rank r evaluates records r, r + world, ...; the sums are reduced over the ranks.
  DistGroup* group = DistGroup::current();
  std::vector<TokenRecord> shard;
  if (group)
    for (size_t i = static_cast<size_t>(group->rank()); i < records.size(); i += static_cast<size_t>(group->world()))
      shard.push_back(records[i]);
  const std::vector<TokenRecord>& mine = group ? shard : records;
  const auto losses = recordLosses(model, mine, o.batchSize);
  const bool wasTraining = model.is_training();
  model.eval();
  struct Acc { double loss = 0; int64_t tokens = 0, records = 0, answered = 0, correct = 0; };
  Acc all;
  std::map<std::string, Acc> dom;
  for (const TokenRecord& r : records)  // every rank knows every domain, so the reduced layout agrees
    if (!r.domain.empty()) dom[r.domain];
  for (size_t i = 0; i < mine.size(); ++i) {
    const TokenRecord& r = mine[i];
    all.loss += losses[i].sum;
    all.tokens += losses[i].tokens;
    all.records += 1;
    if (!r.domain.empty()) {
      dom[r.domain].loss += losses[i].sum;
      dom[r.domain].tokens += losses[i].tokens;
      dom[r.domain].records += 1;
    }
  }
  if (o.accuracy && tok) {
    GenerateOptions g;
    g.maxNewTokens = o.maxNewTokens;
    g.eos = tok->eos;
    for (const TokenRecord& r : mine) {
      if (r.promptLength <= 0 || r.answer.empty()) continue;
      std::vector<int64_t> prompt(r.inputIds.begin(), r.inputIds.begin() + r.promptLength);
      const bool ok = exactMatch(tok->decode(generateTokens(model, prompt, g)), r.answer);
      all.answered += 1;
      all.correct += ok;
      if (!r.domain.empty()) {
        dom[r.domain].answered += 1;
        dom[r.domain].correct += ok;
      }
    }
  }
  if (wasTraining) model.train();
  if (group) {
    std::vector<double> v;
    auto put = [&](const Acc& a) {
      for (double x : {a.loss, double(a.tokens), double(a.records), double(a.answered), double(a.correct)}) v.push_back(x);
    };
    put(all);
    for (const auto& [d, a] : dom) put(a);
    allreduceDoubles(v, "the evaluation's reduction");
    size_t k = 0;
    auto get = [&](Acc& a) {
      a.loss = v[k];
      a.tokens = std::llround(v[k + 1]);
      a.records = std::llround(v[k + 2]);
      a.answered = std::llround(v[k + 3]);
      a.correct = std::llround(v[k + 4]);
      k += 5;
    };
    get(all);
    for (auto& [d, a] : dom) get(a);
  }
  UPCYCLE_CHECK(all.tokens > 0, "no token to predict (all labels ignored?)");
  auto figures = [](const Acc& a) {
    EvalFigures f;
    f.loss = a.tokens ? a.loss / a.tokens : 0.0;
    f.perplexity = std::exp(f.loss);
    f.tokens = a.tokens;
    f.records = a.records;
    f.answered = a.answered;
    f.accuracy = a.answered ? double(a.correct) / a.answered : std::nan("");
    return f;
  };
  EvalReport rep;
  rep.overall = figures(all);
  for (const auto& [d, a] : dom) rep.domains[d] = figures(a);
  return rep;
}

}  // namespace upcycle
