#pragma once
// Merge operators from the model-merging literature, on single tensors of one shape (apply them per
// weight). Deltas are d_i = theta_i - base. Internal (includes torch). Thread-safety: pure functions
// apart from the generator they draw from.
#include <string>
#include <vector>

#include <torch/torch.h>

namespace upcycle {

// sum_i w_i * theta_i
torch::Tensor mergeLinear(const std::vector<torch::Tensor>& thetas, const std::vector<double>& weights);
// base + lambda * sum_i w_i * d_i
torch::Tensor mergeTaskArithmetic(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                                  const std::vector<double>& weights, double lambda);
// TIES: trim each d_i to its top-`density` fraction by magnitude, elect the sign of sum_i w_i d_i per
// entry, average (weighted) the trimmed entries that agree with it; base + lambda * that.
torch::Tensor mergeTies(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                        const std::vector<double>& weights, double density, double lambda = 1.0);

enum class DareRescale { Inverse, L1 };  // 1/(1-p) (the paper) or keep the delta's L1 norm (mergekit)
// DARE on one delta: drop each entry with probability p; rescale the kept ones.
torch::Tensor dare(const torch::Tensor& delta, double p, DareRescale rescale, torch::Generator& gen);
// DARE mask: keep = U[0,1) >= p, drawn on the CPU with `gen` (so the same seed gives the same mask
// on every device). Exposed so tests and lineage replay can recompute it.
torch::Tensor dareKeepMask(at::IntArrayRef shape, double p, torch::Generator& gen);
// DARE-linear: base + sum_i w_i * dare(d_i); DARE-TIES: TIES sign election on the DARE'd deltas.
torch::Tensor mergeDareLinear(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                              const std::vector<double>& weights, double p, DareRescale rescale,
                              torch::Generator& gen);
torch::Tensor mergeDareTies(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                            const std::vector<double>& weights, double p, DareRescale rescale,
                            torch::Generator& gen);
// SLERP between a and b on flattened tensors; linear when they are nearly parallel (|cos| > 0.9995).
torch::Tensor mergeSlerp(const torch::Tensor& a, const torch::Tensor& b, double t);

// Names: linear, task_arithmetic, ties, dare_linear, dare_ties, slerp. Throws UserError otherwise.
void checkMergeOperator(const std::string& name);

}  // namespace upcycle
