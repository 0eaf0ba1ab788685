// Pooling and normalisation kernels against straightforward double-precision loops written here,
// on random inputs in every memory layout, plus finite-difference checks of each backward pass.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/kernels.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tests/support/kernel_test.h"

using namespace peel;
using namespace peel::kernel_test;

namespace {

// ---- Pooling references --------------------------------------------------------------------------

struct PoolDims {
  int64_t N, C, H, W, OH, OW;
};

PoolDims pool_dims(const Shape& s, const Pool2dGeometry& g) {
  return {s[0],
          s[1],
          s[2],
          s[3],
          (s[2] + 2 * g.padding - g.kernel) / g.stride + 1,
          (s[3] + 2 * g.padding - g.kernel) / g.stride + 1};
}

// PyTorch's rule: the window's first in-bounds index to start, then any strictly greater value
// or any NaN takes over.
void max_pool_reference(const std::vector<double>& x, const PoolDims& d, const Pool2dGeometry& g,
                        std::vector<double>& y, std::vector<int32_t>& idx) {
  y.assign(d.N * d.C * d.OH * d.OW, 0);
  idx.assign(y.size(), 0);
  for (int64_t p = 0; p < d.N * d.C; ++p)
    for (int64_t oh = 0; oh < d.OH; ++oh)
      for (int64_t ow = 0; ow < d.OW; ++ow) {
        const int64_t h0 = std::max<int64_t>(0, oh * g.stride - g.padding);
        const int64_t w0 = std::max<int64_t>(0, ow * g.stride - g.padding);
        const int64_t h1 = std::min(d.H, oh * g.stride - g.padding + g.kernel);
        const int64_t w1 = std::min(d.W, ow * g.stride - g.padding + g.kernel);
        double best = -std::numeric_limits<double>::infinity();
        int64_t at = h0 * d.W + w0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const double v = x[p * d.H * d.W + h * d.W + w];
            if (v > best || std::isnan(v)) {
              best = v;
              at = h * d.W + w;
            }
          }
        const int64_t o = (p * d.OH + oh) * d.OW + ow;
        y[o] = best;
        idx[o] = static_cast<int32_t>(at);
      }
}

// Average pooling with count_include_pad: the divisor is the window clipped to the padded input.
std::vector<double> avg_pool_reference(const std::vector<double>& x, const PoolDims& d, const Pool2dGeometry& g) {
  std::vector<double> y(d.N * d.C * d.OH * d.OW, 0);
  for (int64_t p = 0; p < d.N * d.C; ++p)
    for (int64_t oh = 0; oh < d.OH; ++oh)
      for (int64_t ow = 0; ow < d.OW; ++ow) {
        const int64_t hs = oh * g.stride - g.padding, ws = ow * g.stride - g.padding;
        const int64_t he = std::min(hs + g.kernel, d.H + g.padding), we = std::min(ws + g.kernel, d.W + g.padding);
        double sum = 0;
        for (int64_t h = std::max<int64_t>(hs, 0); h < std::min(he, d.H); ++h)
          for (int64_t w = std::max<int64_t>(ws, 0); w < std::min(we, d.W); ++w) sum += x[p * d.H * d.W + h * d.W + w];
        y[(p * d.OH + oh) * d.OW + ow] = sum / static_cast<double>((he - hs) * (we - ws));
      }
  return y;
}

const Pool2dGeometry kPoolGeometries[] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}, {3, 3, 1}, {4, 2, 2}};

std::string geometry_name(const Pool2dGeometry& g) {
  return "k" + std::to_string(g.kernel) + "s" + std::to_string(g.stride) + "p" + std::to_string(g.padding);
}

// Distinct values 0.1 apart in random order: no ties, so a small step never changes a window's max.
Tensor distinct_values(const Shape& shape, Generator& gen) {
  const int64_t n = numel_of(shape);
  const std::vector<int64_t> perm = gen.permutation(n);
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 0.1f * static_cast<float>(perm[i] - n / 2);
  return Tensor::from_vector(v, shape);
}

}  // namespace

// ---- Max pooling -----------------------------------------------------------------------------

