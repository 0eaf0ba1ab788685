// The fused batch-channel normalisation (tensor/kernels/norm_extra.h) against the three kernels it
// replaces, run one after another: batch norm (training or eval form), group norm with the group's
// affine spread over its channels, and the ReLU; forward, running statistics and every gradient, in
// every memory layout, with batch and with given statistics, with and without the batch part's
// affine and the ReLU. Finite differences through the op: tests/nn/test_norm_gradcheck.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/norm_extra.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::kernel_checks;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

struct Case {
  Shape shape;
  int64_t groups;
};
const Case kCases[] = {
    {{4, 64, 7, 5}, 32},  // small_cnn's widths: two channels per group
    {{2, 32, 6, 6}, 32},  // micro-batch, one channel per group
    {{5, 12, 3, 4}, 3},   // four channels per group
    {{6, 8}, 2},          // (N, C): one value per sample and channel
    {{5, 4}, 2},          // (N, C), two channels per group
};

// The group's weight spread over its channels, as group_affine_norm does.
Tensor per_channel(const Tensor& per_group, int64_t C) {
  const int64_t G = per_group.numel();
  return per_group.reshape({G, 1}).expand({G, C / G}).contiguous().reshape({C});
}

// Group sums of a per-channel gradient.
std::vector<double> per_group_sums(const Tensor& per_channel_grad, int64_t G) {
  const std::vector<float> v = per_channel_grad.to_vector();
  std::vector<double> out(G, 0.0);
  for (size_t c = 0; c < v.size(); ++c) out[c / (v.size() / G)] += v[c];
  return out;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, static_cast<double>(std::abs(v)));
  return m;
}

// got against want, to 1e-4 of want's largest magnitude (sums over many values cancel).
void expect_matches(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.shape(), want.shape()) << what;
  expect_close(got, to_double(want), 1e-4 * std::max(1.0, max_abs(want)), 0.0, what);
}

struct Mode {
  BcnStatistics statistics;
  bool affine, relu;
};

TEST(BatchChannelNormKernel, MatchesTheThreeKernelsItFuses) {
  Generator gen(42);
  for (const Case& c : kCases)
    for (Layout layout : kLayouts)
      for (Mode mode : {Mode{BcnStatistics::kBatch, true, true}, Mode{BcnStatistics::kBatch, false, false},
                        Mode{BcnStatistics::kBatch, true, false}, Mode{BcnStatistics::kRunning, true, true},
                        Mode{BcnStatistics::kRunning, false, false}}) {
        const bool batch = mode.statistics == BcnStatistics::kBatch;
        SCOPED_TRACE(::testing::Message()
                     << to_string(c.shape) << " groups " << c.groups << " " << layout_name(layout)
                     << (batch ? " batch" : " running") << " affine " << mode.affine << " relu " << mode.relu);
        const int64_t C = c.shape[1], G = c.groups;
        // An offset mean, so that centring matters.
        const Tensor x = in_layout(random_tensor(c.shape, gen, 0.7f, 1.3f), layout);
        const Tensor gy = in_layout(random_tensor(c.shape, gen), layout);
        BcnParameters p;
        if (mode.affine) {
          p.bn_gamma = uniform({C}, 0.5f, 1.5f, gen);
          p.bn_beta = normal({C}, 0.f, 0.5f, gen);
        }
        p.group_weight = uniform({1, G, 1}, 0.5f, 1.5f, gen);
        p.group_bias = normal({1, G, 1}, 0.f, 0.5f, gen);
        p.groups = G;
        p.bn_eps = 2e-5f;
        p.eps = 1e-5f;
        p.relu = mode.relu;
        const Tensor rm0 = normal({C}, 0.5f, 0.3f, gen), rv0 = uniform({C}, 0.5f, 2.f, gen);

        // The three kernels.
        Tensor rm_ref = rm0.clone(), rv_ref = rv0.clone();
        BatchNormSaved bn_saved;
        const Tensor z =
            batch ? batch_norm_train_forward(x, p.bn_gamma, p.bn_beta, rm_ref, rv_ref, 0.1f, p.bn_eps, bn_saved)
                  : batch_norm_eval_forward(x, p.bn_gamma, p.bn_beta, rm_ref, rv_ref, p.bn_eps);
        GroupNormSaved gn_saved;
        const Tensor wc = per_channel(p.group_weight, C), bc = per_channel(p.group_bias, C);
        const Tensor t = group_norm_forward(z, G, wc, bc, p.eps, gn_saved);
        const Tensor y_ref = mode.relu ? relu(t) : t;
        const Tensor masked_gy = mode.relu ? where(peel::gt(t, Tensor::zeros({1})), gy, Tensor::zeros(c.shape)) : gy;
        const BatchNormGrads gn_grads = group_norm_backward(masked_gy, z, G, wc, gn_saved);
        const BatchNormGrads bn_grads =
            batch ? batch_norm_train_backward(gn_grads.x, x, p.bn_gamma, bn_saved)
                  : batch_norm_eval_backward(gn_grads.x, x, p.bn_gamma, p.bn_beta, rm_ref, rv_ref, p.bn_eps);

        // The fused op.
        Tensor rm = rm0.clone(), rv = rv0.clone();
        BcnSaved saved;
        const Tensor y = batch_channel_norm_forward(x, p, rm, rv, mode.statistics, 0.1f, saved);
        expect_layout_follows(y, layout, "y");
        expect_matches(y, y_ref, "y");
        expect_matches(rm, rm_ref, "running_mean");
        expect_matches(rv, rv_ref, "running_var");
        const BcnGrads d = batch_channel_norm_backward(gy, x, y, p, saved);
        expect_matches(d.x, bn_grads.x, "dx");
        expect_close(d.group_weight, per_group_sums(gn_grads.gamma, G), 1e-4 * std::max(1.0, max_abs(gn_grads.gamma)),
                     0.0, "d group_weight");
        expect_close(d.group_bias, per_group_sums(gn_grads.beta, G), 1e-4 * std::max(1.0, max_abs(gn_grads.beta)), 0.0,
                     "d group_bias");
        EXPECT_EQ(d.group_weight.shape(), p.group_weight.shape());
        EXPECT_EQ(d.bn_gamma.defined(), mode.affine);
        if (mode.affine) {
          expect_matches(d.bn_gamma, bn_grads.gamma, "d bn_gamma");
          expect_matches(d.bn_beta, bn_grads.beta, "d bn_beta");
        }
      }
}

