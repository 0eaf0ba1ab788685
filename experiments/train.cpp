// One training run, top to bottom: data, model, loss, backward, step, metrics.
//
// Read run_training() first; everything above it is bookkeeping (configuration, evaluation,
// files). The loop is the paper's algorithm box: for each epoch, for each batch, forward,
// loss, backward, SGD step; then, every --metrics-every epochs, the collapse metrics on the
// training set and the accuracies on the test set, one CSV row, and a checkpoint.
#include "experiments/train.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "datasets/dataset.h"
#include "datasets/imbalance.h"
#include "datasets/loader.h"
#include "datasets/sampler.h"
#include "experiments/collapse/collapse.h"
#include "experiments/run/progress.h"
#include "nn/models.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/conv/conv.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace peel {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- Configuration ----------------------------------------------------------------------------

json TrainConfig::to_json() const {
  return {{"dataset", dataset},
          {"data_dir", data_dir},
          {"majority_classes", majority_classes},
          {"n_major", n_major},
          {"ratio", std::isinf(ratio) ? json("inf") : json(ratio)},
          {"test_limit", test_limit},
          {"augment", augment},
          {"model", model},
          {"width", width},
          {"loss", loss},
          {"mse_target_scale", mse_target_scale},
          {"mse_loss_scale", mse_loss_scale},
          {"sampler", sampler},
          {"oversample_factor", oversample_factor},
          {"class_weights", class_weights},
          {"lr", lr},
          {"schedule", schedule},
          {"epochs", epochs},
          {"batch", batch},
          {"momentum", momentum},
          {"weight_decay", weight_decay},
          {"seed", seed},
          {"threads", threads},
          {"metrics_every", metrics_every},
          {"global_mean", global_mean},
          {"conv_backend", conv_backend}};
}

TrainConfig TrainConfig::from_json(const json& j) {
  TrainConfig c;
  c.dataset = j.at("dataset");
  c.data_dir = j.at("data_dir");
  c.majority_classes = j.at("majority_classes");
  c.n_major = j.at("n_major");
  c.ratio = j.at("ratio").is_string() ? std::numeric_limits<double>::infinity() : j.at("ratio").get<double>();
  c.test_limit = j.at("test_limit");
  c.augment = j.at("augment");
  c.model = j.at("model");
  c.width = j.at("width");
  c.loss = j.at("loss");
  c.mse_target_scale = j.at("mse_target_scale");
  c.mse_loss_scale = j.at("mse_loss_scale");
  c.sampler = j.at("sampler");
  c.oversample_factor = j.at("oversample_factor");
  c.class_weights = j.at("class_weights");
  c.lr = j.at("lr");
  c.schedule = j.at("schedule");
  c.epochs = j.at("epochs");
  c.batch = j.at("batch");
  c.momentum = j.at("momentum");
  c.weight_decay = j.at("weight_decay");
  c.seed = j.at("seed");
  c.threads = j.at("threads");
  c.metrics_every = j.at("metrics_every");
  c.global_mean = j.at("global_mean");
  c.conv_backend = j.at("conv_backend");
  return c;
}

