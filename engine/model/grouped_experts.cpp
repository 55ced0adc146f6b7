#include "model/grouped_experts.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "core/error.h"

namespace upcycle {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool fusable(const Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat; }

// Elementwise passes run per expert, right after the GEMM that produced their input, while it is still
// in cache: over the whole (rows, F) block they ran at memory speed and cost more than the GEMMs saved.
// On float32 CPU tensors each is one loop (sigmoid from ATen's vectorized kernel); elsewhere ATen ops.

// h = silu(g) * u = g * s * u, given s = sigmoid(g).
void swiglu(const Tensor& g, const Tensor& s, const Tensor& u, Tensor& h) {
  if (!fusable(g)) {
    h.copy_(g * s * u);
    return;
  }
  const float *pg = g.data_ptr<float>(), *ps = s.data_ptr<float>(), *pu = u.data_ptr<float>();
  float* ph = h.data_ptr<float>();
  at::parallel_for(0, g.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ph[i] = pg[i] * ps[i] * pu[i];
  });
}

// From dh (overwritten with dgate): dup = dh * silu(g); dgate = dh * u * s (1 + g (1 - s)); and h again.
void swigluBackward(Tensor& dh, const Tensor& g, const Tensor& s, const Tensor& u, Tensor& dup, Tensor& h) {
  if (!fusable(g)) {
    const Tensor silu = g * s;
    h.copy_(silu * u);
    dup.copy_(dh * silu);
    dh.mul_(u * (s + silu * (1 - s)));
    return;
  }
  const float *pg = g.data_ptr<float>(), *ps = s.data_ptr<float>(), *pu = u.data_ptr<float>();
  float *pd = dh.data_ptr<float>(), *pdu = dup.data_ptr<float>(), *ph = h.data_ptr<float>();
  at::parallel_for(0, g.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float sv = ps[i], silu = pg[i] * sv, d = pd[i], uv = pu[i];
      ph[i] = silu * uv;
      pdu[i] = d * silu;
      pd[i] = d * uv * (sv + silu * (1.0f - sv));
    }
  });
}

struct Saved {
  Tensor gate, sig, up;  // (M, F) each
};

// ys (M, D); fills `saved` when given (for the backward).
Tensor forwardExperts(const Tensor& x, const std::vector<int64_t>& counts, const Tensor& wg, const Tensor& wu,
                      const Tensor& wd, Saved* saved) {
  const int64_t M = x.size(0), D = x.size(1), F = wg.size(1);
  const int64_t maxRows = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  Tensor ys = torch::empty({M, D}, x.options());
  // Saved for the backward: the whole block. Otherwise per-expert scratch, reused.
  Tensor gate = torch::empty({saved ? M : maxRows, F}, x.options()), up = torch::empty_like(gate),
         sig = torch::empty_like(gate), h = torch::empty({maxRows, F}, x.options());
  int64_t off = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t n = counts[e];
    if (n == 0) continue;
    const Tensor xe = x.narrow(0, off, n);
    const int64_t at = saved ? off : 0;
    Tensor g = gate.narrow(0, at, n), u = up.narrow(0, at, n), s = sig.narrow(0, at, n), he = h.narrow(0, 0, n),
           ye = ys.narrow(0, off, n);
    torch::mm_out(g, xe, wg[e].t());
    torch::mm_out(u, xe, wu[e].t());
    torch::sigmoid_out(s, g);
    swiglu(g, s, u, he);
    torch::mm_out(ye, he, wd[e].t());
    off += n;
  }
  if (saved) *saved = {gate, sig, up};
  return ys;
}

