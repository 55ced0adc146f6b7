#pragma once
// The experts of an MoE layer over rows already grouped by expert, as one autograd function.
// Internal header (includes torch).
//
// Forward:  for each expert e and its rows X_e (counts[e] consecutive rows of xs),
//             Y_e = (silu(X_e Wg_e^T) * (X_e Wu_e^T)) Wd_e^T
// Backward: every GEMM writes straight into its slice of the gradient (dWg[e], dWu[e], dWd[e], dX_e);
//           the SwiGLU derivative is one elementwise pass over the whole (rows, F) block.
// Per expert, autograd through `w[e]` would instead materialize a zero (E, F, D) gradient per expert
// and weight and sum them (E^2 F D traffic per weight); that was 35% of the layer's time on the CPU.
//
// xs (M, D) with M = sum(counts); wg, wu (E, F, D); wd (E, D, F); all one dtype and device.
// Returns ys (M, D). Thread-safety: none needed (no state).
#include <torch/torch.h>

#include <vector>

namespace upcycle {

torch::Tensor groupedSwiGlu(const torch::Tensor& xs, const std::vector<int64_t>& counts, const torch::Tensor& wg,
                            const torch::Tensor& wu, const torch::Tensor& wd);

}  // namespace upcycle
