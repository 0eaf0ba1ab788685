// What checking and durability cost: SHA-256 (the manifest check at load) and CRC-32 (the state
// file's checksums) over MNIST's largest file size, loading MNIST's training split with its
// manifest check, and a durable atomic write (temporary file, fsync, rename, folder fsync) of a
// checkpoint-sized file.
//
//   ./bench_file_io --benchmark_counters_tabular=true      (MNIST from $PEEL_DATA, else data/)
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>

#include "datasets/dataset.h"
#include "datasets/fetch.h"
#include "tensor/io/file_io.h"

using namespace peel;

namespace {

constexpr int64_t kMnistTrainImagesBytes = 47040016;

io::Bytes some_bytes(int64_t n) {
  io::Bytes b(static_cast<size_t>(n));
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
  return b;
}

void BM_Sha256(benchmark::State& state) {
  const io::Bytes bytes = some_bytes(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(io::sha256_hex(bytes));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Sha256)->Arg(kMnistTrainImagesBytes)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Crc32(benchmark::State& state) {
  const io::Bytes bytes = some_bytes(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(io::crc32(bytes));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Crc32)->Arg(kMnistTrainImagesBytes)->Unit(benchmark::kMillisecond)->UseRealTime();

// load_dataset("mnist", "train"): read, parse and normalise, with the SHA-256 check of both files
// against manifest.json (Arg 1), or from a copy of the files without a manifest (Arg 0: unchecked,
// after one warning), to see what the check adds.
void BM_LoadMnistTrain(benchmark::State& state) {
  namespace fs = std::filesystem;
  const std::string data = data::default_data_dir();
  if (!data::dataset_is_complete("mnist", data)) {
    state.SkipWithError(("mnist not fetched into " + data).c_str());
    return;
  }
  const bool checked = state.range(0) != 0;
  const fs::path copy = fs::temp_directory_path() / "peel-bench-unchecked";
  if (!checked) {
    fs::create_directories(copy / "mnist");
    for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"})
      fs::copy_file(fs::path(data) / "mnist" / f, copy / "mnist" / f, fs::copy_options::overwrite_existing);
  }
  const std::string from = checked ? data : copy.string();
  for (auto _ : state) benchmark::DoNotOptimize(data::load_dataset("mnist", "train", from).images.data());
  if (!checked) fs::remove_all(copy);
}
BENCHMARK(BM_LoadMnistTrain)->Arg(1)->Arg(0)->ArgName("checked")->Unit(benchmark::kMillisecond)->UseRealTime();

// A durable write of state.range(0) bytes into the system's temporary folder.
void BM_WriteFileAtomic(benchmark::State& state) {
  const io::Bytes bytes = some_bytes(state.range(0));
  const std::string path = (std::filesystem::temp_directory_path() / "peel-bench-file-io.bin").string();
  for (auto _ : state) io::write_file_atomic(path, bytes);
  std::filesystem::remove(path);
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_WriteFileAtomic)->Arg(1 << 20)->Arg(45 << 20)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
