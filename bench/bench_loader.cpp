// Loader throughput: images per second the loader alone delivers (the consumer takes each batch
// and does nothing), to compare with what a training step consumes (small_cnn on MNIST: about
// 3000 images/s on this machine, so the loader must deliver >= 60000 images/s).
//
//   ./bench_loader --benchmark_counters_tabular=true
//
//   bench_loader [--threads=N] [benchmark flags]   threads (for peel's loops; the loader has its own
//   worker): --threads, else $PEEL_THREADS, else 2 (bench/bench_threads.h)
#include <benchmark/benchmark.h>

#include <memory>

#include "bench/bench_threads.h"
#include "datasets/loader.h"
#include "datasets/synthetic.h"

using namespace peel;
using namespace peel::data;

namespace {

const Dataset& mnist_like() {
  static const Dataset d = [] {
    SyntheticOptions o;  // 1x28x28, 10 classes
    o.train_per_class = 6000;
    return make_synthetic(o, "train");
  }();
  return d;
}

const Dataset& cifar_like() {
  static const Dataset d = [] {
    SyntheticOptions o;
    o.channels = 3;
    o.height = o.width = 32;
    o.train_per_class = 1000;
    return make_synthetic(o, "train");
  }();
  return d;
}

// Pulls batches from a background loader, starting a new epoch whenever one ends.
void run_loader(benchmark::State& state, const Dataset& data, LoaderOptions options) {
  Loader loader(data, std::make_shared<ShuffleSampler>(data.size(), 1), options);
  int64_t epoch = 0, images = 0;
  loader.start_epoch(epoch);
  for (auto _ : state) {
    std::optional<Batch> batch = loader.next();
    if (!batch) {
      loader.start_epoch(++epoch);
      batch = loader.next();
    }
    images += batch->size();
    benchmark::DoNotOptimize(batch->images.data());
  }
  state.SetItemsProcessed(images);
  state.counters["images_per_s"] = benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
  state.counters["consumer_wait_s"] = loader.wait_seconds();
}

void BM_LoaderMnistLike(benchmark::State& state) {
  run_loader(state, mnist_like(), {.batch_size = 128, .prefetch = state.range(0)});
}
BENCHMARK(BM_LoaderMnistLike)->Arg(2)->Arg(0)->ArgName("prefetch")->UseRealTime()->MinTime(2.0);

void BM_LoaderCifarLikeCropFlip(benchmark::State& state) {
  run_loader(state, cifar_like(),
             {.batch_size = 128, .random_crop = true, .horizontal_flip = true, .prefetch = state.range(0)});
}
BENCHMARK(BM_LoaderCifarLikeCropFlip)->Arg(2)->ArgName("prefetch")->UseRealTime()->MinTime(2.0);

// One batch built on the calling thread: the worker's cost per batch.
void BM_MakeBatchMnistLike(benchmark::State& state) {
  const Dataset& data = mnist_like();
  const std::vector<int64_t> order = ShuffleSampler(data.size(), 2).epoch_indices(0);
  const LoaderOptions options{.batch_size = 128};
  int64_t b = 0, images = 0;
  for (auto _ : state) {
    const int64_t start = (b++ * 128) % (data.size() - 128);
    Batch batch = make_batch(data, std::span<const int64_t>(order).subspan(start, 128), options, 0, b);
    images += batch.size();
    benchmark::DoNotOptimize(batch.images.data());
  }
  state.SetItemsProcessed(images);
}
BENCHMARK(BM_MakeBatchMnistLike)->UseRealTime();

}  // namespace

PEEL_BENCHMARK_MAIN()
