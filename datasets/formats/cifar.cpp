#include "datasets/formats/cifar.h"

#include <algorithm>
#include <filesystem>

#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel::data {

RawImages parse_cifar10_batch(std::span<const uint8_t> bytes, const std::string& name) {
  const int64_t size = static_cast<int64_t>(bytes.size());
  PEEL_CHECK(size > 0, "{}: empty CIFAR-10 batch file", name);
  PEEL_CHECK(size % kCifarRecordBytes == 0,
             "{}: CIFAR-10 batch is truncated or padded: {} bytes is not a whole number of {}-byte records (the "
             "last record starts at byte offset {} and has only {} bytes)",
             name, size, kCifarRecordBytes, size / kCifarRecordBytes * kCifarRecordBytes, size % kCifarRecordBytes);
  RawImages out;
  out.count = size / kCifarRecordBytes;
  out.channels = 3;
  out.height = out.width = kCifarSide;
  const int64_t image_bytes = out.image_size();
  out.pixels.resize(static_cast<size_t>(out.count * image_bytes));
  out.labels.resize(static_cast<size_t>(out.count));
  for (int64_t i = 0; i < out.count; ++i) {
    const uint8_t* record = bytes.data() + i * kCifarRecordBytes;
    PEEL_CHECK(record[0] < 10, "{}: label {} at byte offset {} (record {}) is outside 0..9", name, record[0],
               i * kCifarRecordBytes, i);
    out.labels[static_cast<size_t>(i)] = record[0];
    std::copy_n(record + 1, image_bytes, out.pixels.data() + i * image_bytes);
  }
  return out;
}

RawImages read_cifar10_batch(const std::string& path) { return parse_cifar10_batch(io::read_maybe_gzip(path), path); }

std::vector<std::string> cifar10_files(const std::string& dir, const std::string& split) {
  PEEL_CHECK(split == "train" || split == "test", "cifar10: split must be train or test, got '{}'", split);
  namespace fs = std::filesystem;
  fs::path base = dir;
  if (!fs::exists(base / "test_batch.bin") && fs::exists(base / "cifar-10-batches-bin" / "test_batch.bin"))
    base /= "cifar-10-batches-bin";
  std::vector<std::string> files;
  if (split == "train")
    for (int b = 1; b <= 5; ++b) files.push_back((base / fmt::format("data_batch_{}.bin", b)).string());
  else
    files.push_back((base / "test_batch.bin").string());
  for (const std::string& f : files)
    PEEL_CHECK(fs::exists(f),
               "cifar10: {} not found; fetch it with `peel fetch cifar10` (or point --data / "
               "PEEL_DATA at a directory holding cifar10/)",
               f);
  return files;
}

RawImages read_cifar10(const std::string& dir, const std::string& split) {
  RawImages all;
  for (const std::string& f : cifar10_files(dir, split)) append(all, read_cifar10_batch(f));
  return all;
}

}  // namespace peel::data
