// The normalisation layers against PyTorch 1.13 references of the official definitions (fixtures
// from tests/fixtures/torch/cases_normalization.py; docs/parity.md, docs/normalization.md): the
// layers' own names and shapes, forward and backward, train steps with the statistics updates, eval.
#include <gmock/gmock.h>

#include "nn/normalization.h"
#include "tensor/kernels/norm_extra.h"
#include "tests/support/parity.h"

using namespace peel;
using namespace peel::parity;
using ag::Variable;
using ::testing::ElementsAre;

namespace {

// Copies `value` into the state entry `name` of `m` (a parameter or a buffer).
void assign(nn::Module& m, const std::string& name, const Tensor& value) {
  for (auto& [n, t] : m.state())
    if (n == name) {
      Tensor dst = t;
      dst.copy_(value);
      return;
    }
  FAIL() << "no state entry " << name;
}

Tensor grad_of(nn::Module& m, const std::string& name) {
  for (auto& [n, p] : m.named_parameters())
    if (n == name) return p.grad();
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

std::vector<std::string> names(const std::vector<std::pair<std::string, Variable>>& named) {
  std::vector<std::string> out;
  for (auto& [n, v] : named) out.push_back(n);
  return out;
}

Tensor in_memory(const Tensor& x, bool channels_last) { return channels_last && x.dim() == 4 ? x.channels_last() : x; }

// One forward and backward of `layer` in its current mode, from zeroed gradients: x is the leaf.
struct Pass {
  Variable x, y;
};
Pass forward_backward(nn::Module& layer, const Tensor& x, const Tensor& grad_y, bool channels_last) {
  layer.zero_grad();
  Pass p{Variable(in_memory(x.contiguous(), channels_last), true), {}};
  p.y = layer.forward(p.x);
  p.y.backward(grad_y.contiguous());
  return p;
}

}  // namespace

TEST(ParityNormalization, WeightStandardizedConvolution) {
  const std::string c = "weight_standardization";
  const ConvBackend saved = default_conv_backend();
  for (ConvBackend backend : {ConvBackend::kIm2col, ConvBackend::kDirect, ConvBackend::kOneDnn}) {
    set_default_conv_backend(backend);
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE(std::string(conv_backend_name(backend)) + (channels_last ? " channels-last" : " nchw"));
      nn::Conv2d conv(3, 4, 3, 1, 1, /*bias=*/false, 1, nn::WeightReparam::standardize);
      EXPECT_THAT(names(conv.named_parameters()), ElementsAre("weight"));
      assign(conv, "weight", load(c, "weight"));
      Variable x(in_memory(load(c, "x"), channels_last), true);
      EXPECT_TRUE(close(conv.effective_weight().value(), load(c, "weight_standardized")));
      Variable y = conv(x);
      y.backward(load(c, "grad_y"));
      EXPECT_TRUE(close(y.value(), load(c, "y")));
      EXPECT_TRUE(close(x.grad(), load(c, "grad_x")));
      EXPECT_TRUE(close(conv.weight.grad(), load(c, "grad_weight")));
    }
  }
  set_default_conv_backend(saved);
}

TEST(ParityNormalization, WeightNormalizedConvolutionAndLinear) {
  for (const std::string c : {"weight_norm_conv", "weight_norm_linear"}) {
    SCOPED_TRACE(c);
    const bool is_conv = c == "weight_norm_conv";
    std::shared_ptr<nn::Module> layer;
    if (is_conv)
      layer = std::make_shared<nn::Conv2d>(3, 4, 3, 1, 1, true, 1, nn::WeightReparam::weight_norm);
    else
      layer = std::make_shared<nn::Linear>(7, 3, true, nn::WeightReparam::weight_norm);
    // PyTorch's names, order and shapes after torch.nn.utils.weight_norm.
    EXPECT_THAT(names(layer->named_parameters()), ElementsAre("bias", "weight_g", "weight_v"));
    assign(*layer, "weight_v", load(c, "weight"));
    EXPECT_TRUE(
        close(row_norms(load(c, "weight")).reshape(load(c, "weight_g_init").shape()), load(c, "weight_g_init")));
    assign(*layer, "weight_g", load(c, "weight_g"));
    assign(*layer, "bias", load(c, "bias"));
    Variable x(load(c, "x"), true);
    Variable y = layer->forward(x);
    y.backward(load(c, "grad_y"));
    EXPECT_TRUE(close(y.value(), load(c, "y")));
    EXPECT_TRUE(close(x.grad(), load(c, "grad_x")));
    EXPECT_TRUE(close(grad_of(*layer, "weight_g"), load(c, "grad_weight_g")));
    EXPECT_TRUE(close(grad_of(*layer, "weight_v"), load(c, "grad_weight_v")));
    EXPECT_TRUE(close(grad_of(*layer, "bias"), load(c, "grad_bias")));
  }
}

