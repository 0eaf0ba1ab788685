// A data set in memory: every image of one split as one float tensor, normalised, with its labels.
//
//   Dataset train = load_dataset("mnist", "train", default_data_dir());
//   train.images   // (60000, 1, 28, 28) float32, (pixel/255 - 0.1307) / 0.3081
//   train.labels   // 60000 values in 0..9
//
// Normalisation (per channel c): x = (p / 255 - mean[c]) / std[c], in float32, as torchvision's
// ToTensor + Normalize compute it. The constants (normalization_for):
//   mnist          mean 0.1307                    std 0.3081                  (the usual MNIST values)
//   fashion-mnist  mean 0.2860                    std 0.3530                  (the LPM code's values)
//   cifar10        mean (0.4914, 0.4822, 0.4465)  std (0.247, 0.243, 0.261)   (the LPM code's values)
//   synthetic      generated already centred and scaled: no transform
// Fitting 28x28 images to 32x32 happens on the 8-bit pixels, before normalisation, as torchvision
// does when Pad/Resize precede ToTensor: Fit32::pad adds two 0-valued pixels on every side (so the
// border holds -mean/std after normalisation: -0.4242 for MNIST); Fit32::bilinear is PIL's bilinear
// resize (the LPM code's Resize(32) for Fashion-MNIST).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/raw_images.h"
#include "tensor/tensor.h"

namespace peel::data {

enum class Fit32 { none, pad, bilinear };

// A Gaussian mixture (datasets/synthetic.h): K classes, each a smooth random mean image plus
// isotropic noise. Needs no download; quick to learn; fixed by its seed.
struct SyntheticOptions {
  int64_t num_classes = 10;
  int64_t channels = 1, height = 28, width = 28;
  int64_t train_per_class = 600;
  int64_t test_per_class = 100;
  float signal = 0.2f;  // RMS over pixels of each class mean
  float noise = 1.0f;   // standard deviation of the noise added to every pixel
  uint64_t seed = 0;
};

struct LoadOptions {
  Fit32 fit32 = Fit32::none;     // for 28x28 sets (no-op on 32x32 images)
  bool normalize = true;         // false: x = p / 255
  int64_t limit = 0;             // > 0: keep only the first `limit` images of the split (quick runs)
  SyntheticOptions synthetic{};  // used when the name is "synthetic"
};

struct Dataset {
  std::string name;             // mnist, fashion-mnist, cifar10, synthetic
  std::string split;            // train, test
  Tensor images;                // (N, C, H, W) float32, row-major contiguous
  std::vector<int64_t> labels;  // N labels in [0, num_classes)
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<float> mean, std;      // per channel, as applied; empty when no normalisation was applied
  std::vector<float> padding_value;  // per channel: the value of a 0 pixel (fill for padding and crops)
  // How the files behind it were checked, for the run's record: "2 file(s) checked against
  // data/mnist/manifest.json (size and SHA-256)", "not checked: data/cifar10 has no manifest.json",
  // or "generated: no files".
  std::string file_check;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
  std::vector<int64_t> class_counts() const;
};

struct Normalization {
  std::vector<float> mean, std;
};
// The per-channel constants above; throws for names without a fixed normalisation.
Normalization normalization_for(const std::string& name);

// mnist, fashion-mnist, cifar10, synthetic.
std::vector<std::string> dataset_names();

// Loads `split` ("train" or "test") of `name` from <data_dir>/<name>/ (files as `peel fetch` writes
// them; gzipped IDX files are read too). A missing file is an error that says how to fetch it.
// Every file read is checked against <data_dir>/<name>/manifest.json (its size and SHA-256): a
// changed, cut short or unlisted file is refused with an error naming it, what the manifest
// expects, what the file has, and the `peel fetch` command that repairs it. A folder without a
// manifest is read unchecked after a one-line warning on stderr (see Dataset::file_check).
Dataset load_dataset(const std::string& name, const std::string& split, const std::string& data_dir,
                     const LoadOptions& options = {});

// Converts 8-bit images: x = (p/255 - mean)/std, or p/255 when `norm` is null.
Dataset from_raw(const RawImages& raw, const std::string& name, const std::string& split, int64_t num_classes,
                 std::vector<std::string> class_names, const Normalization* norm);

// The images at `indices`, in that order (a copy).
Dataset subset(const Dataset& data, const std::vector<int64_t>& indices);

// The images whose label is in `classes`, in dataset order. With relabel, label classes[i] becomes
// i and num_classes becomes classes.size(); otherwise labels keep their values.
Dataset select_classes(const Dataset& data, const std::vector<int64_t>& classes, bool relabel = false);

// Pads every image by `pad` on each side with the data set's padding_value (float images).
Dataset pad_images(const Dataset& data, int64_t pad);

// For every class, the indices of its images in increasing order.
std::vector<std::vector<int64_t>> indices_by_class(const std::vector<int64_t>& labels, int64_t num_classes);

}  // namespace peel::data
