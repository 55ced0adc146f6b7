#include "dist/reducer.h"

#include "core/error.h"

namespace upcycle {

GradReducer::GradReducer(DistGroup& group, std::vector<torch::Tensor> params, int64_t bucketBytes)
    : m_group(group), m_params(std::move(params)), m_slots(m_params.size()) {
  UPCYCLE_CHECK(bucketBytes > 0, "bucket size must be positive");
  // Reverse order; a new bucket when full or when the dtype changes (one flat buffer per bucket).
  for (size_t k = m_params.size(); k-- > 0;) {
    const torch::Tensor& p = m_params[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (m_buckets.empty() || m_buckets.back().flat.scalar_type() != p.scalar_type() ||
        (m_buckets.back().flat.numel() * m_buckets.back().flat.element_size() + bytes >
             bucketBytes &&
         m_buckets.back().flat.numel() > 0)) {
      m_buckets.push_back(Bucket{});
      m_buckets.back().flat =
          torch::empty({0}, torch::TensorOptions().dtype(p.scalar_type()).device(group.device()));
    }
    Bucket& b = m_buckets.back();
    m_slots[k] = Slot{m_buckets.size() - 1, b.flat.numel(), p.numel(), false};
    b.params.push_back(k);
    b.flat = torch::empty({b.flat.numel() + p.numel()}, b.flat.options());
  }
  m_defined = torch::zeros({static_cast<int64_t>(m_params.size())},
                           torch::TensorOptions().device(group.device()));
  for (size_t k = 0; k < m_params.size(); ++k)
    m_hooks.push_back(
        m_params[k].register_hook([this, k](const torch::Tensor& g) { onGrad(k, g); }));
}

GradReducer::~GradReducer() {
  for (size_t k = 0; k < m_params.size(); ++k) m_params[k].remove_hook(m_hooks[k]);
}

void GradReducer::arm() {
  m_armed = true;
  m_next = 0;
  m_defined.zero_();
  for (auto& s : m_slots) s.ready = false;
  for (auto& b : m_buckets) {
    b.pending = static_cast<int64_t>(b.params.size());
    b.work.reset();
  }
}

void GradReducer::onGrad(size_t k, const torch::Tensor& g) {
  if (!m_armed) return;
  Slot& s = m_slots[k];
  UPCYCLE_ASSERT(!s.ready, "a gradient arrived twice for one parameter in one backward");
  torch::NoGradGuard ng;
  auto dst = m_buckets[s.bucket].flat.narrow(0, s.offset, s.numel);
  const torch::Tensor& prev = m_params[k].grad();
  if (prev.defined())
    torch::add_out(dst, prev.reshape({-1}).to(dst.device()), g.reshape({-1}).to(dst.device()));
  else
    dst.copy_(g.reshape({-1}));
  m_defined[static_cast<int64_t>(k)] = 1;
  s.ready = true;
  if (--m_buckets[s.bucket].pending == 0) launchReady();
}

void GradReducer::launchReady() {
  while (m_next < m_buckets.size() && m_buckets[m_next].pending == 0) launch(m_next++);
}

void GradReducer::launch(size_t b) {
  m_buckets[b].work = m_group.allreduceSumAsync(m_buckets[b].flat);
}

void GradReducer::finish() {
  UPCYCLE_ASSERT(m_armed, "GradReducer::finish without arm");
  torch::NoGradGuard ng;
  // Gradients that did not arrive in the last backward: what earlier micro-batches left, or zero.
  for (size_t b = m_next; b < m_buckets.size(); ++b) {
    Bucket& bk = m_buckets[b];
    for (size_t k : bk.params) {
      Slot& s = m_slots[k];
      if (s.ready) continue;
      auto dst = bk.flat.narrow(0, s.offset, s.numel);
      const torch::Tensor& prev = m_params[k].grad();
      if (prev.defined()) {
        dst.copy_(prev.reshape({-1}));
        m_defined[static_cast<int64_t>(k)] = 1;
      } else {
        dst.zero_();
      }
      s.ready = true;
    }
    bk.pending = 0;
  }
  launchReady();
  auto definedWork = m_group.allreduceSumAsync(m_defined);
  for (auto& b : m_buckets) m_group.wait(b.work, "the gradient all-reduce");
  m_group.wait(definedWork, "the gradient all-reduce");
  m_armed = false;
  const auto defined = m_defined.cpu();
  const float* d = defined.data_ptr<float>();
  for (size_t k = 0; k < m_params.size(); ++k) {
    if (d[k] == 0) continue;  // no rank has a gradient: it stays undefined, as in one process
    const Slot& s = m_slots[k];
    auto src = m_buckets[s.bucket].flat.narrow(0, s.offset, s.numel).view(m_params[k].sizes());
    torch::Tensor& grad = m_params[k].mutable_grad();
    if (grad.defined())
      grad.copy_(src);
    else
      grad = src.to(m_params[k].device(), /*non_blocking=*/false, /*copy=*/true);
  }
}

}  // namespace upcycle
