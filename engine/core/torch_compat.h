#pragma once
// The few LibTorch APIs that differ between Debian's 1.13 (CPU) and the GPU machine's 2.x.
// Internal header (includes torch).
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/version.h>

namespace upcycle {

// bf16 autocast for the scope of the guard, on the device's type (CUDA or CPU): matmuls and linear
// layers run in bfloat16 while the float32 master weights stay float32. A no-op when !enable.
class Bf16Autocast {
 public:
  Bf16Autocast(const c10::Device& device, bool enable) : m_enable(enable), m_cuda(device.is_cuda()) {
    if (!m_enable) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    const auto type = m_cuda ? at::kCUDA : at::kCPU;
    m_prevEnabled = at::autocast::is_autocast_enabled(type);
    m_prevDtype = at::autocast::get_autocast_dtype(type);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
#else
    if (m_cuda) {
      m_prevEnabled = at::autocast::is_enabled();
      m_prevDtype = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      m_prevEnabled = at::autocast::is_cpu_enabled();
      m_prevDtype = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
#endif
  }
  ~Bf16Autocast() {
    if (!m_enable) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    const auto type = m_cuda ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(type, m_prevEnabled);
    at::autocast::set_autocast_dtype(type, m_prevDtype);
#else
    if (m_cuda) {
      at::autocast::set_enabled(m_prevEnabled);
      at::autocast::set_autocast_gpu_dtype(m_prevDtype);
    } else {
      at::autocast::set_cpu_enabled(m_prevEnabled);
      at::autocast::set_autocast_cpu_dtype(m_prevDtype);
    }
#endif
    at::autocast::clear_cache();
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool m_enable, m_cuda;
  bool m_prevEnabled = false;
  at::ScalarType m_prevDtype = at::kBFloat16;
};

// Whether bf16 autocast is on for this device type right now (the MoE layer casts its stacked expert
// weights once per forward then, instead of once per expert).
inline bool bf16AutocastActive(const c10::Device& device) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  const auto type = device.is_cuda() ? at::kCUDA : at::kCPU;
  return at::autocast::is_autocast_enabled(type) && at::autocast::get_autocast_dtype(type) == at::kBFloat16;
#else
  return device.is_cuda() ? at::autocast::is_enabled() && at::autocast::get_autocast_gpu_dtype() == at::kBFloat16
                          : at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
#endif
}

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
