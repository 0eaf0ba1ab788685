// Batch normalisation kernels (tensor/kernels/norm.h) against straightforward double-precision
// loops written here, on random inputs in every memory layout, with and without the fused ReLU.
// Their backward passes are checked against finite differences through nn::batch_norm in
// tests/nn/test_nn_gradcheck.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tests/support/error_matchers.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::kernel_checks;
using peel::testing::ThrowsErrorWith;

namespace {

struct BatchNormReference {
  std::vector<double> y, mean, var;  // var: biased
};

BatchNormReference batch_norm_reference(const std::vector<double>& x, const NormDims& d,
                                        const std::vector<double>& gamma, const std::vector<double>& beta, double eps,
                                        bool relu) {
  BatchNormReference r;
  r.mean.assign(d.C, 0);
  r.var.assign(d.C, 0);
  r.y.assign(x.size(), 0);
  const double M = static_cast<double>(d.N * d.S);
  for (int64_t c = 0; c < d.C; ++c) {
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t s = 0; s < d.S; ++s) r.mean[c] += x[(n * d.C + c) * d.S + s];
    r.mean[c] /= M;
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t s = 0; s < d.S; ++s) r.var[c] += std::pow(x[(n * d.C + c) * d.S + s] - r.mean[c], 2);
    r.var[c] /= M;
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t s = 0; s < d.S; ++s) {
        const int64_t i = (n * d.C + c) * d.S + s;
        const double v = (x[i] - r.mean[c]) / std::sqrt(r.var[c] + eps) * gamma[c] + beta[c];
        r.y[i] = relu ? std::max(v, 0.0) : v;
      }
  }
  return r;
}

// dx, dgamma, dbeta of y = gamma * (x - mean) / sqrt(var + eps) + beta with batch statistics,
// grad masked where y <= 0 when `relu`.
void batch_norm_backward_reference(const std::vector<double>& x, const std::vector<double>& gy,
                                   const std::vector<double>& y, const NormDims& d, const std::vector<double>& gamma,
                                   double eps, bool relu, std::vector<double>& dx, std::vector<double>& dgamma,
                                   std::vector<double>& dbeta) {
  const BatchNormReference r = batch_norm_reference(x, d, gamma, std::vector<double>(d.C, 0), eps, false);
  const double M = static_cast<double>(d.N * d.S);
  dx.assign(x.size(), 0);
  dgamma.assign(d.C, 0);
  dbeta.assign(d.C, 0);
  auto each = [&](int64_t c, auto&& f) {
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t s = 0; s < d.S; ++s) f((n * d.C + c) * d.S + s);
  };
  for (int64_t c = 0; c < d.C; ++c) {
    const double inv_std = 1 / std::sqrt(r.var[c] + eps);
    auto g = [&](int64_t i) { return relu && y[i] <= 0 ? 0.0 : gy[i]; };
    double sum_g = 0, sum_gxhat = 0;
    each(c, [&](int64_t i) {
      sum_g += g(i);
      sum_gxhat += g(i) * (x[i] - r.mean[c]) * inv_std;
    });
    dgamma[c] = sum_gxhat;
    dbeta[c] = sum_g;
    each(c, [&](int64_t i) {
      const double xhat = (x[i] - r.mean[c]) * inv_std;
      dx[i] = gamma[c] * inv_std / M * (M * g(i) - sum_g - xhat * sum_gxhat);
    });
  }
}

const Shape kNormShapes[] = {Shape{4, 5, 3, 7}, Shape{3, 61, 5, 4}, Shape{2, 300, 2, 3}, Shape{8, 5, 30, 31},
                             Shape{16, 7},      Shape{5, 6, 11},    Shape{6, 9, 1, 1}};

}  // namespace

