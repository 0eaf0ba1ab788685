// `peel bench infer`: the evaluation path the experiments spend most of their time in: a reference
// model in eval mode (batch norm with running statistics), forward only, no graph recorded, on a
// batch of random images in channels-last memory; timed after warm-up. The last line is one JSON
// object, like `peel bench train-step`'s.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "autograd/variable.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "nn/models.h"
#include "tensor/conv/conv.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace peel::cli {

namespace {

struct InferOptions {
  std::string model = "small_cnn";
  double width = 1.0;
  int64_t batch = 256;  // the batch the experiments evaluate with (experiments/run/measure.h)
  int threads = 0;
  int warmup = 3;
  int repetitions = 7;
  int batches = 10;  // per repetition
  ConvBackend conv_backend = default_conv_backend();
};

void run_infer_bench(const InferOptions& o) {
  set_num_threads(o.threads);
  set_default_conv_backend(o.conv_backend);
  nn::ModelConfig config;
  config.name = o.model;
  config.width = o.width;
  config.in_channels = o.model == "small_cnn" ? 1 : 3;
  auto model = nn::make_model(config);
  model->eval();
  const int64_t size = nn::model_image_size(o.model);
  Generator gen(1);
  Tensor dense = normal({o.batch, size, size, config.in_channels}, 0.f, 1.f, gen);
  Tensor images = make_view(dense, {o.batch, config.in_channels, size, size},
                            {size * size * config.in_channels, 1, size * config.in_channels, config.in_channels}, 0);
  ag::NoGradGuard no_graph;
  float checksum = 0;  // keeps the forward from being optimised away and shows the outputs are finite
  auto forward = [&] { checksum += model->forward(ag::Variable(images)).value().data()[0]; };
  for (int i = 0; i < o.warmup; ++i) forward();
  std::vector<double> rates;
  for (int r = 0; r < o.repetitions; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < o.batches; ++b) forward();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(o.batch * o.batches) / seconds);
    fmt::print("repetition {}: {:.0f} images/s\n", r + 1, rates.back());
  }
  std::sort(rates.begin(), rates.end());
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const nlohmann::json out = {
      {"mode", "infer"},
      {"model", o.model},
      {"width", o.width},
      {"batch", o.batch},
      {"threads", num_threads()},
      {"conv_backend", conv_backend_name(default_conv_backend())},
      {"images_per_sec", rates[rates.size() / 2]},
      {"images_per_sec_min", rates.front()},
      {"images_per_sec_max", rates.back()},
      {"peak_rss_mb", static_cast<double>(usage.ru_maxrss) / 1024.0},
      {"output_finite", std::isfinite(checksum)},
  };
  fmt::print("{}\n", out.dump());
}

}  // namespace

void register_bench_infer_command(CLI::App* bench) {
  auto* cmd = bench->add_subcommand("infer", "Time a reference model's evaluation forward (eval mode, no graph)");
  auto o = std::make_shared<InferOptions>();
  add_model_option(cmd, o->model);
  cmd->add_option("--width", o->width, "Width factor for vgg and resnet")->check(CLI::Range(0.01, 8.0));
  cmd->add_option("--batch", o->batch, "Batch size")->check(CLI::Range(1, 65536))->capture_default_str();
  add_threads_option(cmd, o->threads);
  cmd->add_option("--warmup", o->warmup, "Untimed batches first")->check(CLI::Range(1, 1000));
  cmd->add_option("--repetitions", o->repetitions, "Timed repetitions (the median is reported)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--batches", o->batches, "Batches per repetition")->check(CLI::Range(1, 100000));
  add_conv_backend_option(cmd, o->conv_backend);
  cmd->callback([o] {
    InferOptions options = *o;
    options.threads = capped_threads(options.threads);
    run_infer_bench(options);
  });
}

}  // namespace peel::cli