namespace {

void check_config(const TrainConfig& c) {
  PEEL_CHECK(!c.out_dir.empty(), "train: --out DIR is required");
  PEEL_CHECK(c.loss == "ce" || c.loss == "mse", "train: --loss must be ce or mse, got '{}'", c.loss);
  PEEL_CHECK(c.sampler == "plain" || c.sampler == "oversample" || c.sampler == "balanced",
             "train: --sampler must be plain, oversample or balanced, got '{}'", c.sampler);
  PEEL_CHECK(c.class_weights == "none" || c.class_weights == "inverse",
             "train: --class-weights must be none or inverse, got '{}'", c.class_weights);
  PEEL_CHECK(c.ratio >= 1, "train: --ratio must be >= 1, got {}", c.ratio);
  PEEL_CHECK(c.epochs > 0 && c.batch > 0 && c.metrics_every > 0,
             "train: --epochs, --batch and --metrics-every must be positive");
  PEEL_CHECK(c.loss == "ce" || c.class_weights == "none", "train: --class-weights applies to --loss ce only");
}

// ---- Data -------------------------------------------------------------------------------------

struct TrainingData {
  data::Dataset train, test;
  std::vector<int64_t> minority_classes;  // empty when balanced
  std::vector<int64_t> class_counts;      // training images per class
};

TrainingData load_data(const TrainConfig& c) {
  data::LoadOptions options;
  // vgg and resnet take 32x32 inputs: MNIST-like 28x28 images are zero-padded by 2 on each side.
  options.fit32 = nn::model_image_size(c.model) == 32 ? data::Fit32::pad : data::Fit32::none;
  options.synthetic.seed = c.seed;
  TrainingData d;
  d.train = data::load_dataset(c.dataset, "train", c.data_dir, options);
  d.test = data::load_dataset(c.dataset, "test", c.data_dir, options);
  if (c.test_limit > 0 && c.test_limit < d.test.size()) {
    std::vector<int64_t> first(static_cast<size_t>(c.test_limit));
    for (int64_t i = 0; i < c.test_limit; ++i) first[static_cast<size_t>(i)] = i;
    d.test = data::subset(d.test, first);
  }
  if (c.majority_classes > 0 || c.n_major > 0) {
    // Step imbalance (Fang et al.): classes 0..K_A-1 keep n_A images, the others floor(n_A / R).
    data::StepImbalanceOptions imbalance;
    imbalance.majority_classes = c.majority_classes > 0 ? c.majority_classes : d.train.num_classes;
    std::vector<int64_t> counts = d.train.class_counts();
    imbalance.n_majority = c.n_major > 0 ? c.n_major : *std::min_element(counts.begin(), counts.end());
    imbalance.ratio = c.ratio;
    imbalance.seed = c.seed;
    data::StepImbalance kept = data::step_imbalance(d.train.labels, d.train.num_classes, imbalance);
    d.train = data::subset(d.train, kept.indices);
    d.minority_classes = kept.minority_classes;
  }
  d.class_counts = d.train.class_counts();
  return d;
}

std::shared_ptr<const data::Sampler> make_sampler(const TrainConfig& c, const TrainingData& d) {
  if (c.sampler == "oversample") {
    // Each minority image appears `factor` times per epoch (the authors' weight_ratio).
    const int64_t factor = c.oversample_factor > 0 ? c.oversample_factor : std::max<int64_t>(1, std::llround(c.ratio));
    return std::make_shared<data::OversamplingSampler>(d.train.labels, d.minority_classes, factor, c.seed);
  }
  if (c.sampler == "balanced")
    return std::make_shared<data::ClassBalancedSampler>(d.train.labels, d.train.num_classes, c.seed);
  return std::make_shared<data::ShuffleSampler>(d.train.size(), c.seed);
}

// Loss reweighting: class c's loss is weighted by (largest class count) / n_c, so the minority
// weight is n_A / n_B = R, the same factor oversampling applies.
std::vector<float> make_class_weights(const TrainConfig& c, const TrainingData& d) {
  if (c.class_weights == "none") return {};
  const int64_t largest = *std::max_element(d.class_counts.begin(), d.class_counts.end());
  std::vector<float> w;
  for (int64_t n : d.class_counts) w.push_back(n > 0 ? static_cast<float>(largest) / static_cast<float>(n) : 0.f);
  return w;
}

// ---- Evaluation: penultimate features and logits of a whole split, in eval mode -------------

struct Evaluation {
  Tensor features;  // (N, D)
  Tensor logits;    // (N, K)
};

Evaluation evaluate(nn::Network& model, const data::Dataset& split, int64_t batch_size) {
  ag::NoGradGuard no_grad;
  model.eval();
  data::Loader loader(split, std::make_shared<data::SequentialSampler>(split.size()), {.batch_size = batch_size});
  loader.start_epoch(0);
  Evaluation e;
  int64_t row = 0;
  while (std::optional<data::Batch> batch = loader.next()) {
    ag::Variable h = model.features(ag::Variable(batch->images));
    ag::Variable z = model.classifier().forward(h);
    if (!e.features.defined()) {
      e.features = Tensor::empty({split.size(), h.size(1)});
      e.logits = Tensor::empty({split.size(), z.size(1)});
    }
    e.features.slice(0, row, row + batch->size()).copy_(h.value());
    e.logits.slice(0, row, row + batch->size()).copy_(z.value());
    row += batch->size();
  }
  model.train();
  return e;
}

// ---- Files: metrics.csv, checkpoints ------------------------------------------------------------

void write_metrics_csv(const std::string& path, const MetricsTable& t) {
  std::string out = fmt::format("{}\n", fmt::join(t.columns, ","));
  for (const auto& row : t.rows) {
    std::vector<std::string> cells;
    for (double v : row) cells.push_back(std::isnan(v) ? "nan" : fmt::format("{:.17g}", v));  // round-trips
    out += fmt::format("{}\n", fmt::join(cells, ","));
  }
  nn::write_file_atomically(path, out);
}

}  // namespace

