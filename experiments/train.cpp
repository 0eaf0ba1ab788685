// One training run, top to bottom, as the papers' algorithm box: data, model, loss; for each epoch
// and each batch, forward, loss, backward, SGD step; then, every --metrics-every epochs, measure
// (collapse metrics on the training set, accuracies on both sets) and save.
//
// What the loop calls lives in experiments/run/: config.h (the settings), data.h (the data
// sets, sampler and loss weights), measure.h (what an epoch's row of metrics.csv holds) and
// folder.h (the run folder's files: config.json, metrics.csv, checkpoints, summary).
//
// Under `mpirun -np N` (experiments/distributed/) every rank runs this loop on its shard of each
// batch: its loss is scaled by the shard's share of the batch's mean loss, the gradients are summed
// over the ranks before the step (--allreduce overlap: bucket by bucket while backward runs), each
// rank evaluates a share of the images the metrics need, and rank 0 alone writes the run folder.
// With one process those steps do nothing.
#include "experiments/train.h"

#include <fmt/format.h>

#include <chrono>
#include <optional>
#include <span>

#include "datasets/loader.h"
#include "experiments/distributed/data_parallel.h"
#include "experiments/normalization/elimination.h"
#include "experiments/normalization/training_probe.h"
#include "experiments/run/data.h"
#include "experiments/run/measure.h"
#include "experiments/run/progress.h"
#include "nn/layers.h"
#include "nn/models.h"
#include "nn/weight_norm_init.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/threads.h"

