// One training run: data, model, loss, backward, step, metrics. See train.cpp.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peel {

struct TrainConfig {
  // Data
  std::string dataset = "fashion-mnist";  // mnist | fashion-mnist | cifar10 | synthetic
  std::string data_dir = "data";
  int64_t majority_classes = 0;  // K_A; 0 = every class is a majority class (balanced)
  int64_t n_major = 0;           // n_A images per majority class; 0 = as many as the rarest class has
  double ratio = 1.0;            // R: minority classes keep n_A / R images (floor, as the authors' code)
  int64_t test_limit = 0;        // > 0: evaluate on the first test_limit test images only
  bool augment = false;          // random crop + flip (CIFAR-10)
  // Model and loss
  std::string model = "small_cnn";
  double width = 1.0;
  std::string loss = "ce";  // ce | mse
  float mse_target_scale = 1.f, mse_loss_scale = 1.f;
  // Mitigation
  std::string sampler = "plain";       // plain | oversample | balanced
  int64_t oversample_factor = 0;       // 0 = round(R)
  std::string class_weights = "none";  // none | inverse (minority loss weighted by n_A / n_B)
  // Optimisation (defaults: the Minority Collapse paper's recipe)
  float lr = 0.1f;
  std::string schedule = "multistep";  // multistep (at 1/3 and 2/3 of the epochs), or see optim/schedule.h
  int64_t epochs = 30;
  int64_t batch = 128;
  float momentum = 0.9f;
  float weight_decay = 5e-4f;
  // Run
  uint64_t seed = 666;
  int threads = 0;
  int64_t metrics_every = 1;                // collapse metrics every this many epochs (and at the last)
  std::string global_mean = "all-samples";  // all-samples (Fang et al.) | class-means (Papyan et al.)
  std::string conv_backend;                 // empty = default
  std::string out_dir;                      // required
  bool resume = false;                      // continue from out_dir/checkpoint.peel
  bool quiet = false;
  int64_t stop_after_epochs = 0;  // > 0: stop (as if killed) after this many epochs; for tests

  nlohmann::json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j);
};

// A run's metrics.csv: column names, and one row of values per measured epoch (column 0 is the
// epoch). Rows after `up_to_epoch` are dropped (a resumed run rewrites them).
struct MetricsTable {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  std::vector<double> column(const std::string& name) const;  // empty if there is no such column
};
MetricsTable read_metrics_csv(const std::string& path, int64_t up_to_epoch = std::numeric_limits<int64_t>::max());

// Runs training to the end (or resumes it) and returns the summary (also in out_dir/summary.json).
nlohmann::json run_training(const TrainConfig& config);

}  // namespace peel
