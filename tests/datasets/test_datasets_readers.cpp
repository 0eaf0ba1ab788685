// Readers on files with known content, written by the tests into a temporary directory. (The file
// I/O under them, gzip included, is tested in tests/tensor/test_file_io.cpp.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <string>

#include "datasets/formats/cifar.h"
#include "datasets/formats/fashion_json.h"
#include "datasets/formats/idx.h"
#include "datasets/raw_images.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"
#include "tests/support/error_matchers.h"
#include "tests/support/temp_files.h"

using namespace peel;
using namespace peel::data;
using peel::io::read_file;
using peel::io::write_file_atomic;
namespace fs = std::filesystem;

namespace {

struct TempDir : peel::testing::TempDir {
  TempDir() : peel::testing::TempDir("peel-readers") {}
};

using peel::testing::gzip_bytes;
using peel::testing::ThrowsErrorWith;

Bytes images_idx(int64_t n, int64_t h, int64_t w) {
  Bytes values(static_cast<size_t>(n * h * w));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<uint8_t>(i * 7 + 3);
  return encode_idx({n, h, w}, values);
}

}  // namespace

TEST(Idx, WriteReadRoundTripRawAndGzip) {
  TempDir dir;
  const int64_t n = 5, h = 3, w = 4;
  Bytes pixels(static_cast<size_t>(n * h * w));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(255 - i);
  const Bytes labels = {3, 1, 4, 1, 5};
  write_idx((dir.path / "img").string(), {n, h, w}, pixels);
  write_idx((dir.path / "lab").string(), {n}, labels);

  const Bytes file = read_file((dir.path / "img").string());
  ASSERT_EQ(file.size(), 16 + pixels.size());
  EXPECT_EQ((Bytes{file.begin(), file.begin() + 8}), (Bytes{0, 0, 8, 3, 0, 0, 0, 5}));

  const RawImages raw = read_idx_dataset((dir.path / "img").string(), (dir.path / "lab").string(), 10);
  EXPECT_EQ(raw.count, n);
  EXPECT_EQ(raw.channels, 1);
  EXPECT_EQ(raw.height, h);
  EXPECT_EQ(raw.width, w);
  EXPECT_EQ(raw.pixels, pixels);
  EXPECT_EQ(raw.labels, (std::vector<int64_t>{3, 1, 4, 1, 5}));

  write_file_atomic((dir.path / "img.gz").string(), gzip_bytes(file));
  const IdxArray from_gz = read_idx((dir.path / "img.gz").string());
  EXPECT_EQ(from_gz.dims, (std::vector<int64_t>{n, h, w}));
  EXPECT_EQ(from_gz.values, pixels);
}

TEST(Idx, HeaderAndLengthErrorsNameFileAndOffset) {
  const Bytes good = images_idx(2, 3, 3);
  Bytes b = good;
  b[1] = 1;
  EXPECT_THAT([&] { parse_idx(b, "m.idx"); }, ThrowsErrorWith("m.idx", "magic", "offset 0"));
  b = good;
  b[2] = 0x0d;
  EXPECT_THAT([&] { parse_idx(b, "t.idx"); }, ThrowsErrorWith("t.idx", "0x0d", "offset 2"));
  b = good;
  b[3] = 0;
  EXPECT_THAT([&] { parse_idx(b, "d.idx"); }, ThrowsErrorWith("d.idx", "dimension count 0", "offset 3"));
  EXPECT_THAT([&] { parse_idx(Bytes(good.begin(), good.begin() + 9), "h.idx"); },
              ThrowsErrorWith("h.idx", "truncated IDX header"));
  EXPECT_THAT([&] { parse_idx(Bytes(good.begin(), good.end() - 1), "short.idx"); },
              ThrowsErrorWith("short.idx", "truncated", "byte offset 16", "ends at byte offset 33"));
  b = good;
  b.push_back(0);
  EXPECT_THAT([&] { parse_idx(b, "long.idx"); },
              ThrowsErrorWith("long.idx", "1 unexpected trailing bytes", "offset 34"));
  b = good;
  b[4] = 0xff;  // a first dimension of ~4e9: more than the file holds
  EXPECT_THAT([&] { parse_idx(b, "huge.idx"); }, ThrowsErrorWith("huge.idx", "truncated"));
}

