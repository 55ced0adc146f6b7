#pragma once
// Gradient all-reduce for data-parallel training (internal: includes torch), in buckets that start
// during the backward pass, as PyTorch's DistributedDataParallel does (which the C++ frontend
// lacks).
//
// The trainable parameters are cut into buckets of about `bucketBytes`, in reverse order (the order
// in which backward produces their gradients). During the backward of a step's last micro-batch a
// hook on each parameter copies its finished gradient (what earlier micro-batches accumulated plus
// this one's) into its bucket; a bucket whose gradients are all in is all-reduced at once, on the
// communication threads, while backward goes on. Buckets are launched strictly in index order on
// every rank, so the collectives match. finish() launches what is left (gradients this rank never
// produced count as zero), waits, and writes the sums back into .grad. A parameter no rank produced
// a gradient for keeps an undefined gradient, as in the one-process run (AdamW skips it).
//
// The sums are plain sums: each rank's loss is its share of the global step's loss (token-weighted
// over the whole global batch), so the sum of the ranks' gradients is the one-process gradient.
#include <torch/torch.h>

#include <vector>

#include "dist/process_group.h"

namespace upcycle {

class GradReducer {
 public:
  GradReducer(DistGroup& group, std::vector<torch::Tensor> params,
              int64_t bucketBytes = int64_t(25) << 20);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Call before the backward of the step's last micro-batch (or before finish() when this rank has
  // no rows in it): from now on the hooks fill buckets.
  void arm();
  // After that backward: every rank's gradient summed into .grad.
  void finish();
  int64_t bucketCount() const { return static_cast<int64_t>(m_buckets.size()); }

 private:
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> params;
    int64_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0, numel = 0;
    bool ready = false;
  };
  void onGrad(size_t i, const torch::Tensor& g);
  void launchReady();
  void launch(size_t b);

  DistGroup& m_group;
  std::vector<torch::Tensor> m_params;
  std::vector<Bucket> m_buckets;
  std::vector<Slot> m_slots;
  std::vector<unsigned> m_hooks;
  torch::Tensor m_defined;  // (P) 1 where this rank has a gradient; summed over ranks
  size_t m_next = 0;        // the next bucket to launch
  bool m_armed = false;
};

}  // namespace upcycle
