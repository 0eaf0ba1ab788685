// tests/npy.h: files with known content written here byte by byte (independently of the reader),
// every header error it must refuse, and the committed PyTorch fixtures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/error_matchers.h"
#include "tests/support/npy.h"

using namespace peel;
using peel::testing::ThrowsErrorWith;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(PEEL_SOURCE_DIR) + "/tests/fixtures/torch";

class NpyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("peel_npy_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A .npy file: magic, version, header length, `dict` padded to NumPy's 64-byte alignment, data.
  std::string write(const std::string& name, const std::string& dict, const std::string& data, int major = 1,
                    bool gzip = false, const std::string& magic = "\x93NUMPY") {
    std::string header = dict;
    const size_t prefix = 6 + 2 + (major == 1 ? 2 : 4);
    while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string bytes = magic + std::string{static_cast<char>(major), '\0'};
    const uint32_t n = static_cast<uint32_t>(header.size());
    for (int i = 0; i < (major == 1 ? 2 : 4); ++i) bytes += static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header + data;
    std::string path = (dir_ / name).string();
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    return path;
  }

  template <typename T>
  static std::string raw(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  }

  fs::path dir_;
};

const std::vector<float> kFloats = {0.5f, -1.25f, 3e-8f, 1e30f, -0.f, 7.f};

void expect_bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

}  // namespace

TEST_F(NpyFiles, ReadsFloat32VersionOne) {
  const auto path = write("a.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", raw(kFloats));
  const Tensor t = load_npy(path);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  expect_bits_equal(t.to_vector(), kFloats);
}

TEST_F(NpyFiles, ReadsVersionTwoAnyKeyOrderAndDoubleQuotes) {
  const auto path = write("b.npy", "{\"shape\": (3,2), \"fortran_order\": False, \"descr\": \"<f4\"}", raw(kFloats), 2);
  const Tensor t = load_npy(path);
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  expect_bits_equal(t.to_vector(), kFloats);
}

TEST_F(NpyFiles, ReadsGzipAndOneAndZeroDimensions) {
  const auto one =
      write("c.npy.gz", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", raw(kFloats), 1, true);
  const Tensor t = load_npy(one);
  EXPECT_EQ(t.shape(), (Shape{6}));
  expect_bits_equal(t.to_vector(), kFloats);

  const auto zero =
      write("d.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", raw(std::vector<float>{2.5f}));
  const Tensor s = load_npy(zero);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item(), 2.5f);
}

TEST_F(NpyFiles, ReadsInt64WithShape) {
  const std::vector<int64_t> labels = {0, 9, -3, int64_t{1} << 40};
  const auto path = write("l.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", raw(labels));
  EXPECT_EQ(load_npy_int64(path), labels);
  const IndexTensor index = load_npy_index(path);
  EXPECT_EQ(index.shape, (Shape{2, 2}));
  EXPECT_EQ(index.values, labels);
}

TEST_F(NpyFiles, RefusesBadFilesNamingThem) {
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string data = raw(kFloats);
  const auto missing = (dir_ / "missing.npy").string();
  EXPECT_THAT([&] { load_npy(missing); }, ThrowsErrorWith(missing, "no such file"));

  auto p = write("magic.npy", ok, data, 1, false, "\x93NUMPZ");
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "not a .npy file"));
  p = write("version.npy", ok, data, 3);
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "version 3.0"));
  p = write("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data);
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "fortran_order is True"));
  p = write("double.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", data);
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "element type '<f8', expected '<f4'"));
  p = write("floats.npy", ok, data);
  EXPECT_THAT([&] { load_npy_int64(p); }, ThrowsErrorWith(p, "element type '<f4', expected '<i8'"));
  p = write("short.npy", ok, data.substr(0, 20));
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "file ends inside the data of shape [2, 3] (20 of 24 bytes"));
  p = write("long.npy", ok, data + "xx");
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "unexpected bytes after the data"));
  p = write("noshape.npy", "{'descr': '<f4', 'fortran_order': False, }", data);
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "header lacks 'shape'"));
  p = write("badshape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2; 3), }", data);
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "expected ',' or ')' in shape"));
  p = write("key.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'extra': 1}", data);
  EXPECT_THAT([&] { load_npy(p); }, ThrowsErrorWith(p, "unexpected key 'extra'"));

  const auto truncated_gz = (dir_ / "cut.npy.gz").string();
  {
    const auto full = write("full.npy.gz", ok, data, 1, true);
    std::ifstream in(full, std::ios::binary);
    std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated_gz, std::ios::binary).write(gz.data(), static_cast<std::streamsize>(gz.size() / 2));
  }
  EXPECT_THAT([&] { load_npy(truncated_gz); }, ThrowsErrorWith(truncated_gz, "byte"));
}