TEST(BatchNorm, TrainForwardMatchesReferenceAndUpdatesRunningStatistics) {
  Generator gen(5);
  const float eps = 1e-5f, momentum = 0.1f;
  for (const Shape& shape : kNormShapes) {
    const NormDims d = norm_dims(shape);
    for (bool affine : {true, false}) {
      for (bool relu : {false, true}) {
        const Tensor x = random_tensor(shape, gen, 0.5f, 2.f);
        const Tensor gamma = affine ? random_tensor({d.C}, gen) : Tensor();
        const Tensor beta = affine ? random_tensor({d.C}, gen) : Tensor();
        const BatchNormReference ref =
            batch_norm_reference(to_double(x), d, values_or(gamma, d.C, 1), values_or(beta, d.C, 0), eps, relu);
        for (Layout l : kLayouts) {
          const std::string what =
              "batch_norm " + to_string(shape) + (affine ? " affine" : "") + (relu ? " relu " : " ") + layout_name(l);
          Tensor running_mean = random_tensor({d.C}, gen), running_var = uniform({d.C}, 0.5f, 2.f, gen);
          const std::vector<double> rm0 = to_double(running_mean), rv0 = to_double(running_var);
          BatchNormSaved saved;
          const Tensor y = batch_norm_train_forward(in_layout(x, l), gamma, beta, running_mean, running_var, momentum,
                                                    eps, saved, relu);
          expect_close(y, ref.y, 1e-5, 1e-5, what);
          expect_layout_follows(y, l, what);
          const double M = static_cast<double>(d.N * d.S);
          std::vector<double> inv_std(d.C), rm(d.C), rv(d.C);
          for (int64_t c = 0; c < d.C; ++c) {
            inv_std[c] = 1 / std::sqrt(ref.var[c] + eps);
            rm[c] = (1 - momentum) * rm0[c] + momentum * ref.mean[c];
            rv[c] = (1 - momentum) * rv0[c] + momentum * ref.var[c] * M / (M - 1);
          }
          expect_close(saved.mean, ref.mean, 1e-6, 1e-6, what + " saved mean");
          expect_close(saved.inv_std, inv_std, 0, 1e-6, what + " saved inv_std");
          expect_close(running_mean, rm, 1e-6, 1e-6, what + " running_mean");
          expect_close(running_var, rv, 1e-6, 1e-6, what + " running_var");
        }
      }
    }
  }
}

