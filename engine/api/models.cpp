#include "api/models.h"
#include "upcycle/upit_lora.h"
#include "formats/peft_adapter.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "api/runtime.h"
#include "api/torch_errors.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "data/instruction_data.h"
#include "data/token_records.h"
#include "data/tokenizer.h"
#include "model/model_io.h"
#include "train/evaluator.h"
#include "data/prepare.h"
#include "formats/trainer_outputs.h"
#include "pipeline/build.h"
#include "upcycle/moe_builder.h"
#include "upcycle/stream_convert.h"
#include "core/atomic_file.h"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

// ------------------------------------------------------------------------------------ evaluate

EvalReport evaluateModel(const fs::path& modelPath, const fs::path& dataPath, const EvalOptions& opts) {
  UPCYCLE_CHECK(opts.batchSize >= 1, "batch size must be at least 1, got ", opts.batchSize);
  const torch::Device device = resolveDevice(opts.device);
  std::vector<Example> examples = readExamples(dataPath);
  std::shared_ptr<const Tokenizer> tok;
  const bool needsTokenizer = opts.accuracy || std::any_of(examples.begin(), examples.end(), [](const Example& e) {
                                return e.kind != Example::Kind::Tokens;
                              });
  if (needsTokenizer) tok = loadTokenizer(modelPath);
  std::vector<TokenRecord> records;
  if (tok) {
    const InstructionFormat format =
        resolveInstructionFormat(modelPath, opts.promptTemplate == "auto" ? "" : opts.promptTemplate);
    TokenizeOptions to;
    to.promptTemplate = format.promptTemplate;
    to.chat = format.chat;
    to.maxLength = opts.maxLength;
    records = tokenizeExamples(examples, *tok, to);
  } else {
    for (const Example& e : examples) {
      TokenRecord r = e.tokens;
      if (r.labels.empty()) r.labels = r.inputIds;
      records.push_back(std::move(r));
    }
  }
  const torch::Dtype dtype = loadDtype(opts.dtype, loadHfConfig(modelPath).dtype, "--dtype");
  return withTorchErrors("evaluate", [&] {
    DecoderLM model = loadModel(modelPath, {device, dtype});
    const int64_t V = model->config().vocabSize;
    for (const TokenRecord& r : records)
      for (int64_t id : r.inputIds)
        UPCYCLE_CHECK(id < V, dataPath.string(), ":", r.line, ": token id ", id,
                      " is outside the model's vocabulary (", V, ")");
    return evaluateRecords(*model, records, opts, tok.get());
  });
}

EvalReport evaluateModelOnRecords(const fs::path& modelPath, const std::vector<TokenRecord>& records,
                                  const EvalOptions& opts) {
  const torch::Device device = resolveDevice(opts.device);
  std::shared_ptr<const Tokenizer> tok;
  if (opts.accuracy) tok = loadTokenizer(modelPath);
  const torch::Dtype dtype = loadDtype(opts.dtype, loadHfConfig(modelPath).dtype, "--dtype");
  return withTorchErrors("evaluate", [&] {
    DecoderLM model = loadModel(modelPath, {device, dtype});
    return evaluateRecords(*model, records, opts, tok.get());
  });
}

std::string generateText(const GenerateRequest& r) {
  const torch::Device device = resolveDevice(r.device);
  auto tok = loadTokenizer(r.model);
  std::vector<int64_t> prompt;
  const InstructionFormat format =
      resolveInstructionFormat(r.model, r.promptTemplate == "auto" ? "" : r.promptTemplate);
  if (!r.raw && format.chat) {
    // The chat template writes BOS itself; the prompt ends with the assistant's header.
    prompt = tok->encode(format.chat->render({{"user", r.prompt}}, true));
  } else {
    if (tok->bos) prompt.push_back(*tok->bos);
    const std::string text = r.raw ? r.prompt : format.promptTemplate.render(r.prompt, "");
    for (int64_t id : tok->encode(text)) prompt.push_back(id);
  }
  return withTorchErrors("generate", [&] {
    DecoderLM model = loadModel(r.model, {device, torch::kFloat});
    model->eval();
    GenerateOptions g;
    g.maxNewTokens = r.maxNewTokens;
    g.temperature = r.temperature;
    g.eos = tok->eos;
    torch::Generator gen = at::detail::createCPUGenerator(r.seed);
    Bf16Autocast autocast(device, resolvePrecision(r.precision, device.is_cuda(), "--precision") == "bf16");
    return tok->decode(generateTokens(*model, prompt, g, &gen));
  });
}

