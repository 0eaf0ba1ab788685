// The IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/): a 4-byte magic
// (0x00 0x00, a type code, the number of dimensions), one big-endian uint32 per dimension, then the
// values in row-major order. peel reads and writes type 0x08 (unsigned byte) only, raw or gzipped.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "datasets/raw_images.h"
#include "tensor/io/file_io.h"

namespace peel::data {

using io::Bytes;

struct IdxArray {
  std::vector<int64_t> dims;
  Bytes values;  // row-major, product(dims) bytes
};

// Parses an IDX ubyte array; `name` (usually the path) goes into errors, which also give the byte
// offset: bad magic, unsupported type, 0 or more than 4 dimensions, truncated data, trailing bytes.
IdxArray parse_idx(std::span<const uint8_t> bytes, const std::string& name);

// The content of the file `path` (raw or gzipped IDX), parsed.
IdxArray decode_idx(std::span<const uint8_t> raw, const std::string& path);

// Reads an IDX file, gzip-decoded first when it is gzipped.
IdxArray read_idx(const std::string& path);

// The bytes of an IDX ubyte file.
Bytes encode_idx(const std::vector<int64_t>& dims, std::span<const uint8_t> values);

// Writes an IDX ubyte file atomically (see io::write_file_atomic).
void write_idx(const std::string& path, const std::vector<int64_t>& dims, std::span<const uint8_t> values);

// An images file (3 dims: count, rows, columns) paired with its labels file (1 dim: count),
// every label checked to lie in [0, num_classes).
RawImages read_idx_dataset(const std::string& images_path, const std::string& labels_path, int64_t num_classes);

// The checks read_idx_dataset applies, on arrays already parsed; names are used in errors.
RawImages idx_to_images(IdxArray images, const std::string& images_name, const IdxArray& labels,
                        const std::string& labels_name, int64_t num_classes);

}  // namespace peel::data
