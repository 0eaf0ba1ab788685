// Batch norm (train mode, fused ReLU, forward + backward) and 2x2 max pooling (forward + backward)
// on the small_cnn activation shapes at batch 128.
//
// Run: build/bench/bench_norm [--benchmark_filter=...]
// Argument order: C, H (= W), channels_last (1/0), threads.
// bytes_per_second counts the memory passes the kernels make over the activations:
//   batch norm: forward reads x twice (statistics, normalise) and writes y; backward reads
//     grad_y, x and y twice (sums, then dx) and writes dx: 10 activation-sized passes in all.
//   max pool: forward reads x and writes y and the int32 argmax (1 + 1/4 + 1/4); backward reads
//     grad_y and argmax and writes grad_x (1/4 + 1/4 + 1): 3.5 input-sized passes in all.
#include <benchmark/benchmark.h>

#include "tensor/kernels/kernels.h"
#include "tensor/random.h"
#include "tensor/threads.h"

using namespace peel;

namespace {

constexpr int64_t kBatch = 128;

Tensor activation(int64_t C, int64_t H, bool channels_last, Generator& gen) {
  Tensor x = normal({kBatch, C, H, H}, 0.3f, 1.f, gen);
  return channels_last ? x.channels_last() : x;
}

void BM_BatchNormTrainFusedRelu(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool channels_last = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(1);
  const Tensor x = activation(C, H, channels_last, gen);
  const Tensor gy = activation(C, H, channels_last, gen);
  const Tensor gamma = normal({C}, 1.f, 0.1f, gen), beta = normal({C}, 0.f, 0.1f, gen);
  Tensor running_mean = Tensor::zeros({C}), running_var = Tensor::ones({C});
  for (auto _ : state) {
    BatchNormSaved saved;
    const Tensor y =
        batch_norm_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, saved, /*fuse_relu=*/true);
    const BatchNormGrads grads = batch_norm_train_backward(gy, x, gamma, saved, y, /*fuse_relu=*/true);
    benchmark::DoNotOptimize(grads.x.data());
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * static_cast<int64_t>(sizeof(float)) * 10);
  set_num_threads(0);
}

void BM_BatchNormTrainForward(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool channels_last = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(1);
  const Tensor x = activation(C, H, channels_last, gen);
  const Tensor gamma = normal({C}, 1.f, 0.1f, gen), beta = normal({C}, 0.f, 0.1f, gen);
  Tensor running_mean = Tensor::zeros({C}), running_var = Tensor::ones({C});
  for (auto _ : state) {
    BatchNormSaved saved;
    const Tensor y = batch_norm_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, saved, true);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * static_cast<int64_t>(sizeof(float)) * 3);
  set_num_threads(0);
}

void BM_MaxPool2x2(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool channels_last = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(2);
  const Tensor x = activation(C, H, channels_last, gen);
  const Tensor gy = activation(C, H / 2, channels_last, gen);
  std::vector<int32_t> argmax;
  const Pool2dGeometry g{2, 2, 0};
  for (auto _ : state) {
    const Tensor y = max_pool2d_forward(x, g, argmax);
    const Tensor gx = max_pool2d_backward(gy, argmax, x.shape());
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(gx.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * x.numel() * sizeof(float) * 3.5));
  set_num_threads(0);
}

void small_cnn_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "H", "cl", "threads"});
  for (int threads : {1, 2})
    for (auto [C, H] : {std::pair{32, 28}, {64, 14}, {128, 7}}) b->Args({C, H, 1, threads});
  b->Args({32, 28, 0, 2});  // NCHW, for comparison
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void pool_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "H", "cl", "threads"});
  for (int threads : {1, 2})
    for (auto [C, H] : {std::pair{32, 28}, {64, 14}}) b->Args({C, H, 1, threads});
  b->Args({32, 28, 0, 2});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_BatchNormTrainFusedRelu)->Apply(small_cnn_shapes);
BENCHMARK(BM_BatchNormTrainForward)->Apply(small_cnn_shapes);
BENCHMARK(BM_MaxPool2x2)->Apply(pool_shapes);

BENCHMARK_MAIN();
