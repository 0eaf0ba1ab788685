// small_cnn, resnet18(0.25) and vgg11(0.25) against PyTorch 1.13 in train mode: logits, loss,
// every gradient after one backward, running statistics, and every parameter and statistic after
// three SGD steps with momentum and weight decay (see docs/parity.md), for every conv backend.
//
// One step (logits, loss, every gradient, running statistics) is held to 1e-4 of each tensor's
// scale with every backend. After three steps the states depend on which side of zero a few
// pre-activations fall: a 1e-7 difference in the weights (float32 rounding in another summation
// order) can flip a ReLU or a max-pool choice, and the flip moves later gradients of a few entries
// by far more than rounding. Which combination flips is luck of the machine: resnet18 with the
// direct backend flips on AVX-512 with OpenBLAS's SkylakeX kernels, where conv1.weight ends 0.53%
// of its norm from PyTorch's (max entry 30% off) while every unflipped case stays within 0.04%.
// So the three losses are held to 1e-4 and the three-step states to 1e-2 in norm: a wrong momentum
// or running-statistics update moves them by more than that, and the update rules themselves are
// held exactly by ParityOptim (test_parity_layers.cpp).
#include "nn/models.h"
#include "optim/optimizer.h"
#include "tests/support/parity.h"

using namespace peel;
using namespace peel::parity;

namespace {
// Every gradient after one step, on its own scale (docs/parity.md); fixed here, not by the
// environment, so that no setting can loosen the check unseen.
const double kGradRtol = 1e-4;

struct ModelCase {
  const char* fixture;
  nn::ModelConfig config;
  ConvBackend backend;
};

// Every state entry from the fixture's deterministic pattern (the same bits PyTorch started from).
void load_initial_state(nn::Network& model, const nlohmann::json& m) {
  for (auto& [name, t] : model.state()) {
    ASSERT_TRUE(m["init"].contains(name)) << "fixture has no initial value for " << name;
    const auto& init = m["init"][name];
    Tensor value = fixture_pattern(init["seed"].get<uint32_t>(), t.shape(), init["scale"].get<float>(),
                                   init["offset"].get<float>());
    Tensor dst = t;
    dst.copy_(value);
  }
}

class ParityModels : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ParityModels, ForwardBackwardAndThreeSgdSteps) {
  const ModelCase& c = GetParam();
  const ConvBackend saved = default_conv_backend();
  set_default_conv_backend(c.backend);
  const nlohmann::json m = manifest(c.fixture);
  const std::string dir = case_dir(c.fixture);
  auto model = nn::make_model(c.config);
  load_initial_state(*model, m);
  model->train();
  const Tensor input = load(c.fixture, "input");
  const std::vector<int64_t> labels = load_npy_int64(npy_path(dir + "/labels"));
  auto has = [&](const std::string& stem) { return m["files"].contains(stem); };

  // One forward and backward.
  ag::Variable logits = model->forward(ag::Variable(input));
  ag::Variable loss = nn::cross_entropy(logits, labels);
  loss.backward();
  EXPECT_TRUE(close(logits.value(), load(c.fixture, "logits")));
  const double torch_loss = m["scalars"]["loss"].get<double>();
  EXPECT_NEAR(loss.item(), torch_loss, 1e-5 * torch_loss);
  int checked = 0;
  for (auto& [name, p] : model->named_parameters())
    if (has("grad/" + name)) {
      EXPECT_TRUE(close(p.grad(), load(c.fixture, "grad/" + name), kGradRtol)) << "grad of " << name;
      ++checked;
    }
  for (auto& [name, b] : model->named_buffers())
    if (has("buffers_after_forward/" + name))
      EXPECT_TRUE(close(b, load(c.fixture, "buffers_after_forward/" + name))) << name;
  EXPECT_GT(checked, 0);

  // Three SGD steps from the initial state with a fresh optimizer, as the generator does.
  load_initial_state(*model, m);
  optim::Sgd sgd({{model->parameters(), 5e-4f, 1.f}}, {.lr = 0.1f, .momentum = 0.9f});
  for (int step = 0; step < 3; ++step) {
    sgd.zero_grad();
    ag::Variable l = nn::cross_entropy(model->forward(ag::Variable(input)), labels);
    l.backward();
    sgd.step();
    const double expected = m["scalars"]["losses_3_steps"][static_cast<size_t>(step)].get<double>();
    EXPECT_NEAR(l.item(), expected, 1e-4 * expected) << "loss at step " << step;
  }
  for (auto& [name, t] : model->state())
    if (has("after_3_steps/" + name))
      EXPECT_TRUE(close_in_norm(t, load(c.fixture, "after_3_steps/" + name), 1e-2)) << name << " after 3 steps";
  set_default_conv_backend(saved);
}

std::vector<ModelCase> all_cases() {
  std::vector<ModelCase> cases;
  for (ConvBackend b : {ConvBackend::kOneDnn, ConvBackend::kDirect, ConvBackend::kIm2col}) {
    cases.push_back({"small_cnn", {.name = "small_cnn"}, b});
    cases.push_back({"resnet18", {.name = "resnet18", .width = 0.25, .in_channels = 1}, b});
    cases.push_back({"vgg11", {.name = "vgg11", .width = 0.25, .in_channels = 1}, b});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Models, ParityModels, ::testing::ValuesIn(all_cases()), [](const auto& info) {
  return std::string(info.param.fixture) + "_" + conv_backend_name(info.param.backend);
});

}  // namespace
