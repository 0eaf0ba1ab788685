// Every reference model with every normalisation (nn/models.h): builds, trains a step at batch 2 and
// 8, has the documented names, and for bn keeps the initial state it had before norms existed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "nn/models.h"
#include "tensor/error.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/random.h"

using namespace peel;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::ThrowsMessage;

namespace {

uint64_t state_hash(const nn::Module& m, size_t* entries) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over names, dims and float bits
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  *entries = 0;
  for (auto& [name, t] : m.state()) {
    mix(name.data(), name.size());
    for (int64_t d : t.shape()) mix(&d, sizeof d);
    const std::vector<float> v = t.to_vector();
    mix(v.data(), v.size() * sizeof(float));
    ++*entries;
  }
  return h;
}

std::vector<std::string> parameter_names(const nn::Module& m) {
  std::vector<std::string> out;
  for (auto& [n, v] : m.named_parameters()) out.push_back(n);
  return out;
}

Shape shape_of(const nn::Module& m, const std::string& name) {
  for (auto& [n, t] : m.state())
    if (n == name) return t.shape();
  ADD_FAILURE() << "no state entry " << name;
  return {};
}

std::vector<std::string> site_names(nn::Module& m) {
  std::vector<std::string> out;
  for (auto& [n, s] : nn::activation_sites(m)) out.push_back(n);
  return out;
}

struct Arch {
  const char* name;
  double width;
};
// Small widths keep the test quick; 0.25 still gives group_count < 32 (16 channels) in places.
const Arch kArchs[] = {{"small_cnn", 1},      {"vgg11", 0.125},      {"vgg13", 0.125},
                       {"vgg11_lpm", 0.0625}, {"vgg13_lpm", 0.0625}, {"resnet18", 0.25}};

bool all_finite(const Tensor& t) {
  const Tensor c = t.contiguous();
  return std::all_of(c.data(), c.data() + c.numel(), [](float v) { return std::isfinite(v); });
}

}  // namespace

TEST(ModelNorms, BatchNormModelsKeepTheirInitialStateBitForBit) {
  // FNV-1a of (name, dims, float bits) of every state entry, computed with this function from commit
  // b989396 (the models before ModelConfig::norm existed): names, order, shapes and initial values.
  struct Golden {
    const char* name;
    double width;
    int64_t in_channels;
    uint64_t seed, hash;
    size_t entries;
  };
  for (const Golden& g :
       {Golden{"small_cnn", 1, 1, 0, 0xdf5e58b3404d67ddull, 27},
        Golden{"small_cnn", 1, 3, 7, 0xc4508a62513cf54aull, 27}, Golden{"vgg11", 0.25, 1, 0, 0x1af00c35c7d85c4cull, 42},
        Golden{"vgg13", 0.25, 3, 1, 0x3775202a74c22d6full, 52},
        Golden{"vgg11_lpm", 0.25, 1, 0, 0xffd9c8caa9a2aeb6ull, 54},
        Golden{"vgg13_lpm", 0.125, 1, 2, 0x25907dd3a304c052ull, 64},
        Golden{"resnet18", 0.25, 1, 0, 0x139e8b5bfac1f027ull, 102},
        Golden{"resnet18", 0.5, 3, 3, 0x8267242066d8865eull, 102}}) {
    auto model = nn::make_model({.name = g.name, .width = g.width, .in_channels = g.in_channels, .seed = g.seed});
    size_t entries = 0;
    EXPECT_EQ(state_hash(*model, &entries), g.hash) << g.name << " w=" << g.width;
    EXPECT_EQ(entries, g.entries) << g.name;
  }
}

TEST(ModelNorms, NamesListAndParserAgree) {
  EXPECT_THAT(nn::norm_names(), ElementsAre("bn", "gn", "ln", "gn+ws", "bcn+ws", "frn", "wn", "none"));
  for (const std::string& name : nn::norm_names()) EXPECT_EQ(nn::to_string(nn::parse_norm(name)), name);
  EXPECT_THAT([] { nn::parse_norm("gn-ws"); },
              ThrowsMessage<Error>(HasSubstr("unknown normalization 'gn-ws' (known: bn, gn, ln, gn+ws, bcn+ws")));
  EXPECT_EQ(nn::parse_bcn_batch_part("estimated"), nn::BcnBatchPart::estimated);
  EXPECT_THAT([] { nn::parse_bcn_batch_part("micro"); }, ThrowsMessage<Error>(HasSubstr("known: batch, estimated")));
}

TEST(ModelNorms, GroupCount) {
  EXPECT_EQ(nn::group_count(64), 32);
  EXPECT_EQ(nn::group_count(4096), 32);
  EXPECT_EQ(nn::group_count(16), 16);
  EXPECT_EQ(nn::group_count(1), 1);
  EXPECT_EQ(nn::group_count(48), 24);
  EXPECT_EQ(nn::group_count(37), 1);  // a prime above 32: one group
}

class ModelNormsPerModel : public ::testing::TestWithParam<Arch> {};