TEST(ParityNormalization, EstimatedBatchNormTrainStepsThenEval) {
  const std::string c = "estbn";
  const float r = manifest(c)["config"]["moving_speed"].get<float>();
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last" : "nchw");
    nn::EstimatedBatchNorm layer(3, r);
    EXPECT_THAT(names(layer.named_parameters()), ElementsAre("weight", "bias"));
    EXPECT_EQ(layer.named_buffers().back().first, "estbn_moving_speed");
    for (const char* name : {"weight", "bias", "running_mean", "running_var"}) assign(layer, name, load(c, name));
    const Tensor xs = load(c, "x_steps"), gys = load(c, "grad_y_steps");
    for (int64_t step = 0; step < xs.size(0); ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      const auto [x, y] = forward_backward(layer, xs.select(0, step), gys.select(0, step), channels_last);
      EXPECT_TRUE(close(y.value(), load(c, "y_train").select(0, step)));
      EXPECT_TRUE(close(x.grad(), load(c, "grad_x").select(0, step)));
      EXPECT_TRUE(close(layer.weight.grad(), load(c, "grad_weight").select(0, step)));
      EXPECT_TRUE(close(layer.bias.grad(), load(c, "grad_bias").select(0, step)));
      EXPECT_TRUE(close(layer.running_mean, load(c, "running_mean_after").select(0, step)));
      EXPECT_TRUE(close(layer.running_var, load(c, "running_var_after").select(0, step)));
    }
    layer.eval();
    const auto [x, y] = forward_backward(layer, load(c, "x_eval"), load(c, "grad_y_eval"), channels_last);
    EXPECT_TRUE(close(y.value(), load(c, "y_eval")));
    EXPECT_TRUE(close(x.grad(), load(c, "grad_x_eval")));
    EXPECT_TRUE(close(layer.weight.grad(), load(c, "grad_weight_eval")));
    EXPECT_TRUE(close(layer.bias.grad(), load(c, "grad_bias_eval")));
    EXPECT_TRUE(close(layer.running_mean, load(c, "running_mean_after").select(0, xs.size(0) - 1)));
  }
}

class ParityBatchChannelNorm : public ::testing::TestWithParam<const char*> {};

