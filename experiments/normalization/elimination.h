// Elimination-singularity instruments (Qiao et al., "Rethinking Normalization and Elimination
// Singularity in Neural Networks"): how close each activation layer of a network is to having
// channels that are off for every input. The paper's exact measure is not in its released code;
// these definitions are peel's (docs/normalization.md).
//
// A probe set of training images (choose_probe) goes through the network with every activation
// site (nn/activation_site.h: a norm slot with its ReLU or TLU, a bare ReLU, a residual ReLU/TLU)
// observed. Per site and channel c, over every probe image n and position s:
//   eliminated_c  = post-activation at its floor everywhere: max_{n,s} post(n,c,s) <= floor_c
//                   (floor 0 for ReLU, so post == 0 everywhere; tau_c for TLU), i.e. the channel
//                   passes no signal and no gradient for any probe image;
//   mean_c, std_c = mean and (population) standard deviation of the pre-activation over (n, s);
//   z_c           = (mean_c - floor_c) / std_c, in standard deviations above the floor: very negative
//                   means near elimination (a channel is off unless it is z_c sigmas above its mean).
// Reported per site: the fraction of channels eliminated, and quantiles over channels of mean_c,
// std_c and z_c (linear interpolation between order statistics, NumPy's default).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "experiments/collapse/collapse.h"
#include "nn/models.h"

namespace peel {

// `count` distinct indices into a split of `dataset_size` images, drawn by `seed` (the first `count`
// of a Fisher-Yates permutation), sorted. All of them when count >= dataset_size.
std::vector<int64_t> choose_probe(int64_t dataset_size, int64_t count, uint64_t seed);
// The images at those indices: (count, C, H, W).
Tensor probe_images(const data::Dataset& train, int64_t count, uint64_t seed);

// Which forward the probe watches.
//   eval   running statistics for BN (and BCN's BN part), images in batches: each image's activations
//          do not depend on the others, the numbers do not depend on the batch size, and nothing in
//          the model changes. GN, LN, FRN, WN, none and EstBN compute the same function in train
//          and eval mode (EstBN's training forward only also moves its estimates), so only BN
//          differs from what training sees. The default.
//   train  the training-mode forward of the whole probe set as one batch (BN normalises with the
//          probe's own statistics, as at a training step with batch = probe size); every buffer
//          (running statistics, EstBN's estimates) is restored afterwards.
enum class ProbeMode { eval, train };
const char* to_string(ProbeMode mode);  // "eval" | "train"

struct EliminationOptions {
  ProbeMode mode = ProbeMode::eval;
  int64_t batch_size = 128;  // eval mode: images per forward (the results do not depend on it)
  std::vector<double> quantiles = {0.05, 0.25, 0.5, 0.75, 0.95};
};

struct SiteElimination {
  std::string site;  // module path: "bn1", "features.1", "layer1.0.act", "head.4"
  int64_t channels = 0;
  std::vector<bool> eliminated;                  // per channel
  std::vector<double> pre_mean, pre_std, pre_z;  // per channel
  double eliminated_fraction() const;
};

struct EliminationMetrics {
  int64_t probe_images = 0;
  ProbeMode mode = ProbeMode::eval;
  std::vector<double> quantiles;
  std::vector<SiteElimination> sites;

  // prefix+"eliminated" (fraction over the channels of all sites), then per site, in order,
  // prefix+<site>+"_eliminated", and for q in quantiles (q05 for 0.05, q50 for 0.5, ...)
  // prefix+<site>+"_premean_q05", ... "_prestd_q05", ... "_prez_q05", ...
  MetricColumns to_columns(const std::string& prefix = "es_") const;
};

// Runs the probe through `model` with every activation site observed. The model's mode (train/eval)
// and state are as before afterwards; no gradient is recorded.
EliminationMetrics measure_elimination(nn::Network& model, const Tensor& probe, const EliminationOptions& options = {});

// The q-quantile of `values` (NaNs last when sorting; not removed), NumPy's linear rule.
double quantile(std::vector<double> values, double q);

}  // namespace peel
