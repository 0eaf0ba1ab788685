// Optimizers (SGD's update rule as PyTorch's, weight-decay groups) and learning-rate schedules.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>

#include "nn/models.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/error.h"
#include "tests/support/error_matchers.h"

using namespace peel;
using peel::testing::ThrowsErrorWith;

TEST(Optim, SgdMatchesPyTorchUpdateRule) {
  // p = 1, grads 1 then 2, lr 0.1, momentum 0.9, wd 0.1 (PyTorch: d = g + wd p; buf = d, then 0.9 buf + d).
  ag::Variable p(Tensor::from_vector({1.f}, {1}), true);
  optim::Sgd sgd({{{p}, 0.1f, 1.f}}, {.lr = 0.1f, .momentum = 0.9f});
  p.grad() = Tensor::from_vector({1.f}, {1});
  sgd.step();  // d = 1.1, buf = 1.1, p = 1 - 0.11 = 0.89
  EXPECT_NEAR(p.item(), 0.89f, 1e-7);
  p.grad() = Tensor::from_vector({2.f}, {1});
  sgd.step();  // d = 2.089, buf = 0.99 + 2.089 = 3.079, p = 0.89 - 0.3079
  EXPECT_NEAR(p.item(), 0.5821f, 1e-6);
}

TEST(Optim, NesterovNeedsMomentum) {
  ag::Variable p(Tensor::ones({1}), true);
  EXPECT_THAT(
      [&] {
        optim::Sgd({{{p}, 0.f, 1.f}}, {.lr = 0.1f, .momentum = 0.f, .nesterov = true});
      },
      ThrowsErrorWith("SGD", "Nesterov momentum needs momentum > 0"));
}

TEST(Optim, WeightDecayGroupsSkipNormsAndBiases) {
  auto model = nn::make_model({.name = "small_cnn"});
  auto groups = optim::split_weight_decay(model->named_parameters(), 5e-4f, false);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 6u);  // five conv weights and the fc weight
  EXPECT_EQ(groups[1].weight_decay, 0.f);
}

namespace {

// A weight (rows x cols) and a bias (cols), named like a layer's, with fixed starting values.
std::vector<ag::Variable> layer_params(int64_t rows, int64_t cols) {
  std::vector<float> w(static_cast<size_t>(rows * cols)), b(static_cast<size_t>(cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * static_cast<float>(i) - 0.2f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.05f * static_cast<float>(i);
  return {ag::Variable(Tensor::from_vector(w, {rows, cols}), true, "w"),
          ag::Variable(Tensor::from_vector(b, {cols}), true, "b")};
}

// `steps` optimizer steps with gradients that depend on the step and the parameter values.
void take_steps(optim::Optimizer& opt, const std::vector<ag::Variable>& params, int steps) {
  for (int s = 0; s < steps; ++s) {
    for (ag::Variable p : params) {
      std::vector<float> g = p.value().to_vector();
      for (size_t i = 0; i < g.size(); ++i) g[i] = 0.5f * g[i] + 0.01f * static_cast<float>(s + 1) * (i % 3);
      p.grad() = Tensor::from_vector(g, p.shape());
    }
    opt.step();
  }
}

std::vector<std::vector<float>> values_of(const std::vector<Tensor>& tensors) {
  std::vector<std::vector<float>> out;
  for (const Tensor& t : tensors) out.push_back(t.to_vector());
  return out;
}

struct OptimizerKind {
  std::string label;
  std::function<std::unique_ptr<optim::Optimizer>(const std::vector<ag::Variable>&)> make;
  int first_buffer;  // the index of the first buffer in state(): Adam's state starts with the step count
};

std::vector<OptimizerKind> optimizer_kinds() {
  return {{"SGD",
           [](const std::vector<ag::Variable>& p) {
             return std::make_unique<optim::Sgd>(std::vector<optim::ParamGroup>{{p, 0.01f, 1.f}},
                                                 optim::SgdOptions{.lr = 0.1f, .momentum = 0.9f});
           },
           0},
          {"Adam",
           [](const std::vector<ag::Variable>& p) {
             return std::make_unique<optim::Adam>(std::vector<optim::ParamGroup>{{p, 0.01f, 1.f}},
                                                  optim::AdamOptions{.lr = 0.01f});
           },
           1},
          {"AdamW",
           [](const std::vector<ag::Variable>& p) {
             return std::make_unique<optim::Adam>(std::vector<optim::ParamGroup>{{p, 0.01f, 1.f}},
                                                  optim::AdamOptions{.lr = 0.01f, .decoupled_weight_decay = true});
           },
           1}};
}

}  // namespace

TEST(Optim, StateRoundTripContinuesIdentically) {
  for (const OptimizerKind& kind : optimizer_kinds()) {
    SCOPED_TRACE(kind.label);
    const std::vector<ag::Variable> a = layer_params(2, 3);
    auto opt_a = kind.make(a);
    take_steps(*opt_a, a, 2);
    // A second optimizer on a copy of the parameters, given the first one's state.
    std::vector<ag::Variable> b = layer_params(2, 3);
    for (size_t i = 0; i < a.size(); ++i) b[i].value().copy_(a[i].value());
    auto opt_b = kind.make(b);
    opt_b->load_state(opt_a->state());
    EXPECT_EQ(values_of(opt_b->state()), values_of(opt_a->state()));
    take_steps(*opt_a, a, 1);
    take_steps(*opt_b, b, 1);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].value().to_vector(), b[i].value().to_vector());
  }
}

