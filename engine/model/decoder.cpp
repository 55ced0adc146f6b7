#include "model/decoder.h"

#include <cmath>

#include "core/error.h"
#include "core/torch_compat.h"

namespace upcycle {

namespace F = torch::nn::functional;

RmsNormImpl::RmsNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  // As HF LlamaRMSNorm: normalize in float32, cast back, then scale.
  auto h = x.to(torch::kFloat);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

SwiGluImpl::SwiGluImpl(int64_t d, int64_t f) {
  gate_proj = register_module("gate_proj", torch::nn::Linear(torch::nn::LinearOptions(d, f).bias(false)));
  up_proj = register_module("up_proj", torch::nn::Linear(torch::nn::LinearOptions(d, f).bias(false)));
  down_proj = register_module("down_proj", torch::nn::Linear(torch::nn::LinearOptions(f, d).bias(false)));
}

torch::Tensor SwiGluImpl::forward(const torch::Tensor& x) {
  return adapted(down_proj, down_proj_lora,
                 torch::silu(adapted(gate_proj, gate_proj_lora, x)) * adapted(up_proj, up_proj_lora, x));
}

LoraImpl::LoraImpl(int64_t in, int64_t out, int64_t rank, double scale_, double dropout_)
    : scale(scale_), dropout(dropout_) {
  lora_A = register_parameter("lora_A", torch::zeros({rank, in}));
  lora_B = register_parameter("lora_B", torch::zeros({out, rank}));
}

torch::Tensor LoraImpl::forward(const torch::Tensor& xIn) {
  auto x = xIn;
  if (is_training() && dropout > 0) {
    // Inverted dropout with the trainer's generator, so that a run's masks follow its seed.
    auto keep = torch::empty(x.sizes(), torch::kFloat);
    if (generator) keep.bernoulli_(1.0 - dropout, *generator);
    else keep.bernoulli_(1.0 - dropout);
    x = x * (keep.to(x.device()) / (1.0 - dropout)).to(x.scalar_type());
  }
  // torch::linear, not matmul with a transposed weight: autocast casts both to bf16 under mixed precision.
  return torch::linear(torch::linear(x, lora_A), lora_B) * scale;
}

torch::Tensor adapted(torch::nn::Linear& proj, Lora& lora, const torch::Tensor& x) {
  auto y = proj(x);
  return lora ? y + lora(x).to(y.scalar_type()) : y;
}

AttentionImpl::AttentionImpl(const ModelConfig& c)
    : numHeads(c.numHeads), numKvHeads(c.numKvHeads), headDim(c.headDim) {
  using torch::nn::LinearOptions;
  const int64_t d = c.hiddenSize;
  q_proj = register_module("q_proj", torch::nn::Linear(LinearOptions(d, numHeads * headDim).bias(c.attentionBias)));
  k_proj = register_module("k_proj", torch::nn::Linear(LinearOptions(d, numKvHeads * headDim).bias(c.attentionBias)));
  v_proj = register_module("v_proj", torch::nn::Linear(LinearOptions(d, numKvHeads * headDim).bias(c.attentionBias)));
  o_proj = register_module("o_proj", torch::nn::Linear(LinearOptions(numHeads * headDim, d).bias(false)));
  if (c.qkNorm) {
    q_norm = register_module("q_norm", RmsNorm(headDim, c.rmsNormEps));
    k_norm = register_module("k_norm", RmsNorm(headDim, c.rmsNormEps));
  }
}

namespace {
// HF rotate_half: the first and second halves of the head dimension form the rotation pairs.
torch::Tensor rotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
}  // namespace

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor& mask,
                                     torch::Tensor* cacheK, torch::Tensor* cacheV) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = adapted(q_proj, q_proj_lora, x).view({B, T, numHeads, headDim});    // (B, T, H, hd)
  auto k = adapted(k_proj, k_proj_lora, x).view({B, T, numKvHeads, headDim});  // (B, T, KV, hd)
  if (q_norm) {  // Qwen3: RMSNorm over each head's hd values, before the rotary embedding
    q = q_norm(q);
    k = k_norm(k);
  }
  q = q.transpose(1, 2);                                                 // (B, H, T, hd)
  k = k.transpose(1, 2);                                                 // (B, KV, T, hd)
  auto v = adapted(v_proj, v_proj_lora, x).view({B, T, numKvHeads, headDim}).transpose(1, 2);  // (B, KV, T, hd)
  auto c = cos.to(q.scalar_type()), s = sin.to(q.scalar_type());
  q = q * c + rotateHalf(q) * s;
  k = k * c + rotateHalf(k) * s;
  if (cacheK) {  // append to the cached positions: (B, KV, Tpast + T, hd)
    if (cacheK->defined()) {
      k = torch::cat({*cacheK, k}, 2);
      v = torch::cat({*cacheV, v}, 2);
    }
    *cacheK = k;
    *cacheV = v;
  }
  if (numKvHeads != numHeads) {  // grouped KV: head h reads kv head h / (H / KV)
    k = k.repeat_interleave(numHeads / numKvHeads, 1);
    v = v.repeat_interleave(numHeads / numKvHeads, 1);
  }
  auto scores = torch::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(headDim));  // (B, H, T, Tk)
  scores = scores.to(torch::kFloat) + mask;
  auto attn = torch::softmax(scores, -1).to(q.scalar_type());
  auto out = torch::matmul(attn, v).transpose(1, 2).reshape({B, T, numHeads * headDim});
  return adapted(o_proj, o_proj_lora, out);
}

