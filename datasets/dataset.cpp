#include "datasets/dataset.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

#include "datasets/formats/cifar.h"
#include "datasets/formats/idx.h"
#include "datasets/manifest.h"
#include "datasets/synthetic.h"
#include "tensor/error.h"
#include "tensor/io/file_io.h"
#include "tensor/threads.h"

namespace peel::data {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kFashionClasses = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
const std::vector<std::string> kCifarClasses = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                "dog",      "frog",       "horse", "ship", "truck"};

std::vector<std::string> digit_names(int64_t k) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < k; ++i) names.push_back(std::to_string(i));
  return names;
}

// <dir>/<file>, or <dir>/<file>.gz when only the gzipped one is there.
std::string find_idx(const fs::path& dir, const std::string& file, const std::string& set) {
  if (fs::exists(dir / file)) return (dir / file).string();
  if (fs::exists(dir / (file + ".gz"))) return (dir / (file + ".gz")).string();
  PEEL_FAIL(
      "{}: {} not found; fetch it with `peel fetch {}` (the data directory is --data, or PEEL_DATA, "
      "default data/)",
      set, (dir / file).string(), set);
}

// The files of one data set, each read once and checked against the set's manifest.json (size and
// SHA-256 of the very bytes that are then parsed) before it is used. A folder without a manifest
// (files put there by hand) is read unchecked, with a one-line warning per folder and process.
class CheckedFiles {
 public:
  CheckedFiles(const std::string& set, const fs::path& dir, const std::string& data_dir)
      : dir_(dir),
        manifest_(read_manifest(dir.string())),
        remedy_(fmt::format("fetch the set again: `peel fetch {} --data {}`", set, data_dir)) {
    if (!manifest_)
      warn_once(
          fmt::format("peel: warning: {} has no manifest.json, so its files are read without a size and SHA-256 "
                      "check (`peel fetch {} --data {}` writes one)",
                      dir.string(), set, data_dir));
  }

  io::Bytes read(const std::string& path) {
    io::Bytes bytes = io::read_file(path);
    if (manifest_) {
      check_against_manifest(*manifest_, dir_.string(), fs::path(path).lexically_relative(dir_).generic_string(), bytes,
                             remedy_);
      ++checked_;
    }
    return bytes;
  }

  std::string description() const {
    return manifest_ ? fmt::format("{} file(s) checked against {} (size and SHA-256)", checked_, manifest_->path)
                     : fmt::format("not checked: {} has no manifest.json", dir_.string());
  }

 private:
  static void warn_once(const std::string& warning) {
    static std::mutex mutex;
    static std::set<std::string> said;
    std::lock_guard<std::mutex> lock(mutex);
    if (said.insert(warning).second) fmt::print(stderr, "{}\n", warning);
  }

  fs::path dir_;
  std::optional<Manifest> manifest_;
  std::string remedy_;
  int checked_ = 0;
};

RawImages keep_first(RawImages raw, int64_t limit) {
  if (limit <= 0 || limit >= raw.count) return raw;
  raw.count = limit;
  raw.pixels.resize(static_cast<size_t>(limit * raw.image_size()));
  raw.labels.resize(static_cast<size_t>(limit));
  return raw;
}

RawImages fit_to_32(RawImages raw, Fit32 fit, const std::string& set) {
  if (fit == Fit32::none || (raw.height == 32 && raw.width == 32)) return raw;
  PEEL_CHECK(raw.height == 28 && raw.width == 28, "{}: fitting to 32x32 needs 28x28 images, got {}x{}", set, raw.height,
             raw.width);
  return fit == Fit32::pad ? pad_images(raw, 2) : resize_bilinear(raw, 32, 32);
}

Dataset empty_like(const Dataset& data, int64_t n) {
  Dataset out;
  out.name = data.name;
  out.split = data.split;
  out.num_classes = data.num_classes;
  out.class_names = data.class_names;
  out.mean = data.mean;
  out.std = data.std;
  out.padding_value = data.padding_value;
  out.file_check = data.file_check;
  out.images = Tensor::empty({n, data.channels(), data.height(), data.width()});
  out.labels.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(static_cast<size_t>(num_classes), 0);
  for (int64_t y : labels) ++counts[static_cast<size_t>(y)];
  return counts;
}