TEST(MaxPool2d, ForwardMatchesReferenceInEveryLayout) {
  Generator gen(1);
  for (const Shape& shape : {Shape{2, 5, 7, 9}, Shape{1, 70, 6, 5}, Shape{3, 1, 8, 8}}) {
    const Tensor x = random_tensor(shape, gen);
    for (const Pool2dGeometry& g : kPoolGeometries) {
      const PoolDims d = pool_dims(shape, g);
      std::vector<double> y_ref;
      std::vector<int32_t> idx_ref;
      max_pool_reference(to_double(x), d, g, y_ref, idx_ref);
      for (Layout l : kLayouts) {
        const std::string what = "max_pool " + to_string(shape) + " " + geometry_name(g) + " " + layout_name(l);
        std::vector<int32_t> idx;
        const Tensor y = max_pool2d_forward(in_layout(x, l), g, idx);
        EXPECT_EQ(y.shape(), (Shape{d.N, d.C, d.OH, d.OW})) << what;
        expect_close(y, y_ref, 0, 0, what);
        EXPECT_EQ(idx, idx_ref) << what;
        if (shape[1] > 1) expect_layout_follows(y, l, what);
      }
    }
  }
}

TEST(MaxPool2d, TiesGoToTheFirstMaximumAndNanPropagates) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Windows (2x2, stride 2) of a 2x8 plane: [1 nan; 3 3] -> the NaN, 1; [nan 2; 0 nan] -> the last
  // NaN, 11 (PyTorch 1.13 lets every NaN take over); [5 5; 5 5] -> the first, 4; all -inf -> the first, 6.
  // Two identical channels, so the channels-last path runs too.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> plane{1, nan, nan, 2,   5, 5, -inf, -inf,  //
                                 3, 3,   0,   nan, 5, 5, -inf, -inf};
  std::vector<float> values(plane);
  values.insert(values.end(), plane.begin(), plane.end());
  const Tensor x = Tensor::from_vector(values, {1, 2, 2, 8});
  for (Layout l : kLayouts) {
    std::vector<int32_t> idx;
    const Tensor y = max_pool2d_forward(in_layout(x, l), {2, 2, 0}, idx);
    const std::vector<float> v = y.to_vector();
    for (int c = 0; c < 2; ++c) {
      EXPECT_TRUE(std::isnan(v[4 * c]) && std::isnan(v[4 * c + 1])) << layout_name(l);
      EXPECT_EQ(v[4 * c + 2], 5.f) << layout_name(l);
      EXPECT_EQ(v[4 * c + 3], -inf) << layout_name(l);
    }
    EXPECT_EQ(idx, (std::vector<int32_t>{1, 11, 4, 6, 1, 11, 4, 6})) << layout_name(l);
  }
  // Ties across channels in channels-last memory, with padding: every window's first valid index.
  const Tensor flat = Tensor::full({2, 3, 4, 4}, 0.5f);
  std::vector<int32_t> idx_cl, idx_ref;
  std::vector<double> y_ref;
  max_pool2d_forward(flat.channels_last(), {3, 2, 1}, idx_cl);
  max_pool_reference(to_double(flat), pool_dims(flat.shape(), {3, 2, 1}), {3, 2, 1}, y_ref, idx_ref);
  EXPECT_EQ(idx_cl, idx_ref);
}

