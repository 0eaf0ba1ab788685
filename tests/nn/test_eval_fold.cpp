// Batch norm folded into the convolution for evaluation (nn/fusion.h): the folded forward is
// the unfolded one up to rounding for every model and layer combination where it applies, and
// bit for bit the unfolded one wherever it must not apply (training mode, a gradient recorded, a
// probe attached, a norm other than batch norm).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "nn/fusion.h"
#include "nn/models.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tests/support/relative_error.h"

using namespace peel;
using peel::testing::relative_error;

namespace {

// Running statistics and affine parameters far from their initial values, so that a fold that
// drops or misplaces any of them changes the output.
void randomise_batch_norms(nn::Module& model, Generator& gen) {
  for (auto& [name, m] : model.named_modules()) {
    auto* bn = dynamic_cast<nn::BatchNorm*>(m);
    if (bn == nullptr) continue;
    const Shape c = bn->running_mean.shape();
    bn->running_mean.copy_(normal(c, 0.f, 0.5f, gen));
    bn->running_var.copy_(uniform(c, 0.2f, 3.f, gen));
    if (bn->weight.defined()) Tensor(bn->weight.value()).copy_(uniform(c, 0.5f, 1.5f, gen));
    if (bn->bias.defined()) Tensor(bn->bias.value()).copy_(normal(c, 0.f, 0.3f, gen));
  }
}

Tensor forward_without_graph(nn::Module& model, const Tensor& x, bool fold) {
  nn::set_eval_folding(fold);
  ag::NoGradGuard no_grad;
  Tensor y = model.forward(ag::Variable(x)).value().contiguous();
  nn::set_eval_folding(true);
  return y;
}

struct ModelCase {
  const char* name;
  double width;
  nn::Norm norm;
};

void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << c.name << " width " << c.width << " " << nn::to_string(c.norm);
}

class EvalFoldPerModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(EvalFoldPerModel, FoldedEvaluationMatchesTheLayersApplied) {
  const ModelCase& c = GetParam();
  auto model = nn::make_model({.name = c.name, .width = c.width, .seed = 3, .norm = c.norm});
  Generator gen(11);
  randomise_batch_norms(*model, gen);
  model->eval();
  const int64_t size = nn::model_image_size(c.name);
  const Tensor x = normal({5, 1, size, size}, 0.f, 1.f, gen).channels_last();
  const Tensor folded = forward_without_graph(*model, x, true);
  const Tensor unfolded = forward_without_graph(*model, x, false);
  EXPECT_LT(relative_error(folded, unfolded), 2e-5);
  if (c.norm != nn::Norm::bn && c.norm != nn::Norm::none) {  // nothing to fold: the very same arithmetic
    EXPECT_EQ(folded.to_vector(), unfolded.to_vector());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, EvalFoldPerModel,
    ::testing::Values(ModelCase{"small_cnn", 1, nn::Norm::bn}, ModelCase{"vgg11", 0.125, nn::Norm::bn},
                      ModelCase{"resnet18", 0.25, nn::Norm::bn}, ModelCase{"vgg11_lpm", 0.0625, nn::Norm::bn},
                      ModelCase{"small_cnn", 1, nn::Norm::none}, ModelCase{"resnet18", 0.25, nn::Norm::none},
                      ModelCase{"small_cnn", 1, nn::Norm::gn_ws}, ModelCase{"resnet18", 0.25, nn::Norm::bcn_ws}),
    [](const ::testing::TestParamInfo<ModelCase>& param_info) {
      std::string norm = nn::to_string(param_info.param.norm);
      for (char& ch : norm)
        if (ch == '+') ch = '_';
      return std::string(param_info.param.name) + "_" + norm;
    });

// A convolution (with or without bias) and a batch norm (with or without affine, with or without
// its fused ReLU), folded, against the two layers.
TEST(EvalFold, ConvolutionAndBatchNormVariants) {
  Generator gen(5);
  for (bool conv_bias : {false, true})
    for (bool affine : {false, true})
      for (bool relu : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "bias " << conv_bias << " affine " << affine << " relu " << relu);
        nn::Conv2d conv(3, 20, 3, 2, 1, conv_bias);
        if (conv_bias) Tensor(conv.bias.value()).copy_(normal({20}, 0.f, 1.f, gen));
        nn::BatchNorm bn(20, relu, 1e-5f, 0.1f, affine);
        randomise_batch_norms(bn, gen);
        bn.eval();
        const ag::Variable x(normal({4, 3, 9, 11}, 0.f, 1.f, gen));
        ag::NoGradGuard no_grad;
        const Tensor folded = nn::conv_then_norm(conv, bn, x).value();
        const Tensor unfolded = bn.forward(conv.forward(x)).value();
        EXPECT_LT(relative_error(folded, unfolded), 1e-5);
        if (relu) {
          const std::vector<float> v = folded.to_vector();
          EXPECT_EQ(*std::min_element(v.begin(), v.end()), 0.f);
        }
      }
}

// Where the fold must not apply, conv_then_norm is the two layers, bit for bit.
TEST(EvalFold, LeavesEveryOtherCaseToTheLayers) {
  Generator gen(6);
  nn::Conv2d conv(2, 16, 3, 1, 1, false);
  nn::BatchNorm bn(16, true);
  randomise_batch_norms(bn, gen);
  const Tensor xt = normal({3, 2, 8, 8}, 0.f, 1.f, gen);
  auto bits_equal = [](const Tensor& a, const Tensor& b) { return a.to_vector() == b.to_vector(); };

  {  // eval mode, but a gradient is recorded: the graph is needed, so no fold
    bn.eval();
    const ag::Variable x(xt, true);
    const ag::Variable y = nn::conv_then_norm(conv, bn, x);
    EXPECT_TRUE(y.requires_grad());
    EXPECT_TRUE(bits_equal(y.value(), bn.forward(conv.forward(x)).value()));
  }
  {  // training mode: batch statistics, which the fold cannot know
    bn.train();
    ag::NoGradGuard no_grad;
    const Tensor mean_before = bn.running_mean.clone();
    const Tensor y = nn::conv_then_norm(conv, bn, ag::Variable(xt)).value();
    EXPECT_FALSE(bits_equal(bn.running_mean, mean_before)) << "the running statistics moved";
    bn.running_mean.copy_(mean_before);
    EXPECT_TRUE(bits_equal(y, bn.forward(conv.forward(ag::Variable(xt))).value()));
  }
  {  // a probe on the activation site sees the pre- and post-activation tensors
    struct CountingProbe : nn::ActivationProbe {
      int records = 0;
      void record(const Tensor&, const Tensor&, const Tensor&) override { ++records; }
    } probe;
    bn.eval();
    bn.probe = &probe;
    ag::NoGradGuard no_grad;
    const Tensor y = nn::conv_then_norm(conv, bn, ag::Variable(xt)).value();
    EXPECT_EQ(probe.records, 1);
    bn.probe = nullptr;
    EXPECT_TRUE(bits_equal(y, bn.forward(conv.forward(ag::Variable(xt))).value()));
  }
}

}  // namespace
