#include "nn/weight_norm_init.h"

#include <cmath>

#include "tensor/error.h"

namespace peel::nn {

namespace {

// Keeps the output of the one layer it is attached to (the last forward's).
class KeepOutput : public LayerOutputProbe {
 public:
  void record(const Tensor& output) override { output_ = output; }
  const Tensor& output() const { return output_; }

 private:
  Tensor output_;
};

// mu_c and sigma_c (population) of `output`, logical (N, C, ...), per channel c over every other axis.
void channel_statistics(const Tensor& output, std::vector<double>& mean, std::vector<double>& stddev) {
  PEEL_CHECK(output.dim() >= 2, "weight_norm_data_init: a layer output of shape {} has no channel axis",
             to_string(output.shape()));
  const int64_t n = output.size(0), channels = output.size(1), inner = output.numel() / (n * channels);
  const std::vector<float> values = output.to_vector();  // row-major (N, C, inner), whatever the layout
  mean.assign(static_cast<size_t>(channels), 0.0);
  stddev.assign(static_cast<size_t>(channels), 0.0);
  const auto count = static_cast<double>(n * inner);
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < inner; ++s) sum += values[static_cast<size_t>((i * channels + c) * inner + s)];
    const double mu = sum / count;
    double squares = 0;  // two passes: the deviations, not E[x^2] - mu^2, which cancels for large means
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < inner; ++s) {
        const double d = values[static_cast<size_t>((i * channels + c) * inner + s)] - mu;
        squares += d * d;
      }
    mean[static_cast<size_t>(c)] = mu;
    stddev[static_cast<size_t>(c)] = std::sqrt(squares / count);
  }
}

}  // namespace

std::vector<WeightNormInitLayer> weight_norm_data_init(Module& model, const Tensor& images) {
  PEEL_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0,
             "weight_norm_data_init: needs a non-empty (N, C, H, W) batch, got {}",
             images.defined() ? to_string(images.shape()) : "undefined");
  std::vector<std::pair<std::string, WeightedLayer*>> layers;
  for (auto& [name, module] : model.named_modules())
    if (auto* layer = dynamic_cast<WeightedLayer*>(module); layer && layer->reparam == WeightReparam::weight_norm)
      layers.emplace_back(name, layer);

  const bool was_training = model.is_training();
  model.eval();  // no norm layer is expected, but a BN elsewhere must not move its running statistics
  ag::NoGradGuard no_grad;
  std::vector<WeightNormInitLayer> found;
  for (auto& [name, layer] : layers) {
    KeepOutput keep;
    layer->output_probe = &keep;
    try {
      model.forward(ag::Variable(images));
    } catch (...) {
      layer->output_probe = nullptr;
      model.train(was_training);
      throw;
    }
    layer->output_probe = nullptr;
    WeightNormInitLayer entry{.name = name};
    channel_statistics(keep.output(), entry.mean, entry.stddev);
    const auto units = static_cast<int64_t>(entry.mean.size());
    PEEL_CHECK(layer->weight_g.numel() == units, "weight_norm_data_init: {} has {} g values for {} output units", name,
               layer->weight_g.numel(), units);
    std::vector<float> g = layer->weight_g.value().to_vector();
    std::vector<float> b = layer->bias.defined() ? layer->bias.value().to_vector() : std::vector<float>{};
    for (int64_t c = 0; c < units; ++c) {
      const auto i = static_cast<size_t>(c);
      const double sigma = entry.stddev[i];
      const double scale = sigma > 0 ? 1 / sigma : 1;  // a constant unit: centre it, leave its scale
      g[i] = static_cast<float>(g[i] * scale);
      if (!b.empty()) b[i] = static_cast<float>((b[i] - entry.mean[i]) * scale);
    }
    // In place, so whoever holds the parameters (an optimizer) sees the new values.
    layer->weight_g.value().copy_(Tensor::from_vector(g, layer->weight_g.shape()));
    if (!b.empty()) layer->bias.value().copy_(Tensor::from_vector(b, layer->bias.shape()));
    found.push_back(std::move(entry));
  }
  model.train(was_training);
  return found;
}

}  // namespace peel::nn
