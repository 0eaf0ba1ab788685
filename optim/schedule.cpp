#include "optim/schedule.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "tensor/error.h"

namespace peel::optim {

float learning_rate_at(const ScheduleConfig& c, float base_lr, int64_t epoch) {
  double lr = base_lr;
  if (c.kind == "multistep") {
    for (int64_t m : c.milestones)
      if (epoch >= m) lr *= c.gamma;
  } else if (c.kind == "cosine") {
    // CosineAnnealingLR's closed form: eta_min + (base - eta_min)(1 + cos(pi t / T)) / 2.
    const double t = static_cast<double>(epoch), T = static_cast<double>(std::max<int64_t>(c.total_epochs, 1));
    lr = c.min_lr + (base_lr - c.min_lr) * (1 + std::cos(std::numbers::pi * t / T)) / 2;
  } else {
    PEEL_CHECK(c.kind == "constant", "schedule: unknown kind '{}' (known: constant, multistep, cosine)", c.kind);
  }
  if (epoch < c.warmup_epochs) {
    // LinearLR: factor goes from start to 1 over warmup_epochs steps.
    const double f = c.warmup_start_factor +
                     (1.0 - c.warmup_start_factor) * static_cast<double>(epoch) / static_cast<double>(c.warmup_epochs);
    lr *= f;
  }
  return static_cast<float>(lr);
}

ScheduleConfig parse_schedule(const std::string& text, int64_t total_epochs, float gamma) {
  ScheduleConfig c;
  c.total_epochs = total_epochs;
  c.gamma = gamma;
  std::string main = text, warmup;
  if (auto plus = text.find('+'); plus != std::string::npos) {
    main = text.substr(0, plus);
    warmup = text.substr(plus + 1);
  }
  auto colon = main.find(':');
  c.kind = main.substr(0, colon);
  PEEL_CHECK(c.kind == "constant" || c.kind == "multistep" || c.kind == "cosine",
             "--schedule: unknown schedule '{}' (use constant, multistep:E1,E2,..., cosine, each optionally +warmup:N)",
             text);
  if (c.kind == "multistep") {
    PEEL_CHECK(colon != std::string::npos, "--schedule: '{}' needs milestones, e.g. multistep:116,233", text);
    std::stringstream ss(main.substr(colon + 1));
    std::string item;
    while (std::getline(ss, item, ',')) {
      try {
        c.milestones.push_back(std::stoll(item));
      } catch (const std::exception&) {
        PEEL_FAIL("--schedule: milestone '{}' in '{}' is not an integer", item, text);
      }
    }
  }
  if (!warmup.empty()) {
    PEEL_CHECK(warmup.rfind("warmup:", 0) == 0, "--schedule: '{}' after '+' must be warmup:N", warmup);
    try {
      c.warmup_epochs = std::stoll(warmup.substr(7));
    } catch (const std::exception&) {
      PEEL_FAIL("--schedule: warm-up length in '{}' is not an integer", text);
    }
  }
  return c;
}

}  // namespace peel::optim
