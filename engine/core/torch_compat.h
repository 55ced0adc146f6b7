#pragma once
// The few LibTorch APIs that differ between Debian's 1.13 (CPU) and the GPU machine's 2.x.
// Internal header (includes torch).
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/version.h>

namespace upcycle {

// bf16 autocast on CUDA for the scope of the guard (float32 master weights stay float32).
class CudaBf16Autocast {
 public:
  explicit CudaBf16Autocast(bool enable) : m_enable(enable) {
    if (!m_enable) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    m_prevEnabled = at::autocast::is_autocast_enabled(at::kCUDA);
    m_prevDtype = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    m_prevEnabled = at::autocast::is_enabled();
    m_prevDtype = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~CudaBf16Autocast() {
    if (!m_enable) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, m_prevEnabled);
    at::autocast::set_autocast_dtype(at::kCUDA, m_prevDtype);
#else
    at::autocast::set_enabled(m_prevEnabled);
    at::autocast::set_autocast_gpu_dtype(m_prevDtype);
#endif
    at::autocast::clear_cache();
  }
  CudaBf16Autocast(const CudaBf16Autocast&) = delete;
  CudaBf16Autocast& operator=(const CudaBf16Autocast&) = delete;

 private:
  bool m_enable;
  bool m_prevEnabled = false;
  at::ScalarType m_prevDtype = at::kBFloat16;
};

// Inside this guard, ops run in the dtype of their inputs even under autocast: for the router
// softmax and the losses, which SPEC §1 wants in float32.
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;
inline c10::DispatchKeySet autocastKeys() {
  return c10::DispatchKeySet({c10::DispatchKey::AutocastCUDA, c10::DispatchKey::AutocastCPU});
}

}  // namespace upcycle

// c10d, for the files that define UPCYCLE_C10D_COMPAT before including this header (it pulls in
// c10d's headers): LibTorch 2.x splits the collectives' implementations (c10d::Backend, the base of
// ProcessGroupGloo and ProcessGroupNCCL) from the dispatching c10d::ProcessGroup; 1.13 has
// ProcessGroup alone, as their base. dist/ holds the backend object itself, whose collectives have
// the same signatures in both. TCPStore is built from TCPStoreOptions in both.
#ifdef UPCYCLE_C10D_COMPAT
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
namespace upcycle {
using C10dBackend = c10d::Backend;
}
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
namespace upcycle {
using C10dBackend = c10d::ProcessGroup;
}
#endif
#endif