MoeBlockImpl::MoeBlockImpl(const ModelConfig& c, torch::Dtype dtype)
    : numExperts(c.numExperts), topK(c.topK), normTopk(c.normTopkProb), jitter(c.routerJitterNoise) {
  const int64_t E = c.numExperts, D = c.hiddenSize, F = c.expertIntermediateSize;
  router = register_module("router", torch::nn::Linear(torch::nn::LinearOptions(D, E).bias(false)));
  if (c.loraExperts.enabled()) {
    // One base FFN shared by the experts; each expert's own part is its LoRA factors.
    loraRank = c.loraExperts.rank;
    loraScale = c.loraExperts.scale();
    const int64_t r = loraRank;
    base_gate = register_parameter("base_gate", torch::zeros({F, D}, dtype));
    base_up = register_parameter("base_up", torch::zeros({F, D}, dtype));
    base_down = register_parameter("base_down", torch::zeros({D, F}, dtype));
    const auto& t = c.loraExperts.targets;
    auto has = [&](const char* n) { return std::find(t.begin(), t.end(), n) != t.end(); };
    if (has("gate_proj")) {
      lora_gate_A = register_parameter("lora_gate_A", torch::zeros({E, r, D}));
      lora_gate_B = register_parameter("lora_gate_B", torch::zeros({E, F, r}));
    }
    if (has("up_proj")) {
      lora_up_A = register_parameter("lora_up_A", torch::zeros({E, r, D}));
      lora_up_B = register_parameter("lora_up_B", torch::zeros({E, F, r}));
    }
    if (has("down_proj")) {
      lora_down_A = register_parameter("lora_down_A", torch::zeros({E, r, F}));
      lora_down_B = register_parameter("lora_down_B", torch::zeros({E, D, r}));
    }
  } else {
    // The stacks, most of an MoE's memory, are made in `dtype` directly.
    w_gate = register_parameter("w_gate", torch::zeros({E, F, D}, dtype));
    w_up = register_parameter("w_up", torch::zeros({E, F, D}, dtype));
    w_down = register_parameter("w_down", torch::zeros({E, D, F}, dtype));
  }
  if (c.sharedExpertIntermediateSize > 0) {
    shared_expert = register_module("shared_expert", SwiGlu(D, c.sharedExpertIntermediateSize));
    shared_expert_gate = register_module(
        "shared_expert_gate", torch::nn::Linear(torch::nn::LinearOptions(D, 1).bias(false)));
  }
  if (dtype != torch::kFloat) to(dtype);
}

