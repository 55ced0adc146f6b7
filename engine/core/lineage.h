#pragma once
// One child of UpIT's genetic expansion (SPEC §5.2), as the GA produces it, the pipeline reports it
// and the run store keeps it. Plain value type.
#include <cstdint>
#include <string>

namespace upcycle {

struct Lineage {
  int64_t child = 0, parentA = 0, parentB = 0;  // indices into the expert pool
  double alpha = 0;       // child = merge(alpha * A, (1 - alpha) * B) before mutation
  double dareP = 0;       // DARE drop probability of the mutation
  double distance = 0;    // the parents' distance under the configured metric
  uint64_t maskSeed = 0;  // DARE masks: a CPU generator with this seed, tensors in layer order gate, up, down
  std::string mergeOp;
};

}  // namespace upcycle
