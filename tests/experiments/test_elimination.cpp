// The elimination-singularity instruments (experiments/normalization/elimination.h) on models whose
// dead channels are known by construction, against statistics computed here, and their columns.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "experiments/normalization/elimination.h"
#include "tensor/error.h"
#include "tensor/random.h"

using namespace peel;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

// The state entry `name` of `m`: a handle on the model's own storage.
Tensor entry(nn::Module& m, const std::string& name) {
  for (auto& [n, t] : m.state())
    if (n == name) return t;
  ADD_FAILURE() << "no state entry " << name;
  return Tensor::zeros({64});
}

// small_cnn whose first convolution has tiny weights on channels 3, 7 and 20; without a norm, a bias
// of -1 then makes them negative for every input in [-1, 1].
std::shared_ptr<nn::Network> model_with_dead_channels(nn::Norm norm) {
  auto model = nn::make_model({.seed = 1, .norm = norm});
  Tensor w = entry(*model, "conv1.weight");
  float* wd = w.data();
  for (int64_t k : {3, 7, 20}) {
    for (int64_t i = 0; i < 9; ++i) wd[k * 9 + i] = 0.01f * static_cast<float>(i % 3 - 1);
    if (norm == nn::Norm::none) entry(*model, "conv1.bias").data()[k] = -1.f;
  }
  return model;
}

Tensor uniform_probe(int64_t n, uint64_t seed) {
  Generator gen(seed);
  return uniform({n, 1, 28, 28}, -1.f, 1.f, gen);
}

}  // namespace

TEST(Elimination, QuantileFollowsNumpysLinearRule) {
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 0.25), 1.75);
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 0.0), 1);
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 1.0), 4);
  EXPECT_EQ(quantile({-INFINITY, 1, 2}, 0.0), -INFINITY);
  EXPECT_TRUE(std::isnan(quantile({1, NAN, 2}, 0.5)));
  EXPECT_TRUE(std::isnan(quantile({}, 0.5)));
}

TEST(Elimination, ProbeChoiceIsSeededDistinctAndSorted) {
  const std::vector<int64_t> a = choose_probe(1000, 512, 7), b = choose_probe(1000, 512, 7);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, choose_probe(1000, 512, 8));
  EXPECT_EQ(a.size(), 512u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 512u);
  EXPECT_EQ(choose_probe(10, 512, 7).size(), 10u);
  data::Dataset d;
  d.images = Tensor::arange(20 * 4).reshape({20, 1, 2, 2});
  d.labels.assign(20, 0);
  const Tensor p = probe_images(d, 5, 3);
  const std::vector<int64_t> idx = choose_probe(20, 5, 3);
  ASSERT_EQ(p.shape(), (Shape{5, 1, 2, 2}));
  for (size_t i = 0; i < idx.size(); ++i) EXPECT_EQ(p.at({static_cast<int64_t>(i), 0, 0, 0}), 4.f * idx[i]);
}

TEST(Elimination, FindsTheChannelsMadeDeadAndTheirStatistics) {
  auto model = model_with_dead_channels(nn::Norm::none);
  const Tensor probe = uniform_probe(40, 2);
  const EliminationMetrics m = measure_elimination(*model, probe, {.batch_size = 16});
  ASSERT_EQ(m.sites.size(), 5u);
  const SiteElimination& bn1 = m.sites[0];
  EXPECT_EQ(bn1.site, "bn1");
  ASSERT_EQ(bn1.channels, 32);
  for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(bn1.eliminated[c], c == 3 || c == 7 || c == 20) << c;
  EXPECT_DOUBLE_EQ(bn1.eliminated_fraction(), 3.0 / 32);

  // The pre-activation of bn1 is conv1's output: its per-channel statistics, computed here.
  ag::NoGradGuard no_grad;
  auto& conv1 = dynamic_cast<nn::SmallCnn&>(*model).conv1;
  const Tensor pre = conv1->forward(ag::Variable(probe)).value().contiguous();
  const int64_t S = 28 * 28;
  std::vector<double> means, stds, zs;
  for (int64_t c = 0; c < 32; ++c) {
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < 40; ++n)
      for (int64_t s = 0; s < S; ++s) {
        const double v = pre.data()[(n * 32 + c) * S + s];
        s1 += v;
        s2 += v * v;
      }
    const double mean = s1 / (40 * S), sd = std::sqrt(s2 / (40 * S) - mean * mean);
    EXPECT_NEAR(bn1.pre_mean[c], mean, 1e-6) << c;
    EXPECT_NEAR(bn1.pre_std[c], sd, 1e-6) << c;
    means.push_back(mean);
    stds.push_back(sd);
    zs.push_back(mean / sd);
  }
  EXPECT_LT(bn1.pre_z[3], -10);  // mean near -1, spread about 0.01
  const MetricColumns cols = m.to_columns();
  auto column = [&](const std::string& name) {
    for (auto& [n, v] : cols)
      if (n == name) return v;
    ADD_FAILURE() << "no column " << name;
    return 0.0;
  };
  EXPECT_EQ(cols.size(), 1u + 5u * (1 + 3 * 5));
  EXPECT_EQ(cols[1].first, "es_bn1_eliminated");
  EXPECT_EQ(cols[2].first, "es_bn1_premean_q05");
  EXPECT_DOUBLE_EQ(column("es_bn1_eliminated"), 3.0 / 32);
  EXPECT_NEAR(column("es_bn1_premean_q50"), quantile(means, 0.5), 1e-6);
  EXPECT_NEAR(column("es_bn1_prestd_q95"), quantile(stds, 0.95), 1e-6);
  EXPECT_NEAR(column("es_bn1_prez_q05"), quantile(zs, 0.05), 1e-3);
  EXPECT_EQ(cols.back().first, "es_bn5_prez_q95");
}