namespace peel {

using nlohmann::json;

namespace {
optim::ScheduleConfig make_schedule(const TrainConfig& c);
json found_in_data(const TrainConfig& c, const TrainingData& d, const std::vector<float>& class_weights);
json summarize(const TrainConfig& c, const MetricsTable& table, const RunTiming& timing);
json data_parallel_summary(const dist::Communicator& comm, const dist::GradientBuckets& gradients,
                           double train_seconds);
void check_shards(const dist::Communicator& comm, const data::Loader& loader);
void synchronise_batch_norm(const dist::Communicator& comm, nn::Module& model);
void initialise_weight_norm(const TrainConfig& c, const TrainingData& data, nn::Module& model, bool quiet);
json weight_spectra(const nn::Module& model);
}  // namespace

json run_training(const TrainConfig& c, const RunOptions& options) {
  check_config(c);
  const dist::Communicator& comm = dist::world();
  const bool quiet = options.quiet || !comm.is_root();
  set_num_threads(c.threads);
  set_default_conv_backend(c.conv_backend);
  std::optional<RunFolder> folder;  // rank 0's alone until we return
  const auto start = static_cast<RunStart>(dist::decided_by_root(comm, [&] {
    folder.emplace(options.out_dir);
    return static_cast<int64_t>(folder->prepare(c, options.existing, quiet));
  }));
  if (start == RunStart::complete) {
    if (!quiet) fmt::print("{}: already complete\n", folder->dir());
    return comm.is_root() ? folder->read_summary() : json::object();
  }

  // Data: the (possibly imbalanced) training set, the whole balanced test set.
  const TrainingData data = load_training_data(c);
  data::Loader loader(data.train, make_sampler(c, data),
                      {.batch_size = c.batch,
                       .random_crop = c.augment,
                       .horizontal_flip = c.augment,
                       .seed = c.seed,
                       .shard = comm.rank(),
                       .shards = comm.size()});
  check_shards(comm, loader);
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
  // A resumed run's checkpoint holds the initialised g and b: the initialisation is a fresh run's.
  if (start == RunStart::fresh) initialise_weight_norm(c, data, *model, quiet);
  auto loss_of = [&](const ag::Variable& logits, const std::vector<int64_t>& labels) {
    return c.loss == Loss::cross_entropy ? nn::cross_entropy(logits, labels, class_weights)
                                         : nn::mse_loss(logits, labels, static_cast<float>(c.mse_target_scale),
                                                        static_cast<float>(c.mse_loss_scale));
  };
  optim::Sgd sgd({{model->parameters(), static_cast<float>(c.weight_decay), 1.f}},
                 {.lr = static_cast<float>(c.lr), .momentum = static_cast<float>(c.momentum)});
  const optim::ScheduleConfig schedule = make_schedule(c);
  dist::GradientBuckets gradients(model->parameters(), c.allreduce, c.bucket_kib * 1024 / int64_t{sizeof(float)});
  if (c.sync_bn) synchronise_batch_norm(comm, *model);

  // Where to start: epoch 1, or after the folder's last checkpoint.
  MetricsTable metrics;
  RunTiming timing;
  int64_t first_epoch = 0;
  if (start == RunStart::from_checkpoint)
    first_epoch = comm.is_root() ? folder->restore(*model, sgd, timing, metrics)
                                 : load_checkpoint(options.out_dir + "/checkpoint.peel", *model, sgd, timing);
  if (start == RunStart::fresh && comm.is_root()) folder->write_config(c, found_in_data(c, data, class_weights));
  dist::broadcast_state(comm, *model, &sgd);  // every rank starts from rank 0's state
  const SquareLossMeasureOptions square = square_loss_measure_options(c, data.train.num_classes);
  if (start == RunStart::fresh && square.rank && comm.is_root())
    folder->write_measured_spectra(0, initial_spectra(*model, data, square));
  const int64_t end_epoch =
      options.stop_after_epochs > 0 ? std::min(c.epochs, first_epoch + options.stop_after_epochs) : c.epochs;
  if (start == RunStart::from_checkpoint && !quiet)
    fmt::print("resuming {} after epoch {}\n", folder->dir(), first_epoch);

  Progress progress(c.epochs, loader.batches_per_epoch(), quiet);
  double session_train_seconds = 0;  // this process's, for the data-parallel figures (a resume restarts them)
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
      const auto batch_size = static_cast<int64_t>(batch->batch_labels.size());
      sgd.zero_grad();
      ag::Variable logits = model->forward(ag::Variable(batch->images));
      ag::Variable loss = loss_of(logits, batch->labels);
      if (comm.distributed())  // this shard's part of the batch's mean loss
        loss = loss * static_cast<float>(dist::shard_loss_share(batch->labels, batch->batch_labels, class_weights));
      loss.backward(gradients.ready_hook(comm));  // with --allreduce overlap, buckets start as they complete
      gradients.sum(comm);                        // the batch's gradient on every rank
      sgd.step();
      const dist::WholeBatch whole = dist::whole_batch(comm, loss, logits, batch_size);
      tally.add_step(whole.loss, whole.logits, batch->batch_labels);  // throws if the loss diverged
      progress.step(epoch, batch->index, tally.mean_loss(), tally.accuracy(), batch_size);
    }
    const double epoch_train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    timing.train_seconds += epoch_train_seconds;
    session_train_seconds += epoch_train_seconds;
    timing.images_trained += tally.seen;
    check_parameters_finite(*model, epoch);
    dist::check_same_parameters(comm, *model);
    dist::broadcast_buffers(comm, *model);  // rank 0's running statistics, as DDP's broadcast_buffers

    if ((epoch + 1) % c.metrics_every == 0 || epoch + 1 == c.epochs) {
      EpochMeasurement m =
          measure_epoch(*model, data, tally, lr, c.global_mean, square);  // each rank evaluates a share
      add_elimination_measurement(m, *model, elimination_probe);
      metrics.append(m.columns, options.out_dir + "/metrics.csv");
      if (comm.is_root()) folder->write_metrics(metrics);
      if (square.rank && comm.is_root()) folder->write_measured_spectra(epoch + 1, m.spectra);
      progress.epoch_done(epoch, m.line);
    } else {
      progress.epoch_done(epoch,
                          fmt::format("loss {:.4f}  running acc {:.2f}%", tally.mean_loss(), 100 * tally.accuracy()));
    }
    timing.wall_seconds =
        wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    if (comm.is_root()) folder->save_checkpoint(*model, sgd, epoch + 1, timing);
  }
  if (end_epoch < c.epochs || !comm.is_root()) return json::object();  // stopped early, or not rank 0

  folder->write_spectra(weight_spectra(*model));
  json summary = summarize(c, metrics, timing);
  if (comm.distributed()) {
    summary["data_parallel"] = data_parallel_summary(comm, gradients, session_train_seconds);
    if (!quiet) fmt::print("data parallel: {}\n", summary["data_parallel"].dump());
  }
  folder->write_summary(summary);
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
          {"threads_used", num_threads()},       {"ranks", dist::world().size()}};
}

