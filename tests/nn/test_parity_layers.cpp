// Layers, losses, optimizers and schedules against PyTorch 1.13 (fixtures from
// tests/fixtures/torch/generate.py; see docs/parity.md).
#include <utility>

#include "nn/layers.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tests/support/parity.h"

using namespace peel;
using namespace peel::parity;
using ag::Variable;

namespace {
// Runs f forward on the fixture's inputs and backward with its grad_y; returns the leaves.
struct Forward {
  Variable y;
  std::vector<Variable> inputs;
};
Forward run_backward(std::vector<Variable> inputs, const std::function<Variable(const std::vector<Variable>&)>& f,
                     const Tensor& grad_y) {
  Variable y = f(inputs);
  y.backward(grad_y);
  return {y, std::move(inputs)};
}
Variable leaf(const Tensor& t) { return Variable(t.clone(), true); }
}  // namespace

TEST(ParityLayers, Conv2dStride2Padding1Dilation2WithBias) {
  const ConvBackend saved = default_conv_backend();
  for (ConvBackend backend : {ConvBackend::kIm2col, ConvBackend::kDirect, ConvBackend::kOneDnn}) {
    set_default_conv_backend(backend);
    for (bool channels_last : {false, true}) {
      Tensor x = load("conv2d", "x");
      if (channels_last) x = x.channels_last();
      auto r = run_backward(
          {leaf(x), leaf(load("conv2d", "weight")), leaf(load("conv2d", "bias"))},
          [](const std::vector<Variable>& v) { return nn::conv2d(v[0], v[1], v[2], Conv2dGeometry::square(2, 1, 2)); },
          load("conv2d", "grad_y"));
      SCOPED_TRACE(conv_backend_name(backend));
      EXPECT_TRUE(close(r.y.value(), load("conv2d", "y")));
      EXPECT_TRUE(close(r.inputs[0].grad(), load("conv2d", "grad_x")));
      EXPECT_TRUE(close(r.inputs[1].grad(), load("conv2d", "grad_weight")));
      EXPECT_TRUE(close(r.inputs[2].grad(), load("conv2d", "grad_bias")));
    }
  }
  set_default_conv_backend(saved);
}

TEST(ParityLayers, Conv2dOneByOneStride2NoBias) {
  auto r = run_backward(
      {leaf(load("conv2d_1x1", "x")), leaf(load("conv2d_1x1", "weight"))},
      [](const std::vector<Variable>& v) { return nn::conv2d(v[0], v[1], Variable(), Conv2dGeometry::square(2, 0)); },
      load("conv2d_1x1", "grad_y"));
  EXPECT_TRUE(close(r.y.value(), load("conv2d_1x1", "y")));
  EXPECT_TRUE(close(r.inputs[0].grad(), load("conv2d_1x1", "grad_x")));
  EXPECT_TRUE(close(r.inputs[1].grad(), load("conv2d_1x1", "grad_weight")));
}

TEST(ParityLayers, Linear) {
  auto r = run_backward(
      {leaf(load("linear", "x")), leaf(load("linear", "weight")), leaf(load("linear", "bias"))},
      [](const std::vector<Variable>& v) { return nn::linear(v[0], v[1], v[2]); }, load("linear", "grad_y"));
  EXPECT_TRUE(close(r.y.value(), load("linear", "y")));
  EXPECT_TRUE(close(r.inputs[0].grad(), load("linear", "grad_x")));
  EXPECT_TRUE(close(r.inputs[1].grad(), load("linear", "grad_weight")));
  EXPECT_TRUE(close(r.inputs[2].grad(), load("linear", "grad_bias")));
}

class ParityBatchNorm : public ::testing::TestWithParam<const char*> {};