std::vector<double> MetricsTable::column(const std::string& name) const {
  std::vector<double> values;
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name)
      for (const auto& row : rows) values.push_back(row[i]);
  return values;
}

MetricsTable read_metrics_csv(const std::string& path, int64_t up_to_epoch) {
  MetricsTable t;
  std::ifstream in(path);
  if (!in) return t;
  std::string line;
  std::getline(in, line);
  std::stringstream header(line);
  for (std::string name; std::getline(header, name, ',');) t.columns.push_back(name);
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) row.push_back(std::strtod(cell.c_str(), nullptr));
    PEEL_CHECK(row.size() == t.columns.size(), "{}: a row has {} cells, the header {}", path, row.size(),
               t.columns.size());
    if (row[0] <= static_cast<double>(up_to_epoch)) t.rows.push_back(row);  // column 0 is the epoch
  }
  return t;
}

namespace {

// A checkpoint is one state file (written atomically): the model's parameters and buffers, the
// optimizer's momentum buffers, and the number of epochs completed.
void save_checkpoint(const std::string& path, const nn::Network& model, const optim::Optimizer& opt,
                     int64_t epochs_done) {
  std::vector<std::pair<std::string, Tensor>> state;
  for (const auto& [name, t] : model.state()) state.emplace_back("model." + name, t);
  const std::vector<Tensor> buffers = opt.state();
  for (size_t i = 0; i < buffers.size(); ++i) state.emplace_back(fmt::format("optimizer.{}", i), buffers[i]);
  state.emplace_back("epochs_done", Tensor::scalar(static_cast<float>(epochs_done)));
  nn::write_state(path, state);
}

int64_t load_checkpoint(const std::string& path, nn::Network& model, optim::Optimizer& opt) {
  std::vector<std::pair<std::string, Tensor>> loaded = nn::read_state(path), model_state;
  std::vector<Tensor> buffers;
  int64_t epochs_done = -1;
  for (auto& [name, t] : loaded) {
    if (name.rfind("model.", 0) == 0)
      model_state.emplace_back(name.substr(6), t);
    else if (name.rfind("optimizer.", 0) == 0)
      buffers.push_back(t);
    else if (name == "epochs_done")
      epochs_done = static_cast<int64_t>(t.item());
  }
  PEEL_CHECK(epochs_done >= 0, "{}: not a training checkpoint (no epochs_done entry)", path);
  nn::assign_state(model.state(), model_state, path);
  opt.load_state(buffers);
  return epochs_done;
}

void append(std::vector<std::pair<std::string, double>>& to, const std::vector<std::pair<std::string, double>>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

}  // namespace

// ---- The run ----------------------------------------------------------------------------------

json run_training(const TrainConfig& c) {
  check_config(c);
  set_num_threads(c.threads);
  if (!c.conv_backend.empty()) set_default_conv_backend(parse_conv_backend(c.conv_backend));
  fs::create_directories(c.out_dir);
  const std::string checkpoint_path = c.out_dir + "/checkpoint.peel", metrics_path = c.out_dir + "/metrics.csv";
  const GlobalMean global_mean = parse_global_mean(c.global_mean);

  // Data: the (possibly imbalanced) training set, the whole balanced test set.
  TrainingData d = load_data(c);
  const int64_t classes = d.train.num_classes;
  data::Loader loader(d.train, make_sampler(c, d),
                      {.batch_size = c.batch, .random_crop = c.augment, .horizontal_flip = c.augment, .seed = c.seed});
  const std::vector<float> class_weights = make_class_weights(c, d);

  // Model and optimizer (SGD with momentum; weight decay on every parameter, as the papers do).
  auto model = nn::make_model(
      {.name = c.model, .width = c.width, .classes = classes, .in_channels = d.train.channels(), .seed = c.seed});
  optim::Sgd sgd({{model->parameters(), c.weight_decay, 1.f}}, {.lr = c.lr, .momentum = c.momentum});
  optim::ScheduleConfig schedule =
      c.schedule == "multistep"
          ? optim::parse_schedule(fmt::format("multistep:{},{}", c.epochs / 3, 2 * c.epochs / 3), c.epochs)
          : optim::parse_schedule(c.schedule, c.epochs);

  int64_t start_epoch = 0;
  MetricsTable table;
  if (c.resume && fs::exists(checkpoint_path)) {
    start_epoch = load_checkpoint(checkpoint_path, *model, sgd);
    table = read_metrics_csv(metrics_path, start_epoch - 1);
    if (!c.quiet) fmt::print("resuming {} after epoch {}\n", c.out_dir, start_epoch);
  } else {
    nlohmann::json config = c.to_json();
    config["global_mean"] = to_string(global_mean);
    config["train_size"] = d.train.size();
    config["test_size"] = d.test.size();
    config["class_counts"] = d.class_counts;
    config["minority_classes"] = d.minority_classes;
    config["class_loss_weights"] = class_weights;
    config["conv_backend_used"] = conv_backend_name(default_conv_backend());
    config["threads_used"] = num_threads();
    nn::write_file_atomically(c.out_dir + "/config.json", config.dump(2) + "\n");
  }

  Progress progress(c.epochs, loader.batches_per_epoch(), c.quiet);
  json summary;
  const auto run_start = std::chrono::steady_clock::now();
  double train_seconds = 0;
  int64_t images_trained = 0;
  for (int64_t epoch = start_epoch; epoch < c.epochs; ++epoch) {
    sgd.set_lr(optim::learning_rate_at(schedule, c.lr, epoch));
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    const auto epoch_start = std::chrono::steady_clock::now();
    loader.start_epoch(epoch);
    while (std::optional<data::Batch> batch = loader.next()) {
      // One SGD step: forward, loss, backward, update.
      sgd.zero_grad();
      ag::Variable logits = model->forward(ag::Variable(batch->images));
      ag::Variable loss = c.loss == "ce" ? nn::cross_entropy(logits, batch->labels, class_weights)
                                         : nn::mse_loss(logits, batch->labels, c.mse_target_scale, c.mse_loss_scale);
      loss.backward();
      sgd.step();

      const std::vector<int64_t> predicted = predictions_from_logits(logits.value());
      for (int64_t i = 0; i < batch->size(); ++i)
        correct += predicted[static_cast<size_t>(i)] == batch->labels[static_cast<size_t>(i)];
      loss_sum += static_cast<double>(loss.item()) * static_cast<double>(batch->size());
      seen += batch->size();
      progress.step(epoch, batch->index, loss_sum / static_cast<double>(seen),
                    static_cast<double>(correct) / static_cast<double>(seen), batch->size());
    }
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    images_trained += seen;

    const bool last = epoch + 1 == c.epochs;
    if ((epoch + 1) % c.metrics_every == 0 || last) {
      // Collapse metrics on the training set's penultimate features; accuracies on both sets.
      Evaluation train_eval = evaluate(*model, d.train, 256);
      Evaluation test_eval = evaluate(*model, d.test, 256);
      CollapseMetrics m = collapse_metrics({.features = train_eval.features,
                                            .labels = d.train.labels,
                                            .num_classes = classes,
                                            .classifier_weight = model->classifier().weight.value(),
                                            .classifier_bias = model->classifier().bias.value(),
                                            .logits = train_eval.logits,
                                            .minority_classes = d.minority_classes,
                                            .global_mean = global_mean});
      Accuracy test = accuracy_from_logits(test_eval.logits, d.test.labels, d.minority_classes);
      WeightSpectrum spectrum = weight_spectrum(model->classifier().weight.value());
      MetricColumns row{{"epoch", static_cast<double>(epoch + 1)},
                        {"lr", sgd.lr()},
                        {"train_loss", loss_sum / static_cast<double>(seen)},
                        {"train_running_accuracy", static_cast<double>(correct) / static_cast<double>(seen)}};
      append(row, m.accuracy.to_columns("train_"));
      append(row, test.to_columns("test_"));
      append(row, m.to_columns());
      append(row, spectrum.to_columns("classifier_"));
      if (table.columns.empty())
        for (const auto& [name, v] : row) table.columns.push_back(name);
      std::vector<double> values;
      for (const auto& [name, v] : row) values.push_back(v);
      table.rows.push_back(values);
      write_metrics_csv(metrics_path, table);
      progress.epoch_done(
          epoch, fmt::format("loss {:.4f}  train acc {:.2f}%  test acc {:.2f}%  NC1 {:.3g}  minority cos {:.3f}",
                             loss_sum / static_cast<double>(seen), 100 * m.accuracy.overall, 100 * test.overall, m.nc1,
                             m.minority_cosine));
      for (const auto& [name, v] : row) summary[name] = std::isnan(v) ? json(nullptr) : json(v);
    } else {
      progress.epoch_done(epoch, fmt::format("loss {:.4f}  running acc {:.2f}%", loss_sum / static_cast<double>(seen),
                                             100.0 * static_cast<double>(correct) / static_cast<double>(seen)));
    }
    save_checkpoint(checkpoint_path, *model, sgd, epoch + 1);
    if (c.stop_after_epochs > 0 && epoch + 1 - start_epoch >= c.stop_after_epochs && !last) return json();
  }

  // The summary: the last measured row, under the names the reports use.
  if (summary.empty() && !table.rows.empty())
    for (size_t i = 0; i < table.columns.size(); ++i) {
      const double v = table.rows.back()[i];
      summary[table.columns[i]] = std::isnan(v) ? json(nullptr) : json(v);
    }
  summary["nc2_equinorm"] = summary["nc2_equinorm_means"];
  summary["nc2_equiangular"] = summary["nc2_equiangular_means"];
  summary["nc2_maxangle"] = summary["nc2_maxangle_means"];
  summary["ratio"] = std::isinf(c.ratio) ? json("inf") : json(c.ratio);
  summary["sampler"] = c.sampler;
  summary["class_weights"] = c.class_weights;
  summary["global_mean"] = to_string(global_mean);
  summary["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  summary["train_images_per_sec"] = train_seconds > 0 ? static_cast<double>(images_trained) / train_seconds : 0.0;
  // Singular values of every weight matrix at the end (the square-loss low-rank study).
  json spectra = json::object();
  for (const auto& [name, p] : model->named_parameters())
    if (p.dim() >= 2) {
      WeightSpectrum s = weight_spectrum(p.value());
      spectra[name] = {{"rank", s.rank}, {"stable_rank", s.stable_rank}, {"singular_values", s.singular_values}};
    }
  nn::write_file_atomically(c.out_dir + "/spectra.json", spectra.dump() + "\n");
  nn::write_file_atomically(c.out_dir + "/summary.json", summary.dump(2) + "\n");
  return summary;
}

}  // namespace peel