torch::Tensor MoeBlockImpl::forward(const torch::Tensor& xIn, RouterRecord& record) {
  const int64_t B = xIn.size(0), T = xIn.size(1), D = xIn.size(2), N = B * T;
  auto x = xIn.reshape({N, D});  // (N, D)
  if (is_training() && jitter > 0) {
    auto noise = torch::empty(x.sizes(), torch::kFloat);
    if (generator) noise.uniform_(1.0 - jitter, 1.0 + jitter, *generator);
    else noise.uniform_(1.0 - jitter, 1.0 + jitter);
    x = x * noise.to(x.device()).to(x.scalar_type());
  }
  // Router in float32 (SPEC §1), also under bf16 autocast.
  torch::Tensor logits, probs, topW, topI;
  {
    NoAutocast fp32(autocastKeys());
    logits = torch::linear(x.to(torch::kFloat), router->weight.to(torch::kFloat));  // (N, E)
    probs = torch::softmax(logits, -1);                                            // (N, E)
    std::tie(topW, topI) = probs.topk(topK, -1);                                   // (N, K)
    if (normTopk) topW = topW / topW.sum(-1, /*keepdim=*/true);
  }
  record.logits = logits;
  record.probs = probs;
  record.experts = topI;
  if (captureInputs) record.inputs = x.detach();

  // Group the (token, slot) pairs by expert and run each expert once on its own tokens.
  auto flatExpert = topI.reshape({-1});                                            // (N*K)
  auto order = std::get<1>(flatExpert.sort(/*stable=*/true, 0, /*descending=*/false));  // (N*K)
  auto counts = torch::bincount(flatExpert, {}, numExperts).to(torch::kCPU);
  std::vector<int64_t> cnt(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + numExperts);
  // Under bf16 autocast each expert's matmul would cast its slice of the float32 weights on every call
  // (autocast caches only leaf tensors, and the slices are views): cast each stacked tensor once.
  const bool bf16 = bf16AutocastActive(x.device()) &&
                    (loraExperts() ? base_gate : w_gate).scalar_type() == torch::kFloat;
  // oneDNN JIT-builds a bf16 matmul kernel for every new shape (about 0.5 ms each at d 256 on an AMX
  // Xeon), and routing gives each expert a new row count every step: 288 new kernels per step of a
  // 4-layer, 8-expert model. On the CPU in bf16 each expert's rows are rounded up to a multiple of 64
  // with zero rows (slot index N*K: the token N, a zero row of x, with routing weight 0), so the
  // shapes repeat and their kernels are cached; at most 63 wasted rows per expert.
  const int64_t pad = bf16 && x.device().is_cpu() ? 64 : 1;
  torch::Tensor xsrc = x, wsrc = topW.reshape({-1});
  if (pad > 1) {
    const int64_t NK = N * topK;
    auto o = order.to(torch::kCPU).contiguous();
    const int64_t* src = o.data_ptr<int64_t>();
    std::vector<int64_t> padded;
    padded.reserve(static_cast<size_t>(NK + numExperts * pad));
    int64_t at = 0;
    for (int64_t e = 0; e < numExperts; ++e) {
      padded.insert(padded.end(), src + at, src + at + cnt[e]);
      at += cnt[e];
      const int64_t target = cnt[e] == 0 ? 0 : (cnt[e] + pad - 1) / pad * pad;
      padded.insert(padded.end(), static_cast<size_t>(target - cnt[e]), NK);
      cnt[e] = target;
    }
    order = torch::tensor(padded, torch::kLong).to(x.device());
    xsrc = torch::cat({x, torch::zeros({1, D}, x.options())}, 0);               // (N+1, D)
    wsrc = torch::cat({wsrc, torch::zeros({1}, wsrc.options())}, 0);            // (N*K+1)
  }
  auto tokenOf = order.div(topK, "floor");  // (rows) token of each row; N for padding
  auto xs = xsrc.index_select(0, tokenOf);  // (rows, D) tokens sorted by expert
  // Per-expert views through unbind and split: their backward stacks (concatenates) the E gradients
  // once. Indexing w_gate[e] or narrowing xs instead gives each expert a zero-filled gradient of the
  // whole tensor that autograd then sums: E^2 F D traffic per weight, 42% of the layer's time at
  // d 256 on the CPU.
  auto cast = [&](const torch::Tensor& w) { return bf16 && w.defined() ? w.to(torch::kBFloat16) : w; };
  torch::Tensor ys;  // (rows, D)
  if (loraExperts()) {
    ys = loraExpertRows(cast(xs), cnt, cast);
  } else {
    const auto gate = cast(w_gate).unbind(0), up = cast(w_up).unbind(0), down = cast(w_down).unbind(0);
    const auto segs = cast(xs).split_with_sizes(cnt);  // (n_e, D) each
    std::vector<torch::Tensor> outs;
    for (int64_t e = 0; e < numExperts; ++e) {
      if (cnt[e] == 0) continue;
      auto h = torch::silu(torch::matmul(segs[e], gate[e].t())) * torch::matmul(segs[e], up[e].t());  // (n, F)
      outs.push_back(torch::matmul(h, down[e].t()));                                                  // (n, D)
    }
    ys = torch::cat(outs, 0);
  }
  auto w = wsrc.index_select(0, order).unsqueeze(1).to(ys.scalar_type());
  auto out = torch::zeros({xsrc.size(0), D}, ys.options()).index_add(0, tokenOf, ys * w).to(x.scalar_type());
  if (pad > 1) out = out.narrow(0, 0, N);
  if (shared_expert) {
    auto g = torch::sigmoid(shared_expert_gate(x));  // (N, 1)
    out = out + g * shared_expert(x);
  }
  return out.view({B, T, D});
}

