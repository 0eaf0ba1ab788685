// Random, truncated and mutated inputs for every parser: each must either succeed or throw
// peel::Error, never crash, hang or throw anything else. CI runs this under AddressSanitizer and
// UndefinedBehaviorSanitizer (PEEL_SANITIZE=ON), which turn any out-of-bounds access into a failure.
#include <gtest/gtest.h>
#include <zlib.h>

#include <functional>
#include <iostream>
#include <string>

#include "datasets/formats/cifar.h"
#include "datasets/formats/fashion_json.h"
#include "datasets/formats/idx.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"
#include "tensor/random.h"
#include "tests/support/temp_files.h"

using namespace peel;
using namespace peel::data;
using peel::io::gunzip;

namespace {

using Parser = std::function<void(const Bytes&)>;

struct Tally {
  int64_t accepted = 0, rejected = 0;
};

// Runs `parse`; peel::Error counts as a rejection, any other exception fails the test.
void feed(const Parser& parse, const Bytes& input, Tally& tally, const std::string& what) {
  try {
    parse(input);
    ++tally.accepted;
  } catch (const Error&) {
    ++tally.rejected;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": non-peel exception " << typeid(e).name() << ": " << e.what() << " on " << input.size()
                  << " bytes";
  }
}

using peel::testing::gzip_bytes;

// Every prefix of `valid`, then `mutations` copies with 1..8 random bytes changed (biased toward
// the header, where lengths live), then `randoms` random byte strings of random length.
Tally fuzz(const Parser& parse, const Bytes& valid, int mutations, int randoms, uint64_t seed,
           const std::string& what) {
  Tally tally;
  feed(parse, valid, tally, what);
  EXPECT_EQ(tally.accepted, 1) << what << ": the valid input was rejected";
  const size_t step = std::max<size_t>(1, valid.size() / 1500);
  for (size_t n = 0; n < valid.size(); n += step) feed(parse, Bytes(valid.begin(), valid.begin() + n), tally, what);
  Generator gen(seed);
  for (int m = 0; m < mutations; ++m) {
    Bytes b = valid;
    const int64_t changes = 1 + gen.randint(8);
    for (int64_t c = 0; c < changes; ++c) {
      const int64_t span = gen.uniform() < 0.5f ? std::min<int64_t>(32, b.size()) : static_cast<int64_t>(b.size());
      const int64_t at = gen.randint(span);
      const int64_t kind = gen.randint(4);
      if (kind == 0)
        b[at] = static_cast<uint8_t>(gen.randint(256));
      else if (kind == 1)
        b[at] ^= static_cast<uint8_t>(1 << gen.randint(8));
      else if (kind == 2)
        b[at] = gen.uniform() < 0.5f ? 0x00 : 0xff;
      else
        b.insert(b.begin() + at, static_cast<uint8_t>(gen.randint(256)));
    }
    if (gen.uniform() < 0.3f) b.resize(static_cast<size_t>(gen.randint(static_cast<int64_t>(b.size()) + 1)));
    feed(parse, b, tally, what);
  }
  for (int r = 0; r < randoms; ++r) {
    Bytes b(static_cast<size_t>(gen.randint(600)));
    for (uint8_t& v : b) v = static_cast<uint8_t>(gen.randint(256));
    // Some random inputs get a plausible start so they reach the deeper checks.
    if (!b.empty() && gen.uniform() < 0.5f)
      std::copy_n(valid.begin(), std::min(b.size(), std::min<size_t>(16, valid.size())), b.begin());
    feed(parse, b, tally, what);
  }
  std::cout << what << ": " << tally.accepted << " inputs accepted, " << tally.rejected
            << " rejected with peel::Error\n";
  return tally;
}

Bytes small_idx() {
  Bytes pixels(4 * 5 * 6);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 13);
  return encode_idx({4, 5, 6}, pixels);
}

}  // namespace

TEST(ParsersFuzz, Idx) {
  const Tally t = fuzz([](const Bytes& b) { parse_idx(b, "fuzz.idx"); }, small_idx(), 3000, 3000, 1, "idx");
  EXPECT_GT(t.rejected, 3000);
}

TEST(ParsersFuzz, IdxLabelsPairedWithImages) {
  const IdxArray images = parse_idx(small_idx(), "img");
  const Bytes labels = encode_idx({4}, Bytes{1, 2, 3, 9});
  fuzz([&](const Bytes& b) { idx_to_images(images, "img", parse_idx(b, "lab"), "lab", 10); }, labels, 2000, 2000, 2,
       "idx labels");
}

TEST(ParsersFuzz, GzipThenIdx) {
  const Bytes gz = gzip_bytes(small_idx());
  fuzz([](const Bytes& b) { parse_idx(gunzip(b, "fuzz.gz", 1 << 20), "fuzz.gz (decoded)"); }, gz, 3000, 2000, 3,
       "gzip");
}

TEST(ParsersFuzz, Cifar) {
  Bytes valid;
  for (int i = 0; i < 2; ++i) {
    valid.push_back(static_cast<uint8_t>(i + 3));
    for (int p = 0; p < 3072; ++p) valid.push_back(static_cast<uint8_t>(p + i));
  }
  fuzz([](const Bytes& b) { parse_cifar10_batch(b, "fuzz.bin"); }, valid, 2000, 2000, 4, "cifar");
}

TEST(ParsersFuzz, FashionJson) {
  std::string text = "{\"data\":[";
  for (int img = 0; img < 2; ++img) {
    text += img ? ",[" : "[";
    for (int i = 0; i < 784; ++i) {
      if (i) text += ',';
      text += std::to_string((i * 7 + img) % 256);
    }
    text += "]";
  }
  text += ",[]]}";
  const Bytes valid(text.begin(), text.end());
  fuzz(
      [](const Bytes& b) {
        parse_fashion_class_json(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), "fuzz.json");
      },
      valid, 3000, 2000, 5, "fashion json");
}
