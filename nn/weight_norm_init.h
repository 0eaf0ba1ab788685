// Salimans & Kingma's data-dependent initialisation of weight-normalised layers ("Weight
// Normalization", 2016, section 3). torch.nn.utils.weight_norm, which peel copies, starts every
// layer at g = ||v||, so the layer computes what its plain initialisation would; through several
// layers without a norm the signal then shrinks or grows with depth. Salimans & Kingma instead
// fix g and b from one batch of data so that every unit's output starts at mean 0 and variance 1:
//
//   for each weight-normalised layer, in forward order (each sees the re-initialised layers before
//   it): t = the layer's output on the batch; per output unit (channel) c, mu_c and sigma_c are the
//   mean and the population standard deviation of t over the batch (and the spatial positions of a
//   convolution); then g_c <- g_c / sigma_c and b_c <- (b_c - mu_c) / sigma_c.
//
// The layer then outputs (t - mu) / sigma on that batch: g/sigma * (v.x)/||v|| + (b - mu)/sigma.
// Only layers with WeightReparam::weight_norm change; peel's classifiers are plain Linear layers (the
// collapse metrics read their W), so they keep their usual initialisation.
#pragma once

#include <string>
#include <vector>

#include "nn/layers.h"

namespace peel::nn {

// What the initialisation found at one layer, before rescaling it.
struct WeightNormInitLayer {
  std::string name;                  // module path: "conv1", "features.0", "head.3"
  std::vector<double> mean, stddev;  // per output unit: mu_c, sigma_c of the layer's output
};

// Re-initialises every weight-normalised layer of `model` from `images` (N, C, H, W), in the
// order named_modules() lists them (registration order, which is forward order for peel's models:
// a ResNet shortcut convolution reads the block's input, so its place among the block's layers does
// not matter). One forward of the whole batch per layer, in eval mode and without a gradient; the
// model's mode is restored. A unit whose output is constant on the batch (sigma_c = 0) keeps its g
// and gets b_c - mu_c; a layer without a bias (none of peel's models has one) gets only the new g,
// so its output has std 1 but keeps mean mu/sigma. Returns one entry per layer changed (none when
// the model has no such layer).
std::vector<WeightNormInitLayer> weight_norm_data_init(Module& model, const Tensor& images);

}  // namespace peel::nn
