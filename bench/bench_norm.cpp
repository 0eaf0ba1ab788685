// Batch norm (train mode, fused ReLU, forward + backward) and 2x2 max pooling (forward + backward)
// on the small_cnn activation shapes at batch 128, and the two as one op against the two kernels;
// a residual block's end, batch norm, add and relu, as one op against the three.
//
// The normalisation study's layers (nn/normalization.h), each a training step of the layer alone
// (forward, then backward through autograd, channels-last input as the convolutions produce it) at
// the small_cnn shapes at batch 2 and 128, and WS / WN over all of small_cnn's conv weights.
//
// Run: build/bench/bench_norm [--benchmark_filter=...]
// Argument order: C, H (= W), channels_last (1/0), threads: each case runs at 1 and 2 threads (its
// last argument); --threads=N, else $PEEL_THREADS, else 2 (bench/bench_threads.h) is the count
// the program starts with.
// bytes_per_second counts the memory passes the kernels make over the activations:
//   batch norm: forward reads x twice (statistics, normalise) and writes y; backward reads
//     grad_y, x and y twice (sums, then dx) and writes dx: 10 activation-sized passes in all.
//   max pool: forward reads x and writes y and the int32 argmax (1 + 1/4 + 1/4); backward reads
//     grad_y and argmax and writes grad_x (1/4 + 1/4 + 1): 3.5 input-sized passes in all.
#include <benchmark/benchmark.h>

#include "bench/bench_threads.h"
#include "nn/normalization.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/pool.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/threads.h"

using namespace peel;

namespace {

constexpr int64_t kBatch = 128;

Tensor activation(int64_t C, int64_t H, bool channels_last, Generator& gen) {
  Tensor x = normal({kBatch, C, H, H}, 0.3f, 1.f, gen);
  return channels_last ? x.channels_last() : x;
}

// One batch norm layer's operands: x (N, C, H, H), a gradient of `grad_size` (the output's, or a
// pooled output's), affine parameters near 1 and 0, fresh running statistics.
struct BatchNormOperands {
  Tensor x, gy, gamma, beta, running_mean, running_var;
};
BatchNormOperands batch_norm_operands(int64_t C, int64_t H, int64_t grad_size, bool channels_last, Generator& gen) {
  BatchNormOperands o;
  o.x = activation(C, H, channels_last, gen);
  o.gy = activation(C, grad_size, channels_last, gen);
  o.gamma = normal({C}, 1.f, 0.1f, gen);
  o.beta = normal({C}, 0.f, 0.1f, gen);
  o.running_mean = Tensor::zeros({C});
  o.running_var = Tensor::ones({C});
  return o;
}

void BM_BatchNormTrainFusedRelu(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool channels_last = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(1);
  auto [x, gy, gamma, beta, running_mean, running_var] = batch_norm_operands(C, H, H, channels_last, gen);
  for (auto _ : state) {
    BatchNormSaved saved;
    const Tensor y =
        batch_norm_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, saved, /*fuse_relu=*/true);
    const BatchNormGrads grads = batch_norm_train_backward(gy, x, gamma, saved, /*fuse_relu=*/true);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(grads.x.data());
  }
  // Tensors read or written: forward x (statistics), x and y (affine); backward g and x (sums),
  // g, x and dx (input gradient). The ReLU's mask comes from x, so the backward never reads y.
  state.SetBytesProcessed(state.iterations() * x.numel() * static_cast<int64_t>(sizeof(float)) * 8);
  set_num_threads(0);
}

void BM_BatchNormTrainForward(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool channels_last = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(1);
  auto [x, gy, gamma, beta, running_mean, running_var] = batch_norm_operands(C, H, H, channels_last, gen);
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
  MaxPoolArgmax argmax;
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

// Batch norm with its ReLU, then a 2x2 max pool, forward and backward, training mode: the two
// kernels one after the other (fused 0) or as one op (fused 1, tensor/kernels/norm.h), which
// never writes the normalised map or the pool's full-size input gradient.
void BM_BatchNormReluMaxPool(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool fused = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(3);
  auto [x, gy, gamma, beta, running_mean, running_var] = batch_norm_operands(C, H, H / 2, true, gen);
  const Pool2dGeometry pool{2, 2, 0};
  for (auto _ : state) {
    BatchNormSaved saved;
    MaxPoolArgmax argmax;
    Tensor y;
    BatchNormGrads grads;
    if (fused) {
      y = batch_norm_relu_max_pool_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, pool, saved,
                                                 argmax);
      grads = batch_norm_relu_max_pool_train_backward(gy, x, gamma, saved, pool, argmax);
    } else {
      const Tensor z = batch_norm_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, saved, true);
      y = max_pool2d_forward(z, pool, argmax);
      grads = batch_norm_train_backward(max_pool2d_backward(gy, argmax, x.shape()), x, gamma, saved, true);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(grads.x.data());
  }
  set_num_threads(0);
}

