// The CIFAR-10 binary format (https://www.cs.toronto.edu/~kriz/cifar.html): each record is one
// label byte (0..9) followed by 3072 pixel bytes, the 1024 red, then green, then blue values of a
// 32x32 image in row-major order. data_batch_1..5.bin hold the 50000 training images and
// test_batch.bin the 10000 test images, 10000 records per file.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "datasets/raw_images.h"

namespace peel::data {

inline constexpr int64_t kCifarSide = 32;
inline constexpr int64_t kCifarRecordBytes = 1 + 3 * kCifarSide * kCifarSide;  // 3073

// Parses one batch file; errors name `name` and the byte offset (a length that is not a whole
// number of records, a label outside 0..9).
RawImages parse_cifar10_batch(std::span<const uint8_t> bytes, const std::string& name);

RawImages read_cifar10_batch(const std::string& path);

// The files of the training split (data_batch_1..5.bin, in that order) or of the test split
// (test_batch.bin) in `dir`, or in `dir`/cifar-10-batches-bin when that is where they are. A
// missing file is an error that says how to fetch it.
std::vector<std::string> cifar10_files(const std::string& dir, const std::string& split);

// The training split (data_batch_1..5.bin, in that order) or the test split (test_batch.bin) from
// `dir`, or from `dir`/cifar-10-batches-bin when that is where the files are (the archive's layout).
RawImages read_cifar10(const std::string& dir, const std::string& split);

}  // namespace peel::data
