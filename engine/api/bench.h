#pragma once
// `upcycle bench moe`: one MoE layer, forward plus backward, the grouped path against the naive
// Hugging Face Mixtral algorithm (per expert: mask its tokens, compute, index_add), measured in the same
// run next to a float32 matmul peak. Torch-free header. Thread-safety: calling thread only.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle {

struct MoeBenchOptions {
  int64_t dModel = 256, dFf = 688, experts = 8, topK = 2, tokens = 2048;
  std::string device = "cpu";
  // fp32, or bf16: the grouped path and the naive loop both under bf16 autocast (float32 weights, as a
  // Hugging Face model under torch.autocast), with the naive loop in float32 measured beside them.
  std::string precision = "fp32";
  // New random inputs every round, so the router gives each expert a new row count as in training
  // (which makes oneDNN build new bf16 kernels for the naive loop's shapes); false: the same inputs.
  bool varyRouting = false;
  int64_t warmup = 2, iterations = 10;
  uint64_t seed = 0;
};

struct MoeBenchResult {
  MoeBenchOptions options;
  int threads = 1;
  double groupedSeconds = 0, naiveSeconds = 0;  // median forward + backward
  double tokensPerS = 0, naiveTokensPerS = 0;
  double achievedGflops = 0, naiveGflops = 0;   // counted expert + router FLOPs (fwd + 2x bwd) / time
  double matmulPeakGflops = 0;                  // matmul at the average expert GEMM shape, in the precision
  double speedup = 0;                           // median over rounds of naive time / grouped time
  // bf16 only: the naive loop in float32, and the float32 matmul peak, in the same rounds.
  double naiveFp32Seconds = 0, speedupVsNaiveFp32 = 0, fp32PeakGflops = 0;
};

MoeBenchResult benchMoe(const MoeBenchOptions& o);
std::string moeBenchJson(const MoeBenchResult& r);

// `upcycle bench train`: whole training steps (forward, backward, AdamW, clipping) of a randomly
// initialized decoder on random tokens, through the same trainer as every pipeline stage. Model FLOPs
// utilization = counted model FLOPs per second / the measured matmul peak (float32 on the CPU), the
// peak probed right after every step (the median of the per-step ratios is reported).
// FLOPs per token: forward 2 x (active matmul parameters: attention projections, the k chosen experts,
// the router, the LM head) + 2 x layers x seq_len x d_model (causal attention scores and values);
// training = 3 x forward.
struct TrainBenchOptions {
  int64_t dModel = 256, dFf = 688, layers = 4, heads = 4, kvHeads = 2, experts = 8, topK = 2;  // experts 0: dense
  int64_t seqLen = 256, batch = 8;
  int64_t warmup = 2, steps = 6;
  std::string device = "cpu";
  std::string precision = "fp32";  // fp32 | bf16 | auto: the trainer's; MFU against that precision's peak
  bool fusedAdamW = true;          // false: LibTorch's AdamW (TrainOptions::fusedAdamW)
  uint64_t seed = 0;
};

struct TrainBenchResult {
  TrainBenchOptions options;
  int threads = 1;
  int world = 1;  // data-parallel ranks (--nproc): batch is the global batch, the peak is world x a rank's
  std::string precision;                       // resolved: fp32 or bf16
  double fp32PeakGflops = 0;                   // bf16 runs: the float32 peak at the same shape, for reference
  int64_t totalParams = 0, activeParams = 0;  // active: per token (k of E experts)
  double flopsPerToken = 0;                    // training (3 x forward)
  double secondsPerStep = 0;                   // median over the measured steps
  double tokensPerS = 0, achievedGflops = 0, matmulPeakGflops = 0, mfu = 0;
};

TrainBenchResult benchTrain(const TrainBenchOptions& o);
std::string trainBenchJson(const TrainBenchResult& r);

// `upcycle bench adamw`: one optimizer step over the parameters of `bench train`'s model (same sizes),
// LibTorch's AdamW against the trainer's FusedAdamW on the same gradients, in interleaved rounds.
// Bytes moved: LibTorch's sequence reads and writes each float32 parameter-sized tensor in nine
// operations; the fused loop reads p, g, m, v and writes p, m, v once (28 bytes per parameter).
struct AdamWBenchOptions {
  int64_t dModel = 256, dFf = 688, layers = 4, experts = 8;
  int64_t rounds = 7;
  uint64_t seed = 0;
};