TEST_P(ParityBatchNorm, TrainThenEvalWithRunningStatistics) {
  const std::string c = GetParam();
  Tensor running_mean = load(c, "running_mean").clone(), running_var = load(c, "running_var").clone();
  auto train = run_backward(
      {leaf(load(c, "x")), leaf(load(c, "weight")), leaf(load(c, "bias"))},
      [&](const std::vector<Variable>& v) {
        return nn::batch_norm(v[0], v[1], v[2], running_mean, running_var, true, 0.1f, 1e-5f, false);
      },
      load(c, "grad_y"));
  EXPECT_TRUE(close(train.y.value(), load(c, "y_train")));
  EXPECT_TRUE(close(train.inputs[0].grad(), load(c, "grad_x")));
  EXPECT_TRUE(close(train.inputs[1].grad(), load(c, "grad_weight")));
  EXPECT_TRUE(close(train.inputs[2].grad(), load(c, "grad_bias")));
  EXPECT_TRUE(close(running_mean, load(c, "running_mean_after")));
  EXPECT_TRUE(close(running_var, load(c, "running_var_after")));
  auto eval = run_backward(
      {leaf(load(c, "x")), leaf(load(c, "weight")), leaf(load(c, "bias"))},
      [&](const std::vector<Variable>& v) {
        return nn::batch_norm(v[0], v[1], v[2], running_mean, running_var, false, 0.1f, 1e-5f, false);
      },
      load(c, "grad_y"));
  EXPECT_TRUE(close(eval.y.value(), load(c, "y_eval")));
  EXPECT_TRUE(close(eval.inputs[0].grad(), load(c, "grad_x_eval")));
}
INSTANTIATE_TEST_SUITE_P(Cases, ParityBatchNorm, ::testing::Values("batchnorm2d", "batchnorm1d"));

TEST(ParityLayers, GroupNorm) {
  auto r = run_backward(
      {leaf(load("groupnorm", "x")), leaf(load("groupnorm", "weight")), leaf(load("groupnorm", "bias"))},
      [](const std::vector<Variable>& v) { return nn::group_norm(v[0], 4, v[1], v[2], 1e-5f); },
      load("groupnorm", "grad_y"));
  EXPECT_TRUE(close(r.y.value(), load("groupnorm", "y")));
  EXPECT_TRUE(close(r.inputs[0].grad(), load("groupnorm", "grad_x")));
  EXPECT_TRUE(close(r.inputs[1].grad(), load("groupnorm", "grad_weight")));
  EXPECT_TRUE(close(r.inputs[2].grad(), load("groupnorm", "grad_bias")));
}

TEST(ParityLayers, LayerNormOverChannelsHeightWidth) {
  nn::LayerNorm layer({4, 5, 5});
  layer.weight.value().copy_(load("layernorm", "weight"));
  layer.bias.value().copy_(load("layernorm", "bias"));
  Variable x = leaf(load("layernorm", "x"));
  Variable y = layer(x);
  y.backward(load("layernorm", "grad_y"));
  EXPECT_TRUE(close(y.value(), load("layernorm", "y")));
  EXPECT_TRUE(close(x.grad(), load("layernorm", "grad_x")));
  EXPECT_TRUE(close(layer.weight.grad(), load("layernorm", "grad_weight")));
  EXPECT_TRUE(close(layer.bias.grad(), load("layernorm", "grad_bias")));
}

TEST(ParityLayers, Pools) {
  struct Case {
    const char* name;
    std::function<Variable(const Variable&)> f;
  };
  for (const Case& c : std::vector<Case>{{"maxpool2d_k2",
                                          [](const Variable& x) {
                                            return nn::max_pool2d(x, {2, 2, 0});
                                          }},
                                         {"maxpool2d_k3s2p1",
                                          [](const Variable& x) {
                                            return nn::max_pool2d(x, {3, 2, 1});
                                          }},
                                         {"avgpool2d_k2",
                                          [](const Variable& x) {
                                            return nn::avg_pool2d(x, {2, 2, 0});
                                          }},
                                         {"avgpool2d_k3s2p1",
                                          [](const Variable& x) {
                                            return nn::avg_pool2d(x, {3, 2, 1});
                                          }},
                                         {"global_avgpool", [](const Variable& x) {
                                            return ag::reshape(nn::global_avg_pool(x), {x.size(0), x.size(1), 1, 1});
                                          }}}) {
    SCOPED_TRACE(c.name);
    for (bool channels_last : {false, true}) {
      Tensor x = load(c.name, "x");
      Variable xv = leaf(channels_last ? x.channels_last() : x);
      Variable y = c.f(xv);
      y.backward(load(c.name, "grad_y"));
      EXPECT_TRUE(close(y.value(), load(c.name, "y")));
      EXPECT_TRUE(close(xv.grad(), load(c.name, "grad_x")));
    }
  }
}