TEST(MaxPool2d, BackwardMatchesReferenceAndDifferences) {
  Generator gen(2);
  const Shape shape{2, 19, 7, 6};
  const Tensor x = distinct_values(shape, gen);
  for (const Pool2dGeometry& g : kPoolGeometries) {
    const PoolDims d = pool_dims(shape, g);
    const Tensor gy = random_tensor({d.N, d.C, d.OH, d.OW}, gen);
    std::vector<double> y_ref;
    std::vector<int32_t> idx_ref;
    max_pool_reference(to_double(x), d, g, y_ref, idx_ref);
    std::vector<double> gx_ref(x.numel(), 0);
    const std::vector<double> gyv = to_double(gy);
    for (int64_t o = 0; o < static_cast<int64_t>(gyv.size()); ++o) {
      const int64_t plane = o / (d.OH * d.OW);
      gx_ref[plane * d.H * d.W + idx_ref[o]] += gyv[o];
    }
    for (Layout l : kLayouts) {
      const std::string what = "max_pool backward " + geometry_name(g) + " " + layout_name(l);
      std::vector<int32_t> idx;
      max_pool2d_forward(in_layout(x, l), g, idx);
      const Tensor gx = max_pool2d_backward(in_layout(gy, l), idx, shape);
      expect_close(gx, gx_ref, 1e-6, 1e-6, what);
      expect_layout_follows(gx, l, what);
    }
    // grad_y in a layout other than x's: argmax is in logical order, so any layout works.
    std::vector<int32_t> idx;
    max_pool2d_forward(x.channels_last(), g, idx);
    expect_close(max_pool2d_backward(gy.contiguous(), idx, shape), gx_ref, 1e-6, 1e-6, "mixed layouts");

    std::vector<int32_t> scratch;
    auto forward = [&](const std::vector<float>& v) {
      return max_pool2d_forward(Tensor::from_vector(v, shape).channels_last(), g, scratch);
    };
    max_pool2d_forward(x, g, idx);
    check_against_differences(forward, x.to_vector(), gy.to_vector(), max_pool2d_backward(gy, idx, shape), 0.02f, 1e-3,
                              "max_pool finite differences " + geometry_name(g));
  }
}

// ---- Average pooling -------------------------------------------------------------------------

TEST(AvgPool2d, ForwardAndBackwardMatchReference) {
  Generator gen(3);
  for (const Shape& shape : {Shape{2, 5, 7, 9}, Shape{1, 33, 5, 6}}) {
    const Tensor x = random_tensor(shape, gen);
    for (const Pool2dGeometry& g : kPoolGeometries) {
      const PoolDims d = pool_dims(shape, g);
      const std::vector<double> y_ref = avg_pool_reference(to_double(x), d, g);
      const Tensor gy = random_tensor({d.N, d.C, d.OH, d.OW}, gen);
      // The backward is the transpose of the forward: gx[i] = sum over windows holding i of gy/divisor.
      std::vector<double> gx_ref(x.numel(), 0);
      const std::vector<double> gyv = to_double(gy);
      for (int64_t p = 0; p < d.N * d.C; ++p)
        for (int64_t oh = 0; oh < d.OH; ++oh)
          for (int64_t ow = 0; ow < d.OW; ++ow) {
            const int64_t hs = oh * g.stride - g.padding, ws = ow * g.stride - g.padding;
            const double divisor = static_cast<double>((std::min(hs + g.kernel, d.H + g.padding) - hs) *
                                                       (std::min(ws + g.kernel, d.W + g.padding) - ws));
            for (int64_t h = std::max<int64_t>(hs, 0); h < std::min(hs + g.kernel, d.H); ++h)
              for (int64_t w = std::max<int64_t>(ws, 0); w < std::min(ws + g.kernel, d.W); ++w)
                gx_ref[p * d.H * d.W + h * d.W + w] += gyv[(p * d.OH + oh) * d.OW + ow] / divisor;
          }
      for (Layout l : kLayouts) {
        const std::string what = "avg_pool " + to_string(shape) + " " + geometry_name(g) + " " + layout_name(l);
        const Tensor y = avg_pool2d_forward(in_layout(x, l), g);
        expect_close(y, y_ref, 1e-6, 1e-5, what);
        expect_layout_follows(y, l, what);
        const Tensor gx = avg_pool2d_backward(in_layout(gy, l), shape, g);
        expect_close(gx, gx_ref, 1e-6, 1e-5, what + " backward");
        expect_layout_follows(gx, l, what + " backward");
      }
      auto forward = [&](const std::vector<float>& v) { return avg_pool2d_forward(Tensor::from_vector(v, shape), g); };
      check_against_differences(forward, x.to_vector(), gy.to_vector(), avg_pool2d_backward(gy, shape, g), 0.05f, 2e-3,
                                "avg_pool finite differences " + geometry_name(g));
    }
  }
}

