// Cost of the square-loss measurements per call: the rank report of a model's weights (values-only
// SVDs), the rank of the centred class means, and the MSE decomposition at D = 128 / 4096.
// The budget (docs/square-loss.md): well under 5% of a small_cnn epoch (~20 s on 2 idle threads).
// The last argument of every benchmark is the thread count (peel::set_num_threads, which also sets
// OpenBLAS's and overrides OPENBLAS_NUM_THREADS). Use 1 under callgrind: with 2, the instructions
// of OpenBLAS threads spinning while they wait are counted too.
#include <benchmark/benchmark.h>

#include "experiments/collapse/mse_decomposition.h"
#include "experiments/collapse/rank.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace {

const char* kModels[] = {"small_cnn", "resnet18", "vgg11_lpm"};

void BM_WeightRanks(benchmark::State& state) {
  peel::set_num_threads(static_cast<int>(state.range(1)));
  const std::string name = kModels[state.range(0)];
  auto model = peel::nn::make_model(
      {.name = name, .classes = 10, .in_channels = 1, .image_size = peel::nn::model_image_size(name)});
  int64_t matrices = 0;
  for (auto _ : state) {
    const std::vector<peel::MatrixRank> ranks = peel::weight_ranks(*model);
    matrices = static_cast<int64_t>(ranks.size());
    benchmark::DoNotOptimize(ranks.data());
  }
  state.SetLabel(name);
  state.counters["matrices"] = static_cast<double>(matrices);
}
BENCHMARK(BM_WeightRanks)->ArgsProduct({{0}, {1, 2}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_WeightRanks)->ArgsProduct({{1, 2}, {1, 2}})->Iterations(1)->Unit(benchmark::kMillisecond);

struct Features {
  peel::Tensor h, w, b;
  std::vector<int64_t> labels;
};

Features random_features(int64_t n, int64_t d, int64_t k) {
  peel::Generator gen(1);
  Features f;
  f.h = peel::normal({n, d}, 0.5f, 1.f, gen);
  f.w = peel::normal({k, d}, 0.f, 0.1f, gen);
  f.b = peel::normal({k}, 0.f, 0.1f, gen);
  for (int64_t i = 0; i < n; ++i) f.labels.push_back(i % k);
  return f;
}

void BM_ClassMeanRank(benchmark::State& state) {
  peel::set_num_threads(static_cast<int>(state.range(2)));
  const Features f = random_features(state.range(0), state.range(1), 10);
  for (auto _ : state) {
    const peel::MatrixRank r =
        peel::class_mean_rank(peel::class_means(f.h, f.labels, 10), peel::GlobalMean::ClassMeans);
    benchmark::DoNotOptimize(r.rank);
  }
}
BENCHMARK(BM_ClassMeanRank)->Args({60000, 128, 1})->Args({60000, 128, 2})->Unit(benchmark::kMillisecond);

void BM_MseDecomposition(benchmark::State& state) {
  peel::set_num_threads(static_cast<int>(state.range(2)));
  const Features f = random_features(state.range(0), state.range(1), 10);
  for (auto _ : state) {
    const peel::MseDecomposition m = peel::mse_decomposition({.features = f.h,
                                                              .labels = f.labels,
                                                              .num_classes = 10,
                                                              .classifier_weight = f.w,
                                                              .classifier_bias = f.b,
                                                              .lambda = peel::notebook_lambda(5e-4)});
    benchmark::DoNotOptimize(m.lperp);
  }
}
BENCHMARK(BM_MseDecomposition)->ArgsProduct({{5000, 60000}, {128}, {1, 2}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MseDecomposition)->ArgsProduct({{5000}, {4096}, {1, 2}})->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
