// `peel bench train-step`: the standard training step of docs/reference-models.md (batch of
// random images and labels, forward, mean cross-entropy, backward, SGD with momentum 0.9 and
// weight decay 5e-4, train mode), timed after warm-up, with any of the normalisations of
// docs/normalization.md (--norm). Besides the images per second it reports the median time of
// each phase of a step (zero_grad, forward, loss, backward, SGD step), measured in separate timed
// steps so that the clock reads do not slow the throughput figure. The last line is one JSON object.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "experiments/run/config.h"
#include "nn/models.h"
#include "optim/optimizer.h"
#include "tensor/conv/conv.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace peel::cli {

namespace {

struct BenchOptions {
  std::string model = "small_cnn";
  double width = 1.0;
  nn::Norm norm = nn::Norm::bn;
  nn::BcnBatchPart bcn_batch_part = nn::BcnBatchPart::batch;
  double estbn_moving_speed = nn::kDefaultEstbnMovingSpeed;
  int64_t batch = 128;
  int threads = 0;
  int warmup = 3;
  int repetitions = 7;
  int steps = 5;  // per repetition
  ConvBackend conv_backend = default_conv_backend();
};

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

nlohmann::json environment_value(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? nlohmann::json(value) : nlohmann::json(nullptr);
}

void run_train_step_bench(const BenchOptions& o) {
  set_num_threads(o.threads);
  set_default_conv_backend(o.conv_backend);
  nn::ModelConfig config;
  config.name = o.model;
  config.width = o.width;
  config.in_channels = o.model == "small_cnn" ? 1 : 3;  // MNIST-like for small_cnn, CIFAR-like otherwise
  config.norm = o.norm;
  config.bcn_batch_part = o.bcn_batch_part;
  config.estbn_moving_speed = static_cast<float>(o.estbn_moving_speed);
  auto model = nn::make_model(config);
  model->train();
  const int64_t size = nn::model_image_size(o.model);
  Generator gen(1);
  // Random images in channels-last memory (N,H,W,C), the layout the loader delivers.
  Tensor dense = normal({o.batch, size, size, config.in_channels}, 0.f, 1.f, gen);
  Tensor images = make_view(dense, {o.batch, config.in_channels, size, size},
                            {size * size * config.in_channels, 1, size * config.in_channels, config.in_channels}, 0);
  std::vector<int64_t> labels(static_cast<size_t>(o.batch));
  for (auto& y : labels) y = gen.randint(config.classes);
  optim::Sgd sgd({{model->parameters(), 5e-4f, 1.f}}, {.lr = 0.01f, .momentum = 0.9f});
  ag::Variable input(images);

  auto step = [&] {
    sgd.zero_grad();
    ag::Variable loss = nn::cross_entropy(model->forward(input), labels);
    loss.backward();
    sgd.step();
  };
  for (int i = 0; i < o.warmup; ++i) step();
  const MemoryStats after_warmup = memory_stats();
  std::vector<double> rates;
  for (int r = 0; r < o.repetitions; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < o.steps; ++s) step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(o.batch * o.steps) / seconds);
    fmt::print("repetition {}: {:.0f} images/s\n", r + 1, rates.back());
  }
  const MemoryStats end = memory_stats();
  std::sort(rates.begin(), rates.end());

  // Where a step's time goes: the same step with a clock read between phases, median per phase.
  using Clock = std::chrono::steady_clock;
  const std::vector<std::string> phases{"zero_grad", "forward", "loss", "backward", "sgd_step"};
  std::vector<std::vector<double>> phase_ms(phases.size());
  for (int r = 0; r < o.repetitions * o.steps; ++r) {
    Clock::time_point t[6];
    t[0] = Clock::now();
    sgd.zero_grad();
    t[1] = Clock::now();
    ag::Variable logits = model->forward(input);
    t[2] = Clock::now();
    ag::Variable loss = nn::cross_entropy(logits, labels);
    t[3] = Clock::now();
    loss.backward();
    t[4] = Clock::now();
    sgd.step();
    t[5] = Clock::now();
    for (size_t i = 0; i < phases.size(); ++i)
      phase_ms[i].push_back(std::chrono::duration<double, std::milli>(t[i + 1] - t[i]).count());
  }
  nlohmann::json breakdown = nlohmann::json::object();
  for (size_t i = 0; i < phases.size(); ++i) {
    std::sort(phase_ms[i].begin(), phase_ms[i].end());
    breakdown[phases[i]] = phase_ms[i][phase_ms[i].size() / 2];
  }
  nlohmann::json out = {
      {"model", o.model},
      {"width", o.width},
      {"norm", enum_name(o.norm)},
      {"bcn_batch_part", enum_name(o.bcn_batch_part)},
      {"batch", o.batch},
      {"threads", num_threads()},
      // The OpenMP waiting policy the step ran with (tensor/threads.h: adopt_wait_policy).
      {"gomp_spincount", environment_value("GOMP_SPINCOUNT")},
      {"omp_wait_policy", environment_value("OMP_WAIT_POLICY")},
      {"conv_backend", conv_backend_name(default_conv_backend())},
      {"images_per_sec", rates[rates.size() / 2]},
      {"images_per_sec_min", rates.front()},
      {"images_per_sec_max", rates.back()},
      {"step_ms", 1000.0 * static_cast<double>(o.batch) / rates[rates.size() / 2]},
      {"phase_ms_median", breakdown},
      {"peak_rss_mb", peak_rss_mb()},
      {"parameters", model->parameter_count()},
      // Large buffers obtained from the system after warm-up: 0 means every step reused cached buffers.
      {"system_allocations_after_warmup", end.system_allocations - after_warmup.system_allocations},
      {"small_allocations_after_warmup", end.small_allocations - after_warmup.small_allocations},
  };
  fmt::print("{}\n", out.dump());
}

}  // namespace

void register_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto* cmd = bench->add_subcommand("train-step", "Time the standard training step of a reference model");
  auto o = std::make_shared<BenchOptions>();
  add_model_option(cmd, o->model);
  cmd->add_option("--width", o->width, "Width factor for vgg and resnet")->check(CLI::Range(0.01, 8.0));
  add_enum_option(cmd, "--norm", o->norm, "Normalisation after each convolution (docs/normalization.md)");
  add_enum_option(cmd, "--bcn-batch-part", o->bcn_batch_part, "bcn+ws: batch (BN) | estimated (EstBN)");
  cmd->add_option("--estbn-moving-speed", o->estbn_moving_speed, "EstBN's moving speed r")
      ->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--batch", o->batch, "Batch size")->check(CLI::Range(1, 65536));
  add_threads_option(cmd, o->threads);
  cmd->add_option("--warmup", o->warmup, "Untimed steps first")->check(CLI::Range(1, 1000));
  cmd->add_option("--repetitions", o->repetitions, "Timed repetitions (the median is reported)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--steps", o->steps, "Steps per repetition")->check(CLI::Range(1, 100000));
  add_conv_backend_option(cmd, o->conv_backend);
  cmd->callback([o] {
    BenchOptions options = *o;
    options.threads = capped_threads(options.threads);
    run_train_step_bench(options);
  });
  register_bench_infer_command(bench);
}

}  // namespace peel::cli
