#include "train/fused_adamw.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace upcycle {

void fusedAdamWUpdate(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                      int64_t n, double lr, double beta1, double beta2, double eps, double weightDecay,
                      int64_t step) {
  // The scalars as LibTorch passes them to its float32 kernels: computed in double, used as float.
  const float decay = static_cast<float>(1.0 - lr * weightDecay);
  const float b1 = static_cast<float>(beta1), c1 = static_cast<float>(1.0 - beta1);
  const float b2 = static_cast<float>(beta2), c2 = static_cast<float>(1.0 - beta2);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const float sqrtBc2 = static_cast<float>(std::sqrt(bc2));
  const float epsF = static_cast<float>(eps);
  const float stepSize = static_cast<float>(-(lr / bc1));
  const bool decays = weightDecay != 0;
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      float pi = decays ? p[i] * decay : p[i];
      const float mi = m[i] * b1 + c1 * gi;
      const float vi = v[i] * b2 + c2 * gi * gi;
      const float denom = std::sqrt(vi) / sqrtBc2 + epsF;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi + stepSize * (mi / denom);
    }
  });
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard noGrad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enableGrad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto& grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(), "AdamW does not support sparse gradients");
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        if (o.amsgrad()) s->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
      s.step(s.step() + 1);
      auto& m = s.exp_avg();
      auto& v = s.exp_avg_sq();
      auto fusable = [&](const torch::Tensor& t) {
        return t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
               t.numel() == p.numel();
      };
      if (!o.amsgrad() && fusable(p) && fusable(grad) && fusable(m) && fusable(v)) {
        fusedAdamWUpdate(p.data_ptr<float>(), grad.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
                         p.numel(), o.lr(), beta1, beta2, o.eps(), o.weight_decay(), s.step());
        continue;
      }
      // LibTorch's sequence (torch/csrc/api/src/optim/adamw.cpp, 1.13) for everything else.
      if (o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());
      const double bc1 = 1 - std::pow(beta1, static_cast<double>(s.step()));
      const double bc2 = 1 - std::pow(beta2, static_cast<double>(s.step()));
      m.mul_(beta1).add_(grad, 1 - beta1);
      v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      torch::Tensor denom;
      if (o.amsgrad()) {
        auto& vmax = s.max_exp_avg_sq();
        torch::max_out(vmax, vmax, v);
        denom = (vmax.sqrt() / std::sqrt(bc2)).add_(o.eps());
      } else {
        denom = (v.sqrt() / std::sqrt(bc2)).add_(o.eps());
      }
      p.addcdiv_(m, denom, -(o.lr() / bc1));
    }
  }
  return loss;
}

}  // namespace upcycle
