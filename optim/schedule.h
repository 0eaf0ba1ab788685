// Learning-rate schedules, evaluated per epoch as PyTorch's schedulers are stepped once per epoch.
#pragma once

#include <string>
#include <vector>

namespace peel::optim {

struct ScheduleConfig {
  std::string kind = "constant";    // constant | multistep | cosine
  std::vector<int64_t> milestones;  // multistep: epochs at which lr is multiplied by gamma
  float gamma = 0.1f;
  int64_t total_epochs = 1;   // cosine: T_max
  float min_lr = 0.f;         // cosine: eta_min
  int64_t warmup_epochs = 0;  // linear warm-up from warmup_start_factor * lr
  float warmup_start_factor = 0.1f;
};

// The learning rate for `epoch` (0-based): base_lr times the schedule's factor, times the
// warm-up factor during the first warmup_epochs (PyTorch's LinearLR, end factor 1).
float learning_rate_at(const ScheduleConfig& config, float base_lr, int64_t epoch);

// Parses "constant", "multistep:116,233", "cosine", optionally followed by "+warmup:5".
ScheduleConfig parse_schedule(const std::string& text, int64_t total_epochs, float gamma = 0.1f);

}  // namespace peel::optim
