// The file I/O every part of peel uses (tensor/io/file_io.h): SHA-256 and CRC-32 known vectors,
// gzip decoding and its errors, and the atomic writer under real failures: a file size limit
// (RLIMIT_FSIZE, in-process) and, when the test runs as root, a full tmpfs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "tensor/error.h"
#include "tensor/io/file_io.h"
#include "tests/support/temp_files.h"

using namespace peel;
using namespace peel::io;
using peel::testing::FileSizeLimit;
using peel::testing::gzip_bytes;
using peel::testing::names_in;
using peel::testing::text_of;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
namespace fs = std::filesystem;

namespace {

struct TempDir : peel::testing::TempDir {
  TempDir() : peel::testing::TempDir("peel-file-io") {}
};

Bytes pattern(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((i * 131) >> 3);
  return b;
}

// A tmpfs of `bytes` mounted on a fresh folder, unmounted (even when the test fails) and removed
// at scope exit. `error` says why it could not be mounted (not root, no CAP_SYS_ADMIN, ...).
class SmallTmpfs {
 public:
  explicit SmallTmpfs(int64_t bytes) {
    std::string t = (fs::temp_directory_path() / "peel-tmpfs-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) {
      error = std::strerror(errno);
      return;
    }
    path = t;
    if (::mount("tmpfs", t.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, fmt::format("size={}", bytes).c_str()) != 0) {
      error = fmt::format("mount -t tmpfs on {}: {}", t, std::strerror(errno));
      return;
    }
    mounted_ = true;
  }
  ~SmallTmpfs() {
    if (mounted_) {
      EXPECT_EQ(::umount2(path.c_str(), MNT_DETACH), 0) << std::strerror(errno);
    }
    if (!path.empty()) ::rmdir(path.c_str());
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  bool mounted() const { return mounted_; }

  fs::path path;
  std::string error;

 private:
  bool mounted_ = false;
};

// Fills the file system holding `dir` with one file, written until the disk refuses.
void fill_disk(const fs::path& file) {
  FILE* f = std::fopen(file.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  const Bytes chunk(4096, 0xab);
  while (std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size()) {
  }
  std::fclose(f);
}

}  // namespace

TEST(FileIo, Sha256KnownVectors) {
  const std::string abc = "abc";
  EXPECT_EQ(sha256_hex(std::span(reinterpret_cast<const uint8_t*>(abc.data()), abc.size())),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  TempDir dir;
  write_file_atomic((dir.path / "abc").string(), abc);
  EXPECT_EQ(sha256_file((dir.path / "abc").string()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(FileIo, Crc32KnownVectorAndContinuation) {
  const std::string digits = "123456789";  // the standard check value of CRC-32 (ISO-HDLC)
  const auto bytes = std::span(reinterpret_cast<const uint8_t*>(digits.data()), digits.size());
  EXPECT_EQ(crc32(bytes), 0xCBF43926u);
  EXPECT_EQ(crc32(bytes.subspan(4), crc32(bytes.first(4))), 0xCBF43926u);
  EXPECT_EQ(crc32({}), 0u);
}

TEST(FileIo, GunzipRoundTripAndErrors) {
  Bytes raw(100000);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<uint8_t>((i * i) % 251);
  const Bytes gz = gzip_bytes(raw);
  EXPECT_EQ(gunzip(gz, "x.gz"), raw);
  EXPECT_EQ(maybe_gunzip(gz, "x.gz"), raw);
  EXPECT_EQ(maybe_gunzip(raw, "x"), raw);
  // Two members concatenated decode to both.
  Bytes two = gz;
  two.insert(two.end(), gz.begin(), gz.end());
  EXPECT_EQ(gunzip(two, "x.gz").size(), 2 * raw.size());

  const Bytes truncated(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
  EXPECT_THAT([&] { gunzip(truncated, "half.gz"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("half.gz"), HasSubstr("truncated"), HasSubstr("offset"))));
  Bytes junk = gz;
  junk.push_back(0x42);
  EXPECT_THAT([&] { gunzip(junk, "junk.gz"); },
              ThrowsMessage<Error>(
                  AllOf(HasSubstr("junk.gz"), HasSubstr("unexpected bytes"), HasSubstr(std::to_string(gz.size())))));
  Bytes corrupt = gz;
  corrupt[gz.size() - 6] ^= 0xff;  // the CRC-32 of the data
  EXPECT_THAT([&] { gunzip(corrupt, "crc.gz"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("crc.gz"), HasSubstr("offset"))));
  EXPECT_THAT([&] { gunzip(raw, "plain.gz", 10); }, ThrowsMessage<Error>(HasSubstr("plain.gz: not a gzip")));
  EXPECT_THAT([&] { gunzip(gz, "big.gz", 1000); }, ThrowsMessage<Error>(HasSubstr("big.gz: decoded data exceeds")));
}

TEST(FileIo, AtomicWriteReplacesAndLeavesNoTemporaries) {
  TempDir dir;
  const std::string path = (dir.path / "f.bin").string();
  write_file_atomic(path, std::string("first version"));
  write_file_atomic(path, std::string("second"));
  EXPECT_EQ(text_of(path), "second");
  write_file_atomic(path, std::string());
  EXPECT_EQ(text_of(path), "");
  EXPECT_THAT(names_in(dir.path), ElementsAre("f.bin"));
  const std::string missing = (dir.path / "no-such-dir" / "f").string();
  EXPECT_THAT([&] { write_file_atomic(missing, std::string("x")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cannot write " + missing), HasSubstr("No such file or directory"),
                                         HasSubstr("is unchanged"))));
}

TEST(FileIo, FileSizeLimitFailsCleanlyAndKeepsTheOldContent) {
  TempDir dir;
  const std::string path = (dir.path / "checkpoint.peel").string();
  write_file_atomic(path, std::string("the old checkpoint"));
  {
    // 64 KiB fit; the writer gets a short write of 65536 bytes, then EFBIG.
    FileSizeLimit limit(64 * 1024);
    EXPECT_THAT([&] { write_file_atomic(path, pattern(200000)); },
                ThrowsMessage<Error>(AllOf(HasSubstr("cannot write " + path + ": File too large"),
                                           HasSubstr("writing byte 65536 of 200000"), HasSubstr("is unchanged"))));
    EXPECT_THAT(names_in(dir.path), ElementsAre("checkpoint.peel"));  // the partial temporary is gone
    EXPECT_EQ(text_of(path), "the old checkpoint");
    // What fits is still written.
    write_file_atomic(path, pattern(1000));
  }
  EXPECT_EQ(read_file(path), pattern(1000));
  EXPECT_THAT(names_in(dir.path), ElementsAre("checkpoint.peel"));
}

TEST(FileIo, FullDiskFailsCleanlyAndFreesTheSpace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs (the file size limit test covers EFBIG)";
  SmallTmpfs disk(256 * 1024);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.error;
  const fs::path target = disk.path / "metrics.csv";
  write_file_atomic(target.string(), std::string("epoch,loss\n0,2.3\n"));

  // A write larger than the disk: it fails, and its partial temporary file does not stay behind to
  // keep the disk full.
  EXPECT_THAT([&] { write_file_atomic(target.string(), pattern(1024 * 1024)); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cannot write " + target.string() + ": No space left on device"),
                                         HasSubstr("is unchanged"))));
  EXPECT_THAT(names_in(disk.path), ElementsAre("metrics.csv"));
  EXPECT_EQ(text_of(target), "epoch,loss\n0,2.3\n");
  // So the next, smaller write (a resumed run's) finds the space free.
  write_file_atomic(target.string(), pattern(128 * 1024));
  EXPECT_EQ(read_file(target.string()), pattern(128 * 1024));

  // A disk filled by something else: the writer and the probe both refuse, naming the reason.
  fill_disk(disk.path / "filler");
  EXPECT_THAT([&] { write_file_atomic(target.string(), pattern(8192)); },
              ThrowsMessage<Error>(HasSubstr("No space left on device")));
  EXPECT_EQ(read_file(target.string()), pattern(128 * 1024));
  EXPECT_THAT([&] { check_writable_dir(disk.path.string()); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cannot write in folder " + disk.path.string()),
                                         HasSubstr("No space left on device"))));
  EXPECT_THAT(names_in(disk.path), ElementsAre("filler", "metrics.csv"));
}

TEST(FileIo, CheckWritableDirProvesAFolderTakesFiles) {
  TempDir dir;
  check_writable_dir(dir.path.string());
  EXPECT_TRUE(names_in(dir.path).empty());  // the probe is removed
  const std::string missing = (dir.path / "missing").string();
  EXPECT_THAT([&] { check_writable_dir(missing); },
              ThrowsMessage<Error>(HasSubstr("cannot write in folder " + missing + ": No such file or directory")));
  write_file_atomic((dir.path / "file").string(), std::string("x"));
  EXPECT_THAT([&] { check_writable_dir((dir.path / "file").string()); },
              ThrowsMessage<Error>(HasSubstr("it is not a folder")));
  {
    FileSizeLimit limit(0);  // not even one byte may be written
    EXPECT_THAT([&] { check_writable_dir(dir.path.string()); },
                ThrowsMessage<Error>(AllOf(HasSubstr("cannot write in folder"), HasSubstr("File too large"))));
  }
  EXPECT_THAT(names_in(dir.path), ElementsAre("file"));
}
