// Salimans & Kingma's data-dependent initialisation of weight-normalised layers
// (nn/weight_norm_init.h): afterwards every such layer's output has mean 0 and standard deviation 1
// per unit on the batch, the function is g/sigma * (v.x)/||v|| + (b - mu)/sigma as a plain
// computation gives it, the result depends only on the seed and the batch, and models without
// weight normalisation are untouched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "nn/models.h"
#include "nn/weight_norm_init.h"
#include "tensor/error.h"
#include "tensor/random.h"

using namespace peel;
using ::testing::ElementsAre;

namespace {

// Keeps the output of every weighted layer it is attached to, by layer.
struct Outputs : nn::LayerOutputProbe {
  std::vector<Tensor> seen;
  void record(const Tensor& output) override { seen.push_back(output); }
};

// Per channel of a logical (N, C, ...) tensor: mean and population standard deviation.
void channel_moments(const Tensor& t, std::vector<double>& mean, std::vector<double>& stddev) {
  const int64_t n = t.size(0), c = t.size(1), inner = t.numel() / (n * c);
  const std::vector<float> v = t.to_vector();
  mean.assign(static_cast<size_t>(c), 0);
  stddev.assign(static_cast<size_t>(c), 0);
  for (int64_t k = 0; k < c; ++k) {
    double sum = 0, squares = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < inner; ++s) sum += v[static_cast<size_t>((i * c + k) * inner + s)];
    const double mu = sum / static_cast<double>(n * inner);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < inner; ++s) {
        const double d = v[static_cast<size_t>((i * c + k) * inner + s)] - mu;
        squares += d * d;
      }
    mean[static_cast<size_t>(k)] = mu;
    stddev[static_cast<size_t>(k)] = std::sqrt(squares / static_cast<double>(n * inner));
  }
}

std::vector<nn::WeightedLayer*> weight_normalised_layers(nn::Module& model) {
  std::vector<nn::WeightedLayer*> layers;
  for (auto& [name, m] : model.named_modules())
    if (auto* l = dynamic_cast<nn::WeightedLayer*>(m); l && l->reparam == nn::WeightReparam::weight_norm)
      layers.push_back(l);
  return layers;
}

// Every layer's output on `x` (one forward with all of them observed).
std::vector<Tensor> layer_outputs(nn::Module& model, const Tensor& x) {
  Outputs outputs;
  for (nn::WeightedLayer* l : weight_normalised_layers(model)) l->output_probe = &outputs;
  model.forward(ag::Variable(x));
  for (nn::WeightedLayer* l : weight_normalised_layers(model)) l->output_probe = nullptr;
  return outputs.seen;
}

void expect_standardised(nn::Module& model, const Tensor& x, const std::string& what) {
  const std::vector<Tensor> outputs = layer_outputs(model, x);
  ASSERT_FALSE(outputs.empty()) << what;
  for (size_t l = 0; l < outputs.size(); ++l) {
    std::vector<double> mean, stddev;
    channel_moments(outputs[l], mean, stddev);
    for (size_t c = 0; c < mean.size(); ++c) {
      EXPECT_NEAR(mean[c], 0, 1e-4) << what << " layer " << l << " unit " << c;
      EXPECT_NEAR(stddev[c], 1, 1e-4) << what << " layer " << l << " unit " << c;
    }
  }
}

}  // namespace

TEST(WeightNormDataInit, EveryLayerOutputsMeanZeroAndStdOneOnTheBatch) {
  Generator gen(3);
  const Tensor small_batch = normal({24, 1, 28, 28}, 0.f, 1.f, gen);
  auto small = nn::make_model({.seed = 7, .norm = nn::Norm::wn});
  // Before: the fan-out Kaiming start shrinks the signal layer by layer (what the init is for).
  std::vector<double> mean, before_last;
  channel_moments(layer_outputs(*small, small_batch).back(), mean, before_last);
  EXPECT_LT(before_last[0], 0.5);
  const auto found = nn::weight_norm_data_init(*small, small_batch);
  std::vector<std::string> names;
  for (const auto& layer : found) names.push_back(layer.name);
  EXPECT_THAT(names, ElementsAre("conv1", "conv2", "conv3", "conv4", "conv5"));  // fc is a plain Linear
  expect_standardised(*small, small_batch, "small_cnn");

  // A ResNet (outputs summed with a shortcut before the ReLU) and the vgg_lpm head's linear layers.
  const Tensor batch32 = normal({8, 1, 32, 32}, 0.f, 1.f, gen);
  auto resnet = nn::make_model({.name = "resnet18", .width = 0.125, .norm = nn::Norm::wn});
  EXPECT_EQ(nn::weight_norm_data_init(*resnet, batch32).size(), 20u);  // 17 3x3 convs and 3 shortcuts
  expect_standardised(*resnet, batch32, "resnet18");
  auto lpm = nn::make_model({.name = "vgg11_lpm", .width = 0.0625, .norm = nn::Norm::wn});
  EXPECT_EQ(nn::weight_norm_data_init(*lpm, batch32).size(), 10u);  // 8 convs and 2 head linears
  expect_standardised(*lpm, batch32, "vgg11_lpm");
  EXPECT_TRUE(lpm->is_training());  // the mode is restored
}

