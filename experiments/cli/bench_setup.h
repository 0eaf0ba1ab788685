// What `peel bench train-step` and `peel bench infer` share: the options that choose the reference
// model and the batch, the model itself, and a batch of random images in the loader's layout.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "nn/models.h"
#include "tensor/conv/conv.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace peel::cli {

struct BenchModelOptions {
  std::string model = "small_cnn";
  double width = 1.0;
  nn::Norm norm = nn::Norm::bn;
  nn::BcnBatchPart bcn_batch_part = nn::BcnBatchPart::batch;
  double estbn_moving_speed = nn::kDefaultEstbnMovingSpeed;
  int64_t batch = 128;
  int threads = 0;
  int warmup = 3;
  int repetitions = 7;
  ConvBackend conv_backend = default_conv_backend();
};
// --model --width --norm --bcn-batch-part --estbn-moving-speed --batch --threads --warmup
// --repetitions --conv-backend.
void add_bench_model_options(CLI::App* cmd, BenchModelOptions& o);

struct BenchModel {
  nn::ModelConfig config;  // small_cnn reads 1 channel (MNIST-like), the others 3 (CIFAR-like)
  std::shared_ptr<nn::Network> model;
  Tensor images;  // (N, C, H, W) random normal values in channels-last memory (N, H, W, C)
};
// Sets the thread count and the convolution backend, then builds the model and the images.
BenchModel make_bench_model(const BenchModelOptions& o, Generator& gen);

double peak_rss_mb();  // of this process so far (getrusage)

}  // namespace peel::cli