TEST(BatchChannelNormKernel, ResultsDoNotDependOnTheThreadCount) {
  Generator gen(3);
  const Tensor x = random_tensor({3, 64, 9, 9}, gen).channels_last(), gy = random_tensor({3, 64, 9, 9}, gen);
  BcnParameters p;
  p.group_weight = Tensor::ones({1, 32, 1});
  p.group_bias = Tensor::zeros({1, 32, 1});
  p.groups = 32;
  p.relu = true;
  auto run = [&](int threads) {
    set_num_threads(threads);
    Tensor rm = Tensor::zeros({64}), rv = Tensor::ones({64});
    BcnSaved saved;
    const Tensor y = batch_channel_norm_forward(x, p, rm, rv, BcnStatistics::kBatch, 0.1f, saved);
    const BcnGrads d = batch_channel_norm_backward(gy, x, y, p, saved);
    return std::vector<std::vector<float>>{y.to_vector(), d.x.to_vector(), d.group_weight.to_vector(), rv.to_vector()};
  };
  const int before = num_threads();
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  EXPECT_EQ(one, two);
}

TEST(BatchChannelNormKernel, RefusesWhatDoesNotFit) {
  const Tensor x = Tensor::zeros({2, 6, 3, 3});
  Tensor rm = Tensor::zeros({6}), rv = Tensor::ones({6}), none;
  BcnSaved saved;
  BcnParameters p;
  p.group_weight = Tensor::ones({1, 4, 1});
  p.group_bias = Tensor::zeros({1, 4, 1});
  p.groups = 4;
  EXPECT_THAT([&] { batch_channel_norm_forward(x, p, rm, rv, BcnStatistics::kBatch, 0.1f, saved); },
              ThrowsMessage<Error>(HasSubstr("the 6 channels of input shape [2, 6, 3, 3] cannot be split into 4")));
  p.groups = 3;
  EXPECT_THAT([&] { batch_channel_norm_forward(x, p, rm, rv, BcnStatistics::kBatch, 0.1f, saved); },
              ThrowsMessage<Error>(HasSubstr("one value per group (3), got shapes [1, 4, 1] and [1, 4, 1]")));
  p.group_weight = Tensor::ones({3});
  p.group_bias = Tensor::zeros({3});
  EXPECT_THAT([&] { batch_channel_norm_forward(x, p, none, none, BcnStatistics::kRunning, 0.1f, saved); },
              ThrowsMessage<Error>(HasSubstr("given statistics needs running_mean and running_var")));
  EXPECT_THAT(
      [&] {
        batch_channel_norm_forward(Tensor::zeros({1, 6, 1, 1}), p, rm, rv, BcnStatistics::kBatch, 0.1f, saved);
      },
      ThrowsMessage<Error>(HasSubstr("expected more than 1 value per channel")));
  const Tensor y = batch_channel_norm_forward(x, p, rm, rv, BcnStatistics::kBatch, 0.1f, saved);
  BcnSaved other = saved;
  other.group_mean = Tensor::zeros({2, 2});
  EXPECT_THAT([&] { batch_channel_norm_backward(x, x, y, p, other); },
              ThrowsMessage<Error>(HasSubstr("the saved statistics do not belong to input shape [2, 6, 3, 3]")));
}

}  // namespace