struct GroupedSwiGluFn : torch::autograd::Function<GroupedSwiGluFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& xs, const Tensor& wg, const Tensor& wu, const Tensor& wd,
                        const std::vector<int64_t>& counts) {
    const Tensor x = xs.contiguous();
    Saved s;
    Tensor ys = forwardExperts(x, counts, wg, wu, wd, &s);
    ctx->save_for_backward({x, wg, wu, wd, s.gate, s.sig, s.up});
    ctx->saved_data["counts"] = counts;
    return ys;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &wg = saved[1], &wu = saved[2], &wd = saved[3], &gate = saved[4], &sig = saved[5],
                 &up = saved[6];
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const Tensor dys = grads[0].contiguous();
    const int64_t F = wg.size(1);
    const bool needX = ctx->needs_input_grad(0), needG = ctx->needs_input_grad(1), needU = ctx->needs_input_grad(2),
               needD = ctx->needs_input_grad(3);
    Tensor dwg = needG ? torch::empty_like(wg) : Tensor(), dwu = needU ? torch::empty_like(wu) : Tensor(),
           dwd = needD ? torch::empty_like(wd) : Tensor(), dx = needX ? torch::empty_like(x) : Tensor();
    const int64_t maxRows = *std::max_element(counts.begin(), counts.end());
    // Per-expert scratch, reused: dh (then dgate), dup, h.
    Tensor dhBuf = torch::empty({maxRows, F}, x.options()), dupBuf = torch::empty_like(dhBuf),
           hBuf = torch::empty_like(dhBuf);
    int64_t off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      const int64_t n = counts[e];
      if (n == 0) {
        for (Tensor* t : {&dwg, &dwu, &dwd})
          if (t->defined()) (*t)[e].zero_();
        continue;
      }
      const Tensor xe = x.narrow(0, off, n), dy = dys.narrow(0, off, n);
      Tensor dh = dhBuf.narrow(0, 0, n), dup = dupBuf.narrow(0, 0, n), h = hBuf.narrow(0, 0, n);
      torch::mm_out(dh, dy, wd[e]);  // (n, D) x (D, F)
      swigluBackward(dh, gate.narrow(0, off, n), sig.narrow(0, off, n), up.narrow(0, off, n), dup, h);
      const Tensor& dgate = dh;
      if (needD) {
        Tensor t = dwd[e];
        torch::mm_out(t, dy.t(), h);  // (D, n) x (n, F)
      }
      if (needG) {
        Tensor t = dwg[e];
        torch::mm_out(t, dgate.t(), xe);  // (F, n) x (n, D)
      }
      if (needU) {
        Tensor t = dwu[e];
        torch::mm_out(t, dup.t(), xe);
      }
      if (needX) {
        Tensor dxe = dx.narrow(0, off, n);
        torch::mm_out(dxe, dgate, wg[e]);  // (n, F) x (F, D)
        dxe.addmm_(dup, wu[e]);
      }
      off += n;
    }
    return {dx, dwg, dwu, dwd, Tensor()};
  }
};

}  // namespace

torch::Tensor groupedSwiGlu(const torch::Tensor& xs, const std::vector<int64_t>& counts, const torch::Tensor& wg,
                            const torch::Tensor& wu, const torch::Tensor& wd) {
  UPCYCLE_CHECK(xs.dim() == 2 && wg.dim() == 3 && wu.sizes() == wg.sizes() && wd.dim() == 3 &&
                    wd.size(0) == wg.size(0) && wd.size(1) == wg.size(2) && wd.size(2) == wg.size(1) &&
                    xs.size(1) == wg.size(2) && static_cast<int64_t>(counts.size()) == wg.size(0),
                "groupedSwiGlu: shapes do not match");
  int64_t total = 0;
  for (int64_t n : counts) total += n;
  UPCYCLE_CHECK(total == xs.size(0), "groupedSwiGlu: counts sum to ", total, " but there are ", xs.size(0), " rows");
  const bool needGrad = torch::GradMode::is_enabled() &&
                        (xs.requires_grad() || wg.requires_grad() || wu.requires_grad() || wd.requires_grad());
  if (!needGrad) return forwardExperts(xs.contiguous(), counts, wg, wu, wd, nullptr);  // nothing saved
  return GroupedSwiGluFn::apply(xs, wg, wu, wd, counts);
}

}  // namespace upcycle
