#pragma once
// The process's c10d group (internal: includes torch). api/distributed.h starts and stops it.
// Every collective goes through here, so that a failure (a rank died, hung or reported an error)
// becomes one UserError naming the rank instead of Gloo's socket message.
#include <torch/torch.h>

#include <string>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <vector>

#include "api/distributed.h"

namespace upcycle {

class DistGroup {
 public:
  virtual ~DistGroup() = default;
  // The group of this process, or null when none is up (world 1).
  static DistGroup* current();

  virtual const DistInfo& info() const = 0;
  int rank() const { return info().rank; }
  int world() const { return info().world; }
  // The device collectives run on: CPU for Gloo, cuda:LOCAL_RANK for NCCL.
  virtual torch::Device device() const = 0;

  // Sum over ranks in place (a contiguous tensor on device()). Blocking.
  virtual void allreduceSum(torch::Tensor& t, const char* what) = 0;
  // Started now, finished by wait(); the reducer overlaps these with the backward pass.
  virtual c10::intrusive_ptr<c10d::Work> allreduceSumAsync(torch::Tensor& t) = 0;
  virtual void wait(const c10::intrusive_ptr<c10d::Work>& w, const char* what) = 0;
  // Rank `root`'s values into every rank's tensor, in place.
  virtual void broadcast(torch::Tensor& t, int root, const char* what) = 0;
  // Every rank has reached this point (e.g. rank 0 has finished writing a file the others read
  // next).
  virtual void barrier(const char* what) = 0;
};

// Copies every parameter and buffer of `module` from rank 0 (no-op without a group).
void broadcastModule(torch::nn::Module& module);

// Sums doubles over the ranks (a no-op without a group): metrics, counts.
void allreduceDoubles(std::vector<double>& values, const char* what);

// Runs `write` on the writer only, then waits until every rank is here: what rank 0 writes is there
// for all ranks to read after this returns (the folder must be shared by the ranks, as on one
// machine or a cluster file system).
template <class F>
void writerWrites(const char* what, F&& write) {
  if (isDistWriter()) write();
  if (DistGroup* g = DistGroup::current()) g->barrier(what);
}

}  // namespace upcycle
