#include "pipeline/experiment.h"

#include "formats/peft_adapter.h"

#include <yaml-cpp/yaml.h>

#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// Reads a YAML map strictly: unknown keys are refused, types are checked, and every message names
// the context ("demo.yaml: runs[2].ratio").
class Section {
 public:
  Section(const YAML::Node& node, std::string path, std::string ctx) : m_node(node), m_path(std::move(path)), m_ctx(std::move(ctx)) {
    UPCYCLE_CHECK(!m_node || m_node.IsNull() || m_node.IsMap(), m_ctx, ": ", where(""), " must be a mapping");
  }
  std::string where(const std::string& key) const {
    if (m_path.empty()) return key.empty() ? "the document" : key;
    return key.empty() ? m_path : m_path + "." + key;
  }
  bool has(const std::string& key) {
    m_known.insert(key);
    return m_node && m_node.IsMap() && m_node[key] && !m_node[key].IsNull();
  }
  template <typename T>
  void read(const std::string& key, T& value) {
    if (!has(key)) return;
    try {
      value = m_node[key].as<T>();
    } catch (const YAML::Exception&) {
      throw UserError(m_ctx + ": " + where(key) + " has a value of the wrong type (\"" + YAML::Dump(m_node[key]) + "\")");
    }
  }
  void readPath(const std::string& key, fs::path& value) {
    std::string s;
    read(key, s);
    if (!s.empty()) value = s;
  }
  Section child(const std::string& key) {
    has(key);
    return Section(m_node && m_node.IsMap() ? m_node[key] : YAML::Node(), where(key), m_ctx);
  }
  YAML::Node node(const std::string& key) {
    has(key);
    return m_node && m_node.IsMap() ? m_node[key] : YAML::Node();
  }
  // Call after reading: any key not read is a typo or an unsupported option.
  void finish() const {
    if (!m_node || !m_node.IsMap()) return;
    for (const auto& kv : m_node) {
      UPCYCLE_CHECK(kv.first.IsScalar(), m_ctx, ": ", m_path.empty() ? std::string("the top level") : m_path,
                    " has a key that is not a plain name (line ", kv.first.Mark().line + 1, ")");
      const std::string k = kv.first.Scalar();
      UPCYCLE_CHECK(m_known.count(k), m_ctx, ": unknown key ", where(k));
    }
  }

 private:
  YAML::Node m_node;
  std::string m_path, m_ctx;
  std::set<std::string> m_known;
};

void readTraining(Section s, StageTraining& t) {
  s.read("epochs", t.epochs);
  s.read("max_steps", t.maxSteps);
  s.read("save_every", t.saveEvery);
  s.read("lr", t.lr);
  s.read("batch_size", t.batchSize);
  s.read("warmup_steps", t.warmupSteps);
  s.read("weight_decay", t.weightDecay);
  s.read("aux_loss_coef", t.auxLossCoef);
  s.read("z_loss_coef", t.zLossCoef);
  s.read("grad_clip", t.gradClip);
  s.finish();
}

void readStageSeed(Section& s, StageSeed& seed) {
  if (!s.has("seed")) return;
  s.read("seed", seed.value);
  seed.set = true;
}

}  // namespace

namespace {
// yaml-cpp keeps both entries of a repeated key and reads the first; a repeated key is a mistake (which
// value did the user mean?), so it is refused, naming the key and its line.
void refuseDuplicateKeys(const YAML::Node& n, const std::string& ctx, int depth = 0) {
  UPCYCLE_CHECK(depth < 64, ctx, ": the YAML nests deeper than 64 levels");
  if (n.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : n) {
      if (kv.first.IsScalar()) {
        const std::string k = kv.first.Scalar();
        UPCYCLE_CHECK(seen.insert(k).second, ctx, ": key \"", k, "\" appears twice (line ", kv.first.Mark().line + 1, ")");
      }
      refuseDuplicateKeys(kv.second, ctx, depth + 1);
    }
  } else if (n.IsSequence()) {
    for (const auto& item : n) refuseDuplicateKeys(item, ctx, depth + 1);
  }
}
}  // namespace

namespace {
Experiment parseExperimentUnguarded(const std::string& text, const std::string& ctx);
}  // namespace

Experiment parseExperiment(const std::string& text, const std::string& ctx) {
  // Every read names its field; yaml-cpp's own exceptions (a conversion nobody foresaw) still become
  // one error naming the file and the line instead of escaping.
  try {
    return parseExperimentUnguarded(text, ctx);
  } catch (const YAML::Exception& e) {
    throw UserError(ctx + ": " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ")");
  }
}