namespace {
json figuresJson(const EvalFigures& f) {
  json j = {{"loss", f.loss}, {"perplexity", f.perplexity}, {"tokens", f.tokens}, {"records", f.records}};
  if (f.answered > 0) {
    j["accuracy"] = f.accuracy;
    j["answered"] = f.answered;
  }
  return j;
}
}  // namespace

std::string evalJson(const EvalReport& r) {
  json j = figuresJson(r.overall);
  if (!r.domains.empty()) {
    json d = json::object();
    for (const auto& [name, f] : r.domains) d[name] = figuresJson(f);
    j["domains"] = d;
  }
  return j.dump(2);
}

std::string evalText(const EvalReport& r) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(4);
  const bool acc = r.overall.answered > 0;
  os << "loss " << r.overall.loss << "  perplexity " << r.overall.perplexity;
  if (acc) os << "  accuracy " << r.overall.accuracy;
  os << "  (" << r.overall.tokens << " tokens, " << r.overall.records << " records)\n";
  if (!r.domains.empty()) {
    os << std::left << std::setw(20) << "domain" << std::setw(10) << "loss" << std::setw(12) << "perplexity"
       << (acc ? "accuracy  " : "") << "tokens\n";
    for (const auto& [name, f] : r.domains) {
      os << std::left << std::setw(20) << name << std::setw(10) << f.loss << std::setw(12) << f.perplexity;
      if (acc) os << std::setw(10) << f.accuracy;
      os << f.tokens << "\n";
    }
  }
  return os.str();
}

// ------------------------------------------------------------------------------------ convert

void validateConvertOptions(const ConvertOptions& o) {
  UPCYCLE_CHECK(o.run.method != "dense", "method \"dense\" is not a conversion");
  validateRunSpec(o.run, "", "convert --method " + o.run.method);
  UPCYCLE_CHECK(!o.base.empty() || o.run.method == "btx", "--base is required");
  UPCYCLE_CHECK(!o.out.empty(), "--out is required");
  if (!o.base.empty())
    UPCYCLE_CHECK(fs::exists(o.base / "config.json"), "--base has no config.json: ", o.base.string());
  UPCYCLE_CHECK(o.layout == "mixtral-hub" || o.layout == "mixtral-fused", "layout \"", o.layout,
                "\" is not one of mixtral-hub, mixtral-fused");
  if (!o.base.empty())
    UPCYCLE_CHECK(fs::weakly_canonical(o.base) != fs::weakly_canonical(o.out), "--out must differ from --base (",
                  o.out.string(), ")");
  UPCYCLE_CHECK(o.run.method != "loramoe", "loramoe's experts start at the base: it is trained, not converted (use an "
                                          "experiment with method: loramoe)");
  UPCYCLE_CHECK(!o.keepFactors || o.run.method == "upit_lora", "--keep-factors is for --method upit_lora");
  if (usesSftCheckpoints(o.run.method)) {
    UPCYCLE_CHECK(!o.checkpoints.empty(), "--checkpoints is required for ", o.run.method);
    for (const auto& c : o.checkpoints) UPCYCLE_CHECK(fs::exists(c), "--checkpoints: not found: ", c.string());
  }
  if (!o.data.empty()) UPCYCLE_CHECK(fs::exists(o.data), "--data: not found: ", o.data.string());
}

