// What a training run is: every setting that decides its numbers, as written to config.json.
//
// The struct, its enums and their JSON form are declared once here; nlohmann's macros write and
// read them (a field missing from an older config.json takes its default), and the command line
// reads the enums through the same names (enum_names<E>()).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/collapse/collapse.h"
#include "experiments/distributed/data_parallel.h"
#include "nn/models.h"
#include "tensor/conv/conv.h"

namespace peel {

enum class Loss { cross_entropy, square };
NLOHMANN_JSON_SERIALIZE_ENUM(Loss, {{Loss::cross_entropy, "ce"}, {Loss::square, "mse"}})

// Which images an epoch visits: each once (plain), each minority image `oversample_factor` times
// (the authors' weight_ratio), or classes drawn equally often (balanced).
enum class Sampler { plain, oversample, balanced };
NLOHMANN_JSON_SERIALIZE_ENUM(Sampler, {{Sampler::plain, "plain"},
                                       {Sampler::oversample, "oversample"},
                                       {Sampler::balanced, "balanced"}})

// Loss reweighting: none, or class c weighted by n_max / n_c (so the minority weight is R).
enum class ClassWeights { none, inverse };
NLOHMANN_JSON_SERIALIZE_ENUM(ClassWeights, {{ClassWeights::none, "none"}, {ClassWeights::inverse, "inverse"}})

// The learning-rate schedule: multistep (x0.1 at `milestones`; none given = at 1/3 and 2/3 of
// the epochs, as both papers), cosine to 0, or constant; each after `warmup_epochs` of linear warm-up.
enum class Schedule { multistep, cosine, constant };
NLOHMANN_JSON_SERIALIZE_ENUM(Schedule, {{Schedule::multistep, "multistep"},
                                        {Schedule::cosine, "cosine"},
                                        {Schedule::constant, "constant"}})

NLOHMANN_JSON_SERIALIZE_ENUM(GlobalMean,
                             {{GlobalMean::AllSamples, "all-samples"}, {GlobalMean::ClassMeans, "class-means"}})
NLOHMANN_JSON_SERIALIZE_ENUM(ConvBackend, {{ConvBackend::kDirect, "direct"},
                                           {ConvBackend::kIm2col, "im2col"},
                                           {ConvBackend::kOneDnn, "onednn"},
                                           {ConvBackend::kReference, "reference"}})

namespace nn {
// The normalisations of nn/models.h under the names --norm and config.json use.
NLOHMANN_JSON_SERIALIZE_ENUM(Norm, {{Norm::bn, "bn"},
                                    {Norm::gn, "gn"},
                                    {Norm::ln, "ln"},
                                    {Norm::gn_ws, "gn+ws"},
                                    {Norm::bcn_ws, "bcn+ws"},
                                    {Norm::frn, "frn"},
                                    {Norm::wn, "wn"},
                                    {Norm::none, "none"}})
NLOHMANN_JSON_SERIALIZE_ENUM(BcnBatchPart, {{BcnBatchPart::batch, "batch"}, {BcnBatchPart::estimated, "estimated"}})
}  // namespace nn

// How a --norm wn model starts: Salimans & Kingma's data-dependent initialisation of g and b from one
// batch of training images (nn/weight_norm_init.h), or torch.nn.utils.weight_norm's g = ||v|| (what
// peel did before the choice existed). Other norms have no weight-normalised layer and ignore it.
enum class WnInit { data, norm };
NLOHMANN_JSON_SERIALIZE_ENUM(WnInit, {{WnInit::data, "data"}, {WnInit::norm, "norm"}})
// The images the data-dependent initialisation sees: min(batch, this), drawn by the run's seed.
inline constexpr int64_t kMaxWnInitImages = 512;

namespace dist {
NLOHMANN_JSON_SERIALIZE_ENUM(GradientSum, {{GradientSum::overlap, "overlap"}, {GradientSum::after, "after"}})
}  // namespace dist

// The JSON names of an enum's values, in declaration order, for the command line's transformers.
// (nlohmann maps a value past the last one to the table's first name, a repeat, which ends the walk.)
template <class E>
std::map<std::string, E> enum_names() {
  std::map<std::string, E> names;
  for (int i = 0;; ++i) {
    const std::string name = nlohmann::json(static_cast<E>(i)).template get<std::string>();
    if (!names.emplace(name, static_cast<E>(i)).second) return names;
  }
}
template <class E>
std::string enum_name(E value) {
  return nlohmann::json(value).template get<std::string>();
}

struct TrainConfig {
  // Data
  std::string dataset = "fashion-mnist";  // data::dataset_names()
  std::string data_dir = "data";
  int64_t majority_classes = 0;  // K_A; 0 = every class is a majority class (balanced)
  int64_t n_major = 0;           // n_A images per majority class; 0 = as many as the rarest class has
  double ratio = 1.0;            // R: minority classes keep floor(n_A / R) images, as the authors' code
  int64_t test_limit = 0;        // > 0: evaluate on the first test_limit test images only
  bool augment = false;          // random crop + flip (CIFAR-10)
  // Model and loss
  std::string model = "small_cnn";  // nn::model_names()
  double width = 1.0;
  nn::Norm norm = nn::Norm::bn;                               // the reference models' batch norm unless asked otherwise
  nn::BcnBatchPart bcn_batch_part = nn::BcnBatchPart::batch;  // bcn+ws: BN, or EstBN for micro-batches
  double estbn_moving_speed = 0.01;  // EstBN's r (nn::kDefaultEstbnMovingSpeed); bcn+ws with estimated
  WnInit wn_init = WnInit::data;     // wn: how g and b start
  Loss loss = Loss::cross_entropy;
  double mse_target_scale = 1, mse_loss_scale = 1;
  // Mitigation
  Sampler sampler = Sampler::plain;
  int64_t oversample_factor = 0;  // 0 = round(R)
  ClassWeights class_weights = ClassWeights::none;
  // Optimisation (defaults: the Minority Collapse paper's recipe). Reals are kept as double so that
  // config.json says 0.1, not 0.100000001; training uses them as float.
  double lr = 0.1;
  Schedule schedule = Schedule::multistep;
  std::vector<int64_t> milestones;  // multistep; empty = at epochs/3 and 2*epochs/3
  int64_t warmup_epochs = 0;
  int64_t epochs = 30;
  int64_t batch = 128;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  // Measurement
  int64_t metrics_every = 1;  // collapse metrics every this many epochs (and at the last)
  GlobalMean global_mean = GlobalMean::AllSamples;
  // The square-loss study's measurements (collapse/rank_over_training.h), off by default: the rank
  // measures of every weight, the classifier and the class means, with spectra/epoch-NNN.json; and
  // the MSE decomposition L_NC1, L_NC2/3, L_perp. rank_epsilon: the eps of the s_i / s_1 > eps count.
  bool measure_rank = false, measure_mse_decomposition = false;
  double rank_epsilon = 1e-3;
  int64_t elimination_probe = 0;  // > 0: es_* columns on this many training images (docs/normalization.md)
  // Run
  uint64_t seed = 666;
  int threads = 0;  // 0 = all cores
  ConvBackend conv_backend = default_conv_backend();
  // Data-parallel runs (mpirun -np N): batch-norm statistics of the whole batch rather than of each
  // rank's shard (PyTorch DDP's default, false). With one process both are the same.
  bool sync_bn = false;
  // When the gradient sums run (dist::GradientSum): overlapping backward, or after it. The same
  // numbers either way.
  dist::GradientSum allreduce = dist::GradientSum::overlap;
  int64_t bucket_kib = 1024;  // the largest gradient bucket, in KiB (1024: 2^18 floats)
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TrainConfig, dataset, data_dir, majority_classes, n_major, ratio,
                                                test_limit, augment, model, width, norm, bcn_batch_part,
                                                estbn_moving_speed, wn_init, loss, mse_target_scale, mse_loss_scale,
                                                sampler, oversample_factor, class_weights, lr, schedule, milestones,
                                                warmup_epochs, epochs, batch, momentum, weight_decay, metrics_every,
                                                global_mean, measure_rank, measure_mse_decomposition, rank_epsilon,
                                                elimination_probe, seed, threads, conv_backend, sync_bn, allreduce,
                                                bucket_kib)

// Throws naming the first setting that makes no sense (or that no choice offers).
void check_config(const TrainConfig& config);

// The multistep milestones this config trains with: its own, or epochs/3 and 2*epochs/3
// (116 and 233 of 350, as the papers' int(350/3)), leaving out those that fall on epoch 0.
std::vector<int64_t> effective_milestones(const TrainConfig& config);

// Settings that decide how a process runs, not what it computes; a run may be resumed with other
// values of these (its numbers then differ only in the last bits, from another reduction order).
inline const std::vector<std::string> kExecutionSettings{"data_dir", "threads", "conv_backend", "allreduce",
                                                         "bucket_kib"};

// "field: a (in the folder) vs b (asked)" for every setting but the execution ones that differs.
std::vector<std::string> differing_settings(const TrainConfig& stored, const TrainConfig& asked);

// Reads `path` (a run's config.json): the JSON's error, a wrong type or an unknown choice is
// reported naming the file and the field.
TrainConfig read_train_config(const std::string& path);

}  // namespace peel
