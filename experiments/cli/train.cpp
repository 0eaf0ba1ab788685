// `peel train`: one training run into a run folder (experiments/train.h), or the continuation of
// one (--resume DIR, whose config.json gives the settings).
#include "experiments/train.h"

#include <fmt/format.h>

#include <filesystem>

#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "tensor/error.h"

namespace peel::cli {

namespace {
// The options that say what a run computes (config.json); --resume takes them from the folder.
const char* const kSettings = "Run settings";
}  // namespace

void add_train_options(CLI::App* cmd, TrainConfig& c) {
  add_dataset_option(cmd, c.dataset)->group(kSettings);
  add_model_option(cmd, c.model)->group(kSettings);
  cmd->add_option("--width", c.width, "Width factor (vgg, resnet)")
      ->check(CLI::Range(0.01, 8.0))
      ->capture_default_str()
      ->group(kSettings);
  add_enum_option(cmd, "--norm", c.norm, "Normalisation after each convolution (docs/normalization.md)")
      ->group(kSettings);
  add_enum_option(cmd, "--bcn-batch-part", c.bcn_batch_part, "bcn+ws: batch (BN) | estimated (EstBN, micro-batches)")
      ->group(kSettings);
  cmd->add_option("--estbn-moving-speed", c.estbn_moving_speed, "EstBN's moving speed r")
      ->check(CLI::Range(1e-6, 1.0))
      ->capture_default_str()
      ->group(kSettings);
  add_enum_option(cmd, "--wn-init", c.wn_init,
                  "wn: data (Salimans & Kingma: g, b from a batch of training images) | norm (g = ||v||)")
      ->group(kSettings);
  add_enum_option(cmd, "--loss", c.loss, "ce (cross-entropy) | mse (square loss on one-hot targets)")->group(kSettings);
  cmd->add_option("--mse-target-scale", c.mse_target_scale, "Square loss: target = scale * one-hot")
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--mse-loss-scale", c.mse_loss_scale, "Square loss: multiplies the loss")
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--majority", c.majority_classes, "K_A: classes 0..K_A-1 are majority (0 = balanced)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--n-major", c.n_major, "n_A: training images per majority class (0 = all available)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--ratio", c.ratio, "R: minority classes keep floor(n_A / R) images")
      ->check(CLI::Range(1.0, 1e12))
      ->capture_default_str()
      ->group(kSettings);
  add_enum_option(cmd, "--sampler", c.sampler, "plain | oversample | balanced")->group(kSettings);
  cmd->add_option("--oversample-factor", c.oversample_factor, "Copies of each minority image per epoch (0 = R)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kSettings);
  add_enum_option(cmd, "--class-weights", c.class_weights, "none | inverse (loss reweighting by n_max / n_c)")
      ->group(kSettings);
  cmd->add_option("--lr", c.lr, "Learning rate")->check(CLI::PositiveNumber)->capture_default_str()->group(kSettings);
  add_enum_option(cmd, "--schedule", c.schedule, "multistep (x0.1 at --milestones) | cosine | constant")
      ->group(kSettings);
  cmd->add_option("--milestones", c.milestones, "Epochs at which multistep multiplies lr by 0.1 (default: 1/3, 2/3)")
      ->delimiter(',')
      ->group(kSettings);
  cmd->add_option("--warmup", c.warmup_epochs, "Epochs of linear warm-up from lr/10")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--epochs", c.epochs, "Epochs")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--batch", c.batch, "Batch size")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--momentum", c.momentum, "SGD momentum")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--weight-decay", c.weight_decay, "Weight decay (added to the gradient, as PyTorch)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str()
      ->group(kSettings);
  add_seed_option(cmd, c.seed)->group(kSettings);
  cmd->add_option("--metrics-every", c.metrics_every, "Measure collapse metrics every N epochs (and at the last)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str()
      ->group(kSettings);
  add_enum_option(cmd, "--global-mean", c.global_mean, "all-samples (Fang et al.) | class-means (Papyan et al.)")
      ->group(kSettings);
  cmd->add_flag("--measure-rank", c.measure_rank,
                "Also measure the rank of every weight, the classifier and the class means (docs/square-loss.md)")
      ->group(kSettings);
  cmd->add_option("--rank-epsilon", c.rank_epsilon, "--measure-rank: eps of the rank_rel count s_i / s_max > eps")
      ->check(CLI::Range(1e-12, 0.999999))
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_flag("--measure-mse-decomposition", c.measure_mse_decomposition,
                "Also measure the MSE decomposition L_NC1, L_NC2/3, L_perp (docs/square-loss.md)")
      ->group(kSettings);
  cmd->add_option("--elimination-probe", c.elimination_probe,
                  "Measure elimination singularities (es_* columns) on N training images (0 = off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(kSettings);
  cmd->add_option("--test-limit", c.test_limit, "Evaluate on the first N test images only (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->group(kSettings);
  cmd->add_flag("--augment", c.augment, "Random crop and horizontal flip (CIFAR-10)")->group(kSettings);
  cmd->add_flag("--sync-bn", c.sync_bn,
                "Under mpirun: batch-norm statistics of the whole batch, not of each rank's shard (PyTorch "
                "SyncBatchNorm)")
      ->group(kSettings);
  // Execution: how this process runs, not what it computes.
  add_enum_option(cmd, "--allreduce", c.allreduce,
                  "Under mpirun: sum gradient buckets overlapping backward (overlap) or after it (after); the same "
                  "numbers");
  cmd->add_option("--bucket-kib", c.bucket_kib, "Under mpirun: the largest bucket of gradients summed at once, in KiB")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22))
      ->capture_default_str();
  add_data_option(cmd, c.data_dir);
  add_threads_option(cmd, c.threads);
  add_conv_backend_option(cmd, c.conv_backend);
}

void register_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train one model, measuring collapse metrics as it goes");
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a repeated option: the last wins
  auto c = std::make_shared<TrainConfig>();
  auto run = std::make_shared<RunOptions>();
  auto resume_dir = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  add_train_options(cmd, *c);
  auto* out = cmd->add_option("--out", run->out_dir,
                              "Run folder (config.json, metrics.csv, checkpoint.peel, summary.json); must not hold "
                              "a run unless --force");
  cmd->add_option("--resume", *resume_dir, "Continue the run in DIR from its last checkpoint, with its config.json")
      ->excludes(out);
  cmd->add_flag("--force", *force, "Start again in a folder that holds a run, removing its files");
  cmd->add_flag("--quiet", run->quiet, "No progress output");
  cmd->add_option("--stop-after", run->stop_after_epochs, "Stop after N epochs as if interrupted (for tests)")
      ->check(CLI::NonNegativeNumber)
      ->group("");
  cmd->callback([cmd, c, run, resume_dir, force] {
    TrainConfig config = *c;
    RunOptions options = *run;
    if (!resume_dir->empty()) {
      PEEL_CHECK(!*force, "--resume and --force exclude each other (--force starts the run again)");
      for (const CLI::Option* option : cmd->get_options())
        PEEL_CHECK(option->get_group() != kSettings || option->count() == 0,
                   "--resume {} takes the run's settings from {}/config.json; {} cannot change them (start a new run "
                   "with --out, or again with --force)",
                   *resume_dir, *resume_dir, option->get_name());
      PEEL_CHECK(std::filesystem::exists(*resume_dir + "/config.json"),
                 "--resume {}: the folder holds no run (no "
                 "config.json); start one with --out",
                 *resume_dir);
      config = read_train_config(*resume_dir + "/config.json");
      // Execution settings given now override the folder's.
      if (cmd->count("--data")) config.data_dir = c->data_dir;
      if (cmd->count("--threads")) config.threads = c->threads;
      if (cmd->count("--conv-backend")) config.conv_backend = c->conv_backend;
      if (cmd->count("--allreduce")) config.allreduce = c->allreduce;
      if (cmd->count("--bucket-kib")) config.bucket_kib = c->bucket_kib;
      options.out_dir = *resume_dir;
      options.existing = ExistingRun::resume;
    } else {
      PEEL_CHECK(!options.out_dir.empty(), "peel train needs --out DIR (a new run folder) or --resume DIR");
      options.existing = *force ? ExistingRun::restart : ExistingRun::refuse;
    }
    config.threads = capped_threads(config.threads);
    const nlohmann::json summary = run_training(config, options);
    if (!summary.empty() && !options.quiet) fmt::print("summary in {}/summary.json\n", options.out_dir);
  });
}

}  // namespace peel::cli
