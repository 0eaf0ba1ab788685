// Group and layer normalisation kernels (tensor/kernels/norm.h) against straightforward
// double-precision loops written here, on random inputs in every memory layout. Their backward
// passes are checked against finite differences through nn::group_norm in
// tests/nn/test_nn_gradcheck.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/random.h"
#include "tests/support/error_matchers.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::kernel_checks;
using peel::testing::ThrowsErrorWith;

namespace {

struct GroupNormReference {
  std::vector<double> y, mean, inv_std;  // mean, inv_std: (N, G)
};

GroupNormReference group_norm_reference(const std::vector<double>& x, const NormDims& d, int64_t G,
                                        const std::vector<double>& gamma, const std::vector<double>& beta, double eps) {
  GroupNormReference r;
  r.y.assign(x.size(), 0);
  const int64_t Cg = d.C / G, D = Cg * d.S;
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t first = (n * d.C + g * Cg) * d.S;  // a group is contiguous in (N, C, S) order
      double mean = 0, var = 0;
      for (int64_t i = first; i < first + D; ++i) mean += x[i];
      mean /= D;
      for (int64_t i = first; i < first + D; ++i) var += (x[i] - mean) * (x[i] - mean);
      var /= D;
      const double inv_std = 1 / std::sqrt(var + eps);
      r.mean.push_back(mean);
      r.inv_std.push_back(inv_std);
      for (int64_t i = first; i < first + D; ++i) {
        const int64_t c = (i / d.S) % d.C;
        r.y[i] = (x[i] - mean) * inv_std * gamma[c] + beta[c];
      }
    }
  return r;
}

void group_norm_backward_reference(const std::vector<double>& x, const std::vector<double>& gy, const NormDims& d,
                                   int64_t G, const std::vector<double>& gamma, double eps, std::vector<double>& dx,
                                   std::vector<double>& dgamma, std::vector<double>& dbeta) {
  const GroupNormReference r =
      group_norm_reference(x, d, G, std::vector<double>(d.C, 1), std::vector<double>(d.C, 0), eps);
  dx.assign(x.size(), 0);
  dgamma.assign(d.C, 0);
  dbeta.assign(d.C, 0);
  const int64_t Cg = d.C / G, D = Cg * d.S;
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t first = (n * d.C + g * Cg) * d.S;
      const double mean = r.mean[n * G + g], inv_std = r.inv_std[n * G + g];
      double sum_g = 0, sum_gxhat = 0;
      for (int64_t i = first; i < first + D; ++i) {
        const int64_t c = (i / d.S) % d.C;
        const double xhat = (x[i] - mean) * inv_std;
        sum_g += gy[i] * gamma[c];
        sum_gxhat += gy[i] * gamma[c] * xhat;
        dgamma[c] += gy[i] * xhat;
        dbeta[c] += gy[i];
      }
      for (int64_t i = first; i < first + D; ++i) {
        const int64_t c = (i / d.S) % d.C;
        const double xhat = (x[i] - mean) * inv_std;
        dx[i] = inv_std / D * (D * gy[i] * gamma[c] - sum_g - xhat * sum_gxhat);
      }
    }
}

struct GroupCase {
  Shape shape;
  int64_t groups;
};

const GroupCase kGroupCases[] = {{{3, 6, 5, 7}, 1},  {{3, 6, 5, 7}, 6},    {{3, 6, 5, 7}, 3},
                                 {{2, 48, 4, 5}, 4}, {{2, 300, 3, 2}, 10}, {{2, 8, 40, 45}, 2},
                                 {{5, 12}, 1},       {{5, 12}, 4},         {{4, 6, 9}, 2}};

}  // namespace

