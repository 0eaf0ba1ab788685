// `peel bench infer`: the evaluation path the experiments spend most of their time in: a reference
// model in eval mode (batch norm with running statistics), forward only, no graph recorded, on a
// batch of random images in channels-last memory; timed after warm-up. Batch norm is folded into
// the convolution before it, as in the experiments (nn/fusion.h); --no-fold runs the layers
// one by one, to measure what the fold buys. The last line is one JSON object, like
// `peel bench train-step`'s.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "autograd/variable.h"
#include "experiments/cli/bench_setup.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/options.h"
#include "experiments/run/config.h"
#include "nn/fusion.h"
#include "nn/models.h"
#include "tensor/conv/conv.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace peel::cli {

namespace {

struct InferOptions {
  BenchModelOptions common{.batch = 256};  // the batch the experiments evaluate with (run/measure.h)
  int batches = 10;                        // per repetition
  bool fold = true;                        // batch norm folded into the convolution
};

void run_infer_bench(const InferOptions& options) {
  const BenchModelOptions& o = options.common;
  Generator gen(1);
  const BenchModel bench = make_bench_model(o, gen);
  const std::shared_ptr<nn::Network>& model = bench.model;
  const Tensor& images = bench.images;
  model->eval();
  nn::set_eval_folding(options.fold);
  ag::NoGradGuard no_graph;
  float checksum = 0;  // keeps the forward from being optimised away and shows the outputs are finite
  auto forward = [&] { checksum += model->forward(ag::Variable(images)).value().data()[0]; };
  for (int i = 0; i < o.warmup; ++i) forward();
  std::vector<double> rates;
  for (int r = 0; r < o.repetitions; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < options.batches; ++b) forward();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(o.batch * options.batches) / seconds);
    fmt::print("repetition {}: {:.0f} images/s\n", r + 1, rates.back());
  }
  std::sort(rates.begin(), rates.end());
  const nlohmann::json out = {
      {"mode", "infer"},
      {"model", o.model},
      {"width", o.width},
      {"norm", nlohmann::json(o.norm)},
      {"batch", o.batch},
      {"threads", num_threads()},
      {"conv_backend", conv_backend_name(default_conv_backend())},
      {"batch_norm_folded", options.fold},
      {"images_per_sec", rates[rates.size() / 2]},
      {"images_per_sec_min", rates.front()},
      {"images_per_sec_max", rates.back()},
      {"peak_rss_mb", peak_rss_mb()},
      {"output_finite", std::isfinite(checksum)},
  };
  fmt::print("{}\n", out.dump());
}

}  // namespace

void register_bench_infer_command(CLI::App* bench) {
  auto* cmd = bench->add_subcommand("infer", "Time a reference model's evaluation forward (eval mode, no graph)");
  auto o = std::make_shared<InferOptions>();
  add_bench_model_options(cmd, o->common);
  cmd->add_option("--batches", o->batches, "Batches per repetition")->check(CLI::Range(1, 100000));
  cmd->add_flag("!--no-fold", o->fold, "Run batch norm as its own layer instead of folded into the convolution");
  cmd->callback([o] {
    InferOptions options = *o;
    options.common.threads = capped_threads(options.common.threads);
    run_infer_bench(options);
  });
}

}  // namespace peel::cli
