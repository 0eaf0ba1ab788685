// `peel reproduce minority-collapse|neural-collapse`: a paper's experiment into DIR, with
// DIR/report.html (experiments/reproduce/).
#include "experiments/reproduce/reproduce.h"

#include <fmt/format.h>

#include "datasets/dataset.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "nn/models.h"

namespace peel::cli {

void register_reproduce_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("reproduce", "Reproduce a paper's experiment and write DIR/report.html");
  auto which = std::make_shared<std::string>();
  auto c = std::make_shared<ReproduceConfig>();
  cmd->add_option("experiment", *which, "minority-collapse | neural-collapse | normalization")
      ->required()
      ->check(CLI::IsMember({"minority-collapse", "neural-collapse", "normalization"}));
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
  cmd->add_flag("--force", c->force, "Start again the runs whose folders hold other settings");
  cmd->add_flag("--quiet", c->quiet, "No progress output");
  cmd->add_option("--stop-after", c->stop_after_epochs,
                  "Stop the first unfinished run after N epochs, without a report (a smoke test of the set-up)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([which, c] {
    ReproduceConfig config = *c;
    config.threads = capped_threads(config.threads);
    const std::string report = *which == "minority-collapse" ? reproduce_minority_collapse(config)
                               : *which == "neural-collapse" ? reproduce_neural_collapse(config)
                                                             : reproduce_normalization(config);
    if (!report.empty() && !config.quiet) fmt::print("report written to {}\n", report);
  });
}

}  // namespace peel::cli