TEST(BatchNorm, LargeMeanDoesNotCancel) {
  // Mean 1e4, standard deviation 1e-1: a one-pass float E[x^2] - E[x]^2 would lose every digit.
  Generator gen(6);
  const Shape shape{16, 8, 12, 12};
  const Tensor x = random_tensor(shape, gen, 1e4f, 0.1f);
  const NormDims d = norm_dims(shape);
  const BatchNormReference ref =
      batch_norm_reference(to_double(x), d, std::vector<double>(d.C, 1), std::vector<double>(d.C, 0), 1e-5, false);
  for (Layout l : kLayouts) {
    Tensor rm = Tensor::zeros({d.C}), rv = Tensor::ones({d.C});
    BatchNormSaved saved;
    const Tensor y = batch_norm_train_forward(in_layout(x, l), Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
    expect_close(y, ref.y, 1e-5, 1e-5, "large mean " + layout_name(l));
    std::vector<double> var(ref.var);
    std::vector<double> got_inv = to_double(saved.inv_std);
    for (int64_t c = 0; c < d.C; ++c) EXPECT_NEAR(got_inv[c], 1 / std::sqrt(var[c] + 1e-5), 1e-5 * got_inv[c]);
  }
}

TEST(BatchNorm, EvalForwardUsesRunningStatistics) {
  Generator gen(7);
  for (const Shape& shape : kNormShapes) {
    const NormDims d = norm_dims(shape);
    const Tensor x = random_tensor(shape, gen);
    const Tensor gamma = random_tensor({d.C}, gen), beta = random_tensor({d.C}, gen);
    const Tensor rm = random_tensor({d.C}, gen), rv = uniform({d.C}, 0.5f, 2.f, gen);
    for (bool relu : {false, true}) {
      std::vector<double> ref(x.numel());
      const std::vector<double> xv = to_double(x), g = to_double(gamma), b = to_double(beta), m = to_double(rm),
                                v = to_double(rv);
      for (int64_t i = 0; i < x.numel(); ++i) {
        const int64_t c = (i / d.S) % d.C;
        const double out = (xv[i] - m[c]) / std::sqrt(v[c] + 1e-5) * g[c] + b[c];
        ref[i] = relu ? std::max(out, 0.0) : out;
      }
      for (Layout l : kLayouts) {
        const Tensor y = batch_norm_eval_forward(in_layout(x, l), gamma, beta, rm, rv, 1e-5f, relu);
        expect_close(y, ref, 1e-5, 1e-5, "eval " + to_string(shape) + " " + layout_name(l));
        expect_layout_follows(y, l, "eval");
      }
    }
  }
}

TEST(BatchNorm, TrainBackwardMatchesReference) {
  Generator gen(8);
  const float eps = 1e-5f;
  for (const Shape& shape : kNormShapes) {
    const NormDims d = norm_dims(shape);
    for (bool affine : {true, false}) {
      for (bool relu : {false, true}) {
        const Tensor x = random_tensor(shape, gen, -0.3f, 1.5f);
        const Tensor gy = random_tensor(shape, gen);
        const Tensor gamma = affine ? random_tensor({d.C}, gen) : Tensor();
        const Tensor beta = affine ? random_tensor({d.C}, gen) : Tensor();
        for (Layout l : kLayouts) {
          const std::string what = "batch_norm backward " + to_string(shape) + (affine ? " affine" : "") +
                                   (relu ? " relu " : " ") + layout_name(l);
          Tensor rm = Tensor::zeros({d.C}), rv = Tensor::ones({d.C});
          BatchNormSaved saved;
          const Tensor xl = in_layout(x, l);
          const Tensor y = batch_norm_train_forward(xl, gamma, beta, rm, rv, 0.1f, eps, saved, relu);
          const BatchNormGrads grads = batch_norm_train_backward(in_layout(gy, l), xl, gamma, saved, relu);
          std::vector<double> dx, dgamma, dbeta;
          batch_norm_backward_reference(to_double(x), to_double(gy), to_double(y), d, values_or(gamma, d.C, 1), eps,
                                        relu, dx, dgamma, dbeta);
          expect_close(grads.x, dx, 2e-5, 1e-4, what + " dx");
          expect_layout_follows(grads.x, l, what);
          ASSERT_EQ(grads.gamma.defined(), affine) << what;
          ASSERT_EQ(grads.beta.defined(), affine) << what;
          if (affine) {
            expect_close(grads.gamma, dgamma, 1e-4, 1e-5, what + " dgamma");
            expect_close(grads.beta, dbeta, 1e-4, 1e-5, what + " dbeta");
          }
        }
      }
    }
  }
}

// Running statistics are constants in eval mode: dx = gamma * g' / sqrt(var + eps), with g' the
// gradient masked where y <= 0 when the ReLU is fused.
TEST(BatchNorm, EvalBackwardMatchesReference) {
  Generator gen(101);
  const Shape shape{4, 20, 3, 5};
  const Tensor x = random_tensor(shape, gen), gy = random_tensor(shape, gen);
  const Tensor gamma = random_tensor({20}, gen), beta = random_tensor({20}, gen);
  const Tensor rm = random_tensor({20}, gen), rv = uniform({20}, 0.5f, 2.f, gen);
  const std::vector<double> xv = to_double(x), gv = to_double(gy), g = to_double(gamma), m = to_double(rm),
                            v = to_double(rv);
  for (bool relu : {false, true})
    for (Layout l : kLayouts) {
      const std::string what = std::string("eval") + (relu ? " relu " : " ") + layout_name(l);
      const Tensor y = batch_norm_eval_forward(in_layout(x, l), gamma, beta, rm, rv, 1e-5f, relu);
      const BatchNormGrads grads =
          batch_norm_eval_backward(in_layout(gy, l), in_layout(x, l), gamma, beta, rm, rv, 1e-5f, relu);
      expect_layout_follows(grads.x, l, what);
      const std::vector<float> yv = y.to_vector();
      std::vector<double> dx(x.numel()), dgamma(20, 0), dbeta(20, 0);
      for (int64_t i = 0; i < x.numel(); ++i) {
        const int64_t c = (i / 15) % 20;
        const double inv_std = 1 / std::sqrt(v[c] + 1e-5);
        const double gm = relu && yv[i] <= 0 ? 0.0 : gv[i];
        dx[i] = gm * g[c] * inv_std;
        dgamma[c] += gm * (xv[i] - m[c]) * inv_std;
        dbeta[c] += gm;
      }
      expect_close(grads.x, dx, 1e-6, 1e-5, what + " dx");
      expect_close(grads.gamma, dgamma, 1e-5, 1e-5, what + " dgamma");
      expect_close(grads.beta, dbeta, 1e-5, 1e-5, what + " dbeta");
    }
}

// The fused ReLU's backward re-evaluates the forward's pre-activation from x to mask the gradient
// instead of reading y. The mask must be y's to the bit: the fused backward equals the plain
// backward given grad_y already zeroed where y is 0, exactly. Channel 0 holds values symmetric
// about 0 (mean exactly 0, so x = 0 gives a pre-activation of exactly 0, which must be masked, as
// must -0); the other channels are random, with a large mean in channel 1 (a shift that float
// cannot hold moves into the affine's shift term).
TEST(BatchNorm, FusedReluMaskIsExactlyWhereTheOutputIsZero) {
  Generator gen(103);
  const Shape shape{6, 4, 5, 7};
  const int64_t N = shape[0], C = shape[1], S = shape[2] * shape[3];
  Tensor x = random_tensor(shape, gen).contiguous();
  float* xd = x.data();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t i = n * S + s;  // 0 .. N*S-1 over channel 0; value pairs (v, -v) and zeros
      xd[(n * C + 0) * S + s] = static_cast<float>(i % 7 - 3) * 0.25f;
      xd[(n * C + 1) * S + s] += 1000.f;
    }
  const Tensor gy = random_tensor(shape, gen);
  const Tensor gamma = random_tensor({C}, gen);
  Tensor beta = random_tensor({C}, gen);
  // beta 0 on channel 0 keeps its pre-activation at x * scale, zero exactly where x is.
  beta.data()[0] = 0.f;
  const Tensor rm = random_tensor({C}, gen), rv = uniform({C}, 0.5f, 2.f, gen);
  auto zeroed_where_output_is_zero = [&](const Tensor& y, const Tensor& g) {
    return where(peel::gt(y, Tensor::zeros({1})), g, Tensor::zeros(shape));
  };
  for (Layout l : kLayouts) {
    const Tensor xl = in_layout(x, l), gl = in_layout(gy, l);
    Tensor running_mean = rm.clone(), running_var = rv.clone();
    BatchNormSaved saved;
    const Tensor y = batch_norm_train_forward(xl, gamma, beta, running_mean, running_var, 0.1f, 1e-5f, saved, true);
    int64_t zeros_on_channel_0 = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s) zeros_on_channel_0 += y.at({n, 0, s / shape[3], s % shape[3]}) == 0.f;
    ASSERT_GT(zeros_on_channel_0, N * S / 2) << "channel 0 should be zero at its x <= 0 half";
    const BatchNormGrads fused = batch_norm_train_backward(gl, xl, gamma, saved, true);
    const BatchNormGrads plain =
        batch_norm_train_backward(in_layout(zeroed_where_output_is_zero(y, gy), l), xl, gamma, saved, false);
    EXPECT_EQ(fused.x.to_vector(), plain.x.to_vector()) << "train " << layout_name(l);
    EXPECT_EQ(fused.gamma.to_vector(), plain.gamma.to_vector()) << "train " << layout_name(l);
    EXPECT_EQ(fused.beta.to_vector(), plain.beta.to_vector()) << "train " << layout_name(l);

    const Tensor y_eval = batch_norm_eval_forward(xl, gamma, beta, rm, rv, 1e-5f, true);
    const BatchNormGrads fused_eval = batch_norm_eval_backward(gl, xl, gamma, beta, rm, rv, 1e-5f, true);
    const BatchNormGrads plain_eval = batch_norm_eval_backward(in_layout(zeroed_where_output_is_zero(y_eval, gy), l),
                                                               xl, gamma, beta, rm, rv, 1e-5f, false);
    EXPECT_EQ(fused_eval.x.to_vector(), plain_eval.x.to_vector()) << "eval " << layout_name(l);
    EXPECT_EQ(fused_eval.gamma.to_vector(), plain_eval.gamma.to_vector()) << "eval " << layout_name(l);
  }
}