ConvertReport convertModel(const ConvertOptions& o) {
  validateConvertOptions(o);
  BuildInputs in;
  in.base = o.run.method == "btx" && o.base.empty() ? o.run.sources.front() : o.base;
  in.start = in.base;
  in.device = o.device;
  for (const auto& c : o.checkpoints) {
    if (!fs::exists(c / "config.json") && !isPeftAdapter(c) && isTrainerOutput(c))
      for (const auto& t : listTrainerCheckpoints(c)) in.checkpoints.push_back(t.path);
    else
      in.checkpoints.push_back(c);
  }
  if (usesSftCheckpoints(o.run.method)) {
    const int64_t n = static_cast<int64_t>(in.checkpoints.size());
    UPCYCLE_CHECK(o.run.checkpoints <= n || o.run.select == "list", "--num-checkpoints (", o.run.checkpoints,
                  ") exceeds the ", n, " checkpoints given");
    UPCYCLE_CHECK(o.run.expand || n >= o.run.experts, "expansion is off, so at least ", o.run.experts,
                  " checkpoints are needed; got ", n);
  }
  if (!o.data.empty()) {
    DataOptions d;
    d.path = o.data;
    d.promptTemplate = o.promptTemplate;
    in.train = prepareData(in.base, d).train;
  }
  return withTorchErrors("convert", [&] {
    // Sparse and drop of a llama/mistral/qwen2/qwen3 base stream layer by layer (memory: about one layer).
    const MoeShape shape{o.run.experts, o.run.topK, o.run.moeLayerFreq, o.run.expertFf};
    const ModelConfig denseCfg = parseHfConfig(readTextFile(in.base / "config.json"), (in.base / "config.json").string());
    // The hidden-state router inits run prompts through the model: those conversions load it.
    if (canStreamConvert(denseCfg, o.run.method, shape, o.layout) && !isHiddenRouterInit(o.run.routerInit)) {
      StreamConvertOptions s;
      s.base = in.base;
      s.out = o.out;
      s.method = o.run.method;
      s.shape = shape;
      s.routerInit = o.run.routerInit;
      s.ratio = o.run.ratio;
      s.sharedIndices = o.run.sharedIndices;
      s.seed = o.run.seed;
      ConvertReport r;
      r.out = o.out;
      r.config = streamConvert(s);
      return r;
    }
    torch::Generator gen = at::detail::createCPUGenerator(o.run.seed);
    RunSummary summary;
    DecoderLM moe = buildRunModel(o.run, in, gen, summary);
    if (moe->config().loraExperts.enabled() && !o.keepFactors) moe = mergeLoraExperts(*moe);
    SaveOptions save;
    if (moe->config().modelType == "mixtral")
      save.layout = o.layout == "mixtral-fused" ? MoeLayout::MixtralFused : MoeLayout::MixtralHub;
    saveModel(moe, o.out, save);
    copyTokenizerFiles(in.base, o.out);
    ConvertReport r{o.out, moe->config(), summary.checkpointsUsed, summary.lineage.size(), summary.seedBuckets};
    return r;
  });
}

// ------------------------------------------------------------------------------------ create

CreateOptions tinyBase() {
  CreateOptions c;
  c.hiddenSize = 128;
  c.intermediateSize = 344;
  c.numLayers = 4;
  c.numHeads = 4;
  c.numKvHeads = 2;
  c.promptTemplate = "compact";
  return c;
}