TEST(Idx, LabelAndPairingErrors) {
  const IdxArray images = parse_idx(images_idx(3, 2, 2), "img");
  const IdxArray labels = parse_idx(encode_idx({3}, Bytes{0, 9, 10}), "lab");
  EXPECT_THAT([&] { idx_to_images(images, "img", labels, "lab", 10); },
              ThrowsErrorWith("lab", "label 10", "byte offset 10"));
  const IdxArray two = parse_idx(encode_idx({2}, Bytes{0, 1}), "lab2");
  EXPECT_THAT([&] { idx_to_images(images, "img", two, "lab2", 10); },
              ThrowsErrorWith("img holds 3 images", "lab2 holds 2"));
  EXPECT_THAT([&] { idx_to_images(two, "lab2", two, "lab2", 10); }, ThrowsErrorWith("needs 3 dimensions"));
}

TEST(Cifar, ParsesRecordsAndChecksLengthAndLabels) {
  const int64_t n = 3;
  Bytes bytes;
  for (int64_t i = 0; i < n; ++i) {
    bytes.push_back(static_cast<uint8_t>(7 + i));
    for (int64_t p = 0; p < 3072; ++p) bytes.push_back(static_cast<uint8_t>((i * 3072 + p) % 253));
  }
  const RawImages raw = parse_cifar10_batch(bytes, "b.bin");
  EXPECT_EQ(raw.count, n);
  EXPECT_EQ(raw.channels, 3);
  EXPECT_EQ(raw.height, 32);
  EXPECT_EQ(raw.labels, (std::vector<int64_t>{7, 8, 9}));
  // Record 1, green plane (offset 1024), row 2, column 5.
  EXPECT_EQ(raw.pixels[3072 + 1024 + 2 * 32 + 5], (3072 + 1024 + 2 * 32 + 5) % 253);

  EXPECT_THAT([&] { parse_cifar10_batch(Bytes(bytes.begin(), bytes.end() - 100), "cut.bin"); },
              ThrowsErrorWith("cut.bin", "truncated", "byte offset 6146", "2973 bytes"));
  Bytes bad = bytes;
  bad[3073] = 10;
  EXPECT_THAT([&] { parse_cifar10_batch(bad, "lab.bin"); }, ThrowsErrorWith("lab.bin", "label 10", "byte offset 3073"));
  EXPECT_THAT([&] { parse_cifar10_batch(Bytes{}, "empty.bin"); }, ThrowsErrorWith("empty.bin", "empty"));
}

TEST(Cifar, ReadsTrainAndTestSplitsFromADirectory) {
  TempDir dir;
  for (int b = 0; b <= 5; ++b) {
    Bytes bytes;
    for (int64_t i = 0; i < 2; ++i) {
      bytes.push_back(static_cast<uint8_t>(b));
      bytes.insert(bytes.end(), 3072, static_cast<uint8_t>(10 * b + i));
    }
    const std::string name = b == 0 ? "test_batch.bin" : "data_batch_" + std::to_string(b) + ".bin";
    write_file_atomic((dir.path / name).string(), bytes);
  }
  const RawImages train = read_cifar10(dir.path.string(), "train");
  EXPECT_EQ(train.count, 10);
  EXPECT_EQ(train.labels, (std::vector<int64_t>{1, 1, 2, 2, 3, 3, 4, 4, 5, 5}));
  EXPECT_EQ(train.pixels[3 * 3072], 21);  // batch 2, record 1
  EXPECT_EQ(read_cifar10(dir.path.string(), "test").count, 2);
  fs::remove(dir.path / "data_batch_4.bin");
  EXPECT_THAT([&] { read_cifar10(dir.path.string(), "train"); },
              ThrowsErrorWith("data_batch_4.bin", "not found", "peel fetch"));
}

namespace {

std::string image_json(int start) {
  std::string s = "[";
  for (int i = 0; i < 784; ++i) {
    if (i) s += ',';
    s += std::to_string((start + i) % 256);
  }
  return s + "]";
}

}  // namespace

