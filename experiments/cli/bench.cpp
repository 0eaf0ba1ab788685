// `peel bench train-step`: the standard training step of docs/reference-models.md (batch of
// random images and labels, forward, mean cross-entropy, backward, SGD with momentum 0.9 and
// weight decay 5e-4, train mode), timed after warm-up, with any of the normalisations of
// docs/normalization.md (--norm). Besides the images per second it reports the median time of
// each phase of a step (zero_grad, forward, loss, backward, SGD step), measured in separate timed
// steps so that the clock reads do not slow the throughput figure. --no-fuse runs batch norm and
// the max pool after it as two layers (nn/fusion.h), to measure what the one op buys. The last line
// is one JSON object.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "experiments/cli/bench_setup.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "experiments/run/config.h"
#include "nn/fusion.h"
#include "nn/models.h"
#include "optim/optimizer.h"
#include "tensor/conv/conv.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace peel::cli {

namespace {

struct BenchOptions {
  BenchModelOptions common;
  int steps = 5;     // per repetition
  bool fuse = true;  // batch norm, ReLU and max pool as one op where they apply (nn/fusion.h)
};

nlohmann::json environment_value(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? nlohmann::json(value) : nlohmann::json(nullptr);
}

void run_train_step_bench(const BenchOptions& options) {
  const BenchModelOptions& o = options.common;
  nn::set_training_fusion(options.fuse);
  Generator gen(1);
  const BenchModel bench = make_bench_model(o, gen);
  const std::shared_ptr<nn::Network>& model = bench.model;
  model->train();
  std::vector<int64_t> labels(static_cast<size_t>(o.batch));
  for (auto& y : labels) y = gen.randint(bench.config.classes);
  optim::Sgd sgd({{model->parameters(), 5e-4f, 1.f}}, {.lr = 0.01f, .momentum = 0.9f});
  ag::Variable input(bench.images);

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
    for (int s = 0; s < options.steps; ++s) step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(o.batch * options.steps) / seconds);
    fmt::print("repetition {}: {:.0f} images/s\n", r + 1, rates.back());
  }
  const MemoryStats end = memory_stats();
  std::sort(rates.begin(), rates.end());

  // Where a step's time goes: the same step with a clock read between phases, median per phase.
  using Clock = std::chrono::steady_clock;
  const std::vector<std::string> phases{"zero_grad", "forward", "loss", "backward", "sgd_step"};
  std::vector<std::vector<double>> phase_ms(phases.size());
  for (int r = 0; r < o.repetitions * options.steps; ++r) {
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
      {"batch_norm_pool_fused", options.fuse},
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
  add_bench_model_options(cmd, o->common);
  cmd->add_option("--steps", o->steps, "Steps per repetition")->check(CLI::Range(1, 100000));
  cmd->add_flag("!--no-fuse", o->fuse, "Run batch norm and the max pool after it as two layers instead of one op");
  cmd->callback([o] {
    BenchOptions options = *o;
    options.common.threads = capped_threads(options.common.threads);
    run_train_step_bench(options);
  });
  register_bench_infer_command(bench);
}

}  // namespace peel::cli
