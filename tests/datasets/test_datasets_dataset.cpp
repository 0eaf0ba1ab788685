// Data sets in memory: normalisation values, fitting to 32x32, loading from files in the on-disk
// layout of `peel fetch`, subsets, and the synthetic Gaussian mixture.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>

#include "datasets/dataset.h"
#include "datasets/formats/idx.h"
#include "datasets/manifest.h"
#include "datasets/synthetic.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"
#include "tests/support/error_matchers.h"
#include "tests/support/temp_files.h"

using namespace peel;
using namespace peel::data;
using peel::io::read_file;
using peel::io::write_file_atomic;
using peel::testing::names_in;
using peel::testing::ThrowsErrorWith;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
namespace fs = std::filesystem;

namespace {

struct TempDir : peel::testing::TempDir {
  TempDir() : peel::testing::TempDir("peel-dataset") {}
};

// A miniature MNIST in <dir>/<set>/: n train and m test images of 28x28; image i's pixel p is
// (i + p) mod 256 and its label is i mod 10.
void write_mini_mnist(const fs::path& dir, const std::string& set, int64_t n, int64_t m) {
  fs::create_directories(dir / set);
  for (const auto& [prefix, count] : {std::pair<std::string, int64_t>{"train", n}, {"t10k", m}}) {
    Bytes pixels(static_cast<size_t>(count * 784)), labels(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      labels[i] = static_cast<uint8_t>(i % 10);
      for (int64_t p = 0; p < 784; ++p) pixels[i * 784 + p] = static_cast<uint8_t>((i + p) % 256);
    }
    write_idx((dir / set / (prefix + "-images-idx3-ubyte")).string(), {count, 28, 28}, pixels);
    write_idx((dir / set / (prefix + "-labels-idx1-ubyte")).string(), {count}, labels);
  }
}

// manifest.json and SHA256SUMS for every file now in <dir>/<set>/, as `peel fetch` writes them.
void write_manifest_of(const fs::path& dir, const std::string& set) {
  std::vector<ManifestFile> files;
  for (const std::string& name : names_in(dir / set))
    files.push_back({name, io::sha256_file((dir / set / name).string())});
  write_manifest((dir / set).string(), set, "written by the test", files);
}

// Flips one bit of the file at byte `pos`: the size stays, the SHA-256 changes.
void flip_bit(const fs::path& file, size_t pos) {
  Bytes bytes = read_file(file.string());
  bytes.at(pos) ^= 1;
  write_file_atomic(file.string(), bytes);
}

}  // namespace

TEST(Dataset, NormalisationIsTorchvisionsFloatArithmetic) {
  RawImages raw{3, 1, 1, 2, {0, 255, 128, 1, 2, 3}, {0, 1, 2}};
  const Normalization norm = normalization_for("mnist");
  const Dataset d = from_raw(raw, "mnist", "train", 10, {}, &norm);
  const std::vector<float> x = d.images.to_vector();
  EXPECT_EQ(x[0], (0.f / 255.f - 0.1307f) / 0.3081f);
  EXPECT_EQ(x[1], (255.f / 255.f - 0.1307f) / 0.3081f);
  EXPECT_EQ(x[2], (128.f / 255.f - 0.1307f) / 0.3081f);
  EXPECT_NEAR(x[0], -0.424213f, 1e-6f);
  EXPECT_NEAR(x[1], 2.821487f, 1e-6f);
  EXPECT_EQ(d.padding_value, (std::vector<float>{x[0]}));
  const Dataset plain = from_raw(raw, "mnist", "train", 10, {}, nullptr);
  EXPECT_EQ(plain.images.to_vector()[1], 1.f);
  EXPECT_TRUE(plain.mean.empty());

  EXPECT_EQ(normalization_for("fashion-mnist").mean, (std::vector<float>{0.2860f}));
  EXPECT_EQ(normalization_for("fashion-mnist").std, (std::vector<float>{0.3530f}));
  EXPECT_EQ(normalization_for("cifar10").mean, (std::vector<float>{0.4914f, 0.4822f, 0.4465f}));
  EXPECT_EQ(normalization_for("cifar10").std, (std::vector<float>{0.247f, 0.243f, 0.261f}));
  EXPECT_THROW(normalization_for("synthetic"), Error);
}

