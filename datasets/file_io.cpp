#include "datasets/file_io.h"

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

#include "tensor/error.h"

namespace peel::data {
namespace {

// Closes a POSIX file descriptor on scope exit.
struct Fd {
  int fd = -1;
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

Bytes read_maybe_gzip(const std::string& path) {
  Bytes bytes = read_file(path);
  if (!is_gzip(bytes)) return bytes;
  return gunzip(bytes, path);
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
  {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    PEEL_CHECK(f.fd >= 0, "cannot create {}: {}", tmp, std::strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(f.fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        PEEL_FAIL("write error in {} at byte offset {}: {}", tmp, done, std::strerror(err));
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(f.fd) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      PEEL_FAIL("fsync of {} failed: {}", tmp, std::strerror(err));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    PEEL_FAIL("cannot rename {} to {}: {}", tmp, path, std::strerror(err));
  }
  // Make the rename itself durable; failing to is not worth an error.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  Fd d{::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0) ::fsync(d.fd);
}

void write_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
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

}  // namespace peel::data