struct AdamWBenchResult {
  AdamWBenchOptions options;
  int threads = 1;
  int64_t params = 0;
  double torchSeconds = 0, fusedSeconds = 0;  // medians
  double speedup = 0;                          // median over rounds of torch / fused
  double fusedGbPerS = 0;                      // 28 bytes per parameter / fusedSeconds
  double maxRelDiff = 0;                       // the two optimizers' parameters after all rounds (max |a-b| / max |b|)
};

AdamWBenchResult benchAdamW(const AdamWBenchOptions& o);
std::string adamWBenchJson(const AdamWBenchResult& r);

// `upcycle bench allreduce`: c10d all-reduce (sum, float32) of one tensor per size across the ranks of
// the running group (Gloo on the CPU, NCCL on CUDA), as the gradient reducer issues its buckets. Each
// iteration is a barrier, then one timed all-reduce; medians over the iterations, from rank 0.
// Bus bandwidth as NCCL's tests define it: 2 (n - 1) / n x bytes / time.
struct AllreduceBenchOptions {
  std::vector<double> sizesMb = {0.25, 1, 4, 16, 64};
  int64_t warmup = 3, iterations = 20;
};

struct AllreduceBenchRow {
  double mb = 0, seconds = 0, algoGbPerS = 0, busGbPerS = 0;
};

struct AllreduceBenchResult {
  int world = 1;
  std::string backend;
  std::vector<AllreduceBenchRow> rows;
};

// Needs a data-parallel group of at least 2 ranks (initDistributed).
AllreduceBenchResult benchAllreduce(const AllreduceBenchOptions& o);
std::string allreduceBenchJson(const AllreduceBenchResult& r);

// `upcycle bench analysis`: the expert-similarity analysis (weights and deltas) of an MoE and UpIT's GA
// child (linear merge + DARE mutation), each as effective memory traffic against the measured memory
// bandwidth (a large float32 copy: read + write bytes / time). Bytes counted: analysis reads every
// expert's FFN weights and the base's once; a GA child reads two parents and the base and writes the
// child (4 x one expert's FFN bytes).
struct AnalysisBenchOptions {
  int64_t dModel = 1024, dFf = 2816, layers = 4, experts = 8;
  int64_t iterations = 3;
  uint64_t seed = 0;
};

struct AnalysisBenchResult {
  AnalysisBenchOptions options;
  int threads = 1;
  double expertBytes = 0;             // one expert's FFN over all layers (float32)
  double analysisSeconds = 0, mergeSeconds = 0;  // medians
  double analysisGbPerS = 0, mergeGbPerS = 0, bandwidthGbPerS = 0;
  double analysisGflops = 0;   // the Gram matrices: 2 E^2 FLOPs per expert weight, for weights and deltas
  double maskSeconds = 0;      // drawing one child's DARE masks alone (uniforms from the CPU generator)
};

AnalysisBenchResult benchAnalysis(const AnalysisBenchOptions& o);
std::string analysisBenchJson(const AnalysisBenchResult& r);

// `upcycle bench tokenize`: a model folder's tokenizer (as loadTokenizer picks it: tokenizer.json,
// tokenizer.model or the byte tokenizer) encoding every line of a text file, without special tokens,
// on the calling thread; `passes` times over the same tokenizer, so later passes find its word cache
// warm. MB are 10^6 bytes of UTF-8 input. Implemented in upcycle_formats (torch-free).
struct TokenizeBenchOptions {
  std::filesystem::path model;          // a checkpoint or tokenizer folder
  std::filesystem::path text;           // empty: tokenizeBenchCorpus(corpusBytes, seed)
  int64_t corpusBytes = 4'000'000;
  int64_t passes = 3;
  uint64_t seed = 0;
};

struct TokenizeBenchResult {
  TokenizeBenchOptions options;
  std::string tokenizerKind;
  int64_t bytes = 0, lines = 0, tokens = 0;  // tokens: of one pass
  int64_t idSum = 0;                         // the sum of all ids of one pass (to compare with a peer)
  double loadSeconds = 0;                    // loadTokenizer, once
  std::vector<double> passSeconds;           // each pass over all lines
  double seconds = 0;                        // median pass
  double mbPerS = 0, tokensPerS = 0;         // at the median pass
};

TokenizeBenchResult benchTokenize(const TokenizeBenchOptions& o);
std::string tokenizeBenchJson(const TokenizeBenchResult& r);
// The generated corpus, the same bytes for a seed on every platform: lines of English prose (a
// Zipf-like mix of common and rare words), code, digits, CJK, emoji, whitespace runs, long words
// (hashes, URLs, compounds) and other scripts, plus one paragraph of 20-60 KB on a single line per
// 512 KB. About `bytes` long (whole lines).
std::string tokenizeBenchCorpus(int64_t bytes, uint64_t seed);

}  // namespace upcycle