TEST_F(NpyFiles, NpyPathPicksTheExistingFile) {
  write("x.npy.gz", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", raw(kFloats), 1, true);
  EXPECT_EQ(npy_path((dir_ / "x").string()), (dir_ / "x.npy.gz").string());
  EXPECT_THAT([&] { npy_path((dir_ / "y").string()); }, ThrowsErrorWith((dir_ / "y").string(), "neither"));
}

// ---- The committed fixtures ---------------------------------------------------------------------

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

TEST(TorchFixtures, EveryListedFileLoadsWithItsShape) {
  const auto index = read_json(kFixtures + "/index.json");
  ASSERT_EQ(index.at("format"), "peel-torch-fixture");
  int files = 0;
  for (const std::string c : index.at("cases")) {
    const auto manifest = read_json(kFixtures + "/" + c + "/manifest.json");
    EXPECT_EQ(manifest.at("format"), "peel-torch-fixture") << c;
    EXPECT_EQ(manifest.at("version"), 1) << c;
    for (const auto& [stem, entry] : manifest.at("files").items()) {
      const std::string path = kFixtures + "/" + c + "/" + entry.at("file").get<std::string>();
      EXPECT_EQ(npy_path(kFixtures + "/" + c + "/" + stem), path);
      const Shape shape = entry.at("shape").get<Shape>();
      if (entry.at("dtype") == "int64") {
        EXPECT_EQ(load_npy_index(path).shape, shape) << path;
      } else {
        const Tensor t = load_npy(path);
        EXPECT_EQ(t.shape(), shape) << path;
        for (const float v : t.to_vector()) ASSERT_TRUE(std::isfinite(v)) << path;
      }
      ++files;
    }
  }
  EXPECT_GT(files, 400);
}

TEST(TorchFixtures, SmallCnnBatch) {
  const Tensor x = load_npy(kFixtures + "/small_cnn/input.npy.gz");
  EXPECT_EQ(x.shape(), (Shape{16, 1, 28, 28}));
  const auto labels = load_npy_int64(kFixtures + "/small_cnn/labels.npy");
  ASSERT_EQ(labels.size(), 16u);
  for (const int64_t y : labels) EXPECT_TRUE(y >= 0 && y < 10) << y;
}

// fixture_pattern recomputes generate.py's initial weights bit for bit (every init rule is among
// the stored small_cnn tensors), and the manifests' seeds are fixture_seed of the names.
TEST(TorchFixtures, FixturePatternMatchesStoredInitialWeights) {
  const auto manifest = read_json(kFixtures + "/small_cnn/manifest.json");
  int compared = 0;
  for (const auto& [name, rule] : manifest.at("init").items()) {
    EXPECT_EQ(rule.at("seed").get<uint32_t>(), fixture_seed(name)) << name;
    const std::string stem = kFixtures + "/small_cnn/init/" + name;
    if (!fs::exists(stem + ".npy") && !fs::exists(stem + ".npy.gz")) continue;
    const Tensor stored = load_npy(npy_path(stem));
    const Tensor computed = fixture_pattern(fixture_seed(name), rule.at("shape").get<Shape>(),
                                            rule.at("scale").get<float>(), rule.at("offset").get<float>());
    EXPECT_EQ(computed.shape(), stored.shape()) << name;
    expect_bits_equal(computed.to_vector(), stored.to_vector());
    ++compared;
  }
  EXPECT_EQ(compared, 23);  // conv1, fc.weight, fc.bias and the 4 entries of each of 5 BN layers
  // Named: a range-for over read_json(...).at(...) would iterate a temporary already destroyed.
  const auto resnet18 = read_json(kFixtures + "/resnet18/manifest.json");
  for (const auto& [name, rule] : resnet18.at("init").items())
    EXPECT_EQ(rule.at("seed").get<uint32_t>(), fixture_seed(name)) << name;
}