namespace {
Experiment parseExperimentUnguarded(const std::string& text, const std::string& ctx) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw UserError(ctx + ": not valid YAML (" + e.msg + " at line " + std::to_string(e.mark.line + 1) + ")");
  }
  refuseDuplicateKeys(root, ctx);
  Experiment e;
  Section top(root, "", ctx);
  top.read("name", e.name);
  top.read("seed", e.seed);
  if (top.has("seeds")) {
    top.read("seeds", e.seeds);
    UPCYCLE_CHECK(!e.seeds.empty(), ctx, ": seeds must list at least one seed");
    UPCYCLE_CHECK(!top.has("repeats"), ctx, ": give seeds or repeats, not both");
  }
  if (top.has("repeats")) {
    int64_t n = 0;
    top.read("repeats", n);
    e.seeds = repeatSeedsFrom(e.seed, n, ctx + ": repeats");
  }
  top.read("device", e.device);
  top.read("threads", e.threads);
  top.read("nproc", e.nproc);
  top.read("precision", e.precision);
  top.readPath("out", e.out);
  {
    Section base = top.child("base");
    base.readPath("path", e.basePath);
    if (base.has("pretrain")) {
      e.pretrain = true;
      Section p = base.child("pretrain");
      readStageSeed(p, e.baseSeed);
      p.read("steps", e.pretrainSteps);
      p.read("documents", e.pretrainDocuments);
      p.read("hidden", e.hidden);
      p.read("ff", e.ff);
      p.read("layers", e.layers);
      p.read("heads", e.heads);
      p.read("kv_heads", e.kvHeads);
      p.read("block", e.block);
      p.read("lr", e.pretrainLr);
      p.read("batch_size", e.pretrainBatch);
      p.finish();
    }
    base.finish();
  }
  {
    Section d = top.child("data");
    readStageSeed(d, e.dataSeed);
    if (d.has("generate")) {
      Section g = d.child("generate");
      g.read("per_domain", e.perDomain);
      g.read("eval_per_domain", e.evalPerDomain);
      g.finish();
    }
    d.readPath("train", e.trainData);
    d.readPath("eval", e.evalData);
    if (!e.trainData.empty()) e.generateData = false;
    d.read("template", e.promptTemplate);
    d.read("max_length", e.maxLength);
    d.finish();
  }
  if (top.has("sft")) {
    YAML::Node n = top.node("sft");
    if (n.IsScalar() && n.as<std::string>() == "false") e.sft = false;
    else {
      Section s(n, "sft", ctx);
      readStageSeed(s, e.sftSeed);
      if (s.has("checkpoints")) {
        std::vector<std::string> dirs;
        s.read("checkpoints", dirs);
        for (const auto& d : dirs) e.sftCheckpoints.emplace_back(d);
      }
      readTraining(s, e.sftTraining);
    }
  }
  if (top.has("lora")) {
    Section l = top.child("lora");
    l.read("rank", e.lora.rank);
    l.read("alpha", e.lora.alpha);
    l.read("dropout", e.lora.dropout);
    l.read("rslora", e.lora.rslora);
    if (l.has("targets")) {
      YAML::Node t = l.node("targets");
      std::string list;
      if (t.IsSequence()) {
        for (const auto& item : t) {
          UPCYCLE_CHECK(item.IsScalar(), ctx, ": lora.targets entries must be names (q, k, v, o, gate, up, down)");
          list += (list.empty() ? "" : ",") + item.Scalar();
        }
      } else {
        l.read("targets", list);
      }
      e.lora.targets = parseLoraTargets(list, ctx + ": lora.targets");
    }
    l.finish();
    UPCYCLE_CHECK(e.lora.rank >= 1, ctx, ": lora.rank must be at least 1, got ", e.lora.rank);
  }
  if (top.has("post")) {
    Section post = top.child("post");
    if (post.has("corpus")) {
      Section c = post.child("corpus");
      c.read("documents", e.postCorpusDocuments);
      c.read("block", e.postCorpusBlock);
      c.finish();
      UPCYCLE_CHECK(e.postCorpusDocuments >= 1, ctx, ": post.corpus.documents must be at least 1, got ", e.postCorpusDocuments);
    }
    readTraining(post, e.post);
  }
  {
    Section ev = top.child("eval");
    ev.read("accuracy", e.evalAccuracy);
    ev.read("max_new_tokens", e.maxNewTokens);
    ev.finish();
  }
  YAML::Node runs = top.node("runs");
  UPCYCLE_CHECK(runs && runs.IsSequence(), ctx, ": runs must be a list of runs");
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string path = "runs[" + std::to_string(i) + "]";
    Section r(runs[i], path, ctx);
    RunSpec s;
    r.read("method", s.method);
    s.name = s.method;
    r.read("name", s.name);
    r.read("experts", s.experts);
    r.read("top_k", s.topK);
    r.read("moe_layer_freq", s.moeLayerFreq);
    r.read("expert_ff", s.expertFf);
    r.read("router_init", s.routerInit);
    if (r.has("seed")) {
      r.read("seed", s.seed);
      s.seedSet = true;
    }
    r.read("ratio", s.ratio);
    r.read("shared_indices", s.sharedIndices);
    r.read("noise_std", s.noiseStd);
    r.read("noise_fraction", s.noiseFraction);
    std::vector<std::string> sources;
    r.read("sources", sources);
    for (auto& p : sources) s.sources.emplace_back(p);
    r.read("checkpoints", s.checkpoints);
    r.read("select", s.select);
    r.read("checkpoint_list", s.checkpointList);
    r.read("non_ffn", s.nonFfn);
    r.read("expand", s.expand);
    if (r.has("ga")) {
      Section g = r.child("ga");
      g.read("parent_rule", s.parentRule);
      g.read("distance", s.distance);
      std::vector<double> alpha;
      g.read("alpha", alpha);
      if (!alpha.empty()) {
        UPCYCLE_CHECK(alpha.size() == 2, ctx, ": ", path, ".ga.alpha must be [min, max]");
        s.alphaMin = alpha[0];
        s.alphaMax = alpha[1];
      }
      g.read("dare_p", s.dareP);
      g.read("dare_rescale", s.dareRescale);
      g.read("merge", s.mergeOp);
      g.finish();
    }
    if (r.has("router")) {
      Section g = r.child("router");
      g.read("preoptimize", s.preoptimize);
      g.read("seed_fraction", s.seedFraction);
      g.read("min_seed", s.minSeed);
      g.read("epochs", s.routerEpochs);
      g.read("a", s.clsWeightA);
      g.read("lr", s.routerLr);
      g.read("assign", s.seedAssign);
      g.finish();
    }
    r.finish();
    e.runs.push_back(s);
  }
  top.finish();
  for (auto& r : e.runs)
    if (!r.seedSet) r.seed = e.seed;
  e.sourceFile = ctx;
  validateExperiment(e);
  return e;
}

}  // namespace

