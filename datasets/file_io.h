// Bytes in and out of files: whole-file reads (gzip decoded through zlib when the bytes say so),
// writes that are atomic (temporary file, fsync, rename), and SHA-256 sums (OpenSSL).
//
// Every error names the file and, where it applies, the byte offset.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace peel::data {

using Bytes = std::vector<uint8_t>;

// Upper bound on a decompressed file; MNIST's largest is 47 MB, CIFAR-10's batches 30 MB each.
inline constexpr int64_t kMaxDecodedBytes = int64_t{1} << 30;

// The file's bytes, exactly as stored.
Bytes read_file(const std::string& path);

// True when the bytes start with the gzip magic 1f 8b.
bool is_gzip(std::span<const uint8_t> bytes);

// Decodes a gzip stream (one or more members). `name` is used in errors, which give the offset in
// the compressed stream. Throws when the output would exceed `max_bytes`.
Bytes gunzip(std::span<const uint8_t> compressed, const std::string& name, int64_t max_bytes = kMaxDecodedBytes);

// The file's bytes, gzip-decoded when they start with the gzip magic (whatever the file's name).
Bytes read_maybe_gzip(const std::string& path);

// Writes `bytes` to `path` through a temporary file in the same directory, fsync, then rename, so
// `path` is either absent, its old content, or the complete new content: never half written.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
void write_file_atomic(const std::string& path, std::string_view text);

// SHA-256 as 64 lowercase hex digits.
std::string sha256_hex(std::span<const uint8_t> bytes);
std::string sha256_file(const std::string& path);

}  // namespace peel::data
