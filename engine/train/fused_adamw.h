#pragma once
// AdamW with one pass over each parameter on the CPU (internal: includes torch).
//
// LibTorch 1.13's AdamW updates a parameter in nine tensor operations (decay, two for each moment, a
// square root, a division, an add, the update), each a full pass over memory, two of them allocating.
// On the CPU the step is memory-bound: FusedAdamW reads the parameter, its gradient and both moments
// once and writes the parameter and the moments once, in the same float32 arithmetic in the same
// order (so it follows torch::optim::AdamW to float rounding; tests/train/test_fused_adamw.cpp checks
// it against LibTorch's implementation). It is a torch::optim::AdamW: the same options, the same
// per-parameter state (step, exp_avg, exp_avg_sq) under the same keys, so optimizer.pt files save and
// load unchanged. Tensors the fused loop does not cover (CUDA, not float32, not contiguous, amsgrad,
// sparse gradients) take LibTorch's operations.
// Thread-safety: as any torch optimizer, one thread at a time; the loop itself uses at::parallel_for.
#include <torch/torch.h>

namespace upcycle {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// One AdamW update of float32 CPU arrays in place (exposed for the tests and the benchmark):
// p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
void fusedAdamWUpdate(float* p, const float* g, float* m, float* v, int64_t n, double lr, double beta1,
                      double beta2, double eps, double weightDecay, int64_t step);

}  // namespace upcycle