Normalization normalization_for(const std::string& name) {
  if (name == "mnist") return {{0.1307f}, {0.3081f}};
  if (name == "fashion-mnist") return {{0.2860f}, {0.3530f}};
  if (name == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.247f, 0.243f, 0.261f}};
  PEEL_FAIL("normalization_for: no fixed normalisation for data set '{}'", name);
}

std::vector<std::string> dataset_names() { return {"mnist", "fashion-mnist", "cifar10", "synthetic"}; }

Dataset from_raw(const RawImages& raw, const std::string& name, const std::string& split, int64_t num_classes,
                 std::vector<std::string> class_names, const Normalization* norm) {
  const int64_t C = raw.channels, plane = raw.height * raw.width;
  PEEL_CHECK(static_cast<int64_t>(raw.pixels.size()) == raw.count * raw.image_size() &&
                 static_cast<int64_t>(raw.labels.size()) == raw.count,
             "from_raw({}): {} images of {}x{}x{} need {} pixels and {} labels, got {} and {}", name, raw.count, C,
             raw.height, raw.width, raw.count * raw.image_size(), raw.count, raw.pixels.size(), raw.labels.size());
  PEEL_CHECK(!norm || (static_cast<int64_t>(norm->mean.size()) == C && static_cast<int64_t>(norm->std.size()) == C),
             "from_raw({}): normalisation has {} means for {} channels", name, norm ? norm->mean.size() : 0, C);
  Dataset data;
  data.name = name;
  data.split = split;
  data.num_classes = num_classes;
  data.class_names = std::move(class_names);
  data.labels = raw.labels;
  for (int64_t y : data.labels)
    PEEL_CHECK(y >= 0 && y < num_classes, "from_raw({}): label {} outside [0, {})", name, y, num_classes);
  // One lookup table per channel: exactly float32 (p / 255.f - mean) / std, as torchvision computes.
  std::vector<float> table(static_cast<size_t>(256 * C));
  for (int64_t c = 0; c < C; ++c) {
    for (int p = 0; p < 256; ++p) {
      float v = static_cast<float>(p) / 255.f;
      if (norm) v = (v - norm->mean[c]) / norm->std[c];
      table[c * 256 + p] = v;
    }
    data.padding_value.push_back(table[c * 256]);
  }
  if (norm) {
    data.mean = norm->mean;
    data.std = norm->std;
  }
  data.images = Tensor::empty({raw.count, C, raw.height, raw.width});
  float* out = data.images.data();
  const uint8_t* in = raw.pixels.data();
  parallel_for(raw.count * C, 64, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float* t = table.data() + (p % C) * 256;
      for (int64_t i = 0; i < plane; ++i) out[p * plane + i] = t[in[p * plane + i]];
    }
  });
  return data;
}

Dataset load_dataset(const std::string& name, const std::string& split, const std::string& data_dir,
                     const LoadOptions& options) {
  PEEL_CHECK(split == "train" || split == "test", "load_dataset({}): split must be train or test, got '{}'", name,
             split);
  const Normalization* norm = nullptr;
  Normalization constants;
  if (name != "synthetic" && options.normalize) {
    constants = normalization_for(name);
    norm = &constants;
  }
  if (name == "mnist" || name == "fashion-mnist") {
    const fs::path dir = fs::path(data_dir) / name;
    const std::string prefix = split == "train" ? "train" : "t10k";
    const std::string images = find_idx(dir, prefix + "-images-idx3-ubyte", name);
    const std::string labels = find_idx(dir, prefix + "-labels-idx1-ubyte", name);
    CheckedFiles files(name, dir, data_dir);
    RawImages raw = idx_to_images(decode_idx(files.read(images), images), images,
                                  decode_idx(files.read(labels), labels), labels, 10);
    raw = fit_to_32(keep_first(std::move(raw), options.limit), options.fit32, name);
    Dataset data = from_raw(raw, name, split, 10, name == "mnist" ? digit_names(10) : kFashionClasses, norm);
    data.file_check = files.description();
    return data;
  }
  if (name == "cifar10") {
    const fs::path dir = fs::path(data_dir) / "cifar10";
    CheckedFiles files(name, dir, data_dir);
    RawImages raw;
    for (const std::string& path : cifar10_files(dir.string(), split))
      append(raw, parse_cifar10_batch(io::maybe_gunzip(files.read(path), path), path));
    raw = fit_to_32(keep_first(std::move(raw), options.limit), options.fit32, name);
    Dataset data = from_raw(raw, name, split, 10, kCifarClasses, norm);
    data.file_check = files.description();
    return data;
  }
  if (name == "synthetic") {
    Dataset data = make_synthetic(options.synthetic, split);
    data.file_check = "generated: no files";
    if (options.limit > 0 && options.limit < data.size()) {
      std::vector<int64_t> first(static_cast<size_t>(options.limit));
      for (int64_t i = 0; i < options.limit; ++i) first[i] = i;
      data = subset(data, first);
    }
    if (options.fit32 != Fit32::none && !(data.height() == 32 && data.width() == 32)) {
      PEEL_CHECK(options.fit32 == Fit32::pad && data.height() == 28 && data.width() == 28,
                 "synthetic: only padding 28x28 to 32x32 applies (got {}x{}); or set the synthetic image size",
                 data.height(), data.width());
      data = pad_images(data, 2);
    }
    return data;
  }
  PEEL_FAIL("load_dataset: unknown data set '{}' (choose mnist, fashion-mnist, cifar10 or synthetic)", name);
}

