#include "experiments/reproduce/sweep.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <span>

#include "experiments/distributed/comm.h"
#include "experiments/report/plot.h"
#include "experiments/run/folder.h"
#include "experiments/train.h"
#include "tensor/error.h"

namespace peel {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string run_dir(const ReproduceConfig& rc, const SweepRun& run) { return rc.out_dir + "/runs/" + run.name; }

// What each run will do; refuses, listing every problem at once, when a folder cannot be used.
std::vector<ExistingRun> plan_runs(const std::vector<SweepRun>& runs, const ReproduceConfig& rc) {
  std::vector<ExistingRun> plan;
  std::vector<std::string> problems;
  for (const SweepRun& run : runs) {
    check_config(run.config);
    const FolderState s = inspect_run_folder(run_dir(rc, run), run.config);
    if (!s.differing_settings.empty() && !rc.force)
      problems.push_back(fmt::format("{} holds a run with other settings:\n    {}", run_dir(rc, run),
                                     fmt::join(s.differing_settings, "\n    ")));
    else if (s.has_config && !s.has_checkpoint && s.measured_epochs > 0 && !rc.force)
      problems.push_back(fmt::format("{} has metrics but no checkpoint to continue from", run_dir(rc, run)));
    const bool usable = s.has_config && s.differing_settings.empty();
    plan.push_back(rc.force && !usable ? ExistingRun::restart : ExistingRun::resume);
    if (!s.has_config && !s.has_checkpoint && s.measured_epochs == 0) plan.back() = ExistingRun::refuse;  // fresh
  }
  PEEL_CHECK(problems.empty(),
             "reproduce: {}\nUse --force to start those runs again with this command's settings, or another --out",
             fmt::join(problems, "\n"));
  return plan;
}

}  // namespace

std::vector<json> run_sweep(const std::vector<SweepRun>& runs, const ReproduceConfig& rc) {
  PEEL_CHECK(!rc.out_dir.empty(), "reproduce: --out DIR is required");
  check_gnuplot_works();
  std::error_code error;
  fs::create_directories(rc.out_dir + "/runs", error);
  PEEL_CHECK(!error, "reproduce: cannot create {}/runs: {}", rc.out_dir, error.message());
  const std::vector<ExistingRun> plan = plan_runs(runs, rc);

  // Under mpirun the runs are spread over the ranks (run i on rank i mod N), each trained by its
  // rank alone; rank 0 then reads every run's summary and writes the report.
  const dist::Communicator& ranks = dist::job();
  const bool quiet = rc.quiet || !ranks.is_root();
  std::vector<json> summaries;
  bool stopped = false;
  for (size_t i = 0; i < runs.size() && !stopped; ++i) {
    const SweepRun& run = runs[i];
    if (static_cast<int>(i % static_cast<size_t>(ranks.size())) != ranks.rank()) continue;
    if (!quiet) fmt::print("== {} ({})\n", run.name, run.label);
    json summary;
    {
      dist::LocalScope alone;
      summary = run_training(run.config, {.out_dir = run_dir(rc, run),
                                          .existing = plan[i],
                                          .quiet = quiet,
                                          .stop_after_epochs = rc.stop_after_epochs});
    }
    stopped = summary.empty();
    if (stopped && !quiet)
      fmt::print("stopped after {} epoch(s) of {} (--stop-after); no report\n", rc.stop_after_epochs, run.name);
    summaries.push_back(std::move(summary));
  }
  if (!ranks.distributed()) return stopped ? std::vector<json>{} : summaries;

  // Ranks finish their runs at different times: wait for the slowest as long as it takes (a rank
  // that dies ends the job through mpirun).
  double any_stopped = stopped;
  dist::Communicator& job = dist::job();
  const double timeout = job.timeout();
  job.set_timeout(1e9);
  job.allreduce_sum(std::span<double>(&any_stopped, 1));
  job.set_timeout(timeout);
  if (any_stopped > 0 || !ranks.is_root()) return {};
  summaries.clear();
  for (const SweepRun& run : runs) summaries.push_back(RunFolder(run_dir(rc, run)).read_summary());
  return summaries;
}

RunMetrics read_run_metrics(const ReproduceConfig& rc, const SweepRun& run) {
  const std::string path = run_dir(rc, run) + "/metrics.csv";
  PEEL_CHECK(fs::exists(path), "{} is missing", path);
  const MetricsTable table = read_metrics_csv(path);
  RunMetrics m;
  for (const std::string& name : table.columns) m[name] = table.column(name);
  return m;
}

TrainConfig shared_recipe(const ReproduceConfig& rc) {
  TrainConfig c;
  c.data_dir = rc.data_dir;
  c.schedule = Schedule::multistep;
  if (rc.paper) c.milestones = {116, 233};
  c.batch = 128;
  c.momentum = 0.9;
  c.weight_decay = 5e-4;
  c.seed = rc.seed;
  c.threads = rc.threads;
  return c;
}

int64_t seed_count(const ReproduceConfig& rc) { return rc.seeds > 0 ? rc.seeds : rc.paper ? 1 : 2; }

std::vector<SweepRun> over_seeds(const std::vector<SweepRun>& configs, int64_t seeds) {
  std::vector<SweepRun> runs;
  for (int64_t s = 0; s < seeds; ++s)
    for (SweepRun run : configs) {
      if (s > 0) run.name += fmt::format("-seed{}", s);
      run.config.seed += static_cast<uint64_t>(s);
      runs.push_back(run);
    }
  return runs;
}

std::vector<json> mean_over_seeds(const std::vector<json>& per_run, size_t configs, int64_t seeds) {
  PEEL_CHECK(per_run.size() == configs * static_cast<size_t>(seeds), "{} summaries for {} configurations x {} seeds",
             per_run.size(), configs, seeds);
  std::vector<json> summaries;
  for (size_t i = 0; i < configs; ++i) {
    json mean = per_run[i];
    for (const auto& [key, value] : per_run[i].items()) {
      if (!value.is_number()) continue;
      std::vector<double> v;
      for (int64_t s = 0; s < seeds; ++s) v.push_back(value_or_nan(per_run[s * configs + i], key));
      const SeedSpread spread = seed_spread(v);
      mean[key] = spread.mean;
      mean[key + "_seed_std"] = spread.std;
    }
    summaries.push_back(mean);
  }
  return summaries;
}

std::string seed_by_seed(const std::vector<json>& per_run, size_t configs, int64_t seeds, size_t config,
                         const std::string& key) {
  std::string text;
  for (int64_t s = 0; s < seeds; ++s)
    text += (s ? ", " : "") + format_number(value_or_nan(per_run[s * configs + config], key));
  return text;
}

double value_or_nan(const json& summary, const std::string& key) {
  return summary.contains(key) && summary[key].is_number() ? summary[key].get<double>() : NAN;
}

SeedSpread seed_spread(const std::vector<double>& values) {
  std::vector<double> finite;
  for (double v : values)
    if (std::isfinite(v)) finite.push_back(v);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (finite.empty()) return {nan, nan};
  double mean = 0;
  for (double v : finite) mean += v;
  mean /= static_cast<double>(finite.size());
  double squares = 0;
  for (double v : finite) squares += (v - mean) * (v - mean);
  return {mean, finite.size() > 1 ? std::sqrt(squares / static_cast<double>(finite.size() - 1)) : 0.0};
}

}  // namespace peel
