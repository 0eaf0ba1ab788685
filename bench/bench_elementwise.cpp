// Elementwise ops and reductions in GB/s (bytes read + written per second), next to memcpy on the
// same sizes: the bandwidth a streaming op can hope for.
//
//   bench_elementwise [--threads=N] [benchmark flags]   threads: --threads, else $PEEL_THREADS, else 2
#include <benchmark/benchmark.h>

#include <cstring>

#include "bench/bench_threads.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/threads.h"

using namespace peel;

namespace {

Tensor random_tensor(int64_t n, uint64_t seed) {
  Generator g(seed);
  return uniform({n}, 0.5f, 2.f, g);
}

void set_bytes(benchmark::State& state, int64_t bytes_per_iteration) {
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(bytes_per_iteration) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["threads"] = num_threads();
}

// The reference: one read and one write stream.
void BM_Memcpy(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1), b = Tensor::empty({n});
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), static_cast<size_t>(n) * sizeof(float));
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * n * 4);
}

// The same copy through peel's in-place kernel (threaded).
void BM_CopyInto(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1), b = Tensor::empty({n});
  for (auto _ : state) {
    b.copy_(a);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * n * 4);
}

void BM_AddInPlace(benchmark::State& state) {  // b += a: two reads, one write
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1), b = random_tensor(n, 2);
  for (auto _ : state) {
    b.add_(a, 1e-6f);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3 * n * 4);
}

template <Tensor (*Op)(const Tensor&)>
void BM_Unary(benchmark::State& state) {  // allocates its result (served by the caching allocator)
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1);
  for (auto _ : state) benchmark::DoNotOptimize(Op(a).data());
  set_bytes(state, 2 * n * 4);
}

void BM_AddBroadcastRow(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1).reshape({n / 128, 128}), row = random_tensor(128, 2);
  for (auto _ : state) benchmark::DoNotOptimize(add(a, row).data());
  set_bytes(state, 2 * n * 4);
}

void BM_SumAll(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1);
  for (auto _ : state) benchmark::DoNotOptimize(sum(a).item());
  set_bytes(state, n * 4);
}

void BM_SumRows(benchmark::State& state) {  // (n/1024, 1024) -> (n/1024)
  const int64_t n = state.range(0);
  Tensor a = random_tensor(n, 1).reshape({n / 1024, 1024});
  for (auto _ : state) benchmark::DoNotOptimize(sum(a, {1}).data());
  set_bytes(state, n * 4);
}

Tensor relu_op(const Tensor& x) { return relu(x); }
Tensor exp_op(const Tensor& x) { return exp(x); }
Tensor sigmoid_op(const Tensor& x) { return sigmoid(x); }

}  // namespace

// 1 M floats (4 MB, cache-resident on this machine) and 32 M floats (128 MB, memory-bound).
#define SIZES ->Arg(1 << 20)->Arg(1 << 25)->UseRealTime()
BENCHMARK(BM_Memcpy) SIZES;
BENCHMARK(BM_CopyInto) SIZES;
BENCHMARK(BM_AddInPlace) SIZES;
BENCHMARK(BM_Unary<relu_op>)->Name("BM_Relu") SIZES;
BENCHMARK(BM_Unary<exp_op>)->Name("BM_Exp") SIZES;
BENCHMARK(BM_Unary<sigmoid_op>)->Name("BM_Sigmoid") SIZES;
BENCHMARK(BM_AddBroadcastRow) SIZES;
BENCHMARK(BM_SumAll) SIZES;
BENCHMARK(BM_SumRows) SIZES;

PEEL_BENCHMARK_MAIN()