// A residual block's end, relu(bn(x) + residual), forward and backward, training mode: batch norm,
// add and relu one after the other (relu's backward as autograd's, grad_y * (y > 0)), or as one op.
void BM_BatchNormAddRelu(benchmark::State& state) {
  const int64_t C = state.range(0), H = state.range(1);
  const bool fused = state.range(2) != 0;
  set_num_threads(static_cast<int>(state.range(3)));
  Generator gen(4);
  auto [x, gy, gamma, beta, running_mean, running_var] = batch_norm_operands(C, H, H, true, gen);
  const Tensor residual = activation(C, H, true, gen);
  for (auto _ : state) {
    BatchNormSaved saved;
    Tensor y, g_residual;
    BatchNormGrads grads;
    if (fused) {
      y = batch_norm_add_relu_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, residual, saved);
      BatchNormAddReluGrads d = batch_norm_add_relu_train_backward(gy, x, y, gamma, saved);
      grads = d.norm;
      g_residual = d.residual;
    } else {
      y = relu(add(batch_norm_train_forward(x, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, saved), residual));
      g_residual = mul(gy, gt(y, Tensor::zeros({1})));
      grads = batch_norm_train_backward(g_residual, x, gamma, saved);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(grads.x.data());
    benchmark::DoNotOptimize(g_residual.data());
  }
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

// ---- The normalisation study's layers ------------------------------------------------------------
enum NormLayer { kBnRelu, kGnRelu, kEstBnRelu, kBcnRelu, kBcnEstRelu, kFrnTlu, kLayerCount };
const char* const kNormLayerNames[] = {"bn+relu", "gn+relu", "estbn+relu", "bcn+relu", "bcn(estbn)+relu", "frn+tlu"};

std::shared_ptr<nn::Module> norm_layer(int which, int64_t C) {
  const int64_t groups = C < 32 ? C : 32;
  switch (which) {
    case kBnRelu:
      return std::make_shared<nn::BatchNorm>(C, true);
    case kGnRelu:
      return std::make_shared<nn::GroupNorm>(groups, C, 1e-5f, true);
    case kEstBnRelu:
      return std::make_shared<nn::EstimatedBatchNorm>(C, 0.01f, true);
    case kBcnRelu:
      return std::make_shared<nn::BatchChannelNorm>(C, groups, nn::BcnBatchPart::batch, 0.01f, true);
    case kBcnEstRelu:
      return std::make_shared<nn::BatchChannelNorm>(C, groups, nn::BcnBatchPart::estimated, 0.01f, true);
    default:
      return std::make_shared<nn::FilterResponseNorm>(C, true);
  }
}

void BM_NormLayerTrainStep(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const int64_t C = state.range(1), H = state.range(2), N = state.range(3);
  set_num_threads(static_cast<int>(state.range(4)));
  Generator gen(3);
  const Tensor x = normal({N, C, H, H}, 0.3f, 1.f, gen).channels_last();
  const Tensor gy = normal({N, C, H, H}, 0.f, 1.f, gen).channels_last();
  auto layer = norm_layer(which, C);
  layer->train();
  for (auto _ : state) {
    ag::Variable xv(x, true);
    ag::Variable y = layer->forward(xv);
    y.backward(gy);
    benchmark::DoNotOptimize(xv.grad().data());
    layer->zero_grad();
  }
  state.SetLabel(kNormLayerNames[which]);
  state.SetItemsProcessed(state.iterations() * N);
  set_num_threads(0);
}

void norm_layer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"layer", "C", "H", "N", "threads"});
  for (int layer = 0; layer < kLayerCount; ++layer)
    for (int64_t batch : {2, 128})
      for (auto [C, H] : {std::pair{32, 28}, {64, 14}, {128, 7}}) b->Args({layer, C, H, batch, 1});
  for (int layer = 0; layer < kLayerCount; ++layer) b->Args({layer, 32, 28, 128, 2});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// WS or WN of every small_cnn conv weight, forward and backward: the per-step cost of the reparametrisation.
void BM_WeightReparamSmallCnn(benchmark::State& state) {
  const bool standardize = state.range(0) == 0;
  set_num_threads(static_cast<int>(state.range(1)));
  Generator gen(4);
  std::vector<ag::Variable> weights, gains;
  std::vector<Tensor> grads;
  for (auto [out, in] : {std::pair{32, 1}, {32, 32}, {64, 32}, {64, 64}, {128, 64}}) {
    weights.emplace_back(normal({out, in, 3, 3}, 0.f, 0.05f, gen), true);
    gains.emplace_back(Tensor::ones({out, 1, 1, 1}), true);
    grads.push_back(normal({out, in, 3, 3}, 0.f, 1.f, gen));
  }
  for (auto _ : state) {
    for (size_t i = 0; i < weights.size(); ++i) {
      ag::Variable w = standardize ? nn::weight_standardize(weights[i]) : nn::weight_norm(weights[i], gains[i]);
      w.backward(grads[i]);
    }
    benchmark::DoNotOptimize(weights[0].grad().data());
  }
  state.SetLabel(standardize ? "ws" : "wn");
  set_num_threads(0);
}

}  // namespace

BENCHMARK(BM_BatchNormTrainFusedRelu)->Apply(small_cnn_shapes);
BENCHMARK(BM_BatchNormTrainForward)->Apply(small_cnn_shapes);
BENCHMARK(BM_MaxPool2x2)->Apply(pool_shapes);
BENCHMARK(BM_BatchNormReluMaxPool)
    ->ArgNames({"C", "H", "fused", "threads"})
    ->ArgsProduct({{32}, {28}, {0, 1}, {1, 2}})
    ->ArgsProduct({{64}, {14}, {0, 1}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
// resnet18(1)'s first two stages at batch 128.
BENCHMARK(BM_BatchNormAddRelu)
    ->ArgNames({"C", "H", "fused", "threads"})
    ->ArgsProduct({{64}, {32}, {0, 1}, {1, 2}})
    ->ArgsProduct({{128}, {16}, {0, 1}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_NormLayerTrainStep)->Apply(norm_layer_shapes);
BENCHMARK(BM_WeightReparamSmallCnn)
    ->ArgNames({"ws0_wn1", "threads"})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 2})
    ->Args({1, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

PEEL_BENCHMARK_MAIN()
