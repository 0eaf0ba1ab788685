// State files (nn::write_state / read_state, format in nn/module.h): round trip, version 1 files
// still read, and every kind of damage refused with the file, the entry and what was expected:
// each single-bit flip at every byte position, each truncation, trailing bytes; a failed save
// leaves the previous file whole.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/error.h"
#include "tests/support/temp_files.h"

using namespace peel;
using peel::testing::FileSizeLimit;
using peel::testing::names_in;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;
using ::testing::ThrowsMessage;
namespace fs = std::filesystem;

namespace {

using State = std::vector<std::pair<std::string, Tensor>>;

struct TempDir : peel::testing::TempDir {
  TempDir() : peel::testing::TempDir("peel-state") {}
};

// The content of tests/fixtures/state/v1_small.peel (see its README).
State small_state() {
  return {{"layer.weight", Tensor::from_vector({0.f, 0.5f, 1.f, 1.5f, 2.f, 2.5f}, {2, 3})},
          {"layer.bias", Tensor::from_vector({-1.f, 0.25f, 3.f}, {3})},
          {"epochs_done", Tensor::scalar(7.f)}};
}

// Where each entry of a version 2 file lies: [begin, end), and where its values start.
struct EntryBytes {
  std::string name;
  size_t begin, values, end;
};
std::vector<EntryBytes> layout_v2(const State& state) {
  std::vector<EntryBytes> out;
  size_t pos = 24;  // magic, version, count, header CRC
  for (const auto& [name, t] : state) {
    const size_t values = pos + 4 + name.size() + 4 + 8 * static_cast<size_t>(t.dim());
    const size_t end = values + 4 * static_cast<size_t>(t.numel()) + 4;
    out.push_back({name, pos, values, end});
    pos = end;
  }
  return out;
}

void write_bytes(const std::string& path, const io::Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void expect_same(const State& a, const State& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.shape(), b[i].second.shape()) << a[i].first;
    EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first;
  }
}

// read_state(path) must throw peel::Error; returns its message ("" and a failure otherwise).
std::string refusal(const std::string& path) {
  try {
    nn::read_state(path);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << path << " was accepted";
  return "";
}

}  // namespace

TEST(StateFile, RoundTripKeepsNamesShapesAndBits) {
  TempDir dir;
  const std::string path = (dir.path / "s.peel").string();
  State state = small_state();
  state.emplace_back("empty", Tensor::zeros({0}));
  state.emplace_back("nan", Tensor::from_vector({std::numeric_limits<float>::quiet_NaN(), -0.f}, {1, 2}));
  nn::write_state(path, state);
  const State back = nn::read_state(path);
  ASSERT_EQ(back.size(), state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    EXPECT_EQ(back[i].first, state[i].first);
    EXPECT_EQ(back[i].second.shape(), state[i].second.shape());
    const std::vector<float> a = state[i].second.to_vector(), b = back[i].second.to_vector();
    ASSERT_EQ(a.size(), b.size()) << state[i].first;
    // Bits, NaN included; memcmp is not called on the empty tensor's null data (UBSan: nonnull).
    if (!a.empty()) EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << state[i].first;
  }
  const io::Bytes bytes = io::read_file(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "PEELSTAT");
  EXPECT_EQ(bytes[8], nn::kStateFormatVersion);
}

TEST(StateFile, ReadsVersion1Files) {
  const std::string fixture = std::string(PEEL_SOURCE_DIR) + "/tests/fixtures/state/v1_small.peel";
  const io::Bytes bytes = io::read_file(fixture);
  ASSERT_EQ(bytes[8], 1);
  expect_same(nn::read_state(fixture), small_state());
  // Without checksums, the structural checks still hold, and damage never crashes the reader.
  TempDir dir;
  const std::string path = (dir.path / "v1.peel").string();
  write_bytes(path, io::Bytes(bytes.begin(), bytes.end() - 1));
  EXPECT_THAT(refusal(path), HasSubstr("truncated"));
  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    io::Bytes damaged = bytes;
    damaged[pos] ^= 0xff;
    write_bytes(path, damaged);
    try {
      nn::read_state(path);  // a changed value cannot be detected in version 1
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), StartsWith(path + ": ")) << "byte " << pos;
    }
  }
}

TEST(StateFile, EveryFlippedBitIsRefused) {
  TempDir dir;
  const std::string good = (dir.path / "good.peel").string(), path = (dir.path / "checkpoint.peel").string();
  const State state = small_state();
  nn::write_state(good, state);
  const io::Bytes bytes = io::read_file(good);
  const std::vector<EntryBytes> entries = layout_v2(state);
  ASSERT_EQ(entries.back().end, bytes.size());

  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      io::Bytes damaged = bytes;
      damaged[pos] ^= static_cast<uint8_t>(1 << bit);
      write_bytes(path, damaged);
      const std::string message = refusal(path);
      SCOPED_TRACE(fmt::format("byte {} bit {}: {}", pos, bit, message));
      EXPECT_THAT(message, StartsWith(path + ": "));
      if (pos < 8) {
        EXPECT_THAT(message, HasSubstr("not a peel state file"));
      } else if (pos < 12) {
        EXPECT_THAT(message, HasSubstr("format version"));
      } else if (pos < 24) {
        EXPECT_THAT(message, HasSubstr("the header (bytes 0..23) fails its CRC-32 check"));
      } else {
        // Bytes of the name, the values and the CRC itself: the entry fails its CRC, which names
        // the entry, its bytes and both sums. (A flip in a length, rank or dimension may instead
        // make the entry overrun the file or look implausible: refused all the same.)
        for (size_t e = 0; e < entries.size(); ++e) {
          const EntryBytes& x = entries[e];
          const bool in_name = pos >= x.begin + 4 && pos < x.begin + 4 + x.name.size();
          if ((pos >= x.values && pos < x.end) || in_name)
            EXPECT_THAT(message, MatchesRegex(fmt::format(".*entry {} of 3 '.*' \\(bytes {}\\.\\.{}\\) fails its "
                                                          "CRC-32 check: stored 0x[0-9a-f]{{8}}, computed "
                                                          "0x[0-9a-f]{{8}}; the file is corrupt",
                                                          e + 1, x.begin, x.end - 1)));
          if (pos >= x.values && pos < x.end) EXPECT_THAT(message, HasSubstr("'" + x.name + "'"));
        }
      }
    }
  }
}

