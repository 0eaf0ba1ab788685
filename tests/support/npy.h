// Reading the PyTorch parity fixtures of tests/fixtures/torch/ (written by generate.py there; see
// docs/parity.md): NumPy .npy files, plain or gzip-compressed (.npy.gz), and the formula that gives
// the fixtures' initial weights.
//
// .npy (versions 1.0 and 2.0): the magic "\x93NUMPY", major and minor version bytes, the header
// length (uint16 little-endian in 1.0, uint32 in 2.0), a Python dict literal such as
// "{'descr': '<f4', 'fortran_order': False, 'shape': (16, 1, 28, 28), }" padded with spaces and a
// newline, then the data in C order. zlib's gzread reads gzip and plain files alike.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace peel {

static_assert(std::endian::native == std::endian::little, "npy.h reads little-endian data in place");

// One array as stored: element type ("<f4" or "<i8"), shape, and its raw little-endian bytes.
struct NpyArray {
  std::string descr;
  Shape shape;
  std::vector<unsigned char> bytes;
};

namespace npy_detail {

// A gzip-or-plain file read front to back; every failure names the file and the byte offset
// (in the uncompressed stream) where it happened.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    PEEL_CHECK(std::filesystem::is_regular_file(path), "load_npy: {}: no such file", path);
    file_ = gzopen(path.c_str(), "rb");
    PEEL_CHECK(file_ != nullptr, "load_npy: {}: cannot open", path);
  }
  ~Reader() { gzclose(file_); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  void read(void* out, size_t n, const char* what) {
    auto* dst = static_cast<unsigned char*>(out);
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, size_t{1} << 30));
      const int got = gzread(file_, dst + done, chunk);
      if (got < 0) {
        int code = 0;
        PEEL_FAIL("load_npy: {}: byte {}: read error in {}: {}", path_, offset_ + done, what, gzerror(file_, &code));
      }
      PEEL_CHECK(got > 0, "load_npy: {}: byte {}: file ends inside {} ({} of {} bytes present)", path_, offset_ + done,
                 what, done, n);
      done += static_cast<size_t>(got);
    }
    offset_ += n;
  }

  bool at_end() {
    unsigned char extra = 0;
    return gzread(file_, &extra, 1) == 0;
  }

  uint64_t offset() const { return offset_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  uint64_t offset_ = 0;
};

// Parses the header dict; `at` is the header's byte offset, for messages.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path, uint64_t at) : text_(text), path_(path), at_(at) {}

  void parse(NpyArray& out) {
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = quoted();
      expect(':');
      if (key == "descr") {
        out.descr = quoted();
        seen_descr = true;
      } else if (key == "fortran_order") {
        const std::string word = identifier();
        PEEL_CHECK(word == "False", "load_npy: {}: fortran_order is {}; only C order is supported", path_, word);
        seen_order = true;
      } else if (key == "shape") {
        out.shape = tuple();
        seen_shape = true;
      } else {
        fail(fmt::format("unexpected key '{}'", key));
      }
      skip_space();
      if (peek() == ',') ++pos_;
    }
    PEEL_CHECK(seen_descr && seen_order && seen_shape, "load_npy: {}: header lacks {}{}{}: {}", path_,
               seen_descr ? "" : "'descr' ", seen_order ? "" : "'fortran_order' ", seen_shape ? "" : "'shape' ", text_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    PEEL_FAIL("load_npy: {}: byte {}: malformed header ({}): {}", path_, at_ + pos_, what, text_);
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n')) ++pos_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(fmt::format("expected '{}'", c));
    ++pos_;
  }
  std::string quoted() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string s(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return s;
  }
  std::string identifier() {
    skip_space();
    const size_t start = pos_;
    while (std::isalpha(static_cast<unsigned char>(peek()))) ++pos_;
    if (pos_ == start) fail("expected True or False");
    return std::string(text_.substr(start, pos_ - start));
  }
  Shape tuple() {
    Shape shape;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') break;
      const size_t start = pos_;
      int64_t value = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (value > (int64_t{1} << 50)) fail("dimension too large");
        value = value * 10 + (peek() - '0');
        ++pos_;
      }
      if (pos_ == start) fail("expected a dimension");
      shape.push_back(value);
      skip_space();
      if (peek() == ',')
        ++pos_;
      else if (peek() != ')')
        fail("expected ',' or ')' in shape");
    }
    ++pos_;
    return shape;
  }

  std::string_view text_;
  const std::string& path_;
  uint64_t at_;
  size_t pos_ = 0;
};

inline size_t item_size(const std::string& descr) { return descr == "<f4" ? 4 : descr == "<i8" ? 8 : 0; }

}  // namespace npy_detail

