#pragma once
// Hugging Face Trainer output folders: OUTPUT/checkpoint-STEP/ with trainer_state.json. Torch-free.
// Thread-safety: free functions.
#include <filesystem>
#include <optional>
#include <vector>

namespace upcycle {

struct TrainerCheckpoint {
  std::filesystem::path path;
  int64_t step = 0;
  std::optional<double> epoch;
  std::optional<double> loss;  // the last logged training loss at or before `step`
};

struct LossPoint {
  int64_t step = 0;
  double loss = 0;
};

// True when `folder` holds at least one checkpoint-STEP/ subfolder.
bool isTrainerOutput(const std::filesystem::path& folder);
// The checkpoints sorted by step. Logged loss comes from each checkpoint's trainer_state.json.
std::vector<TrainerCheckpoint> listTrainerCheckpoints(const std::filesystem::path& folder);
// log_history's loss entries from a trainer_state.json (throws UserError naming the file).
std::vector<LossPoint> readLossHistory(const std::filesystem::path& trainerStateJson);

}  // namespace upcycle
