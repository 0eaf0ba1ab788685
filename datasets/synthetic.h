// A Gaussian-mixture data set that needs no download: class k's images are mu_k + noise * z, with
// z standard normal per pixel and mu_k a smooth random image (white noise box-blurred 5x5 per
// channel, rescaled to RMS `signal`). The means come from the seed alone, so the train and test
// splits share them; the samples of each split come from their own stream. Image i has label
// i % num_classes. With the defaults (signal 0.2, noise 1, 784 pixels) class means lie about 8
// noise standard deviations apart: a small net learns it to near 100% within an epoch.
#pragma once

#include <string>

#include "datasets/dataset.h"

namespace peel::data {

Dataset make_synthetic(const SyntheticOptions& options, const std::string& split);

}  // namespace peel::data
