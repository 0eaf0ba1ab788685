// `peel reproduce <study>`: a paper's experiment into DIR, with
// DIR/report.html (experiments/reproduce/).
#include "experiments/reproduce/reproduce.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "nn/models.h"

namespace peel::cli {

namespace {
// Each study's name and what runs it.
const std::map<std::string, std::string (*)(const ReproduceConfig&)> kStudies{
    {"minority-collapse", reproduce_minority_collapse},
    {"neural-collapse", reproduce_neural_collapse},
    {"mitigation", reproduce_mitigation},
    {"square-loss", reproduce_square_loss},
    {"normalization", reproduce_normalization},
};
}  // namespace

void register_reproduce_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("reproduce", "Reproduce a paper's experiment and write DIR/report.html");
  auto which = std::make_shared<std::string>();
  auto c = std::make_shared<ReproduceConfig>();
  std::vector<std::string> names;
  for (const auto& [name, study] : kStudies) names.push_back(name);
  cmd->add_option("experiment", *which, fmt::format("{}", fmt::join(names, " | ")))
      ->required()
      ->check(CLI::IsMember(names));
  cmd->add_option("--out", c->out_dir, "Output directory")->required();
  add_data_option(cmd, c->data_dir);
  cmd->add_option("--dataset", c->dataset, "Override the data set")->check(CLI::IsMember(data::dataset_names()));
  cmd->add_option("--model", c->model, "Override the model")->check(CLI::IsMember(nn::model_names()));
  cmd->add_flag("--paper", c->paper, "The paper's own protocol (n_A = 6000, 350 epochs; days on a CPU)");
  cmd->add_option("--epochs", c->epochs, "Override the number of epochs")->check(CLI::PositiveNumber);
  cmd->add_option("--n-major", c->n_major, "Override n_A (images per majority class)")->check(CLI::PositiveNumber);
  cmd->add_option("--micro-batch", c->micro_batch, "normalization: the micro-batch size (default 2)")
      ->check(CLI::PositiveNumber);
  add_threads_option(cmd, c->threads);
  add_seed_option(cmd, c->seed);
  cmd->add_option("--seeds", c->seeds,
                  "minority-collapse, mitigation: train each configuration with this many seeds (seed, seed+1, ...); "
                  "default 2, 1 with --paper")
      ->check(CLI::Range(int64_t{1}, int64_t{100}));
  cmd->add_flag("--force", c->force, "Start again the runs whose folders hold other settings");
  cmd->add_flag("--quiet", c->quiet, "No progress output");
  cmd->add_option("--stop-after", c->stop_after_epochs,
                  "Stop the first unfinished run after N epochs, without a report (a smoke test of the set-up)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([which, c] {
    ReproduceConfig config = *c;
    config.threads = capped_threads(config.threads);
    const std::string report = kStudies.at(*which)(config);
    if (!report.empty() && !config.quiet) fmt::print("report written to {}\n", report);
  });
}

}  // namespace peel::cli
