#pragma once
// Turns LibTorch's c10::Error (whose what() carries a C++ backtrace) into our Error with one clear
// line, at the public API boundary. Internal header.
#include <c10/util/Exception.h>

#include <string>

#include "core/error.h"

namespace upcycle {

template <typename Fn>
auto withTorchErrors(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    auto nl = msg.find('\n');
    if (nl != std::string::npos) msg.resize(nl);
    // The allocator's "[enforce fail at alloc_cpu.cpp:75] data. DefaultCPUAllocator: not enough
    // memory: you tried to allocate N bytes." becomes ours.
    const auto tried = msg.find("you tried to allocate ");
    if (msg.find("DefaultCPUAllocator") != std::string::npos && tried != std::string::npos)
      throw Error(std::string(what) + ": out of memory (could not allocate " + msg.substr(tried + 22) + ")");
    throw Error(std::string(what) + ": " + msg);
  } catch (const std::bad_alloc&) {
    throw Error(std::string(what) + ": out of memory");
  }
}

}  // namespace upcycle
