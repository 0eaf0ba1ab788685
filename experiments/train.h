// One training run: data, model, loss, backward, step, measure, save. See train.cpp.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "experiments/run/config.h"
#include "experiments/run/folder.h"

namespace peel {

// How this process runs a TrainConfig (none of it goes into config.json).
struct RunOptions {
  std::string out_dir;                         // the run folder (experiments/run/folder.h)
  ExistingRun existing = ExistingRun::refuse;  // --resume / --force
  bool quiet = false;
  int64_t stop_after_epochs = 0;  // > 0: stop after this many epochs, as if interrupted
};

// Trains to the end (or continues a run), writing the run folder, and returns the summary (also in
// out_dir/summary.json). Returns an empty object when stop_after_epochs ended it early.
nlohmann::json run_training(const TrainConfig& config, const RunOptions& options);

}  // namespace peel