TEST(ParityLayers, CrossEntropyPlainAndClassWeighted) {
  const nlohmann::json m = manifest("cross_entropy");
  const std::vector<int64_t> labels = load_npy_int64(npy_path(case_dir("cross_entropy") + "/labels"));
  const std::vector<float> weights = load("cross_entropy", "class_weight").to_vector();
  Variable z = leaf(load("cross_entropy", "logits"));
  Variable loss = nn::cross_entropy(z, labels);
  loss.backward();
  EXPECT_NEAR(loss.item(), m["scalars"]["loss"].get<double>(), 1e-5 * std::abs(m["scalars"]["loss"].get<double>()));
  EXPECT_TRUE(close(z.grad(), load("cross_entropy", "grad_logits")));
  Variable zw = leaf(load("cross_entropy", "logits"));
  Variable weighted = nn::cross_entropy(zw, labels, weights);
  weighted.backward();
  EXPECT_NEAR(weighted.item(), m["scalars"]["loss_weighted"].get<double>(),
              1e-5 * m["scalars"]["loss_weighted"].get<double>());
  EXPECT_TRUE(close(zw.grad(), load("cross_entropy", "grad_logits_weighted")));
}

TEST(ParityLayers, SquareLossPlainAndScaled) {
  const nlohmann::json m = manifest("mse");
  const std::vector<int64_t> labels = load_npy_int64(npy_path(case_dir("mse") + "/labels"));
  for (const char* setting : {"plain", "scaled"}) {
    const auto& s = m["config"]["settings"][setting];
    Variable z = leaf(load("mse", "logits"));
    Variable loss = nn::mse_loss(z, labels, s["target_scale"].get<float>(), s["loss_scale"].get<float>());
    loss.backward();
    const double expected = m["scalars"][std::string("loss_") + setting].get<double>();
    EXPECT_NEAR(loss.item(), expected, 1e-5 * expected) << setting;
    EXPECT_TRUE(close(z.grad(), load("mse", std::string("grad_logits_") + setting))) << setting;
  }
}

TEST(ParityLayers, LogSoftmaxWithLargeLogits) {
  Variable z = leaf(load("log_softmax", "x"));
  Variable y = ag::log_softmax(z, 1);
  y.backward(load("log_softmax", "grad_y"));
  EXPECT_TRUE(close(y.value(), load("log_softmax", "y")));
  EXPECT_TRUE(close(z.grad(), load("log_softmax", "grad_x")));
}

TEST(ParityOptim, SgdPlainMomentumNesterov) {
  const nlohmann::json m = manifest("sgd");
  const Tensor grads = load("sgd", "grads");
  for (const char* key : {"plain", "momentum", "nesterov"}) {
    const auto& o = m["config"]["optimizers"][key];
    Variable p = leaf(load("sgd", "p0"));
    optim::Sgd sgd(
        {{{p}, o.value("weight_decay", 0.f), 1.f}},
        {.lr = o["lr"].get<float>(), .momentum = o.value("momentum", 0.f), .nesterov = o.value("nesterov", false)});
    const Tensor expected = load("sgd", std::string("params_") + key);
    for (int64_t t = 0; t < grads.size(0); ++t) {
      p.grad() = grads.select(0, t).contiguous();
      sgd.step();
      EXPECT_TRUE(close(p.value(), expected.select(0, t).contiguous(), 1e-6)) << key << " step " << t;
    }
  }
}

TEST(ParityOptim, AdamAndAdamW) {
  const Tensor grads = load("adam", "grads");
  for (bool decoupled : {false, true}) {
    Variable p = leaf(load("adam", "p0"));
    optim::Adam adam({{{p}, 0.01f, 1.f}}, {.lr = 0.01f, .decoupled_weight_decay = decoupled});
    const Tensor expected = load("adam", decoupled ? "params_adamw" : "params_adam");
    for (int64_t t = 0; t < grads.size(0); ++t) {
      p.grad() = grads.select(0, t).contiguous();
      adam.step();
      EXPECT_TRUE(close(p.value(), expected.select(0, t).contiguous(), 1e-5))
          << (decoupled ? "adamw" : "adam") << " step " << t;
    }
  }
}

TEST(ParityOptim, LearningRateSchedules) {
  const nlohmann::json m = manifest("lr_schedules");
  const auto& s = m["scalars"];
  auto check = [&](const optim::ScheduleConfig& config, const char* key) {
    for (int64_t e = 0; e < 12; ++e)
      EXPECT_NEAR(optim::learning_rate_at(config, 0.1f, e), s[key][static_cast<size_t>(e)].get<double>(), 1e-8)
          << key << " epoch " << e;
  };
  check(optim::parse_schedule("multistep:3,6", 12), "multistep");
  check(optim::parse_schedule("cosine", 10), "cosine");
  check(optim::parse_schedule("constant+warmup:5", 12), "linear_warmup");
}
