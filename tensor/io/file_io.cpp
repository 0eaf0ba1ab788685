#include "tensor/io/file_io.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <utility>

#include "tensor/error.h"

namespace peel::io {
namespace {

// Owns a POSIX file descriptor: closes it on scope exit; moves, never copies.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int descriptor) : fd(descriptor) {}
  Fd(Fd&& other) noexcept : fd(std::exchange(other.fd, -1)) {}
  Fd& operator=(Fd&&) = delete;
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct EvpContext {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~EvpContext() { EVP_MD_CTX_free(ctx); }
};

std::string to_hex(const unsigned char* digest, unsigned length) {
  static const char* digits = "0123456789abcdef";
  std::string hex(2 * length, '0');
  for (unsigned i = 0; i < length; ++i) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 15];
  }
  return hex;
}

}  // namespace

Bytes read_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  PEEL_CHECK(f.fd >= 0, "cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  PEEL_CHECK(::fstat(f.fd, &st) == 0, "cannot stat {}: {}", path, std::strerror(errno));
  PEEL_CHECK(S_ISREG(st.st_mode), "{} is not a regular file", path);
  Bytes bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(f.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    PEEL_CHECK(n >= 0, "read error in {} at byte offset {}: {}", path, done, std::strerror(errno));
    PEEL_CHECK(n > 0, "{}: file shrank while being read, at byte offset {} of {}", path, done, bytes.size());
    done += static_cast<size_t>(n);
  }
  return bytes;
}

bool is_gzip(std::span<const uint8_t> bytes) { return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b; }

Bytes gunzip(std::span<const uint8_t> compressed, const std::string& name, int64_t max_bytes) {
  PEEL_CHECK(is_gzip(compressed), "{}: not a gzip stream (no 1f 8b magic at byte offset 0)", name);
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header and trailer (CRC-32 and length are checked by zlib).
  PEEL_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "{}: zlib inflateInit2 failed", name);
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);

  Bytes out;
  // The trailer's ISIZE is the last member's length mod 2^32: a hint only, trusted when plausible.
  if (compressed.size() >= 18) {
    const size_t n = compressed.size();
    const uint64_t isize = uint64_t{compressed[n - 4]} | uint64_t{compressed[n - 3]} << 8 |
                           uint64_t{compressed[n - 2]} << 16 | uint64_t{compressed[n - 1]} << 24;
    if (isize <= static_cast<uint64_t>(max_bytes) && isize <= 1100 * uint64_t{n}) out.reserve(isize);
  }

  size_t in_pos = 0;
  zs.next_in = const_cast<Bytes::value_type*>(compressed.data());
  zs.avail_in = static_cast<uInt>(std::min<size_t>(compressed.size(), UINT32_MAX));
  constexpr size_t kChunk = size_t{1} << 18;
  for (;;) {
    const size_t have = out.size();
    out.resize(have + kChunk);
    zs.next_out = out.data() + have;
    zs.avail_out = static_cast<uInt>(kChunk);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(have + kChunk - zs.avail_out);
    PEEL_CHECK(static_cast<int64_t>(out.size()) <= max_bytes,
               "{}: decoded data exceeds the limit of {} bytes (compressed byte offset {})", name, max_bytes,
               in_pos + zs.total_in);
    if (rc == Z_STREAM_END) {
      const size_t consumed = in_pos + zs.total_in;
      if (consumed == compressed.size()) break;
      // Another gzip member may follow (gzip files may be concatenations); anything else is junk.
      PEEL_CHECK(is_gzip(compressed.subspan(consumed)),
                 "{}: {} unexpected bytes after the gzip stream at compressed byte offset {}", name,
                 compressed.size() - consumed, consumed);
      in_pos = consumed;
      PEEL_CHECK(inflateReset(&zs) == Z_OK, "{}: zlib inflateReset failed", name);
      zs.next_in = const_cast<Bytes::value_type*>(compressed.data() + in_pos);
      zs.avail_in = static_cast<uInt>(std::min<size_t>(compressed.size() - in_pos, UINT32_MAX));
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
      PEEL_FAIL("{}: gzip stream truncated at compressed byte offset {} ({} bytes decoded)", name, in_pos + zs.total_in,
                out.size());
    }
    PEEL_CHECK(rc == Z_OK || rc == Z_BUF_ERROR, "{}: corrupt gzip data near compressed byte offset {}: {}", name,
               in_pos + zs.total_in, zs.msg ? zs.msg : "zlib error");
  }
  out.shrink_to_fit();
  return out;
}

Bytes maybe_gunzip(Bytes bytes, const std::string& name) {
  if (!is_gzip(bytes)) return bytes;
  return gunzip(bytes, name);
}

Bytes read_maybe_gzip(const std::string& path) { return maybe_gunzip(read_file(path), path); }

namespace {

// A new file `<base>.<pid>.<n>`, created with O_EXCL so that it is never someone else's: another
// process, another thread, or a leftover of a killed process that had the same pid.
struct NewFile {
  Fd file;
  std::string path;
  int error = 0;  // errno when it could not be created
};

NewFile create_new_file(const std::string& base) {
  static std::atomic<uint64_t> counter{0};
  NewFile f;
  for (int attempt = 0; attempt < 100; ++attempt) {
    f.path = fmt::format("{}.{}.{}", base, ::getpid(), counter++);
    f.file.fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f.file.fd >= 0) return f;
    if (errno != EEXIST) break;
  }
  f.error = errno;
  return f;
}

// Writes all of `bytes`, resuming after short writes and interrupted calls; returns 0 or the errno,
// with the count written so far in `*done`.
int write_all(int fd, std::span<const uint8_t> bytes, size_t* done) {
  *done = 0;
  while (*done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + *done, bytes.size() - *done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // a regular file that accepts nothing and reports no error
    *done += static_cast<size_t>(n);
  }
  return 0;
}