TEST(BatchNorm, SteadyStateCallsReuseCachedBuffers) {
  Generator gen(102);
  const Shape shape{16, 32, 14, 14};
  const Tensor x = random_tensor(shape, gen).channels_last(), gy = random_tensor(shape, gen).channels_last();
  const Tensor gamma = random_tensor({32}, gen), beta = random_tensor({32}, gen);
  Tensor rm = Tensor::zeros({32}), rv = Tensor::ones({32});
  auto step = [&] {
    BatchNormSaved saved;
    const Tensor y = batch_norm_train_forward(x, gamma, beta, rm, rv, 0.1f, 1e-5f, saved, true);
    const BatchNormGrads grads = batch_norm_train_backward(gy, x, gamma, saved, true);
  };
  expect_steady_state_reuses_buffers(step);
}

TEST(BatchNorm, ResultsDoNotDependOnThreadCount) {
  Generator gen(11);
  for (const Shape& shape : {Shape{32, 16, 28, 28}, Shape{64, 512}}) {
    const int64_t C = shape[1];
    const Tensor x = random_tensor(shape, gen, 1.f, 3.f).contiguous();
    const Tensor gy = random_tensor(shape, gen);
    const Tensor gamma = random_tensor({C}, gen), beta = random_tensor({C}, gen);
    for (Layout l : {Layout::kContiguous, Layout::kChannelsLast}) {
      std::vector<std::vector<float>> runs;
      for (int threads : {1, 2, 3}) {
        set_num_threads(threads);
        Tensor rm = Tensor::zeros({C}), rv = Tensor::ones({C});
        BatchNormSaved saved;
        const Tensor xl = in_layout(x, l);
        const Tensor y = batch_norm_train_forward(xl, gamma, beta, rm, rv, 0.1f, 1e-5f, saved, true);
        const BatchNormGrads grads = batch_norm_train_backward(in_layout(gy, l), xl, gamma, saved, true);
        std::vector<float> all = y.to_vector();
        for (const Tensor& t : {grads.x, grads.gamma, grads.beta, rm, rv, saved.mean, saved.inv_std}) {
          const std::vector<float> v = t.to_vector();
          all.insert(all.end(), v.begin(), v.end());
        }
        runs.push_back(all);
      }
      set_num_threads(0);
      EXPECT_EQ(runs[0], runs[1]) << to_string(shape) << " " << layout_name(l);
      EXPECT_EQ(runs[0], runs[2]) << to_string(shape) << " " << layout_name(l);
    }
  }
}

