// Pooling kernels (tensor/kernels/pool.h) against straightforward double-precision loops written
// here, on random inputs in every memory layout. Their backward passes are checked against finite
// differences through nn/functional.h's ops in tests/nn/test_nn_gradcheck.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/pool.h"
#include "tensor/random.h"
#include "tests/support/error_matchers.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::kernel_checks;
using peel::testing::ThrowsErrorWith;

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
        MaxPoolArgmax idx;
        const Tensor y = max_pool2d_forward(in_layout(x, l), g, idx);
        EXPECT_EQ(y.shape(), (Shape{d.N, d.C, d.OH, d.OW})) << what;
        expect_close(y, y_ref, 0, 0, what);
        EXPECT_EQ(idx.logical_order(), idx_ref) << what;
        EXPECT_EQ(idx.channels_last, y.is_channels_last() && shape[1] > 1) << what;
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
    MaxPoolArgmax idx;
    const Tensor y = max_pool2d_forward(in_layout(x, l), {2, 2, 0}, idx);
    const std::vector<float> v = y.to_vector();
    for (int c = 0; c < 2; ++c) {
      EXPECT_TRUE(std::isnan(v[4 * c]) && std::isnan(v[4 * c + 1])) << layout_name(l);
      EXPECT_EQ(v[4 * c + 2], 5.f) << layout_name(l);
      EXPECT_EQ(v[4 * c + 3], -inf) << layout_name(l);
    }
    EXPECT_EQ(idx.logical_order(), (std::vector<int32_t>{1, 11, 4, 6, 1, 11, 4, 6})) << layout_name(l);
  }
  // Ties across channels in channels-last memory, with padding: every window's first valid index.
  const Tensor flat = Tensor::full({2, 3, 4, 4}, 0.5f);
  MaxPoolArgmax idx_cl;
  std::vector<int32_t> idx_ref;
  std::vector<double> y_ref;
  max_pool2d_forward(flat.channels_last(), {3, 2, 1}, idx_cl);
  max_pool_reference(to_double(flat), pool_dims(flat.shape(), {3, 2, 1}), {3, 2, 1}, y_ref, idx_ref);
  EXPECT_EQ(idx_cl.logical_order(), idx_ref);
}

TEST(MaxPool2d, BackwardMatchesReference) {
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
      MaxPoolArgmax idx;
      max_pool2d_forward(in_layout(x, l), g, idx);
      const Tensor gx = max_pool2d_backward(in_layout(gy, l), idx, shape);
      expect_close(gx, gx_ref, 1e-6, 1e-6, what);
      expect_layout_follows(gx, l, what);
    }
    // grad_y in a layout other than the forward's: it is read in the argmax's layout (a copy), and
    // the input gradient takes that layout, both ways round.
    for (bool forward_channels_last : {true, false}) {
      MaxPoolArgmax idx;
      max_pool2d_forward(forward_channels_last ? x.channels_last() : x.contiguous(), g, idx);
      const Tensor gx = max_pool2d_backward(forward_channels_last ? gy.contiguous() : gy.channels_last(), idx, shape);
      expect_close(gx, gx_ref, 1e-6, 1e-6, "mixed layouts");
      EXPECT_EQ(gx.is_channels_last(), forward_channels_last);
    }
  }
}

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
}

TEST(PoolKernels, SteadyStateCallsReuseCachedBuffers) {
  Generator gen(102);
  const Shape shape{16, 32, 14, 14};
  const Tensor x = random_tensor(shape, gen).channels_last();
  MaxPoolArgmax argmax;
  auto step = [&] {
    const Tensor pooled = max_pool2d_forward(x, {2, 2, 0}, argmax);
    const Tensor gx = max_pool2d_backward(pooled, argmax, shape);
    const Tensor averaged = avg_pool2d_forward(x, {2, 2, 0});
    const Tensor ga = avg_pool2d_backward(averaged, shape, {2, 2, 0});
  };
  expect_steady_state_reuses_buffers(step);
}

// ---- Errors name what was wrong --------------------------------------------------------------------

TEST(PoolKernelErrors, BadShapesAndArgumentsAreNamed) {
  const Tensor x = Tensor::zeros({2, 3, 4, 4});
  MaxPoolArgmax argmax;
  EXPECT_THAT(
      [&] {
        max_pool2d_forward(x, {2, 2, 2}, argmax);
      },
      ThrowsErrorWith("max_pool2d_forward", "padding", "kernel=2"));
  EXPECT_THAT(
      [&] {
        max_pool2d_forward(Tensor::zeros({3, 4, 4}), {2, 2, 0}, argmax);
      },
      ThrowsErrorWith("4-d", "[3, 4, 4]"));
  EXPECT_THAT(
      [&] {
        max_pool2d_forward(Tensor::zeros({1, 1, 2, 2}), {3, 1, 0}, argmax);
      },
      ThrowsErrorWith("max_pool2d_forward", "[1, 1, 2, 2]", "kernel 3"));
  max_pool2d_forward(x, {2, 2, 0}, argmax);
  EXPECT_THAT(
      [&] {
        max_pool2d_backward(Tensor::zeros({2, 3, 3, 2}), argmax, x.shape());
      },
      ThrowsErrorWith("argmax", "[2, 3, 3, 2]"));
  EXPECT_THAT(
      [&] {
        avg_pool2d_backward(Tensor::zeros({2, 3, 3, 3}), x.shape(), {2, 2, 0});
      },
      ThrowsErrorWith("avg_pool2d_backward", "[2, 3, 3, 3]", "[2, 3, 2, 2]"));
  EXPECT_THAT(
      [&] {
        global_avg_pool_backward(Tensor::zeros({2, 4}), x.shape(), true);
      },
      ThrowsErrorWith("[2, 4]", "[2, 3]"));
}
