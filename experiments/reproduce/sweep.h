// What every reproduction shares: its runs, checked all together before the first starts and then
// trained one after another into out_dir/runs/<name>/, and the recipe both papers train with.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/report/report.h"
#include "experiments/reproduce/reproduce.h"
#include "experiments/run/config.h"

namespace peel {

struct SweepRun {
  std::string name;   // folder under out_dir/runs/
  std::string label;  // for legends and tables
  TrainConfig config;
};

// Checks, before any training: the report can be drawn (gnuplot), out_dir is writable, and no run
// folder holds a run of other settings (unless rc.force, which starts those again) or a run that
// cannot be continued. Then trains each run not yet complete and returns every summary, in order;
// empty when rc.stop_after_epochs stopped a run. Under `mpirun -np N` the runs are spread over the
// ranks and trained in parallel, one process each; rank 0 returns every summary, the others none.
std::vector<nlohmann::json> run_sweep(const std::vector<SweepRun>& runs, const ReproduceConfig& rc);

// The columns of a finished run's metrics.csv.
RunMetrics read_run_metrics(const ReproduceConfig& rc, const SweepRun& run);

// SGD, batch 128, momentum 0.9, weight decay 5e-4, lr divided by 10 at 1/3 and 2/3 of training
// (epochs 116 and 233 of 350 under --paper), the seed and threads asked for.
TrainConfig shared_recipe(const ReproduceConfig& rc);

// The mean and the sample standard deviation (n - 1; 0 for one value) of the finite values; NaN
// when there are none.
struct SeedSpread {
  double mean = 0, std = 0;
};
SeedSpread seed_spread(const std::vector<double>& values);

// How many seeds a study trains each configuration with: --seeds N, else 2 (1 under --paper).
int64_t seed_count(const ReproduceConfig& rc);

// Each configuration once per seed: seed config.seed + s, folders <name> (s = 0) and <name>-seed<s>;
// the result's element s * configs.size() + i is configuration i with seed s.
std::vector<SweepRun> over_seeds(const std::vector<SweepRun>& configs, int64_t seeds);

// The reverse, for their summaries: element i is configuration i's numbers averaged over the seeds,
// with key + "_seed_std" the sample standard deviation over them (0 for one seed).
std::vector<nlohmann::json> mean_over_seeds(const std::vector<nlohmann::json>& per_run, size_t configs, int64_t seeds);

// Configuration `config`'s per_run[...][key], seed by seed, as "v0, v1, ..." for a table.
std::string seed_by_seed(const std::vector<nlohmann::json>& per_run, size_t configs, int64_t seeds, size_t config,
                         const std::string& key);

// summary[key] as a number, NaN when absent or null.
double value_or_nan(const nlohmann::json& summary, const std::string& key);

}  // namespace peel