// Reads and validates a .npy or .npy.gz file whose element type must be `expected_descr`
// ("<f4" float32 or "<i8" int64). Throws peel::Error naming the file and what was wrong.
inline NpyArray read_npy(const std::string& path, const std::string& expected_descr) {
  npy_detail::Reader in(path);
  unsigned char magic[8];
  in.read(magic, 8, "the magic string and version");
  PEEL_CHECK(std::memcmp(magic, "\x93NUMPY", 6) == 0, "load_npy: {}: byte 0: not a .npy file (no \\x93NUMPY magic)",
             path);
  const int major = magic[6], minor = magic[7];
  PEEL_CHECK((major == 1 || major == 2) && minor == 0, "load_npy: {}: byte 6: .npy version {}.{} (supported: 1.0, 2.0)",
             path, major, minor);
  uint32_t header_length = 0;
  unsigned char length_bytes[4] = {0, 0, 0, 0};
  in.read(length_bytes, major == 1 ? 2 : 4, "the header length");
  for (int i = 3; i >= 0; --i) header_length = (header_length << 8) | length_bytes[i];
  PEEL_CHECK(header_length <= (1u << 20), "load_npy: {}: byte 8: header length {} is implausible", path, header_length);
  const uint64_t header_offset = in.offset();
  std::string header(header_length, '\0');
  in.read(header.data(), header_length, "the header");

  NpyArray array;
  npy_detail::HeaderParser(header, path, header_offset).parse(array);
  PEEL_CHECK(array.descr == expected_descr, "load_npy: {}: element type '{}', expected '{}' ({})", path, array.descr,
             expected_descr, expected_descr == "<f4" ? "float32" : "int64");
  int64_t numel = 1;
  for (const int64_t d : array.shape) {
    PEEL_CHECK(d == 0 || numel <= (int64_t{1} << 34) / d, "load_npy: {}: shape {} is implausibly large", path,
               to_string(array.shape));
    numel *= d;
  }
  const size_t bytes = static_cast<size_t>(numel) * npy_detail::item_size(array.descr);
  array.bytes.resize(bytes);
  in.read(array.bytes.data(), bytes, fmt::format("the data of shape {}", to_string(array.shape)).c_str());
  PEEL_CHECK(in.at_end(), "load_npy: {}: byte {}: unexpected bytes after the data of shape {}", path, in.offset(),
             to_string(array.shape));
  return array;
}

// A float32 array as a contiguous Tensor of the stored shape.
inline Tensor load_npy(const std::string& path) {
  const NpyArray array = read_npy(path, "<f4");
  std::vector<float> values(array.bytes.size() / sizeof(float));
  std::memcpy(values.data(), array.bytes.data(), array.bytes.size());
  return Tensor::from_vector(values, array.shape);
}

// An int64 array (labels), row-major; load_npy_index keeps the shape too.
inline std::vector<int64_t> load_npy_int64(const std::string& path) {
  const NpyArray array = read_npy(path, "<i8");
  std::vector<int64_t> values(array.bytes.size() / sizeof(int64_t));
  std::memcpy(values.data(), array.bytes.data(), array.bytes.size());
  return values;
}

inline IndexTensor load_npy_index(const std::string& path) {
  const NpyArray array = read_npy(path, "<i8");
  IndexTensor out{array.shape, std::vector<int64_t>(array.bytes.size() / sizeof(int64_t))};
  std::memcpy(out.values.data(), array.bytes.data(), array.bytes.size());
  return out;
}

// The fixture file for a stem such as ".../small_cnn/grad/conv1.weight": stem.npy or stem.npy.gz
// (generate.py compresses files above 16 KiB), whichever exists.
inline std::string npy_path(const std::string& stem) {
  const bool plain = std::filesystem::exists(stem + ".npy");
  const bool gz = std::filesystem::exists(stem + ".npy.gz");
  PEEL_CHECK(plain != gz, "npy_path: {}: {}", stem,
             plain ? "both .npy and .npy.gz exist" : "neither .npy nor .npy.gz exists");
  return stem + (plain ? ".npy" : ".npy.gz");
}

// ---- The fixtures' initial weights (generate.py: fixture_seed, fixture_pattern) -------------------

// FNV-1a (32 bits) of a state-dict name: the seed of that tensor's pattern.
inline uint32_t fixture_seed(std::string_view name) {
  uint32_t h = 0x811C9DC5u;
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x01000193u;
  return h;
}

// Element i (row-major) = offset + scale * v_i with v_i = (int(z_i >> 40) - 2^23) * 2^-23 in [-1, 1)
// and z_i the splitmix64 finaliser of (seed << 32 | i). v_i and scale * v_i are exact (scale is a
// power of two); adding offset rounds once, so the values equal NumPy's float32 ones bit for bit.
inline Tensor fixture_pattern(uint32_t seed, const Shape& shape, float scale, float offset) {
  const int64_t n = numel_of(shape);
  int exponent = 0;
  PEEL_CHECK(n < (int64_t{1} << 32) && std::frexp(scale, &exponent) == 0.5f,
             "fixture_pattern: shape {} and scale {} (need < 2^32 elements, a power-of-two scale)", to_string(shape),
             scale);
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = ((uint64_t{seed} << 32) | static_cast<uint64_t>(i)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float v = static_cast<float>(static_cast<int64_t>(z >> 40) - (int64_t{1} << 23)) * 0x1p-23f;
    values[static_cast<size_t>(i)] = v * scale + offset;
  }
  return Tensor::from_vector(values, shape);
}

}  // namespace peel