TEST(GlobalAvgPool, ForwardAndBackwardMatchReference) {
  Generator gen(4);
  const Shape shape{3, 21, 5, 7};
  const Tensor x = random_tensor(shape, gen, 3.f, 2.f);
  const std::vector<double> xv = to_double(x);
  std::vector<double> y_ref(3 * 21, 0);
  for (int64_t p = 0; p < 3 * 21; ++p) {
    for (int64_t s = 0; s < 35; ++s) y_ref[p] += xv[p * 35 + s];
    y_ref[p] /= 35;
  }
  const Tensor gy = random_tensor({3, 21}, gen);
  std::vector<double> gx_ref(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) gx_ref[i] = gy.to_vector()[i / 35] / 35.0;
  for (Layout l : kLayouts) {
    const Tensor y = global_avg_pool_forward(in_layout(x, l));
    EXPECT_EQ(y.shape(), (Shape{3, 21}));
    expect_close(y, y_ref, 1e-6, 1e-6, "global_avg_pool " + layout_name(l));
  }
  for (bool cl : {false, true}) {
    const Tensor gx = global_avg_pool_backward(gy, shape, cl);
    expect_close(gx, gx_ref, 1e-7, 1e-6, "global_avg_pool backward");
    EXPECT_TRUE(cl ? gx.is_channels_last() : gx.is_contiguous());
  }
  auto forward = [&](const std::vector<float>& v) { return global_avg_pool_forward(Tensor::from_vector(v, shape)); };
  check_against_differences(forward, x.to_vector(), gy.to_vector(), global_avg_pool_backward(gy, shape, false), 0.05f,
                            2e-3, "global_avg_pool finite differences");
}

// ---- Batch normalisation -------------------------------------------------------------------------

