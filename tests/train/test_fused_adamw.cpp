// FusedAdamW against LibTorch's AdamW (an independent implementation of the same update) and against
// one update worked out by hand; its state saves into an optimizer.pt that LibTorch's AdamW loads.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "train/fused_adamw.h"

using namespace upcycle;

namespace {

std::vector<torch::optim::OptimizerParamGroup> twoGroups(const std::vector<torch::Tensor>& decay,
                                                         const std::vector<torch::Tensor>& noDecay,
                                                         const torch::optim::AdamWOptions& base) {
  std::vector<torch::optim::OptimizerParamGroup> g;
  g.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).weight_decay(0.1)));
  g.emplace_back(noDecay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).weight_decay(0.0)));
  return g;
}

// The largest difference relative to the largest value (elementwise ratios blow up where a value
// passes through zero).
double maxRelDiff(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max();
  return (d / b.to(torch::kDouble).abs().max()).item<double>();
}

}  // namespace

TEST(FusedAdamW, OneUpdateWorkedOutByHand) {
  // p 1, g 0.5, lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, step 1:
  // decay p = 1 * (1 - 0.001) = 0.999; m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 0.00025;
  // denom = sqrt(0.00025) / sqrt(1 - 0.999) + 1e-8 = 0.5 + 1e-8; p -= 0.1 / (1 - 0.9) * 0.05 / denom = 0.1.
  float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
  fusedAdamWUpdate(&p, &g, &m, &v, 1, 0.1, 0.9, 0.999, 1e-8, 0.01, 1);
  EXPECT_NEAR(m, 0.05, 1e-8);
  EXPECT_NEAR(v, 0.00025, 1e-10);
  EXPECT_NEAR(p, 0.899, 1e-6);
  // Step 2, g -0.5: m = 0.045 - 0.05 = -0.005; v = 0.00024975 + 0.00025 = 0.00049975;
  // bc1 = 0.19, bc2 = 0.001999; p = 0.899 * 0.999 - 0.1 / 0.19 * (-0.005) / (sqrt(v) / sqrt(bc2) + 1e-8).
  g = -0.5f;
  fusedAdamWUpdate(&p, &g, &m, &v, 1, 0.1, 0.9, 0.999, 1e-8, 0.01, 2);
  const double expect = 0.899 * 0.999 + 0.1 / 0.19 * 0.005 / (std::sqrt(0.00049975) / std::sqrt(0.001999) + 1e-8);
  EXPECT_NEAR(m, -0.005, 1e-8);
  EXPECT_NEAR(v, 0.00049975, 1e-10);
  EXPECT_NEAR(p, expect, 2e-6);
}

TEST(FusedAdamW, FollowsLibTorchsAdamWOverManyStepsAndTwoGroups) {
  torch::manual_seed(3);
  // Matrices (decayed) of the sizes the fused loop splits across threads, vectors (not decayed), a
  // float64 tensor and one whose gradient is a transposed (non-contiguous) view: those two take
  // LibTorch's operations.
  std::vector<torch::Tensor> init = {torch::randn({300, 257}), torch::randn({64, 64}), torch::randn({1000}),
                                     torch::randn({7}), torch::randn({5, 9}, torch::kDouble),
                                     torch::randn({40, 30})};
  auto clone = [&] {
    std::vector<torch::Tensor> out;
    for (auto& t : init) out.push_back(t.clone().set_requires_grad(true));
    return out;
  };
  auto a = clone(), b = clone();
  auto base = torch::optim::AdamWOptions(3e-3).betas({0.9, 0.95}).eps(1e-8);
  FusedAdamW fused(twoGroups({a[0], a[1], a[4], a[5]}, {a[2], a[3]}, base), base);
  torch::optim::AdamW ref(twoGroups({b[0], b[1], b[4], b[5]}, {b[2], b[3]}, base), base);
  for (int step = 1; step <= 30; ++step) {
    const double lr = 3e-3 * (1.0 - step / 40.0);  // the trainer changes lr every step
    for (auto* o : {static_cast<torch::optim::Optimizer*>(&fused), static_cast<torch::optim::Optimizer*>(&ref)})
      for (auto& g : o->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    for (size_t i = 0; i < init.size(); ++i) {
      auto g = torch::randn(init[i].sizes(), init[i].options()) * (0.1 * static_cast<double>(i + 1));
      if (i == 5) g = g.t().contiguous().t();
      a[i].mutable_grad() = g.clone(torch::MemoryFormat::Preserve);
      b[i].mutable_grad() = g.clone(torch::MemoryFormat::Preserve);
      if (i == 5) ASSERT_FALSE(a[i].grad().is_contiguous());
    }
    fused.step();
    ref.step();
  }
  for (size_t i = 0; i < init.size(); ++i) {
    // Float rounding differs (LibTorch's kernels may fuse a multiply-add); 30 steps stay within 1e-6.
    EXPECT_LT(maxRelDiff(a[i].detach(), b[i].detach()), 1e-6) << "parameter " << i;
    EXPECT_GT(maxRelDiff(a[i].detach(), init[i]), 1e-3) << "parameter " << i << " did not move";
    const auto& sa = static_cast<torch::optim::AdamWParamState&>(
        *fused.state().at(c10::guts::to_string(a[i].unsafeGetTensorImpl())));
    const auto& sb = static_cast<torch::optim::AdamWParamState&>(
        *ref.state().at(c10::guts::to_string(b[i].unsafeGetTensorImpl())));
    EXPECT_EQ(sa.step(), 30);
    EXPECT_LT(maxRelDiff(sa.exp_avg(), sb.exp_avg()), 1e-6) << "parameter " << i;
    EXPECT_LT(maxRelDiff(sa.exp_avg_sq(), sb.exp_avg_sq()), 1e-6) << "parameter " << i;
  }
}

TEST(FusedAdamW, ItsStateLoadsIntoLibTorchsAdamWAndContinuesTheSame) {
  torch::manual_seed(5);
  auto p = torch::randn({50, 20}).set_requires_grad(true);
  auto base = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  FusedAdamW fused(std::vector<torch::Tensor>{p}, base);
  for (int i = 0; i < 3; ++i) {
    p.mutable_grad() = torch::randn({50, 20});
    fused.step();
  }
  std::stringstream saved;
  torch::save(fused, saved);
  auto q = p.detach().clone().set_requires_grad(true);
  torch::optim::AdamW ref(std::vector<torch::Tensor>{q}, base);
  torch::load(ref, saved);
  auto g = torch::randn({50, 20});
  p.mutable_grad() = g.clone();
  q.mutable_grad() = g.clone();
  fused.step();
  ref.step();
  EXPECT_LT(maxRelDiff(p.detach(), q.detach()), 1e-6);
  const auto& s = static_cast<torch::optim::AdamWParamState&>(*ref.state().begin()->second);
  EXPECT_EQ(s.step(), 4);
}
