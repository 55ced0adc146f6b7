// groupedSwiGlu (model/grouped_experts.h): outputs and hand-written gradients against autograd through
// plain per-expert ops on separate weights, in float64 (the generic path) and float32 (the fused CPU
// SwiGLU derivative), with an expert that gets no rows and with frozen inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/grouped_experts.h"

using upcycle::groupedSwiGlu;

namespace {

struct Case {
  torch::Tensor xs, wg, wu, wd;
  std::vector<int64_t> counts;
};

Case makeCase(torch::ScalarType dt, uint64_t seed) {
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t E = 4, F = 6, D = 5;
  Case c;
  c.counts = {3, 0, 5, 2};  // expert 1 gets nothing
  c.xs = torch::randn({10, D}, gen).to(dt);
  c.wg = torch::randn({E, F, D}, gen).to(dt);
  c.wu = torch::randn({E, F, D}, gen).to(dt);
  c.wd = torch::randn({E, D, F}, gen).to(dt);
  return c;
}

// The reference: each expert's rows through its own leaf weights, plain autograd.
struct Reference {
  torch::Tensor ys, dxs, dwg, dwu, dwd;
};

Reference reference(const Case& c, const torch::Tensor& upstream) {
  auto x = c.xs.detach().clone().requires_grad_(true);
  std::vector<torch::Tensor> g, u, d, outs;
  int64_t off = 0;
  for (size_t e = 0; e < c.counts.size(); ++e) {
    g.push_back(c.wg[e].detach().clone().requires_grad_(true));
    u.push_back(c.wu[e].detach().clone().requires_grad_(true));
    d.push_back(c.wd[e].detach().clone().requires_grad_(true));
    auto seg = x.narrow(0, off, c.counts[e]);
    auto h = torch::silu(seg.matmul(g[e].t())) * seg.matmul(u[e].t());
    outs.push_back(h.matmul(d[e].t()));
    off += c.counts[e];
  }
  Reference r;
  r.ys = torch::cat(outs);
  (r.ys * upstream).sum().backward();
  auto stack = [](const std::vector<torch::Tensor>& ws) {
    std::vector<torch::Tensor> gs;
    for (const auto& w : ws) gs.push_back(w.grad().defined() ? w.grad() : torch::zeros_like(w));
    return torch::stack(gs);
  };
  r.dxs = x.grad();
  r.dwg = stack(g);
  r.dwu = stack(u);
  r.dwd = stack(d);
  return r;
}

double maxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

void checkAgainstReference(torch::ScalarType dt, double tol) {
  Case c = makeCase(dt, 11);
  for (auto* t : {&c.xs, &c.wg, &c.wu, &c.wd}) t->requires_grad_(true);
  torch::Generator gen = at::detail::createCPUGenerator(12);
  const auto upstream = torch::randn({10, 5}, gen).to(dt);
  const Reference ref = reference(c, upstream);
  auto ys = groupedSwiGlu(c.xs, c.counts, c.wg, c.wu, c.wd);
  EXPECT_LT(maxDiff(ys, ref.ys), tol);
  (ys * upstream).sum().backward();
  EXPECT_LT(maxDiff(c.xs.grad(), ref.dxs), tol);
  EXPECT_LT(maxDiff(c.wg.grad(), ref.dwg), tol);
  EXPECT_LT(maxDiff(c.wu.grad(), ref.dwu), tol);
  EXPECT_LT(maxDiff(c.wd.grad(), ref.dwd), tol);
  // The expert without rows gets exact zeros.
  for (const auto& w : {c.wg, c.wu, c.wd}) EXPECT_EQ(w.grad()[1].abs().max().item<double>(), 0.0);
  EXPECT_GT(c.wd.grad()[2].abs().max().item<double>(), 0.0);
}

}  // namespace

TEST(GroupedSwiGlu, Float64MatchesPerExpertAutograd) { checkAgainstReference(torch::kDouble, 1e-12); }

TEST(GroupedSwiGlu, Float32FusedDerivativeMatchesPerExpertAutograd) { checkAgainstReference(torch::kFloat, 1e-4); }

TEST(GroupedSwiGlu, FrozenInputsGetNoGradient) {
  Case c = makeCase(torch::kDouble, 3);
  c.wu.requires_grad_(true);  // only the up weights train
  torch::Generator gen = at::detail::createCPUGenerator(4);
  const auto upstream = torch::randn({10, 5}, gen).to(torch::kDouble);
  const Reference ref = reference(c, upstream);
  (groupedSwiGlu(c.xs, c.counts, c.wg, c.wu, c.wd) * upstream).sum().backward();
  EXPECT_FALSE(c.xs.grad().defined());
  EXPECT_FALSE(c.wg.grad().defined());
  EXPECT_FALSE(c.wd.grad().defined());
  EXPECT_LT(maxDiff(c.wu.grad(), ref.dwu), 1e-12);
}

TEST(GroupedSwiGlu, RejectsCountsThatDoNotCoverTheRows) {
  Case c = makeCase(torch::kFloat, 5);
  c.counts = {3, 0, 5, 1};
  try {
    groupedSwiGlu(c.xs, c.counts, c.wg, c.wu, c.wd);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("counts sum to 9 but there are 10 rows"), std::string::npos) << e.what();
  }
}