namespace {

struct NormDims {
  int64_t N, C, S;  // x viewed as (N, C, S)
};

NormDims norm_dims(const Shape& s) {
  NormDims d{s[0], s[1], 1};
  for (size_t i = 2; i < s.size(); ++i) d.S *= s[i];
  return d;
}

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

std::vector<double> values_or(const Tensor& t, int64_t n, double fallback) {
  return t.defined() ? to_double(t) : std::vector<double>(n, fallback);
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
          const BatchNormGrads grads = batch_norm_train_backward(in_layout(gy, l), xl, gamma, saved, y, relu);
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

TEST(BatchNorm, TrainBackwardMatchesFiniteDifferences) {
  Generator gen(9);
  const float eps = 1e-5f;
  for (const Shape& shape : {Shape{3, 4, 3, 5}, Shape{6, 5}}) {
    const NormDims d = norm_dims(shape);
    for (bool relu : {false, true}) {
      const Tensor x = random_tensor(shape, gen);
      const Tensor gy = random_tensor(shape, gen);
      const Tensor gamma = random_tensor({d.C}, gen), beta = random_tensor({d.C}, gen);
      const Layout l = shape.size() == 4 ? Layout::kChannelsLast : Layout::kContiguous;
      Tensor no_stats;
      auto forward_x = [&](const std::vector<float>& v) {
        BatchNormSaved s;
        return batch_norm_train_forward(in_layout(Tensor::from_vector(v, shape), l), gamma, beta, no_stats, no_stats,
                                        0.1f, eps, s, relu);
      };
      BatchNormSaved saved;
      const Tensor y =
          batch_norm_train_forward(in_layout(x, l), gamma, beta, no_stats, no_stats, 0.1f, eps, saved, relu);
      const BatchNormGrads grads = batch_norm_train_backward(in_layout(gy, l), in_layout(x, l), gamma, saved, y, relu);
      // Away from ReLU's kink: skip elements whose output is within reach of a step.
      const std::vector<float> yv = y.to_vector();
      std::vector<float> pre(yv.size());
      {
        BatchNormSaved s;
        pre = batch_norm_train_forward(x, gamma, beta, no_stats, no_stats, 0.1f, eps, s, false).to_vector();
      }
      auto near_kink = [&](size_t i) { return relu && std::abs(pre[i]) < 0.1f; };
      const std::string what = "batch_norm differences " + to_string(shape) + (relu ? " relu" : "");
      check_against_differences(forward_x, x.to_vector(), gy.to_vector(), grads.x, 1e-2f, 1e-2, what + " dx", 30,
                                near_kink);
      auto forward_gamma = [&](const std::vector<float>& v) {
        BatchNormSaved s;
        return batch_norm_train_forward(in_layout(x, l), Tensor::from_vector(v, {d.C}), beta, no_stats, no_stats, 0.1f,
                                        eps, s, relu);
      };
      check_against_differences(forward_gamma, gamma.to_vector(), gy.to_vector(), grads.gamma, 1e-2f, 1e-2,
                                what + " dgamma");
      auto forward_beta = [&](const std::vector<float>& v) {
        BatchNormSaved s;
        return batch_norm_train_forward(in_layout(x, l), gamma, Tensor::from_vector(v, {d.C}), no_stats, no_stats, 0.1f,
                                        eps, s, relu);
      };
      check_against_differences(forward_beta, beta.to_vector(), gy.to_vector(), grads.beta, 1e-2f, 1e-2,
                                what + " dbeta");
    }
  }
}

TEST(BatchNorm, EvalBackwardMatchesFiniteDifferences) {
  Generator gen(10);
  const Shape shape{3, 6, 4, 5};
  const Tensor x = random_tensor(shape, gen), gy = random_tensor(shape, gen);
  const Tensor gamma = random_tensor({6}, gen), beta = random_tensor({6}, gen);
  const Tensor rm = random_tensor({6}, gen), rv = uniform({6}, 0.5f, 2.f, gen);
  for (Layout l : kLayouts) {
    const Tensor y = batch_norm_eval_forward(in_layout(x, l), gamma, beta, rm, rv, 1e-5f, false);
    const BatchNormGrads grads =
        batch_norm_eval_backward(in_layout(gy, l), in_layout(x, l), gamma, rm, rv, 1e-5f, y, false);
    expect_layout_follows(grads.x, l, "eval backward");
    auto forward_x = [&](const std::vector<float>& v) {
      return batch_norm_eval_forward(Tensor::from_vector(v, shape), gamma, beta, rm, rv, 1e-5f, false);
    };
    check_against_differences(forward_x, x.to_vector(), gy.to_vector(), grads.x, 1e-2f, 1e-3, "eval dx");
    auto forward_gamma = [&](const std::vector<float>& v) {
      return batch_norm_eval_forward(x, Tensor::from_vector(v, {6}), beta, rm, rv, 1e-5f, false);
    };
    check_against_differences(forward_gamma, gamma.to_vector(), gy.to_vector(), grads.gamma, 1e-2f, 1e-3,
                              "eval dgamma");
    auto forward_beta = [&](const std::vector<float>& v) {
      return batch_norm_eval_forward(x, gamma, Tensor::from_vector(v, {6}), rm, rv, 1e-5f, false);
    };
    check_against_differences(forward_beta, beta.to_vector(), gy.to_vector(), grads.beta, 1e-2f, 1e-3, "eval dbeta");
  }
}

TEST(BatchNorm, EvalBackwardWithFusedReluMasksTheGradient) {
  Generator gen(101);
  const Shape shape{4, 20, 3, 5};
  const Tensor x = random_tensor(shape, gen), gy = random_tensor(shape, gen);
  const Tensor gamma = random_tensor({20}, gen), beta = random_tensor({20}, gen);
  const Tensor rm = random_tensor({20}, gen), rv = uniform({20}, 0.5f, 2.f, gen);
  const std::vector<double> xv = to_double(x), gv = to_double(gy), g = to_double(gamma), m = to_double(rm),
                            v = to_double(rv);
  for (Layout l : kLayouts) {
    const Tensor y = batch_norm_eval_forward(in_layout(x, l), gamma, beta, rm, rv, 1e-5f, true);
    const BatchNormGrads grads =
        batch_norm_eval_backward(in_layout(gy, l), in_layout(x, l), gamma, rm, rv, 1e-5f, y, true);
    const std::vector<float> yv = y.to_vector();
    std::vector<double> dx(x.numel()), dgamma(20, 0), dbeta(20, 0);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t c = (i / 15) % 20;
      const double inv_std = 1 / std::sqrt(v[c] + 1e-5);
      const double gm = yv[i] <= 0 ? 0.0 : gv[i];
      dx[i] = gm * g[c] * inv_std;
      dgamma[c] += gm * (xv[i] - m[c]) * inv_std;
      dbeta[c] += gm;
    }
    expect_close(grads.x, dx, 1e-6, 1e-5, "eval relu dx " + layout_name(l));
    expect_close(grads.gamma, dgamma, 1e-5, 1e-5, "eval relu dgamma " + layout_name(l));
    expect_close(grads.beta, dbeta, 1e-5, 1e-5, "eval relu dbeta " + layout_name(l));
  }
}

TEST(NnKernels, SteadyStateCallsReuseCachedBuffers) {
  // A training step repeats the same shapes; after the first call no large buffer comes from the system.
  Generator gen(102);
  const Shape shape{16, 32, 14, 14};
  const Tensor x = random_tensor(shape, gen).channels_last(), gy = random_tensor(shape, gen).channels_last();
  const Tensor gamma = random_tensor({32}, gen), beta = random_tensor({32}, gen);
  Tensor rm = Tensor::zeros({32}), rv = Tensor::ones({32});
  std::vector<int32_t> argmax;
  auto step = [&] {
    BatchNormSaved saved;
    const Tensor y = batch_norm_train_forward(x, gamma, beta, rm, rv, 0.1f, 1e-5f, saved, true);
    const BatchNormGrads grads = batch_norm_train_backward(gy, x, gamma, saved, y, true);
    const Tensor pooled = max_pool2d_forward(y, {2, 2, 0}, argmax);
    const Tensor gx = max_pool2d_backward(pooled, argmax, shape);
    GroupNormSaved gsaved;
    const Tensor z = group_norm_forward(x, 4, gamma, beta, 1e-5f, gsaved);
    const BatchNormGrads ggrads = group_norm_backward(gy, x, 4, gamma, gsaved);
  };
  step();
  step();
  const int64_t before = memory_stats().system_allocations;
  step();
  EXPECT_EQ(memory_stats().system_allocations, before);
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
        const BatchNormGrads grads = batch_norm_train_backward(in_layout(gy, l), xl, gamma, saved, y, true);
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

// ---- Group normalisation -------------------------------------------------------------------------

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

TEST(GroupNorm, BackwardMatchesReferenceAndDifferences) {
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
      if (!affine || x.numel() > 2000) continue;
      auto forward_x = [&](const std::vector<float>& v) {
        GroupNormSaved s;
        return group_norm_forward(Tensor::from_vector(v, gc.shape), gc.groups, gamma, beta, 1e-5f, s);
      };
      GroupNormSaved saved;
      group_norm_forward(x, gc.groups, gamma, beta, 1e-5f, saved);
      const BatchNormGrads grads = group_norm_backward(gy, x, gc.groups, gamma, saved);
      const std::string what = "group_norm differences " + to_string(gc.shape) + " G=" + std::to_string(gc.groups);
      check_against_differences(forward_x, x.to_vector(), gy.to_vector(), grads.x, 1e-2f, 1e-2, what + " dx");
      auto forward_gamma = [&](const std::vector<float>& v) {
        GroupNormSaved s;
        return group_norm_forward(x, gc.groups, Tensor::from_vector(v, {d.C}), beta, 1e-5f, s);
      };
      check_against_differences(forward_gamma, gamma.to_vector(), gy.to_vector(), grads.gamma, 1e-2f, 1e-2,
                                what + " dgamma");
      auto forward_beta = [&](const std::vector<float>& v) {
        GroupNormSaved s;
        return group_norm_forward(x, gc.groups, gamma, Tensor::from_vector(v, {d.C}), 1e-5f, s);
      };
      check_against_differences(forward_beta, beta.to_vector(), gy.to_vector(), grads.beta, 1e-2f, 1e-2,
                                what + " dbeta");
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

// ---- Errors name what was wrong --------------------------------------------------------------------

namespace {

// Runs f, expecting a peel::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << parts.front();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

}  // namespace

TEST(NnKernelErrors, BadShapesAndArgumentsAreNamed) {
  const Tensor x = Tensor::zeros({2, 3, 4, 4});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  BatchNormSaved saved;
  expect_error([&] { batch_norm_train_forward(x, Tensor::ones({4}), Tensor(), rm, rv, 0.1f, 1e-5f, saved); },
               {"batch_norm_train_forward", "gamma", "[4]", "[2, 3, 4, 4]"});
  expect_error(
      [&] {
        batch_norm_train_forward(x, Tensor::ones({3, 1}), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
      },
      {"gamma", "[3, 1]"});
  Tensor bad_rv = Tensor::ones({5});
  expect_error([&] { batch_norm_train_forward(x, Tensor(), Tensor(), rm, bad_rv, 0.1f, 1e-5f, saved); },
               {"running_var", "[5]"});
  expect_error(
      [&] {
        Tensor one = Tensor::zeros({1, 3, 1, 1});
        batch_norm_train_forward(one, Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
      },
      {"more than 1 value per channel", "[1, 3, 1, 1]"});
  expect_error([&] { batch_norm_eval_forward(x, Tensor(), Tensor::ones({2}), rm, rv, 1e-5f); },
               {"batch_norm_eval_forward", "beta", "[2]"});
  batch_norm_train_forward(x, Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved);
  expect_error(
      [&] {
        batch_norm_train_backward(Tensor::zeros({2, 3, 4, 5}), x, Tensor(), saved, Tensor());
      },
      {"grad_y", "[2, 3, 4, 5]", "[2, 3, 4, 4]"});
  expect_error([&] { batch_norm_train_backward(x, x, Tensor(), saved, Tensor(), true); }, {"fused ReLU", "y"});
  expect_error([&] { batch_norm_train_forward(Tensor::zeros({5}), Tensor(), Tensor(), rm, rv, 0.1f, 1e-5f, saved); },
               {"2 or more dimensions", "[5]"});

  GroupNormSaved gsaved;
  expect_error([&] { group_norm_forward(x, 2, Tensor(), Tensor(), 1e-5f, gsaved); },
               {"group_norm_forward", "divisible", "groups=2", "[2, 3, 4, 4]"});
  expect_error([&] { group_norm_forward(x, 3, Tensor::ones({6}), Tensor(), 1e-5f, gsaved); }, {"gamma", "[6]"});
  group_norm_forward(x, 3, Tensor(), Tensor(), 1e-5f, gsaved);
  expect_error([&] { group_norm_backward(x, x, 1, Tensor(), gsaved); }, {"group_norm_backward", "[2, 1]", "[2, 3]"});

  std::vector<int32_t> argmax;
  expect_error([&] { max_pool2d_forward(x, {2, 2, 2}, argmax); }, {"max_pool2d_forward", "padding", "kernel=2"});
  expect_error([&] { max_pool2d_forward(Tensor::zeros({3, 4, 4}), {2, 2, 0}, argmax); }, {"4-d", "[3, 4, 4]"});
  expect_error(
      [&] {
        max_pool2d_forward(Tensor::zeros({1, 1, 2, 2}), {3, 1, 0}, argmax);
      },
      {"max_pool2d_forward", "[1, 1, 2, 2]", "kernel 3"});
  max_pool2d_forward(x, {2, 2, 0}, argmax);
  expect_error(
      [&] {
        max_pool2d_backward(Tensor::zeros({2, 3, 3, 2}), argmax, x.shape());
      },
      {"argmax", "[2, 3, 3, 2]"});
  expect_error(
      [&] {
        avg_pool2d_backward(Tensor::zeros({2, 3, 3, 3}), x.shape(), {2, 2, 0});
      },
      {"avg_pool2d_backward", "[2, 3, 3, 3]", "[2, 3, 2, 2]"});
  expect_error([&] { global_avg_pool_backward(Tensor::zeros({2, 4}), x.shape(), true); }, {"[2, 4]", "[2, 3]"});
}