TEST(GroupNorm, ForwardMatchesReference) {
  Generator gen(12);
  for (const GroupCase& gc : kGroupCases) {
    const NormDims d = norm_dims(gc.shape);
    for (bool affine : {true, false}) {
      const Tensor x = random_tensor(gc.shape, gen, 2.f, 3.f);
      const Tensor gamma = affine ? random_tensor({d.C}, gen) : Tensor();
      const Tensor beta = affine ? random_tensor({d.C}, gen) : Tensor();
      const GroupNormReference ref =
          group_norm_reference(to_double(x), d, gc.groups, values_or(gamma, d.C, 1), values_or(beta, d.C, 0), 1e-5);
      for (Layout l : kLayouts) {
        const std::string what = "group_norm " + to_string(gc.shape) + " G=" + std::to_string(gc.groups) +
                                 (affine ? " affine " : " ") + layout_name(l);
        GroupNormSaved saved;
        const Tensor y = group_norm_forward(in_layout(x, l), gc.groups, gamma, beta, 1e-5f, saved);
        expect_close(y, ref.y, 1e-5, 1e-5, what);
        expect_layout_follows(y, l, what);
        EXPECT_EQ(saved.mean.shape(), (Shape{d.N, gc.groups})) << what;
        expect_close(saved.mean, ref.mean, 1e-5, 1e-6, what + " mean");
        expect_close(saved.inv_std, ref.inv_std, 0, 1e-5, what + " inv_std");
      }
    }
  }
}

TEST(GroupNorm, BackwardMatchesReference) {
  Generator gen(13);
  for (const GroupCase& gc : kGroupCases) {
    const NormDims d = norm_dims(gc.shape);
    for (bool affine : {true, false}) {
      const Tensor x = random_tensor(gc.shape, gen, -1.f, 2.f);
      const Tensor gy = random_tensor(gc.shape, gen);
      const Tensor gamma = affine ? random_tensor({d.C}, gen) : Tensor();
      const Tensor beta = affine ? random_tensor({d.C}, gen) : Tensor();
      std::vector<double> dx, dgamma, dbeta;
      group_norm_backward_reference(to_double(x), to_double(gy), d, gc.groups, values_or(gamma, d.C, 1), 1e-5, dx,
                                    dgamma, dbeta);
      for (Layout l : kLayouts) {
        const std::string what = "group_norm backward " + to_string(gc.shape) + " G=" + std::to_string(gc.groups) +
                                 (affine ? " affine " : " ") + layout_name(l);
        GroupNormSaved saved;
        const Tensor xl = in_layout(x, l);
        group_norm_forward(xl, gc.groups, gamma, beta, 1e-5f, saved);
        const BatchNormGrads grads = group_norm_backward(in_layout(gy, l), xl, gc.groups, gamma, saved);
        expect_close(grads.x, dx, 2e-5, 1e-4, what + " dx");
        expect_layout_follows(grads.x, l, what);
        ASSERT_EQ(grads.gamma.defined(), affine) << what;
        if (affine) {
          expect_close(grads.gamma, dgamma, 1e-4, 1e-5, what + " dgamma");
          expect_close(grads.beta, dbeta, 1e-4, 1e-5, what + " dbeta");
        }
      }
    }
  }
}

TEST(GroupNorm, FusedReluIsTheReluOfTheNormAndMasksItsGradient) {
  Generator gen(14);
  for (const GroupCase& gc : kGroupCases) {
    const NormDims d = norm_dims(gc.shape);
    const Tensor x = random_tensor(gc.shape, gen, 0.3f, 1.5f), gy = random_tensor(gc.shape, gen);
    const Tensor gamma = random_tensor({d.C}, gen), beta = random_tensor({d.C}, gen);
    for (Layout l : kLayouts) {
      const std::string what =
          "group_norm relu " + to_string(gc.shape) + " G=" + std::to_string(gc.groups) + " " + layout_name(l);
      const Tensor xl = in_layout(x, l), gyl = in_layout(gy, l);
      GroupNormSaved plain_saved, relu_saved;
      const Tensor y = group_norm_forward(xl, gc.groups, gamma, beta, 1e-5f, plain_saved);
      const Tensor y_relu = group_norm_forward(xl, gc.groups, gamma, beta, 1e-5f, relu_saved, true);
      const std::vector<float> plain = y.to_vector(), fused = y_relu.to_vector();
      std::vector<float> masked = gy.to_vector();
      size_t zeros = 0;
      for (size_t i = 0; i < plain.size(); ++i) {
        EXPECT_EQ(fused[i], plain[i] > 0.f ? plain[i] : 0.f) << what << " element " << i;
        if (plain[i] <= 0.f) {
          masked[i] = 0.f;
          ++zeros;
        }
      }
      EXPECT_GT(zeros, 0u) << what << ": the ReLU should cut something";
      // The backward with the fused ReLU is the plain backward of the masked gradient, to the bit:
      // its mask, re-evaluated from x and the saved affine, is exactly where y is 0.
      const Tensor gy_masked = in_layout(Tensor::from_vector(masked, gc.shape), l);
      const BatchNormGrads want = group_norm_backward(gy_masked, xl, gc.groups, gamma, plain_saved);
      const BatchNormGrads got = group_norm_backward(gyl, xl, gc.groups, gamma, relu_saved, true);
      EXPECT_EQ(got.x.to_vector(), want.x.to_vector()) << what << " dx";
      EXPECT_EQ(got.gamma.to_vector(), want.gamma.to_vector()) << what << " dgamma";
      EXPECT_EQ(got.beta.to_vector(), want.beta.to_vector()) << what << " dbeta";
    }
  }
}

