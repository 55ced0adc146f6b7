#include "store/run_compare.h"

#include <map>

namespace upcycle {

std::vector<ParamDiffRow> compareParams(const std::vector<RunDetail>& runs, bool diffOnly) {
  std::map<std::string, ParamDiffRow> rows;  // sorted by key
  for (size_t i = 0; i < runs.size(); ++i) {
    for (const auto& [k, v] : runs[i].params) {
      ParamDiffRow& row = rows[k];
      if (row.values.empty()) {
        row.key = k;
        row.values.assign(runs.size(), "-");
      }
      row.values[i] = v;
    }
  }
  std::vector<ParamDiffRow> out;
  for (auto& [k, row] : rows) {
    for (const auto& v : row.values) row.differs = row.differs || v != row.values.front();
    if (!diffOnly || row.differs) out.push_back(std::move(row));
  }
  return out;
}

}  // namespace upcycle