ModelConfig createConfig(const CreateOptions& o) {
  ModelConfig c;
  c.modelType = o.modelType;
  c.vocabSize = o.vocabSize;
  c.hiddenSize = o.hiddenSize;
  c.intermediateSize = o.intermediateSize;
  c.numLayers = o.numLayers;
  c.numHeads = o.numHeads;
  c.numKvHeads = o.numKvHeads;
  UPCYCLE_CHECK(o.numHeads > 0 && o.hiddenSize % o.numHeads == 0, "hidden size (", o.hiddenSize,
                ") must be a multiple of the number of heads (", o.numHeads, ")");
  c.headDim = o.hiddenSize / o.numHeads;
  c.tieWordEmbeddings = o.tieWordEmbeddings;
  const std::string dtype = o.dtype == "bf16" ? "bfloat16" : o.dtype == "fp16" ? "float16"
                            : o.dtype == "fp32" ? "float32" : o.dtype;
  c.dtype = dtypeFromTorchName(dtype, "--dtype");
  c.attentionBias = o.modelType == "qwen2" || o.modelType == "qwen2_moe";
  c.qkNorm = o.modelType == "qwen3" || o.modelType == "qwen3_moe";  // head_dim stays hidden / heads
  c.rmsNormEps = o.rmsNormEps;
  c.ropeTheta = o.ropeTheta;
  c.maxPositionEmbeddings = o.maxPositionEmbeddings;
  UPCYCLE_CHECK(o.rmsNormEps > 0, "--rms-eps must be positive, got ", o.rmsNormEps);
  UPCYCLE_CHECK(o.ropeTheta > 0, "--rope-theta must be positive, got ", o.ropeTheta);
  UPCYCLE_CHECK(o.maxPositionEmbeddings > 0, "--max-positions must be positive, got ", o.maxPositionEmbeddings);
  return c;
}

ModelConfig createRandomModel(const CreateOptions& o) {
  UPCYCLE_CHECK(!o.out.empty(), "--out is required");
  ModelConfig c = createConfig(o);
  if (!o.tokenizer.empty()) {  // a real tokenizer: its special ids, checked against the vocabulary
    UPCYCLE_CHECK(fs::is_directory(o.tokenizer), "--tokenizer: not a folder: ", o.tokenizer.string());
    const auto tok = loadTokenizer(o.tokenizer);
    UPCYCLE_CHECK(tok->vocabSize() <= c.vocabSize, "--tokenizer ", o.tokenizer.string(), " has ", tok->vocabSize(),
                  " tokens, more than --vocab ", c.vocabSize);
    c.bosTokenId = tok->bos;
    c.eosTokenId = tok->eos;
    c.padTokenId = tok->pad;
  } else if (c.vocabSize >= ByteTokenizer::kVocab) {  // room for the byte tokenizer's specials
    c.bosTokenId = ByteTokenizer::kBos;
    c.eosTokenId = ByteTokenizer::kEos;
    c.padTokenId = ByteTokenizer::kPad;
  }
  if (o.modelType == "mixtral" || o.modelType == "qwen2_moe" || o.modelType == "qwen3_moe") {
    c.numExperts = o.experts > 0 ? o.experts : 4;
    c.topK = o.topK;
    c.expertIntermediateSize = o.intermediateSize;
    c.moeLayers.assign(o.numLayers, true);
    c.moeLayout = o.modelType == "mixtral" ? MoeLayout::MixtralHub : MoeLayout::Qwen2Moe;
  } else {
    UPCYCLE_CHECK(o.modelType == "llama" || o.modelType == "mistral" || o.modelType == "qwen2" ||
                      o.modelType == "qwen3",
                  "--arch \"", o.modelType, "\" is not one of ", supportedModelTypes());
  }
  c.validate("--arch " + o.modelType);
  return withTorchErrors("create", [&] {
  DecoderLM model(c);
  torch::Generator gen = at::detail::createCPUGenerator(o.seed);
  model->initWeights(gen);
  saveModel(model, o.out);
  if (!o.tokenizer.empty()) copyTokenizerFiles(o.tokenizer, o.out);
  else if (c.vocabSize >= ByteTokenizer::kVocab) writeByteTokenizerConfig(o.out, o.promptTemplate);
  return c;
  });
}

}  // namespace upcycle
