#include "datasets/manifest.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel::data {
namespace {

namespace fs = std::filesystem;

std::string manifest_path(const std::string& dir) { return (fs::path(dir) / "manifest.json").string(); }

// The difference between a file (`bytes` long, with SHA-256 `sha256`, which is only computed, and
// only looked at, when the size matches) and its manifest entry, as a phrase ("has 18 bytes, the
// manifest records 28 (the file is cut short)"); empty when there is none.
std::string mismatch(const ManifestFile& expected, int64_t bytes, const std::string& sha256) {
  if (expected.bytes >= 0 && bytes != expected.bytes)
    return fmt::format("has {} bytes, the manifest records {} ({})", bytes, expected.bytes,
                       bytes < expected.bytes ? "the file is cut short" : "the file has grown");
  if (sha256 != expected.sha256)
    return fmt::format("has SHA-256 {}, the manifest records {} (its content changed)", sha256, expected.sha256);
  return "";
}

}  // namespace

const ManifestFile* Manifest::find(const std::string& name) const {
  for (const ManifestFile& f : files)
    if (f.name == name) return &f;
  return nullptr;
}

std::optional<Manifest> read_manifest(const std::string& dir) {
  Manifest m;
  m.path = manifest_path(dir);
  if (!fs::exists(m.path)) return std::nullopt;
  const io::Bytes text = io::read_file(m.path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
    m.dataset = j.value("dataset", "");
    m.source = j.value("source", "");
    PEEL_CHECK(j.contains("files") && j["files"].is_array(), "{}: no \"files\" list", m.path);
    for (const auto& f : j["files"]) {
      ManifestFile file{f.at("name").get<std::string>(), f.at("sha256").get<std::string>(),
                        f.contains("bytes") ? f["bytes"].get<int64_t>() : -1};
      PEEL_CHECK(!file.name.empty() && file.sha256.size() == 64, "{}: entry for '{}' has a malformed SHA-256 '{}'",
                 m.path, file.name, file.sha256);
      m.files.push_back(std::move(file));
    }
  } catch (const nlohmann::json::exception& e) {
    PEEL_FAIL("{}: not a readable manifest ({}); `peel fetch` writes it again", m.path, e.what());
  }
  return m;
}

void write_manifest(const std::string& dir, const std::string& dataset, const std::string& source,
                    const std::vector<ManifestFile>& files) {
  nlohmann::json j;
  j["dataset"] = dataset;
  j["source"] = source;
  j["written_by"] = "peel fetch";
  j["files"] = nlohmann::json::array();
  std::string sha256sums;
  for (const ManifestFile& f : files) {
    j["files"].push_back({{"name", f.name}, {"sha256", f.sha256}, {"bytes", fs::file_size(fs::path(dir) / f.name)}});
    sha256sums += f.sha256 + "  " + f.name + "\n";
  }
  io::write_file_atomic((fs::path(dir) / "SHA256SUMS").string(), sha256sums);
  io::write_file_atomic(manifest_path(dir), j.dump(2) + "\n");
}

void check_against_manifest(const Manifest& manifest, const std::string& dir, const std::string& name,
                            std::span<const uint8_t> bytes, const std::string& remedy) {
  const std::string path = (fs::path(dir) / name).string();
  const ManifestFile* expected = manifest.find(name);
  PEEL_CHECK(expected != nullptr, "{} is not listed in {}, so it cannot be checked; {}", path, manifest.path, remedy);
  const int64_t size = static_cast<int64_t>(bytes.size());
  const std::string sha256 = expected->bytes >= 0 && size != expected->bytes ? "" : io::sha256_hex(bytes);
  const std::string problem = mismatch(*expected, size, sha256);
  PEEL_CHECK(problem.empty(), "{} does not match {}: it {}; {}", path, manifest.path, problem, remedy);
}

std::vector<std::string> manifest_problems(const Manifest& manifest, const std::string& dir) {
  std::vector<std::string> problems;
  for (const ManifestFile& f : manifest.files) {
    const fs::path path = fs::path(dir) / f.name;
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) {
      problems.push_back(
          fmt::format("{} is listed in {} but cannot be read: {}", path.string(), manifest.path, ec.message()));
      continue;
    }
    const int64_t bytes = static_cast<int64_t>(size);
    const std::string sha256 = f.bytes >= 0 && bytes != f.bytes ? "" : io::sha256_file(path.string());
    if (const std::string problem = mismatch(f, bytes, sha256); !problem.empty())
      problems.push_back(path.string() + " " + problem);
  }
  return problems;
}

}  // namespace peel::data
