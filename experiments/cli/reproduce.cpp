// `peel reproduce minority-collapse|neural-collapse`.
#include "experiments/reproduce/reproduce.h"

#include "datasets/fetch.h"
#include "experiments/cli/commands.h"

namespace peel::cli {

void register_reproduce_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("reproduce", "Reproduce a paper's experiment and write DIR/report.html");
  auto which = std::make_shared<std::string>();
  auto c = std::make_shared<ReproduceConfig>();
  c->data_dir = data::default_data_dir();
  cmd->add_option("experiment", *which, "minority-collapse | neural-collapse")
      ->required()
      ->check(CLI::IsMember({"minority-collapse", "neural-collapse"}));
  cmd->add_option("--out", c->out_dir, "Output directory")->required();
  cmd->add_option("--data", c->data_dir, "Data directory (default: $PEEL_DATA, else data/)");
  cmd->add_option("--dataset", c->dataset, "Override the data set (mnist, fashion-mnist, cifar10, synthetic)")
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10", "synthetic"}));
  cmd->add_option("--model", c->model, "Override the model")
      ->check(CLI::IsMember({"small_cnn", "vgg11", "vgg13", "resnet18", "vgg11_lpm", "vgg13_lpm"}));
  cmd->add_flag("--paper", c->paper, "The paper's own protocol (n_A = 6000, 350 epochs; days on a CPU)");
  cmd->add_option("--epochs", c->epochs, "Override the number of epochs")->check(CLI::PositiveNumber);
  cmd->add_option("--n-major", c->n_major, "Override n_A (images per majority class)")->check(CLI::PositiveNumber);
  cmd->add_option("--threads", c->threads, "Threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", c->seed, "Seed");
  cmd->add_flag("--quiet", c->quiet, "No progress output");
  cmd->add_option("--stop-after", c->stop_after_epochs,
                  "Stop the first unfinished run after N epochs, without a report (a smoke test of the set-up)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([which, c] {
    if (*which == "minority-collapse")
      reproduce_minority_collapse(*c);
    else
      reproduce_neural_collapse(*c);
  });
}

}  // namespace peel::cli