TEST(GroupNorm, LargeMeanDoesNotCancel) {
  Generator gen(61);
  const Shape shape{3, 8, 9, 10};
  const Tensor x = random_tensor(shape, gen, -1e4f, 0.1f);
  const NormDims d = norm_dims(shape);
  const GroupNormReference ref =
      group_norm_reference(to_double(x), d, 2, std::vector<double>(d.C, 1), std::vector<double>(d.C, 0), 1e-5);
  for (Layout l : kLayouts) {
    GroupNormSaved saved;
    const Tensor y = group_norm_forward(in_layout(x, l), 2, Tensor(), Tensor(), 1e-5f, saved);
    expect_close(y, ref.y, 1e-5, 1e-5, "group norm large mean " + layout_name(l));
    expect_close(saved.inv_std, ref.inv_std, 0, 1e-5, "group norm large mean inv_std " + layout_name(l));
  }
}

TEST(GroupNorm, SteadyStateCallsReuseCachedBuffers) {
  Generator gen(102);
  const Shape shape{16, 32, 14, 14};
  const Tensor x = random_tensor(shape, gen).channels_last(), gy = random_tensor(shape, gen).channels_last();
  const Tensor gamma = random_tensor({32}, gen), beta = random_tensor({32}, gen);
  auto step = [&] {
    GroupNormSaved saved;
    const Tensor z = group_norm_forward(x, 4, gamma, beta, 1e-5f, saved);
    const BatchNormGrads grads = group_norm_backward(gy, x, 4, gamma, saved);
  };
  expect_steady_state_reuses_buffers(step);
}

// ---- Errors name what was wrong --------------------------------------------------------------------

TEST(GroupNormErrors, BadShapesAndArgumentsAreNamed) {
  const Tensor x = Tensor::zeros({2, 3, 4, 4});
  GroupNormSaved saved;
  EXPECT_THAT([&] { group_norm_forward(x, 2, Tensor(), Tensor(), 1e-5f, saved); },
              ThrowsErrorWith("group_norm_forward", "divisible", "groups=2", "[2, 3, 4, 4]"));
  EXPECT_THAT([&] { group_norm_forward(x, 3, Tensor::ones({6}), Tensor(), 1e-5f, saved); },
              ThrowsErrorWith("gamma", "[6]"));
  group_norm_forward(x, 3, Tensor(), Tensor(), 1e-5f, saved);
  EXPECT_THAT([&] { group_norm_backward(x, x, 1, Tensor(), saved); },
              ThrowsErrorWith("group_norm_backward", "[2, 1]", "[2, 3]"));
  const GroupNormSaved statistics_only{saved.mean, saved.inv_std};
  EXPECT_THAT([&] { group_norm_backward(x, x, 3, Tensor(), statistics_only, true); },
              ThrowsErrorWith("group_norm_backward", "fused ReLU", "scale and shift", "[2, 3]"));
}