int fsync_retrying(int fd) {
  while (::fsync(fd) != 0)
    if (errno != EINTR) return errno;
  return 0;
}

// Closes the descriptor, reporting the error that some file systems (NFS, quotas) defer to close.
int close_checked(Fd& f) {
  const int rc = ::close(f.fd);
  f.fd = -1;
  return rc == 0 || errno == EINTR ? 0 : errno;  // after EINTR the descriptor is closed on Linux
}

std::string folder_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  NewFile tmp = create_new_file(path + ".tmp");
  PEEL_CHECK(tmp.file.fd >= 0, "cannot write {}: {} (creating the temporary file {}); {} is unchanged", path,
             std::strerror(tmp.error), tmp.path, path);
  // From here on every failure removes the temporary file before throwing.
  auto fail = [&](int err, const std::string& step) {
    if (tmp.file.fd >= 0) close_checked(tmp.file);
    ::unlink(tmp.path.c_str());
    PEEL_FAIL("cannot write {}: {} ({}); {} is unchanged", path, std::strerror(err), step, path);
  };
  size_t done = 0;
  if (const int err = write_all(tmp.file.fd, bytes, &done))
    fail(err, fmt::format("writing byte {} of {} to {}", done, bytes.size(), tmp.path));
  if (const int err = fsync_retrying(tmp.file.fd)) fail(err, fmt::format("fsync of {}", tmp.path));
  if (const int err = close_checked(tmp.file)) fail(err, fmt::format("closing {}", tmp.path));
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    fail(err, fmt::format("renaming {} to {}", tmp.path, path));
  }

  // The rename is durable once the folder's entry is on disk. File systems that cannot sync a
  // folder say EINVAL; there is nothing more to do on those.
  const std::string dir = folder_of(path);
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  const int err = d.fd < 0 ? errno : fsync_retrying(d.fd);
  PEEL_CHECK(err == 0 || err == EINVAL || err == ENOTSUP,
             "{} holds its new content, but syncing its folder {} failed: {}; the new content may not survive a "
             "crash",
             path, dir, std::strerror(err));
}

void write_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

void sync_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  PEEL_CHECK(f.fd >= 0, "cannot open {} to sync it: {}", path, std::strerror(errno));
  const int err = fsync_retrying(f.fd);
  PEEL_CHECK(err == 0, "fsync of {} failed: {}", path, std::strerror(err));
}

void check_writable_dir(const std::string& dir) {
  struct stat st {};
  PEEL_CHECK(::stat(dir.c_str(), &st) == 0, "cannot write in folder {}: {}", dir, std::strerror(errno));
  PEEL_CHECK(S_ISDIR(st.st_mode), "cannot write in folder {}: it is not a folder", dir);
  NewFile probe = create_new_file((std::filesystem::path(dir) / ".peel-write-probe").string());
  PEEL_CHECK(probe.file.fd >= 0, "cannot write in folder {}: {} (creating the probe file {})", dir,
             std::strerror(probe.error), probe.path);
  const uint8_t byte = 0;
  size_t done = 0;
  int err = write_all(probe.file.fd, std::span(&byte, 1), &done);
  if (err == 0) err = fsync_retrying(probe.file.fd);
  const int close_err = close_checked(probe.file);
  if (err == 0) err = close_err;
  const int unlink_err = ::unlink(probe.path.c_str()) == 0 ? 0 : errno;
  PEEL_CHECK(err == 0, "cannot write in folder {}: {} (writing the probe file {})", dir, std::strerror(err),
             probe.path);
  PEEL_CHECK(unlink_err == 0, "folder {}: cannot remove the probe file {}: {}", dir, probe.path,
             std::strerror(unlink_err));
}

uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc) {
  // zlib takes lengths as uInt: feed very large spans in pieces.
  uLong c = crc;
  for (size_t done = 0; done < bytes.size();) {
    const size_t n = std::min<size_t>(bytes.size() - done, size_t{1} << 30);
    c = ::crc32(c, bytes.data() + done, static_cast<uInt>(n));
    done += n;
  }
  return static_cast<uint32_t>(c);
}

std::string sha256_hex(std::span<const uint8_t> bytes) {
  EvpContext c;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  PEEL_CHECK(c.ctx && EVP_DigestInit_ex(c.ctx, EVP_sha256(), nullptr) == 1 &&
                 EVP_DigestUpdate(c.ctx, bytes.data(), bytes.size()) == 1 &&
                 EVP_DigestFinal_ex(c.ctx, digest, &length) == 1,
             "sha256: OpenSSL digest failed");
  return to_hex(digest, length);
}

std::string sha256_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  PEEL_CHECK(f.fd >= 0, "cannot open {}: {}", path, std::strerror(errno));
  EvpContext c;
  PEEL_CHECK(c.ctx && EVP_DigestInit_ex(c.ctx, EVP_sha256(), nullptr) == 1, "sha256: OpenSSL init failed");
  std::vector<unsigned char> buffer(size_t{1} << 20);
  size_t offset = 0;
  for (;;) {
    const ssize_t n = ::read(f.fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    PEEL_CHECK(n >= 0, "read error in {} at byte offset {}: {}", path, offset, std::strerror(errno));
    if (n == 0) break;
    PEEL_CHECK(EVP_DigestUpdate(c.ctx, buffer.data(), static_cast<size_t>(n)) == 1, "sha256: OpenSSL update failed");
    offset += static_cast<size_t>(n);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  PEEL_CHECK(EVP_DigestFinal_ex(c.ctx, digest, &length) == 1, "sha256: OpenSSL final failed");
  return to_hex(digest, length);
}

}  // namespace peel::io