TEST(FashionJson, ParsesImagesAndSkipsEmptyEntries) {
  const std::string text = "{\"data\":[" + image_json(0) + ",[],\n " + image_json(5) + ", [ ]]}\n";
  const ClassImages c = parse_fashion_class_json(text, "0.json");
  EXPECT_EQ(c.count, 2);
  EXPECT_EQ(c.empty_entries, 2);
  ASSERT_EQ(c.pixels.size(), 2u * 784);
  EXPECT_EQ(c.pixels[783], 783 % 256);
  EXPECT_EQ(c.pixels[784], 5);
}

TEST(FashionJson, ErrorsNameFileAndOffset) {
  EXPECT_THAT([] { parse_fashion_class_json("{\"data\":[[1,2,3]]}", "short.json"); },
              ThrowsErrorWith("short.json", "byte offset 9", "3 pixels"));
  const std::string img = image_json(0);
  std::string big = img;
  big.insert(1, "256,");
  EXPECT_THAT([&] { parse_fashion_class_json("{\"data\":[" + big + "]}", "big.json"); },
              ThrowsErrorWith("big.json", "byte offset 10", "outside 0..255"));
  EXPECT_THAT([&] { parse_fashion_class_json("{\"data\":[" + img + "]} x", "junk.json"); },
              ThrowsErrorWith("junk.json", "unexpected data"));
  EXPECT_THAT([&] { parse_fashion_class_json("{\"data\":[" + img, "cut.json"); },
              ThrowsErrorWith("cut.json", "ends early"));
  EXPECT_THAT([] { parse_fashion_class_json("{\"pixels\":[]}", "key.json"); },
              ThrowsErrorWith("key.json", "\"data\"", "offset 1"));
  EXPECT_THAT([] { parse_fashion_class_json("{\"data\":[[-1]]}", "neg.json"); },
              ThrowsErrorWith("neg.json", "offset 10"));
}

TEST(FashionJson, SplitIsDeterministicAndFollowsTheRule) {
  // 3 classes x 4 images; image i of class k has every pixel 10*k + i.
  std::vector<ClassImages> classes(3);
  for (int k = 0; k < 3; ++k) {
    classes[k].count = 4;
    for (int i = 0; i < 4; ++i)
      classes[k].pixels.insert(classes[k].pixels.end(), 784, static_cast<uint8_t>(10 * k + i));
  }
  const TrainTest a = fashion_split(classes, 3, 4, 99), b = fashion_split(classes, 3, 4, 99);
  EXPECT_EQ(a.train.pixels, b.train.pixels);
  EXPECT_EQ(a.test.labels, b.test.labels);
  ASSERT_EQ(a.train.count, 9);
  ASSERT_EQ(a.test.count, 3);
  std::vector<int> seen_train(30, 0), seen_test(30, 0);
  for (int64_t j = 0; j < 9; ++j) {
    const int v = a.train.pixels[j * 784];
    EXPECT_EQ(a.train.labels[j], v / 10);
    EXPECT_LT(v % 10, 3);  // the first 3 images of each class
    ++seen_train[v];
  }
  for (int64_t j = 0; j < 3; ++j) {
    const int v = a.test.pixels[j * 784];
    EXPECT_EQ(a.test.labels[j], v / 10);
    EXPECT_EQ(v % 10, 3);  // the rest
    ++seen_test[v];
  }
  for (int k = 0; k < 3; ++k)
    for (int i = 0; i < 4; ++i) EXPECT_EQ(seen_train[10 * k + i] + seen_test[10 * k + i], 1);
  // The order is the seeded permutation of the class-major list, not the list itself.
  const TrainTest c = fashion_split(classes, 3, 4, 100);
  EXPECT_NE(a.train.labels, c.train.labels);
  classes[1].count = 3;
  EXPECT_THAT([&] { fashion_split(classes, 3, 4, 99); }, ThrowsErrorWith("class 1 has 3 images, expected 4"));
}

TEST(RawImages, PadAddsZeroBorder) {
  RawImages in{1, 1, 2, 2, {1, 2, 3, 4}, {0}};
  const RawImages out = pad_images(in, 1);
  EXPECT_EQ(out.height, 4);
  EXPECT_EQ(out.pixels, (std::vector<uint8_t>{0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0}));
}