// ---- Errors name what was wrong --------------------------------------------------------------------

TEST(BatchNormErrors, BadShapesAndArgumentsAreNamed) {
  const Tensor x = Tensor::zeros({2, 3, 4, 4});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  BatchNormSaved saved;
  EXPECT_THAT([&] { batch_norm_train_forward(x, Tensor::ones({4}), Tensor(), rm, rv, 0.1f, 1e-5f, saved); },
              ThrowsErrorWith("batch_norm_train_forward", "gamma", "[4]", "[2, 3, 4, 4]"));
  EXPECT_THAT(
      [&] {
        batch_norm_train_forward(x, Tensor::ones({3, 1}), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
      },
      ThrowsErrorWith("gamma", "[3, 1]"));
  Tensor bad_rv = Tensor::ones({5});
  EXPECT_THAT([&] { batch_norm_train_forward(x, Tensor(), Tensor(), rm, bad_rv, 0.1f, 1e-5f, saved); },
              ThrowsErrorWith("running_var", "[5]"));
  EXPECT_THAT(
      [&] {
        Tensor one = Tensor::zeros({1, 3, 1, 1});
        batch_norm_train_forward(one, Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
      },
      ThrowsErrorWith("more than 1 value per channel", "[1, 3, 1, 1]"));
  EXPECT_THAT([&] { batch_norm_eval_forward(x, Tensor(), Tensor::ones({2}), rm, rv, 1e-5f); },
              ThrowsErrorWith("batch_norm_eval_forward", "beta", "[2]"));
  batch_norm_train_forward(x, Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
  EXPECT_THAT(
      [&] {
        batch_norm_train_backward(Tensor::zeros({2, 3, 4, 5}), x, Tensor(), saved);
      },
      ThrowsErrorWith("grad_y", "[2, 3, 4, 5]", "[2, 3, 4, 4]"));
  const BatchNormSaved statistics_only{saved.mean, saved.inv_std};
  EXPECT_THAT([&] { batch_norm_train_backward(x, x, Tensor(), statistics_only, true); },
              ThrowsErrorWith("batch_norm_train_backward", "fused ReLU", "scale and shift"));
  EXPECT_THAT([&] { batch_norm_train_forward(Tensor::zeros({5}), Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved); },
              ThrowsErrorWith("2 or more dimensions", "[5]"));
}
