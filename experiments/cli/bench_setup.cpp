#include "experiments/cli/bench_setup.h"

#include <sys/resource.h>

#include "experiments/cli/options.h"
#include "experiments/run/config.h"
#include "tensor/threads.h"

namespace peel::cli {

void add_bench_model_options(CLI::App* cmd, BenchModelOptions& o) {
  add_model_option(cmd, o.model);
  cmd->add_option("--width", o.width, "Width factor for vgg and resnet")->check(CLI::Range(0.01, 8.0));
  add_enum_option(cmd, "--norm", o.norm, "Normalisation after each convolution (docs/normalization.md)");
  add_enum_option(cmd, "--bcn-batch-part", o.bcn_batch_part, "bcn+ws: batch (BN) | estimated (EstBN)");
  cmd->add_option("--estbn-moving-speed", o.estbn_moving_speed, "EstBN's moving speed r")->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--batch", o.batch, "Batch size")->check(CLI::Range(1, 65536))->capture_default_str();
  add_threads_option(cmd, o.threads);
  cmd->add_option("--warmup", o.warmup, "Untimed repetitions of the work first")->check(CLI::Range(1, 1000));
  cmd->add_option("--repetitions", o.repetitions, "Timed repetitions (the median is reported)")
      ->check(CLI::Range(1, 1000));
  add_conv_backend_option(cmd, o.conv_backend);
}

BenchModel make_bench_model(const BenchModelOptions& o, Generator& gen) {
  set_num_threads(o.threads);
  set_default_conv_backend(o.conv_backend);
  BenchModel b;
  b.config.name = o.model;
  b.config.width = o.width;
  b.config.in_channels = o.model == "small_cnn" ? 1 : 3;
  b.config.norm = o.norm;
  b.config.bcn_batch_part = o.bcn_batch_part;
  b.config.estbn_moving_speed = static_cast<float>(o.estbn_moving_speed);
  b.model = nn::make_model(b.config);
  const int64_t size = nn::model_image_size(o.model), c = b.config.in_channels;
  const Tensor dense = normal({o.batch, size, size, c}, 0.f, 1.f, gen);
  b.images = make_view(dense, {o.batch, c, size, size}, {size * size * c, 1, size * c, c}, 0);
  return b;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace peel::cli