TEST(RawImages, BilinearResizeMatchesPillow) {
  // Generated with Pillow 9.4: Image.fromarray(a, 'L').resize((32, 32), Image.BILINEAR), where
  // a[y][x] = (37x + 101y + 13((xy) mod 17)) mod 256 for a 28x28 image.
  const std::string expected_hex =
      "001e3e5f7fa0c0d01121416282a3c3d31424446585a6c6d61727476888a9c9e75279a2cc9b50799f9fc66049739dc5df"
      "29436ca681365f8686ac462f5983acd3aa4b5e91a2722c6093c75b467aaec05f4d7caf93676da0c9638b87a28961a5d5"
      "73517966657f58316eaca775748b5d407dbb957a97a782b8945585c9974991ca5b9e986c749e8b674c8cde9b7270176c"
      "b3a06f5e849f6e5ba281709ba47c81c3b4be8775a8b86aac2668ca937a8127889c5b8b61518a834256b79487bbc476c1"
      "dc889b7671804574315bb27f779544922578b49f9a995e8c4a74caa8a0ad5db264b573979c77a858be54a182789865bb"
      "41a6698e936ca05eb6589d81768f5bbbbd6198909ec47516853f867986a66de7762f6d64728e5ccb69d6a5c1cf7a42c3"
      "458f70a1ba79519874c1b66b84bd66509f61b1ae6c619983d2bb649db65c3ab06d5894a97f69a09946cead6083c47a38"
      "d08d7a51517886c7c5782e6f917cb3b2c6798b666296976220ac995581d499507da989554266a4ae7a9e7e816e7ae7a7"
      "ae6b876c71926c9066a18349559aae744a79b0a96f5e905088caac7d4a60d7a0773c8e97685a8ee8be9d6c444278c09f"
      "764195ac9f987449baa47345437fc7a99f95816a4760d5bc8d755a4179c8bac3947c664f84cfb9a172545e477fdbc0ab"
      "27c2ddd0c3ad897b6f6340291c0f29c4b8b9afa387665a4e421aaceadcc6a398806e6866636056393633302d2a1d0710"
      "0dcef9f6e4ceccc9c7c2b4acaaa6a3a0d8c3c4cbd3dab9131a2116141c20242c3361727972656d757c83878c9392868d"
      "80748091a2b4b68798aa3b1123344657697a8c9d9f9daeb52c33445667757f8f8996ae7955718ca7c3de4a15304c6783"
      "9eba72607588a3b771853e2c48637e987194b98e74774f749abf813a2f55799fc48f3b3d698f9e698fb4766e63496e91"
      "3a669497a49c527c6690c669295887b29b374488a3a6b454847292c1a45b5a8692a0d0945e7cb7e53e68b4814b6ca0a5"
      "28558ec0995d8d9fd9695e8bc5b75388da566ca6793271c031599ad5a86f990e5195cc977ab4ca4a7fc37872ada23675"
      "538dd79e7b7f3e8cca538a5b387da13a86d47c89753c86b7328bd4967b82367d9b4373afa3889c4cbb4470aea294bc4b"
      "ba6a79605793c370b568997064aec26a435cafba6d457a208aab95c6bc644e6ed97eb49899c3802590b09aa59aa0e26c"
      "4cafb77952585b6e5bcd977174551f907da19aadb7aea3513fb07a9a9d88d275a4b6b37f62768b9638ae8165796834b5"
      "4a707491a5a6a45d54818596796ec26ead94c2a97a8bb5645d9b6daac87853d67e328d938e934d4d8f8ec1a85753b463"
      "55ad95648cbd7670d4a2559fc77f67beaf5eaeb683523a9183dac27a475d9f65a75f2976a76d56f7c77c4693c4955f24"
      "d499633465b27c41f1b6805182cf9951";
  RawImages in{1, 1, 28, 28, {}, {0}};
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x)
      in.pixels.push_back(static_cast<uint8_t>((x * 37 + y * 101 + ((x * y) % 17) * 13) % 256));
  const RawImages out = resize_bilinear(in, 32, 32);
  ASSERT_EQ(out.pixels.size(), 1024u);
  int mismatches = 0;
  for (size_t i = 0; i < 1024; ++i) {
    const int want = std::stoi(expected_hex.substr(2 * i, 2), nullptr, 16);
    if (out.pixels[i] != want && mismatches++ < 5)
      ADD_FAILURE() << "pixel " << i << ": " << int(out.pixels[i]) << " != " << want;
  }
  EXPECT_EQ(mismatches, 0);
}
