// Bytes in and out of files, for every part of peel (checkpoints, run outputs, data sets):
// whole-file reads (gzip decoded through zlib when the bytes say so), durable atomic writes, a
// writability probe, CRC-32 (zlib) and SHA-256 (OpenSSL).
//
// Every error is a peel::Error that names the file, the operating system's reason (strerror, e.g.
// "No space left on device") and, where it applies, the byte offset.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace peel::io {

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

// The bytes, gzip-decoded when they start with the gzip magic; `name` is used in errors.
Bytes maybe_gunzip(Bytes bytes, const std::string& name);
// The file's bytes, gzip-decoded when they start with the gzip magic (whatever the file's name).
Bytes read_maybe_gzip(const std::string& path);

// Replaces `path` by `bytes`, atomically and durably: the bytes go to a new temporary file in the
// same folder (`<path>.tmp.<pid>.<n>`, created with O_EXCL), written in full (short writes and
// EINTR handled) and fsync'ed; the temporary is renamed over `path` and the folder is fsync'ed. A
// reader, or the file system after a crash, sees `path` absent, with its old content, or with all
// of the new content: never half of it.
//
// On any failure (full disk, file size limit, no permission, missing folder) the temporary file is
// removed, so a failed write leaves no partial file that keeps the disk full, `path` is unchanged,
// and the peel::Error names `path` and the reason, e.g. "cannot write run/checkpoint.peel: No space
// left on device (writing byte 65536 of 200000 to run/checkpoint.peel.tmp.123.0); run/checkpoint.peel
// is unchanged". The one exception: when only the final fsync of the folder fails, `path` already
// holds the new content, and the error says so.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
void write_file_atomic(const std::string& path, std::string_view text);

// Flushes a file written by other means (a subprocess, tar) to the disk: open, fsync, close. Throws
// naming the file and the reason.
void sync_file(const std::string& path);

// Proves that new files can be written in the folder `dir`: creates a probe file in it (O_EXCL),
// writes one byte, fsyncs and removes it. Throws a peel::Error naming `dir` and the reason
// (missing, not a folder, read-only, no permission, full disk). For failing before the work starts.
void check_writable_dir(const std::string& dir);

// zlib's CRC-32 (the gzip/PNG polynomial) of `bytes`, continuing from `crc` (0 to start).
uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

// SHA-256 as 64 lowercase hex digits.
std::string sha256_hex(std::span<const uint8_t> bytes);
std::string sha256_file(const std::string& path);

}  // namespace peel::io
