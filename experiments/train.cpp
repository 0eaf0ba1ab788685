// One training run, top to bottom, as the papers' algorithm box: data, model, loss; for each epoch
// and each batch, forward, loss, backward, SGD step; then, every --metrics-every epochs, measure
// (collapse metrics on the training set, accuracies on both sets) and save.
//
// What the loop calls lives in experiments/run/: config.h (the settings), data.h (the data
// sets, sampler and loss weights), measure.h (what an epoch's row of metrics.csv holds) and
// folder.h (the run folder's files: config.json, metrics.csv, checkpoints, summary).
#include "experiments/train.h"

#include <fmt/format.h>

#include <chrono>

#include "datasets/loader.h"
#include "experiments/normalization/training_probe.h"
#include "experiments/run/data.h"
#include "experiments/run/measure.h"
#include "experiments/run/progress.h"
#include "nn/models.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/threads.h"

namespace peel {

using nlohmann::json;

namespace {
optim::ScheduleConfig make_schedule(const TrainConfig& c);
json found_in_data(const TrainConfig& c, const TrainingData& d, const std::vector<float>& class_weights);
json summarize(const TrainConfig& c, const MetricsTable& table, const RunTiming& timing);
json weight_spectra(const nn::Module& model);
}  // namespace

json run_training(const TrainConfig& c, const RunOptions& options) {
  check_config(c);
  set_num_threads(c.threads);
  set_default_conv_backend(c.conv_backend);
  RunFolder folder(options.out_dir);  // ours alone until we return
  const RunStart start = folder.prepare(c, options.existing, options.quiet);
  if (start == RunStart::complete) {
    if (!options.quiet) fmt::print("{}: already complete\n", folder.dir());
    return folder.read_summary();
  }

  // Data: the (possibly imbalanced) training set, the whole balanced test set.
  const TrainingData data = load_training_data(c);
  data::Loader loader(data.train, make_sampler(c, data),
                      {.batch_size = c.batch, .random_crop = c.augment, .horizontal_flip = c.augment, .seed = c.seed});
  const std::vector<float> class_weights = class_loss_weights(c, data);
  const Tensor elimination_probe = training_elimination_probe(c, data);  // undefined unless asked for

  // Model, loss and optimizer: SGD with momentum, weight decay on every parameter as the papers do.
  auto model = nn::make_model({.name = c.model,
                               .width = c.width,
                               .classes = data.train.num_classes,
                               .in_channels = data.train.channels(),
                               .seed = c.seed,
                               .norm = c.norm,
                               .bcn_batch_part = c.bcn_batch_part,
                               .estbn_moving_speed = static_cast<float>(c.estbn_moving_speed)});
  auto loss_of = [&](const ag::Variable& logits, const std::vector<int64_t>& labels) {
    return c.loss == Loss::cross_entropy ? nn::cross_entropy(logits, labels, class_weights)
                                         : nn::mse_loss(logits, labels, static_cast<float>(c.mse_target_scale),
                                                        static_cast<float>(c.mse_loss_scale));
  };
  optim::Sgd sgd({{model->parameters(), static_cast<float>(c.weight_decay), 1.f}},
                 {.lr = static_cast<float>(c.lr), .momentum = static_cast<float>(c.momentum)});
  const optim::ScheduleConfig schedule = make_schedule(c);

  // Where to start: epoch 1, or after the folder's last checkpoint.
  MetricsTable metrics;
  RunTiming timing;
  int64_t first_epoch = 0;
  if (start == RunStart::from_checkpoint) first_epoch = folder.restore(*model, sgd, timing, metrics);
  if (start == RunStart::fresh) folder.write_config(c, found_in_data(c, data, class_weights));
  const int64_t end_epoch =
      options.stop_after_epochs > 0 ? std::min(c.epochs, first_epoch + options.stop_after_epochs) : c.epochs;
  if (start == RunStart::from_checkpoint && !options.quiet)
    fmt::print("resuming {} after epoch {}\n", folder.dir(), first_epoch);

  Progress progress(c.epochs, loader.batches_per_epoch(), options.quiet);
  const auto wall_start = std::chrono::steady_clock::now();
  const double wall_before = timing.wall_seconds;
  for (int64_t epoch = first_epoch; epoch < end_epoch; ++epoch) {
    const float lr = optim::learning_rate_at(schedule, static_cast<float>(c.lr), epoch);
    sgd.set_lr(lr);
    EpochTally tally{.epoch = epoch};
    const auto epoch_start = std::chrono::steady_clock::now();
    loader.start_epoch(epoch);
    progress.start_epoch();
    while (std::optional<data::Batch> batch = loader.next()) {
      sgd.zero_grad();
      ag::Variable logits = model->forward(ag::Variable(batch->images));
      ag::Variable loss = loss_of(logits, batch->labels);
      loss.backward();
      sgd.step();
      tally.add_step(loss.item(), logits.value(), batch->labels);  // throws if the loss diverged
      progress.step(epoch, batch->index, tally.mean_loss(), tally.accuracy(), batch->size());
    }
    timing.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    timing.images_trained += tally.seen;
    check_parameters_finite(*model, epoch);

    if ((epoch + 1) % c.metrics_every == 0 || epoch + 1 == c.epochs) {
      EpochMeasurement m = measure_epoch(*model, data, tally, lr, c.global_mean);
      add_elimination_measurement(m, *model, elimination_probe);
      metrics.append(m.columns, folder.path("metrics.csv"));
      folder.write_metrics(metrics);
      progress.epoch_done(epoch, m.line);
    } else {
      progress.epoch_done(epoch,
                          fmt::format("loss {:.4f}  running acc {:.2f}%", tally.mean_loss(), 100 * tally.accuracy()));
    }
    timing.wall_seconds =
        wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    folder.save_checkpoint(*model, sgd, epoch + 1, timing);
  }
  if (end_epoch < c.epochs) return json::object();  // stopped early (stop_after_epochs)

  folder.write_spectra(weight_spectra(*model));
  const json summary = summarize(c, metrics, timing);
  folder.write_summary(summary);
  return summary;
}

namespace {

optim::ScheduleConfig make_schedule(const TrainConfig& c) {
  optim::ScheduleConfig s;
  s.kind = enum_name(c.schedule);
  s.milestones = effective_milestones(c);
  s.total_epochs = c.epochs;
  s.warmup_epochs = c.warmup_epochs;
  return s;
}

// What config.json records beside the settings: what the data and the machine turned out to be.
json found_in_data(const TrainConfig& c, const TrainingData& d, const std::vector<float>& class_weights) {
  return {{"train_size", d.train.size()},        {"test_size", d.test.size()},
          {"class_counts", d.class_counts},      {"minority_classes", d.minority_classes},
          {"class_loss_weights", class_weights}, {"milestones", effective_milestones(c)},
          {"threads_used", num_threads()}};
}

// summary.json: the last measured row under the names the reports use, and the run's timing.
json summarize(const TrainConfig& c, const MetricsTable& table, const RunTiming& timing) {
  json summary;
  if (!table.rows.empty())
    for (size_t i = 0; i < table.columns.size(); ++i) {
      const double v = table.rows.back()[i];
      summary[table.columns[i]] = std::isnan(v) ? json(nullptr) : json(v);
    }
  summary["nc2_equinorm"] = summary["nc2_equinorm_means"];
  summary["nc2_equiangular"] = summary["nc2_equiangular_means"];
  summary["nc2_maxangle"] = summary["nc2_maxangle_means"];
  summary["ratio"] = c.ratio;
  summary["sampler"] = c.sampler;
  summary["class_weights"] = c.class_weights;
  summary["global_mean"] = c.global_mean;
  summary["wall_seconds"] = timing.wall_seconds;
  summary["train_images_per_sec"] =
      timing.train_seconds > 0 ? static_cast<double>(timing.images_trained) / timing.train_seconds : 0.0;
  return summary;
}

// Singular values and ranks of every weight matrix at the end (the square-loss low-rank study).
json weight_spectra(const nn::Module& model) {
  json spectra = json::object();
  for (const auto& [name, p] : model.named_parameters())
    if (p.dim() >= 2) {
      WeightSpectrum s = weight_spectrum(p.value());
      spectra[name] = {{"rank", s.rank}, {"stable_rank", s.stable_rank}, {"singular_values", s.singular_values}};
    }
  return spectra;
}

}  // namespace

}  // namespace peel