TEST(Elimination, BatchNormChannelsPushedBelowZeroAreEliminatedInEvalMode) {
  auto model = nn::make_model({.seed = 1});
  for (int64_t k : {0, 31}) entry(*model, "bn1.bias").data()[k] = -50.f;
  const EliminationMetrics m = measure_elimination(*model, uniform_probe(24, 3));
  EXPECT_EQ(m.mode, ProbeMode::eval);
  const SiteElimination& bn1 = m.sites[0];
  for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(bn1.eliminated[c], c == 0 || c == 31) << c;
  EXPECT_LT(bn1.pre_z[0], -5);
}

TEST(Elimination, TluChannelsClippedEverywhereAreEliminated) {
  auto model = nn::make_model({.seed = 1, .norm = nn::Norm::frn});
  entry(*model, "bn2.tau").data()[5] = 1000.f;  // y never reaches tau: z == tau everywhere
  const EliminationMetrics m = measure_elimination(*model, uniform_probe(8, 4));
  const SiteElimination& bn2 = m.sites[1];
  EXPECT_EQ(bn2.site, "bn2");
  for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(bn2.eliminated[c], c == 5) << c;
  EXPECT_LT(bn2.pre_z[5], -100);  // z is measured from the floor tau
}

TEST(Elimination, EvalResultsDoNotDependOnTheBatchSize) {
  auto model = model_with_dead_channels(nn::Norm::gn_ws);
  const Tensor probe = uniform_probe(30, 5);
  const EliminationMetrics a = measure_elimination(*model, probe, {.batch_size = 7});
  const EliminationMetrics b = measure_elimination(*model, probe, {.batch_size = 30});
  const MetricColumns ca = a.to_columns(), cb = b.to_columns();
  ASSERT_EQ(ca.size(), cb.size());
  for (size_t i = 0; i < ca.size(); ++i) EXPECT_NEAR(ca[i].second, cb[i].second, 1e-5) << ca[i].first;
}

TEST(Elimination, TrainModeRestoresTheStateAndTheMode) {
  for (const nn::ModelConfig& config : {nn::ModelConfig{.seed = 1}, nn::ModelConfig{.seed = 1,
                                                                    .norm = nn::Norm::bcn_ws,
                                                                    .bcn_batch_part = nn::BcnBatchPart::estimated,
                                                                    .estbn_moving_speed = 0.5f}}) {
    auto model = nn::make_model(config);
    model->eval();
    std::vector<std::vector<float>> before;
    for (auto& [n, t] : model->state()) before.push_back(t.to_vector());
    const Tensor probe = uniform_probe(16, 6);
    const EliminationMetrics train = measure_elimination(*model, probe, {.mode = ProbeMode::train});
    EXPECT_FALSE(model->is_training());
    size_t i = 0;
    for (auto& [n, t] : model->state()) EXPECT_EQ(t.to_vector(), before[i++]) << n;
    // BN with the probe's own statistics differs from BN with the running ones.
    const EliminationMetrics eval = measure_elimination(*model, probe);
    EXPECT_NE(train.sites[0].pre_mean, eval.sites[0].pre_mean);
    for (auto& [name, site] : nn::activation_sites(*model)) EXPECT_EQ(site->probe, nullptr) << name;
  }
}

TEST(Elimination, BadProbeIsNamed) {
  auto model = nn::make_model({});
  EXPECT_THAT(
      [&] {
        measure_elimination(*model, Tensor::zeros({4, 784}));
      },
      ThrowsMessage<Error>(HasSubstr("the probe must be a non-empty (N, C, H, W) batch, got [4, 784]")));
}
