#include "datasets/synthetic.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/random.h"

namespace peel::data {
namespace {

// White noise, box-blurred (5x5, edges clamped), rescaled to RMS `signal`: one class mean.
std::vector<float> smooth_mean(const SyntheticOptions& o, Generator& gen) {
  const int64_t H = o.height, W = o.width, plane = H * W;
  std::vector<float> white(static_cast<size_t>(o.channels * plane)), out(white.size());
  for (float& v : white) v = gen.normal();
  constexpr int64_t r = 2;
  for (int64_t c = 0; c < o.channels; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        double acc = 0;
        for (int64_t dy = -r; dy <= r; ++dy)
          for (int64_t dx = -r; dx <= r; ++dx) {
            const int64_t yy = std::clamp(y + dy, int64_t{0}, H - 1), xx = std::clamp(x + dx, int64_t{0}, W - 1);
            acc += white[c * plane + yy * W + xx];
          }
        out[c * plane + y * W + x] = static_cast<float>(acc);
      }
  double square_sum = 0;
  for (float v : out) square_sum += double{v} * v;
  const double rms = std::sqrt(square_sum / static_cast<double>(out.size()));
  const float scale = rms > 0 ? static_cast<float>(o.signal / rms) : 0.f;
  for (float& v : out) v *= scale;
  return out;
}

}  // namespace

Dataset make_synthetic(const SyntheticOptions& o, const std::string& split) {
  PEEL_CHECK(split == "train" || split == "test", "synthetic: split must be train or test, got '{}'", split);
  PEEL_CHECK(o.num_classes >= 1 && o.channels >= 1 && o.height >= 1 && o.width >= 1 && o.train_per_class >= 0 &&
                 o.test_per_class >= 0 && o.noise >= 0,
             "synthetic: invalid options: {} classes, image {}x{}x{}, {}/{} per class, noise {}", o.num_classes,
             o.channels, o.height, o.width, o.train_per_class, o.test_per_class, o.noise);
  Generator base(o.seed);
  Generator mean_gen = base.fork(0), train_gen = base.fork(1), test_gen = base.fork(2);
  std::vector<std::vector<float>> means;
  for (int64_t k = 0; k < o.num_classes; ++k) means.push_back(smooth_mean(o, mean_gen));

  Generator& gen = split == "train" ? train_gen : test_gen;
  const int64_t n = o.num_classes * (split == "train" ? o.train_per_class : o.test_per_class);
  const int64_t d = o.channels * o.height * o.width;
  Dataset data;
  data.name = "synthetic";
  data.split = split;
  data.num_classes = o.num_classes;
  for (int64_t k = 0; k < o.num_classes; ++k) data.class_names.push_back(std::to_string(k));
  data.padding_value.assign(static_cast<size_t>(o.channels), 0.f);
  data.images = Tensor::empty({n, o.channels, o.height, o.width});
  data.labels.resize(static_cast<size_t>(n));
  float* x = data.images.data();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = i % o.num_classes;
    data.labels[i] = k;
    const float* mu = means[k].data();
    for (int64_t j = 0; j < d; ++j) x[i * d + j] = mu[j] + o.noise * gen.normal();
  }
  return data;
}

}  // namespace peel::data