torch::Tensor MoeBlockImpl::loraExpertRows(const torch::Tensor& xs, const std::vector<int64_t>& cnt,
                                           const std::function<torch::Tensor(const torch::Tensor&)>& cast) {
  // The base projections run once over all rows (the experts share them); each expert adds its
  // low-rank update scale * (x A_e^T) B_e^T on its own rows. Per-expert factor views through unbind,
  // as for the stacks (one concatenated gradient per factor).
  auto lowRank = [&](const torch::Tensor& A, const torch::Tensor& B, const torch::Tensor& rows) {
    if (!A.defined()) return torch::Tensor();
    const auto a = cast(A).unbind(0), b = cast(B).unbind(0);
    const auto segs = rows.split_with_sizes(cnt);
    std::vector<torch::Tensor> outs;
    for (int64_t e = 0; e < numExperts; ++e)
      if (cnt[e] > 0) outs.push_back(torch::matmul(torch::matmul(segs[e], a[e].t()), b[e].t()));
    return torch::cat(outs, 0) * loraScale;
  };
  auto project = [&](const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, const torch::Tensor& rows) {
    auto y = torch::matmul(rows, cast(W).t());
    auto d = lowRank(A, B, rows);
    return d.defined() ? y + d.to(y.scalar_type()) : y;
  };
  auto h = torch::silu(project(base_gate, lora_gate_A, lora_gate_B, xs)) * project(base_up, lora_up_A, lora_up_B, xs);
  return project(base_down, lora_down_A, lora_down_B, h);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> MoeBlockImpl::expertWeights() const {
  torch::NoGradGuard ng;
  if (!loraExperts()) return {w_gate.detach(), w_up.detach(), w_down.detach()};
  auto full = [&](const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B) {
    auto w = W.detach().to(torch::kFloat).unsqueeze(0).expand({numExperts, W.size(0), W.size(1)});
    return A.defined() ? w + torch::bmm(B.detach().to(torch::kFloat), A.detach().to(torch::kFloat)) * loraScale
                       : w.contiguous();
  };
  return {full(base_gate, lora_gate_A, lora_gate_B), full(base_up, lora_up_A, lora_up_B),
          full(base_down, lora_down_A, lora_down_B)};
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, int64_t layer, torch::Dtype dtype) {
  input_layernorm = register_module("input_layernorm", RmsNorm(c.hiddenSize, c.rmsNormEps));
  self_attn = register_module("self_attn", Attention(c));
  post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(c.hiddenSize, c.rmsNormEps));
  if (c.isMoeLayer(layer)) moe = register_module("moe", MoeBlock(c, dtype));
  else mlp = register_module("mlp", SwiGlu(c.hiddenSize, c.intermediateSize));
  if (dtype != torch::kFloat) to(dtype);  // this layer's float32 Linear weights, before the next layer's
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const torch::Tensor& mask,
                                        std::vector<RouterRecord>& routing, torch::Tensor* cacheK,
                                        torch::Tensor* cacheV) {
  auto h = x + self_attn->forward(input_layernorm(x), cos, sin, mask, cacheK, cacheV);
  auto n = post_attention_layernorm(h);
  if (moe) {
    routing.emplace_back();
    return h + moe(n, routing.back());
  }
  return h + mlp(n);
}

