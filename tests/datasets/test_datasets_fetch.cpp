// fetch's bookkeeping, without the network: idempotence, adoption of files already in place,
// damage detection, failure reports, mirrors. The actual downloads (official locations, npm) are
// exercised by running `peel fetch all`; see docs/datasets.md.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>

#include "datasets/fetch.h"
#include "datasets/formats/idx.h"
#include "datasets/manifest.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"
#include "tests/support/error_matchers.h"
#include "tests/support/temp_files.h"

using namespace peel;
using namespace peel::data;
using peel::io::Bytes;
using peel::io::read_file;
using peel::io::write_file_atomic;
using peel::testing::ThrowsErrorWith;
using ::testing::AllOf;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

std::string data_dir() {
  const char* env = std::getenv("PEEL_DATA");
  return env && *env ? std::string(env) : std::string(PEEL_SOURCE_DIR) + "/data";
}

struct TempDir : peel::testing::TempDir {
  TempDir() : peel::testing::TempDir("peel-fetch") {}
};

}  // namespace

TEST(Fetch, AdoptsOfficialMnistFilesWithoutDownloading) {
  if (!dataset_is_complete("mnist", data_dir())) GTEST_SKIP() << "mnist not fetched into " << data_dir();
  TempDir dir;
  fs::create_directories(dir.path / "mnist");
  for (const char* f :
       {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    fs::copy_file(fs::path(data_dir()) / "mnist" / f, dir.path / "mnist" / f);
  const FetchOptions offline{.try_official = false, .try_npm = false};
  std::ostringstream log;
  fetch_dataset("mnist", dir.path.string(), log, offline);
  EXPECT_TRUE(dataset_is_complete("mnist", dir.path.string())) << log.str();
  fetch_dataset("mnist", dir.path.string(), log, offline);
  EXPECT_NE(log.str().find("up to date"), std::string::npos) << log.str();

  // A damaged file makes the set incomplete; with no source to repair it from, fetch fails and
  // says what it tried, leaving the incomplete set recognisable as such.
  const std::string labels = (dir.path / "mnist" / "t10k-labels-idx1-ubyte").string();
  Bytes bytes = read_file(labels);
  bytes[100] ^= 1;
  write_file_atomic(labels, bytes);
  EXPECT_FALSE(dataset_is_complete("mnist", dir.path.string()));
  EXPECT_THAT([&] { fetch_dataset("mnist", dir.path.string(), log, offline); },
              ThrowsErrorWith(labels + " has SHA-256 " + io::sha256_file(labels),
                              "the manifest records ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                              "every source failed"));
  EXPECT_FALSE(dataset_is_complete("mnist", dir.path.string()));
}

TEST(Fetch, NamesAndDefaults) {
  std::ostringstream log;
  EXPECT_THROW(fetch_dataset("imagenet", "unused", log), Error);
  TempDir dir;
  EXPECT_THAT(
      [&] { fetch_dataset("fashion-mnist", dir.path.string(), log, {.try_official = false, .try_npm = false}); },
      ThrowsErrorWith("every source failed"));
  EXPECT_FALSE(dataset_is_complete("fashion-mnist", dir.path.string()));
  EXPECT_EQ(fetchable_datasets(), (std::vector<std::string>{"mnist", "fashion-mnist", "cifar10"}));
  const char* saved = std::getenv("PEEL_DATA");
  const std::string keep = saved ? saved : "";
  ::setenv("PEEL_DATA", "/somewhere/else", 1);
  EXPECT_EQ(default_data_dir(), "/somewhere/else");
  ::unsetenv("PEEL_DATA");
  EXPECT_EQ(default_data_dir(), "data");
  if (saved) ::setenv("PEEL_DATA", keep.c_str(), 1);
}

TEST(Fetch, MirrorWithWrongFilesIsRejectedBySum) {
  TempDir mirror, dir;
  write_file_atomic((mirror.path / "cifar-10-binary.tar.gz").string(), std::string("not the CIFAR-10 archive"));
  // try_official = false: only the mirror is tried, so the test never touches the network.
  FetchOptions options{.try_official = false, .try_npm = false};
  options.extra_mirrors = {"file://" + mirror.path.string()};
  std::ostringstream log;
  EXPECT_THAT([&] { fetch_dataset("cifar10", dir.path.string(), log, options); },
              ThrowsErrorWith("file://" + mirror.path.string() + "/cifar-10-binary.tar.gz",
                              "differs from the published c4a38c50"));
  EXPECT_FALSE(fs::exists(dir.path / "cifar10" / "manifest.json"));
  // Nothing is left behind: no archive, no staging directory.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path / "cifar10")) ++entries;
  EXPECT_EQ(entries, 0);

  // A mirror without the file: the downloader's error is reported for that URL.
  options.extra_mirrors = {"file://" + (mirror.path / "empty").string()};
  EXPECT_THAT([&] { fetch_dataset("mnist", dir.path.string(), log, options); },
              ThrowsErrorWith("empty/train-images-idx3-ubyte.gz"));
}

TEST(Fetch, ADamagedFileIsNamedWithItsExpectedAndActualSums) {
  TempDir dir;
  const fs::path set = dir.path / "fashion-mnist";
  fs::create_directories(set);
  std::vector<ManifestFile> files;
  for (const char* f :
       {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    const bool images = std::string(f).find("images") != std::string::npos;
    const Bytes values(images ? 2 * 28 * 28 : 2, 3);
    write_idx((set / f).string(), images ? std::vector<int64_t>{2, 28, 28} : std::vector<int64_t>{2}, values);
    files.push_back({f, io::sha256_file((set / f).string())});
  }
  write_manifest(set.string(), "fashion-mnist", "written by the test", files);
  ASSERT_TRUE(dataset_is_complete("fashion-mnist", dir.path.string()));
  std::ostringstream log;
  const FetchOptions offline{.try_official = false, .try_npm = false};
  fetch_dataset("fashion-mnist", dir.path.string(), log, offline);
  EXPECT_THAT(log.str(), HasSubstr("up to date"));

  const std::string images = (set / "t10k-images-idx3-ubyte").string(),
                    labels = (set / "t10k-labels-idx1-ubyte").string();
  Bytes bytes = read_file(images);
  bytes[20] ^= 4;
  write_file_atomic(images, bytes);
  fs::resize_file(labels, 9);
  EXPECT_FALSE(dataset_is_complete("fashion-mnist", dir.path.string()));
  const std::string changed = images + " has SHA-256 " + io::sha256_file(images) + ", the manifest records " +
                              files[2].sha256 + " (its content changed)";
  const std::string cut = labels + " has 9 bytes, the manifest records 10 (the file is cut short)";
  EXPECT_THAT([&] { fetch_dataset("fashion-mnist", dir.path.string(), log, offline); },
              ThrowsErrorWith("fetch fashion-mnist: ", changed, cut, "every source failed"));
  EXPECT_THAT(log.str(), AllOf(HasSubstr("fashion-mnist: " + changed), HasSubstr("fashion-mnist: " + cut)));
}