bool usesSftCheckpoints(const std::string& method) { return method == "upit" || method == "upit_lora"; }

std::vector<uint64_t> parseSeedList(const std::string& text, const std::string& what) {
  std::vector<uint64_t> out;
  auto number = [&](const std::string& raw) -> uint64_t {
    const auto b = raw.find_first_not_of(" \t"), e = raw.find_last_not_of(" \t");
    const std::string s = b == std::string::npos ? std::string() : raw.substr(b, e - b + 1);
    size_t pos = 0;
    unsigned long long v = 0;
    try {
      if (!s.empty() && s[0] != '-' && s[0] != '+') v = std::stoull(s, &pos);
    } catch (...) {
      pos = 0;
    }
    UPCYCLE_CHECK(!s.empty() && pos == s.size(), what, ": \"", s, "\" is not a seed (give e.g. 0,1,2 or 0-4)");
    return v;
  };
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto first = item.find_first_not_of(" \t");
    const auto dash = first == std::string::npos ? std::string::npos : item.find('-', first + 1);
    if (dash == std::string::npos) {
      out.push_back(number(item));
    } else {
      const uint64_t lo = number(item.substr(0, dash)), hi = number(item.substr(dash + 1));
      UPCYCLE_CHECK(lo <= hi && hi - lo < 1000, what, ": the range ", item, " must go upwards and hold at most 1000 seeds");
      for (uint64_t v = lo; v <= hi; ++v) out.push_back(v);
    }
    UPCYCLE_CHECK(out.size() <= 1000, what, ": at most 1000 seeds");
  }
  UPCYCLE_CHECK(!out.empty(), what, " needs at least one seed (e.g. 0,1,2 or 0-4)");
  std::set<uint64_t> seen;
  for (uint64_t v : out) UPCYCLE_CHECK(seen.insert(v).second, what, ": seed ", v, " is listed twice");
  return out;
}

