#pragma once
// Side-by-side comparison of stored runs: the union of their parameters, each marked when the runs
// disagree. Shared by `upcycle runs compare` and the GUI's Compare panel. Torch-free; pure functions.
#include <string>
#include <vector>

#include "store/run_store.h"

namespace upcycle {

struct ParamDiffRow {
  std::string key;
  std::vector<std::string> values;  // one per run, "-" where the run lacks the key
  bool differs = false;             // some value differs from the first run's
};

// Rows sorted by key. With diffOnly, the rows where every run agrees are left out.
std::vector<ParamDiffRow> compareParams(const std::vector<RunDetail>& runs, bool diffOnly = false);

}  // namespace upcycle
