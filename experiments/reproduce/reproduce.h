// `peel reproduce <study>`: a sweep of training runs, the theory's prediction where there is one,
// and a self-contained HTML report with figures.
#pragma once

#include <cstdint>
#include <string>

namespace peel {

struct ReproduceConfig {
  std::string out_dir;
  std::string data_dir = "data";
  std::string dataset;      // empty: the study's default
  std::string model;        // empty: the study's default
  bool paper = false;       // the paper's own protocol (hours to days on a CPU)
  int64_t epochs = 0;       // 0: the study's default
  int64_t n_major = 0;      // 0: the study's default
  int64_t micro_batch = 0;  // normalization: the micro-batch size (0: 2)
  int threads = 0;
  uint64_t seed = 666;
  int64_t seeds = 0;  // runs of each configuration, seeds seed .. seed + seeds - 1 (minority-collapse;
                      // 0: its default, 2, or 1 with --paper)
  bool quiet = false;
  bool force = false;             // start again the runs whose folders hold other settings
  int64_t stop_after_epochs = 0;  // > 0: stop the first unfinished run after this many epochs, no report
};

// Each checks every run folder under out_dir/runs/ and that gnuplot works before the first run
// starts, runs what is not yet complete (complete runs are kept; interrupted ones resume), then
// writes out_dir/report.html. Returns the report's path, or an empty string when
// stop_after_epochs stopped the sweep early.
std::string reproduce_minority_collapse(const ReproduceConfig& rc);
std::string reproduce_neural_collapse(const ReproduceConfig& rc);
std::string reproduce_mitigation(const ReproduceConfig& rc);
std::string reproduce_square_loss(const ReproduceConfig& rc);  // square_loss.cpp, docs/square-loss.md
std::string reproduce_normalization(const ReproduceConfig& rc);

}  // namespace peel