TEST(WeightNormDataInit, TheFunctionIsTheStandardisedLayerOfAPlainComputation) {
  // conv (2 -> 3 channels, 3x3, padding 1) on 4x4 images, ReLU, flatten, linear (48 -> 5): both
  // weight-normalised, computed here by loops from the parameters before the init and the mu, sigma
  // the init reports.
  nn::seed_init_generator(11);
  auto conv = std::make_shared<nn::Conv2d>(2, 3, 3, 1, 1, true, 1, nn::WeightReparam::weight_norm);
  auto fc = std::make_shared<nn::Linear>(48, 5, true, nn::WeightReparam::weight_norm);
  // Non-zero biases and g different from ||v||, so that every term of the formula shows.
  Generator gen(12);
  conv->bias.value().copy_(normal({3}, 0.f, 1.f, gen));
  conv->weight_g.value().copy_(uniform({3, 1, 1, 1}, 0.5f, 2.f, gen));
  fc->bias.value().copy_(normal({5}, 0.f, 1.f, gen));
  nn::Sequential model{conv, std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(), fc};
  const Tensor x = normal({6, 2, 4, 4}, 0.f, 1.f, gen);
  const std::vector<float> v1 = conv->weight_v.value().to_vector(), g1 = conv->weight_g.value().to_vector(),
                           b1 = conv->bias.value().to_vector(), v2 = fc->weight_v.value().to_vector(),
                           g2 = fc->weight_g.value().to_vector(), b2 = fc->bias.value().to_vector();
  const auto found = nn::weight_norm_data_init(model, x);
  ASSERT_EQ(found.size(), 2u);

  const std::vector<float> xs = x.to_vector();
  // Layer 1: g/sigma * (v.x)/||v|| + (b - mu)/sigma, then ReLU.
  std::vector<double> hidden(6 * 48);
  for (int n = 0; n < 6; ++n)
    for (int o = 0; o < 3; ++o) {
      double norm = 0;
      for (int k = 0; k < 18; ++k) norm += double{v1[o * 18 + k]} * v1[o * 18 + k];
      norm = std::sqrt(norm);
      const double sigma = found[0].stddev[o], mu = found[0].mean[o];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          double dot = 0;
          for (int c = 0; c < 2; ++c)
            for (int di = 0; di < 3; ++di)
              for (int dj = 0; dj < 3; ++dj) {
                const int y = i + di - 1, z = j + dj - 1;
                if (y < 0 || y >= 4 || z < 0 || z >= 4) continue;
                dot += double{v1[((o * 2 + c) * 3 + di) * 3 + dj]} * xs[((n * 2 + c) * 4 + y) * 4 + z];
              }
          const double t = g1[o] / sigma * dot / norm + (b1[o] - mu) / sigma;
          hidden[n * 48 + (o * 4 + i) * 4 + j] = std::max(t, 0.0);
        }
    }
  // Layer 2 on layer 1's output as re-initialised (the init runs the layers in order).
  std::vector<double> expected(6 * 5);
  for (int n = 0; n < 6; ++n)
    for (int o = 0; o < 5; ++o) {
      double norm = 0, dot = 0;
      for (int k = 0; k < 48; ++k) {
        norm += double{v2[o * 48 + k]} * v2[o * 48 + k];
        dot += double{v2[o * 48 + k]} * hidden[n * 48 + k];
      }
      const double sigma = found[1].stddev[o], mu = found[1].mean[o];
      expected[n * 5 + o] = g2[o] / sigma * dot / std::sqrt(norm) + (b2[o] - mu) / sigma;
    }
  const std::vector<float> got = model.forward(ag::Variable(x)).value().to_vector();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5) << i;
  // weight_v is not touched (only g and b move).
  EXPECT_EQ(conv->weight_v.value().to_vector(), v1);
  EXPECT_EQ(fc->weight_v.value().to_vector(), v2);
}

TEST(WeightNormDataInit, TheSameSeedAndBatchGiveTheSameBits) {
  Generator gen(5);
  const Tensor batch = normal({16, 1, 28, 28}, 0.f, 1.f, gen);
  auto state_of = [&](uint64_t seed) {
    auto model = nn::make_model({.seed = seed, .norm = nn::Norm::wn});
    nn::weight_norm_data_init(*model, batch);
    std::vector<std::vector<float>> values;
    for (auto& [name, t] : model->state()) values.push_back(t.to_vector());
    return values;
  };
  EXPECT_EQ(state_of(1), state_of(1));
  EXPECT_NE(state_of(1), state_of(2));
}

TEST(WeightNormDataInit, ModelsWithoutWeightNormalisationAreUntouched) {
  Generator gen(6);
  const Tensor batch = normal({4, 1, 28, 28}, 0.f, 1.f, gen);
  for (const nn::Norm norm : {nn::Norm::bn, nn::Norm::none, nn::Norm::gn_ws}) {
    auto model = nn::make_model({.norm = norm});
    std::vector<std::vector<float>> before;
    for (auto& [name, t] : model->state()) before.push_back(t.to_vector());
    EXPECT_TRUE(nn::weight_norm_data_init(*model, batch).empty());
    std::vector<std::vector<float>> after;
    for (auto& [name, t] : model->state()) after.push_back(t.to_vector());
    EXPECT_EQ(before, after) << nn::to_string(norm);  // BN's running statistics too (eval mode)
  }
}

TEST(WeightNormDataInit, ABadBatchIsRefused) {
  auto model = nn::make_model({.norm = nn::Norm::wn});
  EXPECT_THROW(nn::weight_norm_data_init(*model, Tensor()), Error);
  EXPECT_THROW(nn::weight_norm_data_init(*model, Tensor::zeros({4, 28, 28})), Error);
}
