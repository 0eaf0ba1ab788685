#include "datasets/raw_images.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace peel::data {

void append(RawImages& a, const RawImages& b) {
  if (a.count == 0 && a.pixels.empty()) {
    a = b;
    return;
  }
  PEEL_CHECK(a.channels == b.channels && a.height == b.height && a.width == b.width,
             "append images: shapes {}x{}x{} and {}x{}x{} differ", a.channels, a.height, a.width, b.channels, b.height,
             b.width);
  a.pixels.insert(a.pixels.end(), b.pixels.begin(), b.pixels.end());
  a.labels.insert(a.labels.end(), b.labels.begin(), b.labels.end());
  a.count += b.count;
}

RawImages pad_images(const RawImages& in, int64_t pad) {
  PEEL_CHECK(pad >= 0, "pad_images: padding must be >= 0, got {}", pad);
  RawImages out;
  out.count = in.count;
  out.channels = in.channels;
  out.height = in.height + 2 * pad;
  out.width = in.width + 2 * pad;
  out.labels = in.labels;
  out.pixels.assign(static_cast<size_t>(out.count * out.image_size()), 0);
  for (int64_t plane = 0; plane < in.count * in.channels; ++plane) {
    const uint8_t* src = in.pixels.data() + plane * in.height * in.width;
    uint8_t* dst = out.pixels.data() + plane * out.height * out.width;
    for (int64_t y = 0; y < in.height; ++y)
      std::copy_n(src + y * in.width, in.width, dst + (y + pad) * out.width + pad);
  }
  return out;
}

namespace {

// Pillow's Resample.c, 8-bit path: per output position, the first input index, the tap count and
// fixed-point weights of a triangle filter widened by the downscale factor.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Taps {
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // out_size x max_taps
  int max_taps = 0;
};

Taps bilinear_taps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  Taps t;
  t.max_taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.max_taps, 0);
  std::vector<double> k(t.max_taps);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // (int)(x + 0.5) exactly as Resample.c computes it, so that the taps match Pillow's bit for bit.
    int xmin = static_cast<int>(center - support + 0.5);  // NOLINT(bugprone-incorrect-roundings): as Pillow
    xmin = std::max(xmin, 0);
    int xmax = static_cast<int>(center + support + 0.5);  // NOLINT(bugprone-incorrect-roundings): as Pillow
    xmax = std::min(xmax, in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double d = std::abs((x + xmin - center + 0.5) * ss);
      k[x] = d < 1.0 ? 1.0 - d : 0.0;
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      t.weights[static_cast<size_t>(xx) * t.max_taps + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

RawImages resize_bilinear(const RawImages& in, int64_t height, int64_t width) {
  PEEL_CHECK(height > 0 && width > 0 && in.height > 0 && in.width > 0, "resize_bilinear: cannot resize {}x{} to {}x{}",
             in.height, in.width, height, width);
  const int ih = static_cast<int>(in.height), iw = static_cast<int>(in.width);
  const int oh = static_cast<int>(height), ow = static_cast<int>(width);
  const Taps horizontal = bilinear_taps(iw, ow), vertical = bilinear_taps(ih, oh);
  RawImages out;
  out.count = in.count;
  out.channels = in.channels;
  out.height = height;
  out.width = width;
  out.labels = in.labels;
  out.pixels.resize(static_cast<size_t>(out.count * out.image_size()));
  // Pillow skips a pass whose size does not change; the pass would be the identity anyway.
  std::vector<uint8_t> rows(static_cast<size_t>(ih) * ow);
  for (int64_t plane = 0; plane < in.count * in.channels; ++plane) {
    const uint8_t* src = in.pixels.data() + plane * ih * iw;
    uint8_t* dst = out.pixels.data() + plane * oh * ow;
    for (int y = 0; y < ih; ++y) {
      for (int x = 0; x < ow; ++x) {
        if (iw == ow) {
          rows[y * ow + x] = src[y * iw + x];
          continue;
        }
        int32_t acc = 1 << (kPrecisionBits - 1);
        const int32_t* w = &horizontal.weights[static_cast<size_t>(x) * horizontal.max_taps];
        for (int i = 0; i < horizontal.count[x]; ++i) acc += src[y * iw + horizontal.first[x] + i] * w[i];
        rows[y * ow + x] = clip8(acc);
      }
    }
    for (int y = 0; y < oh; ++y) {
      for (int x = 0; x < ow; ++x) {
        if (ih == oh) {
          dst[y * ow + x] = rows[y * ow + x];
          continue;
        }
        int32_t acc = 1 << (kPrecisionBits - 1);
        const int32_t* w = &vertical.weights[static_cast<size_t>(y) * vertical.max_taps];
        for (int i = 0; i < vertical.count[y]; ++i) acc += rows[(vertical.first[y] + i) * ow + x] * w[i];
        dst[y * ow + x] = clip8(acc);
      }
    }
  }
  return out;
}

}  // namespace peel::data