Dataset subset(const Dataset& data, const std::vector<int64_t>& indices) {
  const int64_t n = static_cast<int64_t>(indices.size());
  Dataset out = empty_like(data, n);
  const int64_t d = data.channels() * data.height() * data.width();
  const Tensor source = data.images.contiguous();
  const float* in = source.data();
  float* dst = out.images.data();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = indices[i];
    PEEL_CHECK(j >= 0 && j < data.size(), "subset: index {} outside [0, {})", j, data.size());
    std::memcpy(dst + i * d, in + j * d, static_cast<size_t>(d) * sizeof(float));
    out.labels[i] = data.labels[j];
  }
  return out;
}

Dataset select_classes(const Dataset& data, const std::vector<int64_t>& classes, bool relabel) {
  std::vector<int64_t> new_label(static_cast<size_t>(data.num_classes), -1);
  for (size_t i = 0; i < classes.size(); ++i) {
    const int64_t k = classes[i];
    PEEL_CHECK(k >= 0 && k < data.num_classes, "select_classes: class {} outside [0, {})", k, data.num_classes);
    PEEL_CHECK(new_label[k] < 0, "select_classes: class {} listed twice", k);
    new_label[k] = static_cast<int64_t>(i);
  }
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < data.size(); ++i)
    if (new_label[data.labels[i]] >= 0) keep.push_back(i);
  Dataset out = subset(data, keep);
  if (relabel) {
    for (int64_t& y : out.labels) y = new_label[y];
    out.num_classes = static_cast<int64_t>(classes.size());
    std::vector<std::string> names;
    for (int64_t k : classes)
      names.push_back(k < static_cast<int64_t>(data.class_names.size()) ? data.class_names[k] : std::to_string(k));
    out.class_names = names;
  }
  return out;
}

Dataset pad_images(const Dataset& data, int64_t pad) {
  PEEL_CHECK(pad >= 0, "pad_images: padding must be >= 0, got {}", pad);
  const int64_t n = data.size(), C = data.channels(), H = data.height(), W = data.width();
  const int64_t HO = H + 2 * pad, WO = W + 2 * pad;
  Dataset out = empty_like(data, 0);
  out.labels = data.labels;
  out.images = Tensor::empty({n, C, HO, WO});
  const Tensor source = data.images.contiguous();
  const float* in = source.data();
  float* dst = out.images.data();
  for (int64_t p = 0; p < n * C; ++p) {
    const float fill = data.padding_value.empty() ? 0.f : data.padding_value[p % C];
    std::fill_n(dst + p * HO * WO, HO * WO, fill);
    for (int64_t y = 0; y < H; ++y) std::copy_n(in + (p * H + y) * W, W, dst + p * HO * WO + (y + pad) * WO + pad);
  }
  return out;
}

std::vector<std::vector<int64_t>> indices_by_class(const std::vector<int64_t>& labels, int64_t num_classes) {
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (int64_t i = 0; i < static_cast<int64_t>(labels.size()); ++i) {
    const int64_t y = labels[i];
    PEEL_CHECK(y >= 0 && y < num_classes, "indices_by_class: label {} at index {} outside [0, {})", y, i, num_classes);
    by_class[y].push_back(i);
  }
  return by_class;
}

}  // namespace peel::data