BackboneImpl::BackboneImpl(const ModelConfig& c, torch::Dtype dtype) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocabSize, c.hiddenSize));
  if (dtype != torch::kFloat) embed_tokens->to(dtype);
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.numLayers; ++i) layers->push_back(DecoderLayer(c, i, dtype));
  norm = register_module("norm", RmsNorm(c.hiddenSize, c.rmsNormEps));
  if (dtype != torch::kFloat) norm->to(dtype);
}

DecoderLMImpl::DecoderLMImpl(ModelConfig cfg, torch::Dtype dtype) : m_cfg(std::move(cfg)) {
  m_cfg.validate("model config");
  model = register_module("model", Backbone(m_cfg, dtype));
  if (!m_cfg.tieWordEmbeddings) {
    lm_head = register_module("lm_head", torch::nn::Linear(
        torch::nn::LinearOptions(m_cfg.hiddenSize, m_cfg.vocabSize).bias(false)));
    if (dtype != torch::kFloat) lm_head->to(dtype);
  }
}

torch::Tensor DecoderLMImpl::lmHeadWeight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

void DecoderLMImpl::initWeights(torch::Generator& gen) {
  torch::NoGradGuard noGrad;
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    auto& t = p.value();
    if (name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0) t.fill_(1.0);
    else if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) t.zero_();
    else t.normal_(0.0, m_cfg.initializerRange, gen);
  }
}

void DecoderLMImpl::captureRouterInputs(bool on) {
  for (const auto& m : model->layers->children()) {
    auto layer = std::dynamic_pointer_cast<DecoderLayerImpl>(m);
    if (layer && layer->moe) layer->moe->captureInputs = on;
  }
}

void DecoderLMImpl::setJitterGenerator(const torch::Generator& gen) {
  for (const auto& m : model->layers->children()) {
    auto layer = std::dynamic_pointer_cast<DecoderLayerImpl>(m);
    if (layer && layer->moe) layer->moe->generator = gen;
  }
}

ForwardOutput DecoderLMImpl::forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask) {
  return run(inputIds, attentionMask, nullptr);
}

ForwardOutput DecoderLMImpl::forwardCached(const torch::Tensor& inputIds, KVCache& cache) {
  return run(inputIds, {}, &cache);
}