TEST(Dataset, CifarChannelsGetTheirOwnConstants) {
  RawImages raw{1, 3, 1, 1, {51, 51, 51}, {4}};
  const Normalization norm = normalization_for("cifar10");
  const Dataset d = from_raw(raw, "cifar10", "test", 10, {}, &norm);
  const std::vector<float> x = d.images.to_vector();
  for (int c = 0; c < 3; ++c) EXPECT_EQ(x[c], (51.f / 255.f - norm.mean[c]) / norm.std[c]);
  EXPECT_EQ(d.padding_value.size(), 3u);
  EXPECT_EQ(d.padding_value[2], (0.f - 0.4465f) / 0.261f);
}

TEST(Dataset, LoadsMnistLayoutFromDisk) {
  TempDir dir;
  write_mini_mnist(dir.path, "mnist", 30, 20);
  const Dataset train = load_dataset("mnist", "train", dir.path.string());
  EXPECT_EQ(train.images.shape(), (Shape{30, 1, 28, 28}));
  EXPECT_TRUE(train.images.is_contiguous());
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_EQ(train.labels[13], 3);
  EXPECT_EQ(train.images.at({13, 0, 1, 2}), ((13 + 30) / 255.f - 0.1307f) / 0.3081f);
  EXPECT_EQ(train.class_counts(), (std::vector<int64_t>(10, 3)));
  const Dataset test = load_dataset("mnist", "test", dir.path.string(), {.limit = 7});
  EXPECT_EQ(test.size(), 7);
  EXPECT_EQ(test.split, "test");

  // Same files under fashion-mnist/ get Fashion's constants and class names.
  write_mini_mnist(dir.path, "fashion-mnist", 10, 10);
  const Dataset fashion = load_dataset("fashion-mnist", "train", dir.path.string());
  EXPECT_EQ(fashion.images.at({0, 0, 0, 0}), (0.f - 0.2860f) / 0.3530f);
  EXPECT_EQ(fashion.class_names[9], "Ankle boot");

  // A gzipped file is read when the plain one is absent; a missing one names the fetch command.
  const fs::path labels = dir.path / "mnist" / "t10k-labels-idx1-ubyte";
  const Bytes label_bytes = read_file(labels.string());
  gzFile gz = gzopen((labels.string() + ".gz").c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, label_bytes.data(), static_cast<unsigned>(label_bytes.size())),
            static_cast<int>(label_bytes.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
  fs::remove(labels);
  EXPECT_EQ(load_dataset("mnist", "test", dir.path.string()).labels[9], 9);
  fs::remove(labels.string() + ".gz");
  EXPECT_THAT([&] { load_dataset("mnist", "test", dir.path.string()); }, ThrowsErrorWith("peel fetch mnist"));
}

TEST(Dataset, PadTo32PutsTheNormalisedZeroPixelAroundTheImage) {
  TempDir dir;
  write_mini_mnist(dir.path, "mnist", 4, 4);
  const Dataset plain = load_dataset("mnist", "train", dir.path.string());
  const Dataset padded = load_dataset("mnist", "train", dir.path.string(), {.fit32 = Fit32::pad});
  EXPECT_EQ(padded.images.shape(), (Shape{4, 1, 32, 32}));
  const float border = (0.f - 0.1307f) / 0.3081f;
  for (int64_t y : {0, 1, 30, 31})
    for (int64_t x = 0; x < 32; ++x) EXPECT_EQ(padded.images.at({2, 0, y, x}), border);
  for (int64_t y = 0; y < 28; ++y)
    for (int64_t x = 0; x < 28; ++x) ASSERT_EQ(padded.images.at({2, 0, y + 2, x + 2}), plain.images.at({2, 0, y, x}));
  const Dataset resized = load_dataset("mnist", "train", dir.path.string(), {.fit32 = Fit32::bilinear});
  EXPECT_EQ(resized.images.shape(), (Shape{4, 1, 32, 32}));

  // Padding a float data set uses its padding value: the same result.
  const Dataset padded_after = pad_images(plain, 2);
  EXPECT_EQ(padded_after.images.to_vector(), padded.images.to_vector());
}

TEST(Dataset, SubsetsAndClassSelection) {
  TempDir dir;
  write_mini_mnist(dir.path, "mnist", 20, 1);
  const Dataset d = load_dataset("mnist", "train", dir.path.string());
  const Dataset s = subset(d, {5, 0, 5});
  EXPECT_EQ(s.labels, (std::vector<int64_t>{5, 0, 5}));
  EXPECT_EQ(s.images.at({1, 0, 3, 3}), d.images.at({0, 0, 3, 3}));
  EXPECT_EQ(s.images.at({2, 0, 9, 1}), d.images.at({5, 0, 9, 1}));
  EXPECT_THROW(subset(d, {20}), Error);

  const Dataset kept = select_classes(d, {7, 2});
  EXPECT_EQ(kept.labels, (std::vector<int64_t>{2, 7, 12 % 10, 17 % 10}));
  const Dataset relabelled = select_classes(d, {7, 2}, true);
  EXPECT_EQ(relabelled.labels, (std::vector<int64_t>{1, 0, 1, 0}));
  EXPECT_EQ(relabelled.num_classes, 2);
  EXPECT_EQ(relabelled.class_names, (std::vector<std::string>{"7", "2"}));

  const auto by_class = indices_by_class(d.labels, 10);
  EXPECT_EQ(by_class[3], (std::vector<int64_t>{3, 13}));
}

TEST(Synthetic, DeterministicBalancedAndSharedMeans) {
  SyntheticOptions o;
  o.num_classes = 4;
  o.height = o.width = 16;
  o.train_per_class = 1000;
  o.test_per_class = 1000;
  o.seed = 7;
  const Dataset a = make_synthetic(o, "train"), b = make_synthetic(o, "train");
  EXPECT_EQ(a.images.to_vector(), b.images.to_vector());
  EXPECT_EQ(a.class_counts(), (std::vector<int64_t>(4, 1000)));
  const Dataset test = make_synthetic(o, "test");
  EXPECT_EQ(test.size(), 4000);
  EXPECT_NE(test.images.to_vector()[0], a.images.to_vector()[0]);
  o.seed = 8;
  EXPECT_NE(make_synthetic(o, "train").images.to_vector(), a.images.to_vector());

  // Class means estimated from train and test agree (same mixture): the estimation noise is about
  // sqrt(256 * (1/1000 + 1/1000)) = 0.72. Different classes' means are signal * sqrt(2 * 256) = 4.5
  // apart before correlation between the two smooth random patterns.
  auto class_mean = [](const Dataset& d, int64_t k) {
    std::vector<double> m(256, 0.0);
    int64_t n = 0;
    const std::vector<float> x = d.images.to_vector();
    for (int64_t i = 0; i < d.size(); ++i)
      if (d.labels[i] == k) {
        for (int p = 0; p < 256; ++p) m[p] += x[i * 256 + p];
        ++n;
      }
    for (double& v : m) v /= static_cast<double>(n);
    return m;
  };
  auto distance = [](const std::vector<double>& u, const std::vector<double>& v) {
    double s = 0;
    for (size_t i = 0; i < u.size(); ++i) s += (u[i] - v[i]) * (u[i] - v[i]);
    return std::sqrt(s);
  };
  for (int64_t k = 0; k < 4; ++k) {
    const auto train_mean = class_mean(a, k);
    EXPECT_LT(distance(train_mean, class_mean(test, k)), 1.2) << "class " << k;
    EXPECT_GT(distance(train_mean, class_mean(a, (k + 1) % 4)), 2.0) << "class " << k;
  }
  EXPECT_EQ(a.padding_value, (std::vector<float>{0.f}));
}

TEST(Synthetic, ThroughLoadDatasetWithPadding) {
  LoadOptions o;
  o.synthetic.train_per_class = 3;
  o.fit32 = Fit32::pad;
  const Dataset d = load_dataset("synthetic", "train", "unused", o);
  EXPECT_EQ(d.images.shape(), (Shape{30, 1, 32, 32}));
  EXPECT_EQ(d.images.at({4, 0, 0, 0}), 0.f);
  EXPECT_THROW(load_dataset("nope", "train", "data"), Error);
  EXPECT_THROW(load_dataset("synthetic", "validation", "data"), Error);
}

TEST(DatasetManifest, FilesAreCheckedAgainstTheManifestAtLoad) {
  TempDir dir;
  const std::string data = dir.path.string();
  write_mini_mnist(dir.path, "mnist", 30, 20);
  write_manifest_of(dir.path, "mnist");
  const std::string manifest = (dir.path / "mnist" / "manifest.json").string();
  EXPECT_EQ(load_dataset("mnist", "train", data).file_check,
            "2 file(s) checked against " + manifest + " (size and SHA-256)");

  // One changed pixel: the same size, another SHA-256; both sums are named, and the repair.
  const fs::path images = dir.path / "mnist" / "train-images-idx3-ubyte";
  const std::string recorded = io::sha256_file(images.string());
  flip_bit(images, 1000);
  const std::string actual = io::sha256_file(images.string());
  EXPECT_THAT([&] { load_dataset("mnist", "train", data); },
              ThrowsMessage<Error>(AllOf(
                  HasSubstr(images.string() + " does not match " + manifest),
                  HasSubstr("has SHA-256 " + actual + ", the manifest records " + recorded + " (its content changed)"),
                  HasSubstr("fetch the set again: `peel fetch mnist --data " + data + "`"))));
  // The test split's files are intact and still load.
  EXPECT_EQ(load_dataset("mnist", "test", data).size(), 20);

  // A file cut short: named with both sizes.
  const fs::path labels = dir.path / "mnist" / "t10k-labels-idx1-ubyte";
  fs::resize_file(labels, 18);
  EXPECT_THAT([&] { load_dataset("mnist", "test", data); },
              ThrowsMessage<Error>(AllOf(HasSubstr(labels.string() + " does not match " + manifest),
                                         HasSubstr("has 18 bytes, the manifest records 28 (the file is cut short)"),
                                         HasSubstr("peel fetch mnist --data " + data))));
}

TEST(DatasetManifest, AFileTheManifestDoesNotListIsRefused) {
  TempDir dir;
  write_mini_mnist(dir.path, "fashion-mnist", 10, 10);
  write_manifest_of(dir.path, "fashion-mnist");
  // Only a gzipped copy of a listed file: what is read is not what the manifest vouches for.
  const fs::path labels = dir.path / "fashion-mnist" / "t10k-labels-idx1-ubyte";
  write_file_atomic(labels.string() + ".gz", peel::testing::gzip_bytes(read_file(labels.string())));
  fs::remove(labels);
  EXPECT_THAT([&] { load_dataset("fashion-mnist", "test", dir.path.string()); },
              ThrowsMessage<Error>(AllOf(HasSubstr(labels.string() + ".gz is not listed in"),
                                         HasSubstr("peel fetch fashion-mnist --data"))));
}

TEST(DatasetManifest, WithoutAManifestFilesAreReadAfterOneWarning) {
  TempDir dir;
  write_mini_mnist(dir.path, "mnist", 10, 10);
  ::testing::internal::CaptureStderr();
  const Dataset train = load_dataset("mnist", "train", dir.path.string());
  const Dataset test = load_dataset("mnist", "test", dir.path.string());
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  const std::string folder = (dir.path / "mnist").string();
  EXPECT_EQ(warnings, "peel: warning: " + folder +
                          " has no manifest.json, so its files are read without a size and SHA-256 check (`peel "
                          "fetch mnist --data " +
                          dir.path.string() + "` writes one)\n");
  EXPECT_EQ(train.file_check, "not checked: " + folder + " has no manifest.json");
  EXPECT_EQ(test.size(), 10);
  EXPECT_EQ(load_dataset("synthetic", "test", "unused").file_check, "generated: no files");
}

TEST(DatasetManifest, CifarBatchesAreChecked) {
  TempDir dir;
  const fs::path folder = dir.path / "cifar10";
  fs::create_directories(folder);
  for (int b = 0; b <= 5; ++b) {
    Bytes bytes;
    for (int64_t i = 0; i < 3; ++i) {
      bytes.push_back(static_cast<uint8_t>((b + i) % 10));
      bytes.insert(bytes.end(), 3072, static_cast<uint8_t>(40 * b + i));
    }
    write_file_atomic((folder / (b == 0 ? "test_batch.bin" : fmt::format("data_batch_{}.bin", b))).string(), bytes);
  }
  write_manifest_of(dir.path, "cifar10");
  const Dataset train = load_dataset("cifar10", "train", dir.path.string());
  EXPECT_EQ(train.size(), 15);
  EXPECT_EQ(train.file_check,
            "5 file(s) checked against " + (folder / "manifest.json").string() + " (size and SHA-256)");
  flip_bit(folder / "data_batch_3.bin", 5);
  EXPECT_THAT([&] { load_dataset("cifar10", "train", dir.path.string()); },
              ThrowsMessage<Error>(AllOf(HasSubstr((folder / "data_batch_3.bin").string() + " does not match"),
                                         HasSubstr("peel fetch cifar10 --data"))));
  EXPECT_EQ(load_dataset("cifar10", "test", dir.path.string()).size(), 3);
}
