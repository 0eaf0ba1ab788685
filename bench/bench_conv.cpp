// Convolution backends on the layer shapes of the reference models, batch 128, 3x3, padding 1,
// stride 1, activations channels-last (as the framework keeps them between layers).
//
//   bench_conv [--threads=N] [--batch=N] [--with_reference] [benchmark flags]
// Threads: --threads=N, else $PEEL_THREADS, else 2 (bench/bench_threads.h). The reference backend (scalar double loops)
// is only run with --with_reference; it takes seconds per call at batch 128. Counter GFLOP/s = 2*N*O*OH*OW*C*KH*KW per
// call over real time.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_threads.h"
#include "tensor/conv/conv.h"
#include "tensor/random.h"
#include "tensor/threads.h"

using namespace peel;

namespace {

struct Layer {
  const char* model;
  int64_t C, O, H;  // square images, H = W
};

const Layer kLayers[] = {
    {"small_cnn", 1, 32, 28},  {"small_cnn", 32, 32, 28}, {"small_cnn", 32, 64, 14}, {"small_cnn", 64, 64, 14},
    {"small_cnn", 64, 128, 7}, {"vgg11", 1, 16, 32},      {"vgg11", 16, 32, 16},     {"vgg11", 32, 64, 8},
    {"vgg11", 64, 64, 8},      {"vgg11", 64, 128, 4},     {"vgg11", 128, 128, 4},    {"vgg11", 128, 128, 2},
};

enum class Direction { kForward, kBackwardData, kBackwardWeights };
const char* direction_name(Direction d) {
  switch (d) {
    case Direction::kForward:
      return "fwd";
    case Direction::kBackwardData:
      return "bwd_data";
    case Direction::kBackwardWeights:
      return "bwd_weights";
  }
  return "?";
}

void run_conv(benchmark::State& state, Layer layer, int64_t batch, Direction dir, ConvBackend backend) {
  Generator gen(42);
  const Conv2dGeometry g = Conv2dGeometry::square(1, 1);
  const Tensor x = normal({batch, layer.C, layer.H, layer.H}, 0.f, 1.f, gen).channels_last();
  const Tensor w = normal({layer.O, layer.C, 3, 3}, 0.f, 0.1f, gen);
  const Tensor b = normal({layer.O}, 0.f, 0.1f, gen);
  const Shape y_shape = conv2d_output_shape(x.shape(), w.shape(), g);
  const Tensor gy = normal(y_shape, 0.f, 1.f, gen).channels_last();
  auto once = [&] {
    switch (dir) {
      case Direction::kForward:
        return conv2d_forward(x, w, b, g, backend);
      case Direction::kBackwardData:
        return conv2d_backward_data(gy, w, x.shape(), g, backend);
      case Direction::kBackwardWeights:
        return conv2d_backward_weight(gy, x, w.shape(), g, backend);
    }
    return Tensor();
  };
  once();  // creates oneDNN primitives and fills the buffer cache outside the timed loop
  for (auto _ : state) {
    Tensor out = once();
    benchmark::DoNotOptimize(out.data());
  }
  const double flops = 2.0 * batch * layer.O * y_shape[2] * y_shape[3] * layer.C * 9;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  bench::setup_threads(argc, argv);
  const std::string batch_flag = bench::take_flag(argc, argv, "batch");
  const bool with_reference = !bench::take_flag(argc, argv, "with_reference").empty();
  const int64_t batch = batch_flag.empty() ? 128 : std::stoll(batch_flag);

  std::vector<ConvBackend> backends = {ConvBackend::kIm2col, ConvBackend::kDirect, ConvBackend::kOneDnn};
  if (with_reference) backends.insert(backends.begin(), ConvBackend::kReference);
  for (const Layer& layer : kLayers)
    for (Direction dir : {Direction::kForward, Direction::kBackwardData, Direction::kBackwardWeights})
      for (ConvBackend backend : backends) {
        const std::string name = std::string(layer.model) + "/" + std::to_string(layer.C) + "x" +
                                 std::to_string(layer.O) + "_" + std::to_string(layer.H) + "/" + direction_name(dir) +
                                 "/" + conv_backend_name(backend);
        benchmark::RegisterBenchmark(name.c_str(), run_conv, layer, batch, dir, backend)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  benchmark::AddCustomContext("batch", std::to_string(batch));
  return bench::run_benchmarks(argc, argv);
}