TEST_P(ParityBatchChannelNorm, TrainStepsThenEval) {
  const std::string c = GetParam();
  const nlohmann::json cfg = manifest(c)["config"];
  const bool estimated = cfg["batch_part"] == "estimated";
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last" : "nchw");
    nn::BatchChannelNorm layer(8, cfg["groups"].get<int64_t>(),
                               estimated ? nn::BcnBatchPart::estimated : nn::BcnBatchPart::batch, 0.1f);
    EXPECT_THAT(names(layer.named_parameters()), ElementsAre("weight", "bias", "bn.weight", "bn.bias"));
    EXPECT_EQ(layer.weight.shape(), (Shape{1, 4, 1}));
    for (auto [name, stem] : std::vector<std::pair<const char*, const char*>>{{"weight", "weight"},
                                                                              {"bias", "bias"},
                                                                              {"bn.weight", "bn_weight"},
                                                                              {"bn.bias", "bn_bias"},
                                                                              {"bn.running_mean", "running_mean"},
                                                                              {"bn.running_var", "running_var"}})
      assign(layer, name, load(c, stem));
    auto check = [&](const Variable& x, const Variable& y, const std::string& suffix, int64_t step) {
      auto want = [&](const std::string& stem) {
        const Tensor t = load(c, stem + suffix);
        return step < 0 ? t : t.select(0, step);
      };
      EXPECT_TRUE(close(y.value(), want(suffix.empty() ? "y_train" : "y")));
      EXPECT_TRUE(close(x.grad(), want("grad_x")));
      EXPECT_TRUE(close(grad_of(layer, "bn.weight"), want("grad_bn_weight")));
      EXPECT_TRUE(close(grad_of(layer, "bn.bias"), want("grad_bn_bias")));
      EXPECT_TRUE(close(layer.weight.grad(), want("grad_weight")));
      EXPECT_TRUE(close(layer.bias.grad(), want("grad_bias")));
    };
    const Tensor xs = load(c, "x_steps"), gys = load(c, "grad_y_steps");
    for (int64_t step = 0; step < xs.size(0); ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      const auto [x, y] = forward_backward(layer, xs.select(0, step), gys.select(0, step), channels_last);
      check(x, y, "", step);
      for (auto& [name, t] : layer.named_buffers()) {
        if (name == "bn.running_mean") EXPECT_TRUE(close(t, load(c, "running_mean_after").select(0, step)));
        if (name == "bn.running_var") EXPECT_TRUE(close(t, load(c, "running_var_after").select(0, step)));
      }
    }
    layer.eval();
    const auto [x, y] = forward_backward(layer, load(c, "x_eval"), load(c, "grad_y_eval"), channels_last);
    check(x, y, "_eval", -1);
  }
}
INSTANTIATE_TEST_SUITE_P(Cases, ParityBatchChannelNorm, ::testing::Values("bcn", "bcn_estimated"));

TEST(ParityNormalization, FilterResponseNormWithTluFixedAndLearnedEps) {
  const std::string c = "frn";
  for (const std::string key : {"fixed", "learned", "2d"}) {
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE(key + (channels_last ? " channels-last" : " nchw"));
      nn::FilterResponseNorm layer(4, true, 1e-6f, /*learnable_eps=*/key != "fixed");
      if (key == "fixed")
        EXPECT_THAT(names(layer.named_parameters()), ElementsAre("weight", "bias", "tau"));
      else
        EXPECT_THAT(names(layer.named_parameters()), ElementsAre("weight", "bias", "tau", "eps"));
      for (const char* name : {"weight", "bias", "tau"}) assign(layer, name, load(c, name));
      if (key != "fixed") assign(layer, "eps", load(c, key == "2d" ? "eps_2d" : "eps_learned"));
      Variable x(in_memory(load(c, key == "2d" ? "x_2d" : "x"), channels_last), true);
      Variable z = layer(x);
      z.backward(load(c, key == "2d" ? "grad_y_2d" : "grad_y"));
      EXPECT_TRUE(close(z.value(), load(c, "z_" + key)));
      EXPECT_TRUE(close(x.grad(), load(c, "grad_x_" + key)));
      for (const char* name : {"weight", "bias", "tau"})
        EXPECT_TRUE(close(grad_of(layer, name), load(c, std::string("grad_") + name + "_" + key).reshape({4}))) << name;
      if (key != "fixed") EXPECT_TRUE(close(layer.eps.grad(), load(c, "grad_eps_" + key).reshape({4})));
    }
  }
}

TEST(ParityNormalization, TluWithTies) {
  for (bool channels_last : {false, true}) {
    nn::Tlu layer(3);
    assign(layer, "tau", load("tlu", "tau"));
    Variable x(in_memory(load("tlu", "x"), channels_last), true);
    Variable z = layer(x);
    z.backward(load("tlu", "grad_y"));
    EXPECT_TRUE(close(z.value(), load("tlu", "z")));
    EXPECT_TRUE(close(x.grad(), load("tlu", "grad_x")));
    EXPECT_TRUE(close(layer.tau.grad(), load("tlu", "grad_tau")));
  }
}
