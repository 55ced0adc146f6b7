#include "upcycle/merge.h"

#include <cmath>

#include "core/error.h"

namespace upcycle {

namespace {
void checkInputs(const std::vector<torch::Tensor>& thetas, const std::vector<double>& weights) {
  UPCYCLE_CHECK(!thetas.empty(), "a merge needs at least one tensor");
  UPCYCLE_CHECK(thetas.size() == weights.size(), "merge: ", thetas.size(), " tensors but ", weights.size(), " weights");
  for (const auto& t : thetas)
    UPCYCLE_CHECK(t.sizes() == thetas[0].sizes(), "merge: tensors of different shapes ", t.sizes(), " and ",
                  thetas[0].sizes());
}

// Sign election and disjoint mean over (already trimmed) deltas.
torch::Tensor electAndMerge(const std::vector<torch::Tensor>& deltas, const std::vector<double>& weights) {
  auto stacked = torch::stack(deltas);  // (n, ...)
  auto w = torch::tensor(weights, stacked.options()).view({-1}).reshape(
      [&] { std::vector<int64_t> s(stacked.dim(), 1); s[0] = -1; return s; }());
  auto weighted = stacked * w;
  auto sign = torch::sign(weighted.sum(0));                     // elected sign per entry
  auto agree = (torch::sign(stacked) == sign) & (stacked != 0);  // (n, ...)
  auto num = (weighted * agree).sum(0);
  auto den = (w * agree).sum(0);
  return torch::where(den != 0, num / den.clamp_min(1e-12), torch::zeros_like(num));
}
}  // namespace

torch::Tensor mergeLinear(const std::vector<torch::Tensor>& thetas, const std::vector<double>& weights) {
  checkInputs(thetas, weights);
  auto out = torch::zeros_like(thetas[0]);
  for (size_t i = 0; i < thetas.size(); ++i) out = out + weights[i] * thetas[i];
  return out;
}

torch::Tensor mergeTaskArithmetic(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                                  const std::vector<double>& weights, double lambda) {
  checkInputs(thetas, weights);
  auto sum = torch::zeros_like(base);
  for (size_t i = 0; i < thetas.size(); ++i) sum = sum + weights[i] * (thetas[i] - base);
  return base + lambda * sum;
}

torch::Tensor mergeTies(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                        const std::vector<double>& weights, double density, double lambda) {
  checkInputs(thetas, weights);
  UPCYCLE_CHECK(density > 0 && density <= 1, "ties density must be in (0, 1], got ", density);
  std::vector<torch::Tensor> trimmed;
  for (const auto& t : thetas) {
    auto d = t - base;
    const int64_t n = d.numel();
    const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(std::llround(density * n)));
    // Keep the `keep` largest magnitudes (ties at the threshold are kept by index order of topk).
    auto idx = std::get<1>(d.abs().reshape({-1}).topk(keep));
    auto mask = torch::zeros({n}, d.options().dtype(torch::kBool)).index_fill(0, idx, true).view(d.sizes());
    trimmed.push_back(d * mask);
  }
  return base + lambda * electAndMerge(trimmed, weights);
}

torch::Tensor dareKeepMask(at::IntArrayRef shape, double p, torch::Generator& gen) {
  auto u = torch::empty(shape, torch::kFloat);
  u.uniform_(0.0, 1.0, gen);
  return u >= p;
}

torch::Tensor dare(const torch::Tensor& delta, double p, DareRescale rescale, torch::Generator& gen) {
  UPCYCLE_CHECK(p >= 0 && p < 1, "DARE drop probability p must be in [0, 1), got ", p);
  auto keep = dareKeepMask(delta.sizes(), p, gen).to(delta.device());
  auto kept = delta * keep;
  if (rescale == DareRescale::Inverse) return kept / (1.0 - p);
  const auto l1 = delta.abs().sum(), l1Kept = kept.abs().sum();
  return torch::where(l1Kept > 0, kept * (l1 / l1Kept.clamp_min(1e-30)), kept);
}

torch::Tensor mergeDareLinear(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                              const std::vector<double>& weights, double p, DareRescale rescale,
                              torch::Generator& gen) {
  checkInputs(thetas, weights);
  auto sum = torch::zeros_like(base);
  for (size_t i = 0; i < thetas.size(); ++i) sum = sum + weights[i] * dare(thetas[i] - base, p, rescale, gen);
  return base + sum;
}

torch::Tensor mergeDareTies(const torch::Tensor& base, const std::vector<torch::Tensor>& thetas,
                            const std::vector<double>& weights, double p, DareRescale rescale,
                            torch::Generator& gen) {
  checkInputs(thetas, weights);
  std::vector<torch::Tensor> deltas;
  for (const auto& t : thetas) deltas.push_back(dare(t - base, p, rescale, gen));
  return base + electAndMerge(deltas, weights);
}

torch::Tensor mergeSlerp(const torch::Tensor& a, const torch::Tensor& b, double t) {
  UPCYCLE_CHECK(a.sizes() == b.sizes(), "slerp: tensors of different shapes ", a.sizes(), " and ", b.sizes());
  auto fa = a.reshape({-1}).to(torch::kDouble), fb = b.reshape({-1}).to(torch::kDouble);
  const double na = fa.norm().item<double>(), nb = fb.norm().item<double>();
  if (na == 0 || nb == 0) return ((1 - t) * a + t * b);
  const double cosv = std::clamp((fa.dot(fb) / (na * nb)).item<double>(), -1.0, 1.0);
  if (std::abs(cosv) > 0.9995) return (1 - t) * a + t * b;
  const double omega = std::acos(cosv), so = std::sin(omega);
  const double wa = std::sin((1 - t) * omega) / so, wb = std::sin(t * omega) / so;
  return (wa * fa + wb * fb).to(a.scalar_type()).view(a.sizes());
}

void checkMergeOperator(const std::string& name) {
  UPCYCLE_CHECK(name == "linear" || name == "task_arithmetic" || name == "ties" || name == "dare_linear" ||
                    name == "dare_ties" || name == "slerp",
                "merge operator \"", name, "\" is not one of linear, task_arithmetic, ties, dare_linear, dare_ties, slerp");
}

}  // namespace upcycle
