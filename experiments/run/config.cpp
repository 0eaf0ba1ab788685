#include "experiments/run/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "datasets/dataset.h"
#include "nn/models.h"
#include "tensor/error.h"

namespace peel {

using nlohmann::json;

void check_config(const TrainConfig& c) {
  const std::vector<std::string> datasets = data::dataset_names(), &models = nn::model_names();
  PEEL_CHECK(std::count(datasets.begin(), datasets.end(), c.dataset) == 1, "dataset '{}' is not one of {}", c.dataset,
             fmt::join(datasets, ", "));
  PEEL_CHECK(std::count(models.begin(), models.end(), c.model) == 1, "model '{}' is not one of {}", c.model,
             fmt::join(models, ", "));
  PEEL_CHECK(c.ratio >= 1 && std::isfinite(c.ratio), "ratio must be a finite number >= 1, got {}", c.ratio);
  PEEL_CHECK(c.epochs > 0 && c.batch > 0 && c.metrics_every > 0,
             "epochs, batch and metrics_every must be positive, got {}, {} and {}", c.epochs, c.batch, c.metrics_every);
  PEEL_CHECK(c.warmup_epochs >= 0 && c.warmup_epochs < c.epochs, "warmup_epochs must be in [0, epochs), got {}",
             c.warmup_epochs);
  PEEL_CHECK(
      std::is_sorted(c.milestones.begin(), c.milestones.end()) &&
          std::all_of(c.milestones.begin(), c.milestones.end(), [&](int64_t m) { return m > 0 && m < c.epochs; }),
      "milestones must increase and lie in (0, {}), got [{}]", c.epochs, fmt::join(c.milestones, ", "));
  PEEL_CHECK(c.schedule == Schedule::multistep || c.milestones.empty(), "milestones apply to the multistep schedule");
  PEEL_CHECK(c.loss == Loss::cross_entropy || c.class_weights == ClassWeights::none,
             "class_weights applies to the cross-entropy loss only");
  PEEL_CHECK(c.lr > 0 && std::isfinite(c.lr), "lr must be positive, got {}", c.lr);
  PEEL_CHECK(c.rank_epsilon > 0 && c.rank_epsilon < 1, "rank_epsilon must be in (0, 1), got {}", c.rank_epsilon);
  PEEL_CHECK(c.estbn_moving_speed > 0 && c.estbn_moving_speed <= 1, "estbn_moving_speed must be in (0, 1], got {}",
             c.estbn_moving_speed);
  PEEL_CHECK(!c.sync_bn || c.norm == nn::Norm::bn || c.norm == nn::Norm::bcn_ws,
             "sync_bn needs batch statistics to synchronise: norm bn or bcn+ws (norm is {})", enum_name(c.norm));
  PEEL_CHECK(c.bucket_kib > 0, "bucket_kib must be positive, got {}", c.bucket_kib);
  PEEL_CHECK(c.elimination_probe >= 0, "elimination_probe must be >= 0 (0 = off), got {}", c.elimination_probe);
}

std::vector<int64_t> effective_milestones(const TrainConfig& c) {
  if (c.schedule != Schedule::multistep) return {};
  if (!c.milestones.empty()) return c.milestones;
  std::vector<int64_t> at;
  for (int64_t m : {c.epochs / 3, 2 * c.epochs / 3})
    if (m > 0 && (at.empty() || at.back() != m)) at.push_back(m);
  return at;
}

std::vector<std::string> differing_settings(const TrainConfig& stored, const TrainConfig& asked) {
  const json a = stored, b = asked;
  std::vector<std::string> differences;
  for (const auto& [key, value] : a.items()) {
    if (std::count(kExecutionSettings.begin(), kExecutionSettings.end(), key)) continue;
    // Reals compare as the float32 training uses (older peel wrote 0.100000001 for 0.1).
    const bool same = value.is_number() && b.at(key).is_number()
                          ? static_cast<float>(value.get<double>()) == static_cast<float>(b.at(key).get<double>())
                          : value == b.at(key);
    if (!same)
      differences.push_back(fmt::format("{}: {} (in the folder) vs {} (asked)", key, value.dump(), b.at(key).dump()));
  }
  return differences;
}

namespace {

// config.json as earlier versions of peel wrote it: conv_backend "" meant the default, the
// schedule was one string such as "multistep:116,233", and a wn run without wn_init started at
// g = ||v|| (the data-dependent initialisation came later; other norms ignore the field).
void upgrade_older_config(json& j) {
  if (!j.contains("wn_init") && j.contains("norm") && j["norm"] == "wn") j["wn_init"] = "norm";
  if (const auto it = j.find("conv_backend"); it != j.end() && it->is_string() && it->get<std::string>().empty())
    j.erase(it);
  if (j.contains("schedule") && j["schedule"].is_string()) {
    const std::string s = j["schedule"];
    if (s.rfind("multistep:", 0) == 0) {
      std::vector<int64_t> milestones;
      for (size_t at = 10; at < s.size();) {
        size_t end = s.find(',', at);
        milestones.push_back(std::stoll(s.substr(at, end - at)));
        at = end == std::string::npos ? s.size() : end + 1;
      }
      j["schedule"] = "multistep";
      j["milestones"] = milestones;
    }
  }
}

}  // namespace

TrainConfig read_train_config(const std::string& path) {
  std::ifstream in(path);
  PEEL_CHECK(in.good(), "{}: cannot open (is its folder a training run?)", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    PEEL_FAIL("{}: not valid JSON ({})", path, e.what());
  }
  PEEL_CHECK(j.is_object(), "{}: expected a JSON object of settings", path);
  upgrade_older_config(j);
  TrainConfig config;
  try {
    config = j.get<TrainConfig>();
  } catch (const json::exception& e) {
    PEEL_FAIL("{}: a setting has the wrong type ({})", path, e.what());
  }
  // nlohmann reads a name outside an enum's table as the table's first value; written back, such
  // a field no longer matches what the file says.
  const json round_trip = config;
  for (const auto& [key, value] : j.items())
    if (round_trip.contains(key) && round_trip[key].is_string() && round_trip[key] != value)
      PEEL_FAIL("{}: setting '{}' is {}, which is not one of peel's choices for it", path, key, value.dump());
  try {
    check_config(config);
  } catch (const Error& e) {
    PEEL_FAIL("{}: {}", path, e.what());
  }
  return config;
}

}  // namespace peel
