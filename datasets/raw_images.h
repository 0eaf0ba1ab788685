// Images as the files store them: 8-bit pixels, before any conversion to float. Readers produce
// this; geometric changes that must happen on pixels (padding 28->32, PIL-style resizing) apply
// here, before normalisation, exactly where torchvision applies them.
#pragma once

#include <cstdint>
#include <vector>

namespace peel::data {

struct RawImages {
  int64_t count = 0, channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // (count, channels, height, width), row-major
  std::vector<int64_t> labels;  // one per image

  int64_t image_size() const { return channels * height * width; }
};

// Appends b's images to a's; shapes must agree.
void append(RawImages& a, const RawImages& b);

// Adds `pad` rows/columns of 0-valued pixels on every side (torchvision's Pad(pad), fill 0).
RawImages pad_images(const RawImages& in, int64_t pad);

// Resizes with PIL's bilinear filter on 8-bit images (what torchvision's Resize does to a PIL
// image, and what the Minority Collapse code applies to Fashion-MNIST: Resize(32)). Same
// arithmetic as Pillow 9: separable triangle filter, horizontal pass then vertical, each rounded
// to 8 bits with 22-bit fixed-point coefficients.
RawImages resize_bilinear(const RawImages& in, int64_t height, int64_t width);

}  // namespace peel::data