std::vector<uint64_t> repeatSeedsFrom(uint64_t first, int64_t n, const std::string& what) {
  UPCYCLE_CHECK(n >= 1 && n <= 1000, what, " must be in [1, 1000], got ", n);
  std::vector<uint64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(first + static_cast<uint64_t>(i));
  return out;
}

std::vector<uint64_t> repeatSeeds(const Experiment& e) {
  return e.seeds.empty() ? std::vector<uint64_t>{e.seed} : e.seeds;
}

Experiment experimentForSeed(const Experiment& e, uint64_t s) {
  Experiment r = e;
  r.seed = s;
  r.seeds.clear();
  if (repeatSeeds(e).size() > 1) r.out = e.out / ("seed-" + std::to_string(s));
  for (auto& run : r.runs)
    if (!run.seedSet) run.seed = s;
  return r;
}

Experiment loadExperiment(const fs::path& path) {
  UPCYCLE_CHECK(fs::exists(path), "experiment file not found: ", path.string());
  return parseExperiment(readTextFile(path), path.string());
}

void validateRunSpec(const RunSpec& r, const std::string& f, const std::string& ctx) {
  auto check = [&](bool ok, const std::string& field, const std::string& why) {
    UPCYCLE_CHECK(ok, ctx, ": ", field, " ", why);
  };
  auto field = [&](const std::string& key) { return f.empty() ? key : f + "." + key; };
    const std::set<std::string> methods = {"dense", "sparse", "drop", "noise", "scratch", "btx", "upit", "upit_lora", "loramoe"};
    check(methods.count(r.method), field("method"),
          "\"" + r.method + "\" is not one of dense, sparse, drop, noise, scratch, btx, upit, upit_lora, loramoe");
    if (r.method == "dense") return;
    check(r.experts >= 1 && r.experts <= 1024, field("experts"), "must be in [1, 1024], got " + std::to_string(r.experts));
    check(r.topK >= 1 && r.topK <= r.experts, field("top_k"),
          "(" + std::to_string(r.topK) + ") must be between 1 and experts (" + std::to_string(r.experts) + ")");
    check(r.moeLayerFreq >= 1, field("moe_layer_freq"), "must be at least 1");
    check(r.routerInit == "uniform_std002" || r.routerInit == "normal_002" || r.routerInit == "uniform" ||
              r.routerInit == "hidden" || r.routerInit == "hidden_last" || r.routerInit == "hidden_avg",
          field("router_init"),
          "\"" + r.routerInit + "\" is not one of uniform_std002, normal_002, uniform, hidden, hidden_last, hidden_avg");
    check(r.ratio >= 0 && r.ratio <= 1, field("ratio"), "must be in [0, 1], got " + std::to_string(r.ratio));
    check(r.noiseFraction >= 0 && r.noiseFraction <= 1, field("noise_fraction"), "must be in [0, 1]");
    check(r.expertFf >= 0, field("expert_ff"), "must be non-negative");
    if (r.method == "btx") {
      check(!r.sources.empty(), field("sources"), "must list the dense source models");
      check(r.experts % static_cast<int64_t>(r.sources.size()) == 0, field("experts"), "must be a multiple of the number of sources");
      for (const auto& s : r.sources) check(fs::exists(s / "config.json"), field("sources"), "has no config.json: " + s.string());
    }
    if (usesSftCheckpoints(r.method)) {
      check(r.checkpoints >= 1, field("checkpoints"), "must be at least 1");
      check(r.expand || r.checkpoints >= r.experts, field("expand"),
            "is off, so checkpoints (" + std::to_string(r.checkpoints) + ") must be at least experts (" +
                std::to_string(r.experts) + ")");
      check(r.expand || r.checkpoints == r.experts, field("checkpoints"), "must equal experts when expansion is off");
      check(r.checkpoints >= 2 || r.checkpoints >= r.experts, field("checkpoints"), "must be at least 2 to merge experts");
      check(r.select == "even" || r.select == "latest" || r.select == "list", field("select"), "is not one of even, latest, list");
      check(r.select != "list" || static_cast<int64_t>(r.checkpointList.size()) == r.checkpoints, field("checkpoint_list"),
            "must name exactly `checkpoints` positions");
      check(r.nonFfn == "average" || r.nonFfn == "last", field("non_ffn"), "is not one of average, last");
      check(r.parentRule == "distance" || r.parentRule == "random" || r.parentRule == "tournament", field("ga.parent_rule"),
            "is not one of distance, random, tournament");
      check(r.distance == "cosine_delta" || r.distance == "cosine" || r.distance == "l2", field("ga.distance"),
            "is not one of cosine_delta, cosine, l2");
      check(r.alphaMin >= 0 && r.alphaMax <= 1 && r.alphaMin <= r.alphaMax, field("ga.alpha"), "must be [min, max] within [0, 1]");
      check(r.dareP >= 0 && r.dareP < 1, field("ga.dare_p"), "must be in [0, 1)");
      check(r.dareRescale == "inverse" || r.dareRescale == "l1", field("ga.dare_rescale"), "is not one of inverse, l1");
      const std::set<std::string> ops = {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp"};
      check(ops.count(r.mergeOp), field("ga.merge"), "\"" + r.mergeOp + "\" is not a merge operator");
      check(r.seedFraction > 0 && r.seedFraction <= 1, field("router.seed_fraction"), "must be in (0, 1]");
      check(r.minSeed >= 1, field("router.min_seed"), "must be at least 1");
      check(r.clsWeightA >= 0 && r.clsWeightA <= 1, field("router.a"), "must be in [0, 1]");
      check(r.routerEpochs > 0 && r.routerLr > 0, field("router"), "epochs and lr must be positive");
      check(r.seedAssign == "loss" || r.seedAssign == "random", field("router.assign"),
            "\"" + r.seedAssign + "\" is not one of loss, random");
    }

}

void validateExperiment(const Experiment& e) {
  const std::string ctx = e.sourceFile.empty() ? std::string("experiment") : e.sourceFile.string();
  auto check = [&](bool ok, const std::string& field, const std::string& why) {
    UPCYCLE_CHECK(ok, ctx, ": ", field, " ", why);
  };
  check(!e.runs.empty(), "runs", "must list at least one run");
  {
    std::set<uint64_t> seen;
    for (uint64_t s : e.seeds) check(seen.insert(s).second, "seeds", "lists seed " + std::to_string(s) + " twice");
    check(e.seeds.size() <= 1000, "seeds", "may list at most 1000 seeds");
  }
  {
    std::set<std::string> names;
    for (const auto& r : e.runs) check(names.insert(r.name).second, "runs", "has two runs named \"" + r.name + "\"");
  }
  if (e.out.is_relative()) {
    const fs::path n = e.out.lexically_normal();
    check(n.empty() || *n.begin() != "..", "out",
          "\"" + e.out.string() + "\" leaves the working folder; give an absolute path to write there");
  }
  check(e.nproc >= 1 && e.nproc <= 256, "nproc", "must be in [1, 256], got " + std::to_string(e.nproc));
  check(e.precision == "auto" || e.precision == "fp32" || e.precision == "bf16", "precision",
        "must be auto, fp32 or bf16, got \"" + e.precision + "\"");
  check(e.pretrain || !e.basePath.empty(), "base", "needs a path or a pretrain section");
  check(!(e.pretrain && !e.basePath.empty()), "base", "takes a path or a pretrain section, not both");
  if (!e.basePath.empty()) check(fs::exists(e.basePath / "config.json"), "base.path", "has no config.json: " + e.basePath.string());
  if (e.pretrain) {
    check(e.pretrainSteps >= 1, "base.pretrain.steps", "must be at least 1");
    // Ranges before the divisions below (heads: 0 was a SIGFPE) and before anything is allocated.
    auto range = [&](int64_t v, int64_t lo, int64_t hi, const std::string& field) {
      check(v >= lo && v <= hi, field, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
    };
    range(e.pretrainSteps, 1, 10000000, "base.pretrain.steps");
    range(e.hidden, 2, 16384, "base.pretrain.hidden");
    range(e.ff, 1, 65536, "base.pretrain.ff");
    range(e.layers, 1, 256, "base.pretrain.layers");
    range(e.heads, 1, 256, "base.pretrain.heads");
    range(e.kvHeads, 1, 256, "base.pretrain.kv_heads");
    range(e.block, 8, 65536, "base.pretrain.block");
    range(e.pretrainBatch, 1, 65536, "base.pretrain.batch_size");
    range(e.pretrainDocuments, 1, 10000000, "base.pretrain.documents");
    check(e.hidden % e.heads == 0, "base.pretrain.hidden", "must be a multiple of heads");
    check(e.heads % e.kvHeads == 0, "base.pretrain.heads", "must be a multiple of kv_heads");
  }
  if (!e.generateData) {
    check(fs::exists(e.trainData), "data.train", "file not found: " + e.trainData.string());
    check(e.evalData.empty() || fs::exists(e.evalData), "data.eval", "file not found: " + e.evalData.string());
  } else {
    check(e.perDomain >= 1 && e.evalPerDomain >= 1, "data.generate", "sizes must be at least 1");
    check(e.perDomain <= 1000000 && e.evalPerDomain <= 1000000, "data.generate",
          "sizes must be at most 1000000 records per domain, got " + std::to_string(std::max(e.perDomain, e.evalPerDomain)));
  }
  check(e.promptTemplate == "alpaca" || e.promptTemplate == "compact" || e.promptTemplate == "raw" ||
            e.promptTemplate == "chat" || e.promptTemplate == "auto",
        "data.template", "\"" + e.promptTemplate + "\" is not one of auto, chat, alpaca, compact, raw");
  for (const auto* t : {&e.sftTraining, &e.post}) {
    const std::string f = t == &e.post ? "post" : "sft";
    check(t->lr > 0, f + ".lr", "must be positive");
    check(t->batchSize >= 1, f + ".batch_size", "must be at least 1");
    check(t->epochs > 0 || t->maxSteps > 0, f + ".epochs", "must be positive");
    check(t->saveEvery >= 0 && t->saveEvery <= 1, f + ".save_every", "must be in [0, 1]");
  }
  if (e.postCorpusDocuments > 0) {
    check(e.postCorpusDocuments <= 10000000, "post.corpus.documents",
          "must be at most 10000000, got " + std::to_string(e.postCorpusDocuments));
    check(e.postCorpusBlock >= 8 && e.postCorpusBlock <= 65536, "post.corpus.block",
          "must be in [8, 65536], got " + std::to_string(e.postCorpusBlock));
  }
  bool needsSft = false;
  if (e.lora.enabled()) validateLoraOptions(e.lora, ctx + ": lora");
  for (size_t i = 0; i < e.runs.size(); ++i) {
    validateRunSpec(e.runs[i], "runs[" + std::to_string(i) + "]", ctx);
    needsSft = needsSft || usesSftCheckpoints(e.runs[i].method);
    const std::string& m = e.runs[i].method;
    if (m == "loramoe" || (m == "upit_lora" && e.sftCheckpoints.empty())) {
      check(e.lora.enabled(), "runs[" + std::to_string(i) + "].method",
            m + " needs a lora: section (" + (m == "loramoe" ? "the experts' rank, alpha and targets" : "the SFT trains the LoRA adapters that become the experts") + ")");
      const auto& t = e.lora.targets;
      check(std::find(t.begin(), t.end(), "gate_proj") != t.end() || std::find(t.begin(), t.end(), "up_proj") != t.end() ||
                std::find(t.begin(), t.end(), "down_proj") != t.end(),
            "lora.targets", "must include gate, up or down: " + m + "'s experts are FFN adapters");
    }
  }
  for (size_t i = 0; i < e.sftCheckpoints.size(); ++i)
    check(fs::exists(e.sftCheckpoints[i] / "config.json") || isPeftAdapter(e.sftCheckpoints[i]),
          "sft.checkpoints[" + std::to_string(i) + "]",
          "has no config.json (nor adapter_config.json): " + e.sftCheckpoints[i].string());
  if (needsSft && !e.sftCheckpoints.empty()) {
    check(e.sft, "sft", "is needed: UpIT builds its experts from the SFT checkpoints");
    for (size_t i = 0; i < e.runs.size(); ++i)
      if (usesSftCheckpoints(e.runs[i].method))
        check(static_cast<int64_t>(e.sftCheckpoints.size()) >= e.runs[i].checkpoints,
              "runs[" + std::to_string(i) + "].checkpoints",
              "(" + std::to_string(e.runs[i].checkpoints) + ") exceeds the " + std::to_string(e.sftCheckpoints.size()) +
                  " checkpoints listed in sft.checkpoints");
  } else if (needsSft) {
    check(e.sft, "sft", "is needed: UpIT builds its experts from the SFT checkpoints");
    check(e.sftTraining.saveEvery > 0, "sft.save_every", "must be positive: UpIT needs intermediate checkpoints");
    for (size_t i = 0; i < e.runs.size(); ++i) {
      const RunSpec& r = e.runs[i];
      if (!usesSftCheckpoints(r.method)) continue;
      const double epochs = e.sftTraining.epochs;
      const int64_t expected = e.sftTraining.maxSteps > 0 ? 0 : static_cast<int64_t>(std::floor(epochs / e.sftTraining.saveEvery + 1e-9));
      check(expected == 0 || expected >= r.checkpoints, "runs[" + std::to_string(i) + "].checkpoints",
            "(" + std::to_string(r.checkpoints) + ") exceeds the " + std::to_string(expected) +
                " checkpoints the SFT stage saves (epochs / save_every)");
    }
  }
}

std::string experimentYaml(const Experiment& e) {
  YAML::Emitter y;
  // 15 significant digits: every decimal a user types comes back as typed (0.3, not 0.29999999999999999).
  y.SetDoublePrecision(15);
  y << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << e.name << YAML::Key << "seed" << YAML::Value << e.seed;
  if (!e.seeds.empty()) y << YAML::Key << "seeds" << YAML::Value << YAML::Flow << e.seeds;
  y << YAML::Key << "device" << YAML::Value << e.device << YAML::Key << "threads" << YAML::Value << e.threads;
  if (e.nproc != 1) y << YAML::Key << "nproc" << YAML::Value << e.nproc;
  y << YAML::Key << "precision" << YAML::Value << e.precision;
  y << YAML::Key << "out" << YAML::Value << e.out.string();
  y << YAML::Key << "base" << YAML::Value << YAML::BeginMap;
  if (e.pretrain) {
    y << YAML::Key << "pretrain" << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (e.baseSeed.set) y << YAML::Key << "seed" << YAML::Value << e.baseSeed.value;
    y << YAML::Key << "steps" << YAML::Value
      << e.pretrainSteps << YAML::Key << "documents" << YAML::Value << e.pretrainDocuments << YAML::Key << "hidden"
      << YAML::Value << e.hidden << YAML::Key << "ff" << YAML::Value << e.ff << YAML::Key << "layers" << YAML::Value
      << e.layers << YAML::Key << "heads" << YAML::Value << e.heads << YAML::Key << "kv_heads" << YAML::Value << e.kvHeads
      << YAML::Key << "block" << YAML::Value << e.block << YAML::Key << "lr" << YAML::Value << e.pretrainLr << YAML::Key
      << "batch_size" << YAML::Value << e.pretrainBatch << YAML::EndMap;
  } else {
    y << YAML::Key << "path" << YAML::Value << e.basePath.string();
  }
  y << YAML::EndMap;
  y << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  if (e.dataSeed.set) y << YAML::Key << "seed" << YAML::Value << e.dataSeed.value;
  if (e.generateData)
    y << YAML::Key << "generate" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "per_domain" << YAML::Value
      << e.perDomain << YAML::Key << "eval_per_domain" << YAML::Value << e.evalPerDomain << YAML::EndMap;
  else {
    y << YAML::Key << "train" << YAML::Value << e.trainData.string();
    if (!e.evalData.empty()) y << YAML::Key << "eval" << YAML::Value << e.evalData.string();
  }
  y << YAML::Key << "template" << YAML::Value << e.promptTemplate << YAML::Key << "max_length" << YAML::Value << e.maxLength;
  y << YAML::EndMap;
  auto training = [&](const char* key, const StageTraining& t) {
    y << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (&t == &e.sftTraining && e.sftSeed.set) y << YAML::Key << "seed" << YAML::Value << e.sftSeed.value;
    y << YAML::Key << "epochs" << YAML::Value << t.epochs
      << YAML::Key << "max_steps" << YAML::Value << t.maxSteps << YAML::Key << "save_every" << YAML::Value << t.saveEvery
      << YAML::Key << "lr" << YAML::Value << t.lr << YAML::Key << "batch_size" << YAML::Value << t.batchSize << YAML::Key
      << "warmup_steps" << YAML::Value << t.warmupSteps << YAML::Key << "weight_decay" << YAML::Value << t.weightDecay
      << YAML::Key << "aux_loss_coef" << YAML::Value << t.auxLossCoef << YAML::Key << "z_loss_coef" << YAML::Value
      << t.zLossCoef << YAML::Key << "grad_clip" << YAML::Value << t.gradClip;
    if (&t == &e.post && e.postCorpusDocuments > 0)
      y << YAML::Key << "corpus" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "documents" << YAML::Value
        << e.postCorpusDocuments << YAML::Key << "block" << YAML::Value << e.postCorpusBlock << YAML::EndMap;
    if (&t == &e.sftTraining && !e.sftCheckpoints.empty()) {
      y << YAML::Key << "checkpoints" << YAML::Value << YAML::BeginSeq;
      for (const auto& c : e.sftCheckpoints) y << c.string();
      y << YAML::EndSeq;
    }
    y << YAML::EndMap;
  };
  if (e.lora.enabled()) {
    y << YAML::Key << "lora" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "rank" << YAML::Value
      << e.lora.rank << YAML::Key << "alpha" << YAML::Value << e.lora.alpha << YAML::Key << "dropout" << YAML::Value
      << e.lora.dropout << YAML::Key << "rslora" << YAML::Value << e.lora.rslora << YAML::Key << "targets" << YAML::Value
      << YAML::Flow << e.lora.targets << YAML::EndMap;
  }
  if (e.sft) training("sft", e.sftTraining);
  else y << YAML::Key << "sft" << YAML::Value << false;
  training("post", e.post);
  y << YAML::Key << "eval" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "accuracy" << YAML::Value
    << e.evalAccuracy << YAML::Key << "max_new_tokens" << YAML::Value << e.maxNewTokens << YAML::EndMap;
  y << YAML::Key << "runs" << YAML::Value << YAML::BeginSeq;
  for (const RunSpec& r : e.runs) {
    y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << r.name << YAML::Key << "method" << YAML::Value << r.method;
    // Only a run's own seed: a run without one follows the experiment's (each repeat's) seed, and a
    // seed written for every run would pin it so a later change of the experiment's seed would not reach it.
    if (r.seedSet) y << YAML::Key << "seed" << YAML::Value << r.seed;
    if (r.method != "dense") {
      y << YAML::Key << "experts" << YAML::Value << r.experts << YAML::Key << "top_k" << YAML::Value << r.topK << YAML::Key
        << "moe_layer_freq" << YAML::Value << r.moeLayerFreq << YAML::Key << "router_init" << YAML::Value << r.routerInit;
    }
    if (r.method == "drop")
      y << YAML::Key << "ratio" << YAML::Value << r.ratio << YAML::Key << "shared_indices" << YAML::Value << r.sharedIndices
        << YAML::Key << "expert_ff" << YAML::Value << r.expertFf;
    if (r.method == "noise")
      y << YAML::Key << "noise_std" << YAML::Value << r.noiseStd << YAML::Key << "noise_fraction" << YAML::Value << r.noiseFraction;
    if (r.method == "btx") {
      y << YAML::Key << "sources" << YAML::Value << YAML::BeginSeq;
      for (const auto& s : r.sources) y << s.string();
      y << YAML::EndSeq;
    }
    if (usesSftCheckpoints(r.method)) {
      y << YAML::Key << "checkpoints" << YAML::Value << r.checkpoints << YAML::Key << "select" << YAML::Value << r.select;
      if (!r.checkpointList.empty()) y << YAML::Key << "checkpoint_list" << YAML::Value << YAML::Flow << r.checkpointList;
      y << YAML::Key << "non_ffn" << YAML::Value << r.nonFfn << YAML::Key << "expand" << YAML::Value << r.expand;
      y << YAML::Key << "ga" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "parent_rule" << YAML::Value
        << r.parentRule << YAML::Key << "distance" << YAML::Value << r.distance << YAML::Key << "alpha" << YAML::Value
        << YAML::Flow << std::vector<double>{r.alphaMin, r.alphaMax} << YAML::Key << "dare_p" << YAML::Value << r.dareP
        << YAML::Key << "dare_rescale" << YAML::Value << r.dareRescale << YAML::Key << "merge" << YAML::Value << r.mergeOp
        << YAML::EndMap;
      y << YAML::Key << "router" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "preoptimize" << YAML::Value
        << r.preoptimize << YAML::Key << "seed_fraction" << YAML::Value << r.seedFraction << YAML::Key << "min_seed"
        << YAML::Value << r.minSeed << YAML::Key << "epochs" << YAML::Value << r.routerEpochs << YAML::Key << "a"
        << YAML::Value << r.clsWeightA << YAML::Key << "lr" << YAML::Value << r.routerLr << YAML::Key << "assign"
        << YAML::Value << r.seedAssign << YAML::EndMap;
    }
    y << YAML::EndMap;
  }
  y << YAML::EndSeq << YAML::EndMap;
  return std::string(y.c_str()) + "\n";
}

}  // namespace upcycle