TEST_P(ModelNormsPerModel, EveryNormTrainsAStepAtBatchTwoAndEight) {
  std::vector<nn::ModelConfig> norms;
  for (const std::string& n : nn::norm_names()) norms.push_back({.norm = nn::parse_norm(n)});
  norms.push_back({.norm = nn::Norm::bcn_ws, .bcn_batch_part = nn::BcnBatchPart::estimated});
  const Arch& a = GetParam();
  for (nn::ModelConfig c : norms) {
    c.name = a.name;
    c.width = a.width;
    const int64_t size = nn::model_image_size(a.name);
    const std::string what = std::string(a.name) + " " + nn::to_string(c.norm) +
                             (c.bcn_batch_part == nn::BcnBatchPart::estimated ? " (EstBN)" : "");
    auto model = nn::make_model(c);
    Generator gen(3);
    for (int64_t batch : {2, 8}) {
      model->train();
      model->zero_grad();
      const Tensor x = normal({batch, 1, size, size}, 0.f, 1.f, gen);
      std::vector<int64_t> labels;
      for (int64_t i = 0; i < batch; ++i) labels.push_back(i % 10);
      ag::Variable logits = model->forward(ag::Variable(x));
      ASSERT_EQ(logits.shape(), (Shape{batch, 10})) << what;
      ag::Variable loss = nn::cross_entropy(logits, labels);
      ASSERT_TRUE(std::isfinite(loss.item())) << what << " batch " << batch;
      loss.backward();
      for (auto& [name, p] : model->named_parameters()) {
        ASSERT_TRUE(p.grad().defined()) << what << ": no gradient for " << name;
        ASSERT_EQ(p.grad().shape(), p.shape()) << what << " " << name;
        ASSERT_TRUE(all_finite(p.grad())) << what << " " << name;
      }
      model->eval();
      ag::NoGradGuard no_grad;
      ASSERT_TRUE(all_finite(model->forward(ag::Variable(x)).value())) << what << " eval";
    }
  }
}
INSTANTIATE_TEST_SUITE_P(Models, ModelNormsPerModel, ::testing::ValuesIn(kArchs),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ModelNorms, ParameterNamesAreTheDocumentedOnes) {
  auto names_of = [](const nn::ModelConfig& c) {
    auto m = nn::make_model(c);
    return parameter_names(*m);
  };
  // Norm slots keep the BN's name; their parameters follow each layer's own names.
  auto gn = names_of({.norm = nn::Norm::gn});
  EXPECT_THAT(gn, Contains("bn1.weight"));
  EXPECT_THAT(gn, Not(Contains("conv1.bias")));
  auto bcn = nn::make_model({.norm = nn::Norm::bcn_ws, .bcn_batch_part = nn::BcnBatchPart::estimated});
  EXPECT_EQ(shape_of(*bcn, "bn1.weight"), (Shape{1, 32, 1}));
  EXPECT_EQ(shape_of(*bcn, "bn5.bias"), (Shape{1, 32, 1}));
  EXPECT_EQ(shape_of(*bcn, "bn1.bn.weight"), (Shape{32}));
  EXPECT_EQ(shape_of(*bcn, "bn1.bn.estbn_moving_speed"), (Shape{1}));
  EXPECT_EQ(shape_of(*bcn, "conv1.weight"), (Shape{32, 1, 3, 3}));  // WS reparametrises, keeps the name
  auto frn = names_of({.norm = nn::Norm::frn});
  EXPECT_THAT(frn, Contains("bn3.tau"));
  EXPECT_THAT(frn, Not(Contains("bn3.eps")));
  auto wn = nn::make_model({.norm = nn::Norm::wn});
  EXPECT_EQ(shape_of(*wn, "conv2.weight_g"), (Shape{32, 1, 1, 1}));
  EXPECT_EQ(shape_of(*wn, "conv2.weight_v"), (Shape{32, 32, 3, 3}));
  EXPECT_EQ(shape_of(*wn, "conv2.bias"), (Shape{32}));
  EXPECT_THAT(parameter_names(*wn), Not(Contains(::testing::StartsWith("bn"))));
  EXPECT_THAT(parameter_names(*wn), Contains("fc.weight"));  // the classifier stays plain
  auto none = names_of({.norm = nn::Norm::none});
  EXPECT_THAT(none, Contains("conv5.bias"));
  EXPECT_THAT(none, Not(Contains("conv5.weight_g")));
  // ResNet: the residual ReLU becomes a TLU under frn; BN after conv2 and in the shortcut is FRN alone.
  auto resnet_frn = nn::make_model({.name = "resnet18", .width = 0.25, .norm = nn::Norm::frn});
  EXPECT_EQ(shape_of(*resnet_frn, "layer2.0.act.tau"), (Shape{32}));
  EXPECT_THAT(parameter_names(*resnet_frn), Not(Contains("layer2.0.bn2.tau")));
  EXPECT_THAT(parameter_names(*resnet_frn), Contains("layer2.0.downsample.1.weight"));
  auto resnet_ln = nn::make_model({.name = "resnet18", .width = 0.25, .norm = nn::Norm::ln});
  EXPECT_EQ(shape_of(*resnet_ln, "layer1.0.bn2.weight"), (Shape{16}));
  // vgg_lpm heads: FRN learns its eps on the (N, 4096) features; WN on the head's linear layers.
  auto lpm_frn = nn::make_model({.name = "vgg11_lpm", .width = 0.125, .norm = nn::Norm::frn});
  EXPECT_EQ(shape_of(*lpm_frn, "head.1.eps"), (Shape{4096}));
  EXPECT_THAT(parameter_names(*lpm_frn), Not(Contains("features.1.eps")));
  auto lpm_wn = nn::make_model({.name = "vgg11_lpm", .width = 0.125, .norm = nn::Norm::wn});
  EXPECT_EQ(shape_of(*lpm_wn, "head.3.weight_g"), (Shape{4096, 1}));
  EXPECT_EQ(shape_of(*lpm_wn, "classifier.weight"), (Shape{10, 4096}));
}