TEST(StateFile, EveryTruncationAndTrailingBytesAreRefused) {
  TempDir dir;
  const std::string good = (dir.path / "good.peel").string(), path = (dir.path / "cut.peel").string();
  nn::write_state(good, small_state());
  const io::Bytes bytes = io::read_file(good);
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(path, io::Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    EXPECT_THAT(refusal(path), AllOf(StartsWith(path + ": "), HasSubstr("truncated"))) << n << " bytes";
  }
  io::Bytes longer = bytes;
  longer.insert(longer.end(), {1, 2, 3});
  write_bytes(path, longer);
  EXPECT_THAT(refusal(path),
              HasSubstr(fmt::format("3 unexpected bytes after the last entry, from byte {}", bytes.size())));
}

TEST(StateFile, ImplausibleSizesAreRefusedWithoutAllocating) {
  TempDir dir;
  const std::string path = (dir.path / "huge.peel").string();
  // Version 1 (no CRCs to stop it first): one entry "w" of rank `rank`, every dimension 2^31 - 1.
  auto write_v1 = [&](uint8_t rank, uint8_t count) {
    io::Bytes bytes = {'P', 'E', 'E', 'L', 'S', 'T', 'A', 'T', 1, 0,   0,    0, count, 0, 0,
                       0,   0,   0,   0,   0,   1,   0,   0,   0, 'w', rank, 0, 0,     0};
    for (int d = 0; d < rank; ++d) bytes.insert(bytes.end(), {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0});
    write_bytes(path, bytes);
  };
  write_v1(1, 1);  // 8 GB of values the file does not hold
  EXPECT_THAT(refusal(path), HasSubstr("truncated at byte 37 while reading entry 1 of 1 'w' (from byte 20): the "
                                       "values of shape [2147483647] (8589934588 bytes needed, 0 left)"));
  write_v1(3, 1);  // an element count that would overflow int64
  EXPECT_THAT(refusal(path),
              HasSubstr("entry 1 of 1 'w' (from byte 20): dimension 2147483647 at byte 37 is implausible"));
  write_v1(1, 255);  // an entry count the file cannot hold
  EXPECT_THAT(refusal(path), HasSubstr("entry count 255 at byte 12 cannot fit"));
  // Shape [0, 2^62, 2^62] holds no values, yet its strides overflow int64: a zero dimension must
  // not let the others through (found by tests/fuzz/fuzz_state under UBSan).
  io::Bytes zero_first = {'P', 'E', 'E', 'L', 'S', 'T', 'A', 'T', 1, 0,   0, 0, 1, 0, 0,
                          0,   0,   0,   0,   0,   1,   0,   0,   0, 'w', 3, 0, 0, 0};
  zero_first.insert(zero_first.end(), {0, 0, 0, 0, 0, 0, 0, 0});
  for (int d = 0; d < 2; ++d) zero_first.insert(zero_first.end(), {0, 0, 0, 0, 0, 0, 0, 0x40});
  write_bytes(path, zero_first);
  EXPECT_THAT(refusal(path),
              HasSubstr("entry 1 of 1 'w' (from byte 20): dimension 4611686018427387904 at byte 37 is implausible"));
}

TEST(StateFile, MissingFileNamesTheReason) {
  const std::string path = "/nonexistent-peel-dir/checkpoint.peel";
  EXPECT_THAT(refusal(path), AllOf(HasSubstr(path), HasSubstr("No such file or directory")));
}

TEST(StateFile, FailedSaveKeepsThePreviousFile) {
  TempDir dir;
  const std::string path = (dir.path / "checkpoint.peel").string();
  nn::write_state(path, small_state());
  const State bigger = {{"w", Tensor::ones({100, 100})}};
  {
    FileSizeLimit limit(4096);  // the new file (40 KB) does not fit: as on a full disk
    EXPECT_THAT([&] { nn::write_state(path, bigger); },
                ThrowsMessage<Error>(
                    AllOf(HasSubstr("cannot write " + path + ": File too large"), HasSubstr(path + " is unchanged"))));
  }
  EXPECT_THAT(names_in(dir.path), ElementsAre("checkpoint.peel"));
  expect_same(nn::read_state(path), small_state());
  nn::write_state(path, bigger);  // with room again, the save goes through
  expect_same(nn::read_state(path), bigger);
}