TEST(Optim, LoadStateRefusesAnotherModelsStateAndChangesNothing) {
  using ::testing::AllOf;
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  for (const OptimizerKind& kind : optimizer_kinds()) {
    SCOPED_TRACE(kind.label);
    const std::string prefix = (kind.label == "SGD" ? "SGD" : "Adam") + std::string("::load_state: ");
    const std::vector<ag::Variable> params = layer_params(2, 3);
    auto opt = kind.make(params);
    take_steps(*opt, params, 2);
    const std::vector<Tensor> good = opt->state();
    const auto before = values_of(good);

    // Another model's state: a weight of shape [3, 2] where this one has [2, 3].
    const std::vector<ag::Variable> other = layer_params(3, 2);
    auto other_opt = kind.make(other);
    take_steps(*other_opt, other, 1);
    EXPECT_THAT([&] { opt->load_state(other_opt->state()); },
                ThrowsMessage<Error>(AllOf(HasSubstr(prefix + fmt::format("tensor {} (", kind.first_buffer)),
                                           HasSubstr("of parameter 0 'w') has shape [3, 2], the parameter has "
                                                     "shape [2, 3]"))));
    // Too few and too many tensors.
    std::vector<Tensor> shorter(good.begin(), good.end() - 1), longer = good;
    longer.push_back(Tensor::zeros({3}));
    EXPECT_THAT([&] { opt->load_state(shorter); },
                ThrowsMessage<Error>(
                    HasSubstr(prefix + fmt::format("{} tensors given, {} expected", good.size() - 1, good.size()))));
    EXPECT_THAT(
        [&] { opt->load_state(longer); },
        ThrowsMessage<Error>(HasSubstr(fmt::format("{} tensors given, {} expected", good.size() + 1, good.size()))));
    // The first parameter's buffers fit, the last one's do not: nothing may be half loaded.
    std::vector<Tensor> half;
    for (const Tensor& t : good) half.push_back(Tensor::full(t.shape(), 99.f));
    half.back() = Tensor::zeros({4});
    if (kind.first_buffer == 1) half[0] = Tensor::scalar(5.f);
    EXPECT_THAT([&] { opt->load_state(half); },
                ThrowsMessage<Error>(HasSubstr("of parameter 1 'b') has shape [4], the parameter has shape [3]")));
    EXPECT_EQ(values_of(opt->state()), before);
  }
}

TEST(Optim, AdamRefusesABadStepCount) {
  using ::testing::HasSubstr;
  using ::testing::ThrowsMessage;
  const std::vector<ag::Variable> params = layer_params(2, 3);
  optim::Adam adam({{params, 0.f, 1.f}}, {});
  take_steps(adam, params, 1);
  std::vector<Tensor> state = adam.state();
  const auto before = values_of(state);
  for (float steps : {-1.f, 2.5f}) {
    state[0] = Tensor::scalar(steps);
    EXPECT_THAT([&] { adam.load_state(state); },
                ThrowsMessage<Error>(HasSubstr("tensor 0 (the step count) is " + fmt::format("{}", steps))));
  }
  state[0] = Tensor::zeros({2});
  EXPECT_THAT([&] { adam.load_state(state); },
              ThrowsMessage<Error>(HasSubstr("tensor 0 (the step count) has shape [2]")));
  EXPECT_EQ(values_of(adam.state()), before);
}

TEST(Schedules, MultistepCosineWarmup) {
  auto multistep = optim::parse_schedule("multistep:116,233", 350);
  EXPECT_FLOAT_EQ(optim::learning_rate_at(multistep, 0.1f, 115), 0.1f);
  EXPECT_FLOAT_EQ(optim::learning_rate_at(multistep, 0.1f, 116), 0.01f);
  EXPECT_NEAR(optim::learning_rate_at(multistep, 0.1f, 300), 0.001f, 1e-9);
  auto cosine = optim::parse_schedule("cosine", 10);
  EXPECT_NEAR(optim::learning_rate_at(cosine, 1.f, 5), 0.5f, 1e-6);
  auto warm = optim::parse_schedule("constant+warmup:5", 10);
  EXPECT_NEAR(optim::learning_rate_at(warm, 1.f, 0), 0.1f, 1e-6);
  EXPECT_NEAR(optim::learning_rate_at(warm, 1.f, 4), 0.82f, 1e-6);
  EXPECT_NEAR(optim::learning_rate_at(warm, 1.f, 5), 1.f, 1e-6);
  EXPECT_THAT([] { optim::parse_schedule("step:3", 10); }, ThrowsErrorWith("--schedule", "unknown schedule 'step:3'"));
  EXPECT_THAT([] { optim::parse_schedule("multistep:a,b", 10); },
              ThrowsErrorWith("--schedule", "milestone 'a'", "not an integer"));
}