// Every rank needs images in every batch (an empty shard has no batch statistics), the epoch's
// last, short batch included.
void check_shards(const dist::Communicator& comm, const data::Loader& loader) {
  const int64_t batch = loader.options().batch_size, images = loader.sampler().epoch_size();
  const int64_t smallest = images % batch == 0 || loader.options().drop_last ? batch : images % batch;
  PEEL_CHECK(smallest >= comm.size(),
             "{} ranks cannot share a batch of {} images (--batch {}, {} images an epoch); use fewer ranks or a "
             "larger batch",
             comm.size(), smallest, batch, images);
}

// --sync-bn: every BatchNorm's training statistics over the whole batch; EstimatedBatchNorm (a
// BatchNorm) updates its running estimates with the whole batch's mean and deviation.
void synchronise_batch_norm(const dist::Communicator& comm, nn::Module& model) {
  if (!comm.distributed()) return;
  for (auto& [name, module] : model.named_modules())
    if (auto* bn = dynamic_cast<nn::BatchNorm*>(module))
      bn->sync_statistics = [&comm](double* values, int64_t count) {
        comm.allreduce_sum(std::span<double>(values, static_cast<size_t>(count)));
      };
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

// summary.json's "data_parallel": rank 0's view of this process's steps (a resumed run's count
// from the resume). Per step: the training loop's time, the gradient bytes summed, the time the
// step waited for the sums after backward (exposed) and the time inside MPI calls for them.
json data_parallel_summary(const dist::Communicator& comm, const dist::GradientBuckets& gradients,
                           double train_seconds) {
  const dist::Communicator::Traffic& t = comm.traffic();
  const dist::GradientBuckets::Cost& g = gradients.cost();
  const double steps = static_cast<double>(std::max<int64_t>(g.steps, 1));
  return {{"ranks", comm.size()},
          {"collectives", t.calls},
          {"collective_bytes", t.bytes},
          {"collective_seconds", t.seconds},
          {"allreduce", enum_name(gradients.mode())},
          {"gradient_buckets", gradients.buckets()},
          {"gradient_buckets_started_in_backward_per_step", static_cast<double>(g.started_in_backward) / steps},
          {"steps", g.steps},
          {"step_ms", 1000 * train_seconds / steps},
          {"gradient_bytes_per_step", static_cast<double>(g.bytes) / steps},
          {"gradient_exposed_ms_per_step", 1000 * g.exposed_seconds / steps},
          {"gradient_mpi_ms_per_step", 1000 * g.mpi_seconds / steps}};
}

// --norm wn with --wn-init data: Salimans & Kingma's initialisation on min(batch, 512) training
// images drawn by the seed (the same images on every rank, so every rank computes the same g and b).
// The draw is its own (choose_probe with a seed derived from the run's), so it takes nothing from
// the loader's shuffle and the --elimination-probe images are another sample. Nothing for other
// norms, whose runs stay as they were.
void initialise_weight_norm(const TrainConfig& c, const TrainingData& data, nn::Module& model, bool quiet) {
  if (c.norm != nn::Norm::wn || c.wn_init != WnInit::data) return;
  constexpr uint64_t kInitSeedSalt = 0x9e3779b97f4a7c15ull;  // any fixed odd constant: a stream apart
  const Tensor images = probe_images(data.train, std::min(c.batch, kMaxWnInitImages), c.seed ^ kInitSeedSalt);
  const std::vector<nn::WeightNormInitLayer> layers = nn::weight_norm_data_init(model, images);
  if (quiet) return;
  std::vector<std::string> scales;
  for (const auto& layer : layers) {
    double mean_sigma = 0;
    for (double s : layer.stddev) mean_sigma += s / static_cast<double>(layer.stddev.size());
    scales.push_back(fmt::format("{} {:.3g}", layer.name, mean_sigma));
  }
  fmt::print("weight-norm data init on {} images (mean output std before): {}\n", images.size(0),
             fmt::join(scales, ", "));
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