TEST(ModelNorms, WeightNormStartsAtTheNormsOfTheUsualInitialWeights) {
  // weight_v is the weight a plain layer would draw (same generator sequence), weight_g its norms.
  auto plain = nn::make_model({.seed = 5, .norm = nn::Norm::none});
  auto wn = nn::make_model({.seed = 5, .norm = nn::Norm::wn});
  for (const char* conv : {"conv1", "conv4"}) {
    Tensor w, v, g;
    for (auto& [n, t] : plain->state())
      if (n == std::string(conv) + ".weight") w = t;
    for (auto& [n, t] : wn->state()) {
      if (n == std::string(conv) + ".weight_v") v = t;
      if (n == std::string(conv) + ".weight_g") g = t;
    }
    EXPECT_EQ(v.to_vector(), w.to_vector()) << conv;
    EXPECT_EQ(g.to_vector(), row_norms(w).to_vector()) << conv;
  }
}

TEST(ModelNorms, ActivationSitesAreTheNormSlotsAndResidualActivations) {
  for (const std::string& n : nn::norm_names()) {
    auto small = nn::make_model({.norm = nn::parse_norm(n)});
    EXPECT_THAT(site_names(*small), ElementsAre("bn1", "bn2", "bn3", "bn4", "bn5")) << n;
    auto vgg = nn::make_model({.name = "vgg11_lpm", .width = 0.125, .norm = nn::parse_norm(n)});
    EXPECT_THAT(site_names(*vgg), ElementsAre("features.1", "features.5", "features.9", "features.12", "features.16",
                                              "features.19", "features.23", "features.26", "head.1", "head.4"))
        << n;
    auto resnet = nn::make_model({.name = "resnet18", .width = 0.25, .norm = nn::parse_norm(n)});
    const std::vector<std::string> sites = site_names(*resnet);
    ASSERT_EQ(sites.size(), 17u) << n;  // the stem, then per block its bn1 and its residual activation
    EXPECT_EQ(sites[0], "bn1");
    EXPECT_EQ(sites[1], "layer1.0.bn1");
    EXPECT_EQ(sites[2], "layer1.0.act");
    EXPECT_EQ(sites[16], "layer4.1.act");
  }
}

TEST(ModelNorms, AProbeSeesPreAndPostActivationWithoutChangingTheBits) {
  struct Recorder : nn::ActivationProbe {
    int calls = 0;
    bool consistent = true;
    void record(const Tensor& pre, const Tensor& post, const Tensor& floor) override {
      ++calls;
      const std::vector<float> a = pre.to_vector(), b = post.to_vector();
      const std::vector<float> f = floor.defined() ? floor.to_vector() : std::vector<float>();
      const int64_t C = pre.size(1), S = pre.numel() / (pre.size(0) * C);
      for (size_t i = 0; i < a.size(); ++i) {
        const float lo = f.empty() ? 0.f : f[(i / S) % C];
        consistent = consistent && b[i] == std::max(a[i], lo);
      }
    }
  };
  Generator gen(4);
  const Tensor x = normal({2, 1, 32, 32}, 0.f, 1.f, gen);
  for (const std::string& n : nn::norm_names()) {
    for (const char* arch : {"resnet18", "vgg11_lpm"}) {
      const std::string what = std::string(arch) + " " + n;
      auto model = nn::make_model({.name = arch, .width = 0.125, .norm = nn::parse_norm(n)});
      model->eval();
      const std::vector<float> plain = model->forward(ag::Variable(x)).value().to_vector();
      Recorder recorder;
      for (auto& [name, site] : nn::activation_sites(*model)) site->probe = &recorder;
      const std::vector<float> probed = model->forward(ag::Variable(x)).value().to_vector();
      EXPECT_EQ(probed, plain) << what;
      EXPECT_EQ(recorder.calls, static_cast<int>(nn::activation_sites(*model).size())) << what;
      EXPECT_TRUE(recorder.consistent) << what << ": post != max(pre, floor)";
    }
  }
}
