// The record `peel fetch` leaves in each data set's folder: manifest.json (where the files came
// from, and each file's name, size and SHA-256) and SHA256SUMS (the same sums, in the form
// `sha256sum -c SHA256SUMS` checks). load_dataset checks every file it reads against it; fetch
// uses it to decide whether a set is complete.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace peel::data {

struct ManifestFile {
  std::string name;    // relative to the set's folder
  std::string sha256;  // 64 lowercase hex digits
  int64_t bytes = -1;  // -1: not recorded
};

struct Manifest {
  std::string path;  // <dir>/manifest.json, for messages
  std::string dataset, source;
  std::vector<ManifestFile> files;

  const ManifestFile* find(const std::string& name) const;
};

// <dir>/manifest.json, or nullopt when there is none. A manifest that cannot be read or parsed is
// an error naming it.
std::optional<Manifest> read_manifest(const std::string& dir);

// Writes <dir>/SHA256SUMS, then <dir>/manifest.json (last: it marks the set complete), each
// atomically. `files` lists names and sums; the sizes are taken from the files in `dir`.
void write_manifest(const std::string& dir, const std::string& dataset, const std::string& source,
                    const std::vector<ManifestFile>& files);

// Checks `bytes`, the content of <dir>/<name>, against the manifest. Throws a peel::Error naming
// the file, what the manifest expects (size, SHA-256), what the file has, and `remedy` (what to
// do, e.g. "fetch it again: `peel fetch mnist --data data`").
void check_against_manifest(const Manifest& manifest, const std::string& dir, const std::string& name,
                            std::span<const uint8_t> bytes, const std::string& remedy);

// Every file the manifest lists, read from `dir` and hashed: one sentence per problem (missing,
// wrong size, wrong SHA-256, each naming the file, the expected and the actual value).
std::vector<std::string> manifest_problems(const Manifest& manifest, const std::string& dir);

}  // namespace peel::data