ForwardOutput DecoderLMImpl::run(const torch::Tensor& inputIds, const torch::Tensor& attentionMask,
                                 KVCache* cache) {
  UPCYCLE_CHECK(inputIds.dim() == 2, "input_ids must be (batch, time), got ", inputIds.sizes());
  const int64_t T = inputIds.size(1);
  const int64_t past = cache ? cache->length : 0;
  const auto dev = inputIds.device();
  auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(dev);
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(dev);

  // Rotary tables for positions past..past+T-1, HF convention: inv_freq = theta^(-2i/hd), positions
  // scaled by a linear factor.
  const int64_t hd = m_cfg.headDim;
  auto invFreq = 1.0 / torch::pow(m_cfg.ropeTheta, torch::arange(0, hd, 2, lopt).to(torch::kFloat) / hd);
  auto pos = torch::arange(past, past + T, fopt) / m_cfg.ropeLinearFactor;
  auto freqs = torch::outer(pos, invFreq);        // (T, hd/2)
  auto emb = torch::cat({freqs, freqs}, -1);      // (T, hd)
  auto cos = emb.cos(), sin = emb.sin();

  // Additive mask (B or 1, 1, T, past+T): causal, optional sliding window, optional key padding.
  auto i = torch::arange(past, past + T, lopt).unsqueeze(1);  // query positions
  auto j = torch::arange(0, past + T, lopt).unsqueeze(0);     // key positions
  auto allowed = j <= i;
  if (m_cfg.slidingWindow > 0) allowed = allowed & ((i - j) < m_cfg.slidingWindow);
  allowed = allowed.view({1, 1, T, past + T});
  if (attentionMask.defined())
    allowed = allowed & attentionMask.to(torch::kBool).view({attentionMask.size(0), 1, 1, T});
  auto mask = torch::zeros(allowed.sizes(), fopt).masked_fill(allowed.logical_not(), -1e9);

  ForwardOutput out;
  auto h = model->embed_tokens(inputIds);
  const auto layers = model->layers->children();
  if (cache && cache->keys.empty()) {
    cache->keys.resize(layers.size());
    cache->values.resize(layers.size());
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    auto layer = std::static_pointer_cast<DecoderLayerImpl>(layers[l]);
    h = layer->forward(h, cos, sin, mask, out.routing, cache ? &cache->keys[l] : nullptr,
                       cache ? &cache->values[l] : nullptr);
  }
  if (cache) cache->length += T;
  h = model->norm(h);
  out.logits = torch::matmul(h, lmHeadWeight().t()).to(torch::kFloat);  // (B, T, V)
  return out;
}

LossSum nextTokenLoss(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t T = logits.size(1), V = logits.size(2);
  auto pred = logits.narrow(1, 0, T - 1).reshape({-1, V});
  auto target = labels.narrow(1, 1, T - 1).reshape({-1});
  LossSum r;
  r.sum = F::cross_entropy(pred, target, F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  r.count = (target != -100).sum().item<int64_t>();
  return r;
}

std::pair<torch::Tensor, torch::Tensor> stackedRouting(const std::vector<RouterRecord>& routing,
                                                       const torch::Tensor& tokenMask) {
  std::vector<torch::Tensor> probs, experts;
  for (const auto& r : routing) {
    probs.push_back(tokenMask.defined() ? r.probs.index({tokenMask}) : r.probs);
    experts.push_back(tokenMask.defined() ? r.experts.index({tokenMask}) : r.experts);
  }
  return {torch::cat(probs, 0), torch::cat(experts, 0)};
}

torch::Tensor loadBalancingLoss(const std::vector<RouterRecord>& routing, int64_t E,
                                const torch::Tensor& tokenMask) {
  if (routing.empty()) return torch::zeros({});
  const auto [p, idx] = stackedRouting(routing, tokenMask);  // (L*N, E), (L*N, K)
  auto f = torch::one_hot(idx.reshape({-1}), E).to(torch::kFloat).mean(0);  // (E) share of assignments
  auto P = p.mean(0);                                                       // (E)
  return static_cast<double>(E) * (f * P).sum();
}

torch::Tensor routerZLoss(const std::vector<RouterRecord>& routing, const torch::Tensor& tokenMask) {
  if (routing.empty()) return torch::zeros({});
  std::vector<torch::Tensor> z;
  for (const auto& r : routing) z.push_back(tokenMask.defined() ? r.logits.index({tokenMask}) : r.logits);
  return torch::logsumexp(torch::cat(z, 0), -1).pow(2).mean();
}

}  // namespace upcycle
