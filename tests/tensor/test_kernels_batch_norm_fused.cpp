// Batch norm fused with what follows it (tensor/kernels/norm.h) against the kernels applied one
// after the other, every output, statistic and gradient bit for bit: its ReLU and a max pool (on
// shapes with a channel tail, rows and columns no window covers, ties among the ReLU's zeros, a
// NaN and signed zeros in the gradient), and a residual sum and a ReLU (every layout, NaNs). The two kernels are held
// to double-precision references in test_kernels_batch_norm.cpp and test_kernels_pool.cpp; the op's gradient to finite
// differences in tests/nn/test_nn_gradcheck.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tensor/kernels/norm.h"
#include "tensor/kernels/pool.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tests/support/error_matchers.h"
#include "tests/support/kernel_checks.h"

using namespace peel;
using namespace peel::kernel_checks;
using peel::testing::ThrowsErrorWith;

namespace {

// Equal bits (NaN equals NaN, -0 differs from +0), in logical order whatever the layouts.
void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  EXPECT_EQ(std::memcmp(g.data(), w.data(), g.size() * sizeof(float)), 0) << what << ": the bits differ";
}

struct Outputs {
  Tensor y, running_mean, running_var;
  BatchNormSaved saved;
  MaxPoolArgmax argmax;
  BatchNormGrads grads;
};

// The forward and backward, fused or as the two kernels, from the same starting state.
Outputs run(bool fused, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& gy,
            const Pool2dGeometry& pool) {
  Outputs o;
  const int64_t C = x.size(1);
  o.running_mean = Tensor::full({C}, 0.25f);
  o.running_var = Tensor::full({C}, 1.5f);
  if (fused) {
    o.y = batch_norm_relu_max_pool_train_forward(x, gamma, beta, o.running_mean, o.running_var, 0.1f, 1e-5f, pool,
                                                 o.saved, o.argmax);
    o.grads = batch_norm_relu_max_pool_train_backward(gy, x, gamma, o.saved, pool, o.argmax);
  } else {
    const Tensor z =
        batch_norm_train_forward(x, gamma, beta, o.running_mean, o.running_var, 0.1f, 1e-5f, o.saved, true);
    o.y = max_pool2d_forward(z, pool, o.argmax);
    o.grads = batch_norm_train_backward(max_pool2d_backward(gy, o.argmax, x.shape()), x, gamma, o.saved, true);
  }
  return o;
}

void expect_same(const Outputs& got, const Outputs& want, const std::string& what) {
  expect_same_bits(got.y, want.y, what + " y");
  EXPECT_EQ(got.argmax.logical_order(), want.argmax.logical_order()) << what << " argmax";
  EXPECT_EQ(got.y.is_channels_last(), want.y.is_channels_last()) << what << " y's layout";
  expect_same_bits(got.running_mean, want.running_mean, what + " running_mean");
  expect_same_bits(got.running_var, want.running_var, what + " running_var");
  expect_same_bits(got.saved.mean, want.saved.mean, what + " saved.mean");
  expect_same_bits(got.saved.inv_std, want.saved.inv_std, what + " saved.inv_std");
  expect_same_bits(got.grads.x, want.grads.x, what + " dx");
  expect_same_bits(got.grads.gamma, want.grads.gamma, what + " dgamma");
  expect_same_bits(got.grads.beta, want.grads.beta, what + " dbeta");
}

struct Case {
  Shape shape;
  Pool2dGeometry pool;
};
// 32 and 48 channels fill 16-lane vectors; 20 leaves a tail of 4, 5 is all tail. 7x9 with 2x2
// windows leaves a row and a column uncovered, 8x7 with 3x3 windows two columns and two rows.
const Case kCases[] = {{{4, 32, 8, 8}, {2, 2, 0}},
                       {{3, 20, 7, 9}, {2, 2, 0}},
                       {{2, 48, 8, 7}, {3, 3, 0}},
                       {{5, 5, 6, 4}, {2, 2, 0}},
                       {{130, 16, 4, 4}, {2, 2, 0}}};  // more rows than one block of the backward's sums

}  // namespace

TEST(BatchNormReluMaxPool, IsTheTwoKernelsBitForBit) {
  Generator gen(7);
  for (const Case& c : kCases) {
    for (bool affine : {true, false}) {
      // Centred near zero, so that about half the pre-activations are cut to 0 and windows tie.
      Tensor x = random_tensor(c.shape, gen, 0.f, 1.f).channels_last();
      const int64_t C = c.shape[1];
      const Tensor gamma = affine ? uniform({C}, 0.5f, 1.5f, gen) : Tensor();
      const Tensor beta = affine ? random_tensor({C}, gen, 0.f, 0.3f) : Tensor();
      const Shape pooled{c.shape[0], C, c.shape[2] / c.pool.kernel, c.shape[3] / c.pool.kernel};
      Tensor gy = random_tensor(pooled, gen).channels_last();
      gy.data()[0] = -0.f;  // the pool's backward turns it into +0
      gy.data()[1] = 0.f;
      const std::string what =
          to_string(c.shape) + " kernel " + std::to_string(c.pool.kernel) + (affine ? " affine" : " no affine");
      ASSERT_TRUE(batch_norm_pool_fuses(x, c.pool)) << what;
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        expect_same(run(true, x, gamma, beta, gy, c.pool), run(false, x, gamma, beta, gy, c.pool),
                    what + " threads " + std::to_string(threads));
      }
      set_num_threads(0);
    }
  }
}

TEST(BatchNormReluMaxPool, ANaNInAChannelGoesWhereThePoolSendsIt) {
  Generator gen(8);
  Tensor x = random_tensor({2, 17, 6, 6}, gen).channels_last();
  x.data()[3 * 17 + 16] = std::numeric_limits<float>::quiet_NaN();  // channel 16, the tail
  const Tensor gamma = uniform({17}, 0.5f, 1.5f, gen), beta = random_tensor({17}, gen);
  const Tensor gy = random_tensor({2, 17, 3, 3}, gen).channels_last();
  expect_same(run(true, x, gamma, beta, gy, {2, 2, 0}), run(false, x, gamma, beta, gy, {2, 2, 0}), "NaN");
}

// Overlapping or padded windows, and layouts other than channels-last, run the two kernels.
TEST(BatchNormReluMaxPool, OtherWindowsAndLayoutsRunTheTwoKernels) {
  Generator gen(9);
  const Tensor x = random_tensor({3, 18, 7, 7}, gen);
  const Tensor gamma = uniform({18}, 0.5f, 1.5f, gen), beta = random_tensor({18}, gen);
  for (const Pool2dGeometry& pool : {Pool2dGeometry{3, 2, 0}, Pool2dGeometry{2, 2, 1}, Pool2dGeometry{2, 1, 0}})
    EXPECT_FALSE(batch_norm_pool_fuses(x.channels_last(), pool)) << pool.kernel << " " << pool.stride;
  for (Layout l : kLayouts) {
    if (l != Layout::kChannelsLast) EXPECT_FALSE(batch_norm_pool_fuses(in_layout(x, l), {2, 2, 0}));
    for (const Pool2dGeometry& pool : {Pool2dGeometry{3, 2, 1}, Pool2dGeometry{2, 2, 0}}) {
      const Shape pooled{3, 18, (7 + 2 * pool.padding - pool.kernel) / pool.stride + 1,
                         (7 + 2 * pool.padding - pool.kernel) / pool.stride + 1};
      const Tensor gy = random_tensor(pooled, gen);
      expect_same(run(true, in_layout(x, l), gamma, beta, gy, pool), run(false, in_layout(x, l), gamma, beta, gy, pool),
                  layout_name(l) + " kernel " + std::to_string(pool.kernel));
    }
  }
}

TEST(BatchNormReluMaxPoolErrors, AMismatchedGradientOrArgmaxIsNamed) {
  Generator gen(10);
  const Tensor x = random_tensor({2, 16, 6, 6}, gen).channels_last();
  Tensor running_mean = Tensor::zeros({16}), running_var = Tensor::ones({16});
  BatchNormSaved saved;
  MaxPoolArgmax argmax;
  const Pool2dGeometry pool{2, 2, 0};
  batch_norm_relu_max_pool_train_forward(x, Tensor(), Tensor(), running_mean, running_var, 0.1f, 1e-5f, pool, saved,
                                         argmax);
  EXPECT_THAT(
      [&] {
        batch_norm_relu_max_pool_train_backward(Tensor::zeros({2, 16, 6, 6}), x, Tensor(), saved, pool, argmax);
      },
      ThrowsErrorWith("grad_y has shape [2, 16, 6, 6] but the pooled output has shape [2, 16, 3, 3]"));
  const Tensor other = random_tensor({2, 16, 8, 8}, gen).channels_last();
  EXPECT_THAT(
      [&] {
        batch_norm_relu_max_pool_train_backward(Tensor::zeros({2, 16, 4, 4}), other, Tensor(), saved, pool, argmax);
      },
      ThrowsErrorWith("argmax is for a pooled output of shape [2, 16, 3, 3], but x of shape [2, 16, 8, 8]"));
  EXPECT_THAT(
      [&] {
        batch_norm_relu_max_pool_train_forward(random_tensor({1, 16, 1, 1}, gen), Tensor(), Tensor(), running_mean,
                                               running_var, 0.1f, 1e-5f, pool, saved, argmax);
      },
      ThrowsErrorWith("expected more than 1 value per channel"));
}

// ---- Batch norm, a residual sum and a ReLU ---------------------------------------------------------

namespace {

struct ResidualOutputs {
  Tensor y, running_mean, running_var;
  BatchNormSaved saved;
  BatchNormAddReluGrads grads;
};

// relu(bn(x) + residual) and its backward, fused or as batch norm, add and relu (relu's backward
// as autograd's: grad_y * (y > 0)).
ResidualOutputs run_residual(bool fused, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& residual, const Tensor& gy) {
  ResidualOutputs o;
  const int64_t C = x.size(1);
  o.running_mean = Tensor::full({C}, -0.5f);
  o.running_var = Tensor::full({C}, 2.f);
  if (fused) {
    o.y = batch_norm_add_relu_train_forward(x, gamma, beta, o.running_mean, o.running_var, 0.1f, 1e-5f, residual,
                                            o.saved);
    o.grads = batch_norm_add_relu_train_backward(gy, x, o.y, gamma, o.saved);
  } else {
    const Tensor z = batch_norm_train_forward(x, gamma, beta, o.running_mean, o.running_var, 0.1f, 1e-5f, o.saved);
    o.y = relu(add(z, residual));
    const Tensor g = mul(gy, gt(o.y, Tensor::zeros({1})));
    o.grads.norm = batch_norm_train_backward(g, x, gamma, o.saved);
    o.grads.residual = g;
  }
  return o;
}

}  // namespace

TEST(BatchNormAddRelu, IsBatchNormAddAndReluBitForBit) {
  Generator gen(11);
  for (const Shape& shape : {Shape{4, 32, 6, 6}, Shape{3, 20, 5, 7}, Shape{6, 5}, Shape{2, 7, 9}}) {
    for (Layout l : kLayouts) {
      if (shape.size() != 4 && l == Layout::kChannelsLast) continue;
      const int64_t C = shape[1];
      Tensor x = random_tensor(shape, gen, 0.3f, 1.f).contiguous();
      Tensor residual = random_tensor(shape, gen).contiguous();
      Tensor gy = random_tensor(shape, gen).contiguous();
      x.data()[1] = std::numeric_limits<float>::quiet_NaN();                     // a NaN channel: its sums and outputs
      residual.data()[x.numel() - 1] = -std::numeric_limits<float>::infinity();  // cut by the ReLU
      gy.data()[2] = -0.f;
      const Tensor gamma = uniform({C}, 0.5f, 1.5f, gen), beta = random_tensor({C}, gen, 0.f, 0.3f);
      const std::string what = to_string(shape) + " " + layout_name(l);
      const ResidualOutputs fused =
          run_residual(true, in_layout(x, l), gamma, beta, in_layout(residual, l), in_layout(gy, l));
      const ResidualOutputs layers =
          run_residual(false, in_layout(x, l), gamma, beta, in_layout(residual, l), in_layout(gy, l));
      expect_same_bits(fused.y, layers.y, what + " y");
      expect_same_bits(fused.running_mean, layers.running_mean, what + " running_mean");
      expect_same_bits(fused.running_var, layers.running_var, what + " running_var");
      expect_same_bits(fused.grads.norm.x, layers.grads.norm.x, what + " dx");
      expect_same_bits(fused.grads.norm.gamma, layers.grads.norm.gamma, what + " dgamma");
      expect_same_bits(fused.grads.norm.beta, layers.grads.norm.beta, what + " dbeta");
      expect_same_bits(fused.grads.residual, layers.grads.residual, what + " dresidual");
    }
  }
}

TEST(BatchNormAddReluErrors, AMismatchedResidualOrOutputIsNamed) {
  Generator gen(12);
  const Tensor x = random_tensor({2, 8, 4, 4}, gen);
  Tensor running_mean = Tensor::zeros({8}), running_var = Tensor::ones({8});
  BatchNormSaved saved;
  EXPECT_THAT(
      [&] {
        batch_norm_add_relu_train_forward(x, Tensor(), Tensor(), running_mean, running_var, 0.1f, 1e-5f,
                                          random_tensor({2, 8, 4, 5}, gen), saved);
      },
      ThrowsErrorWith("the residual has shape [2, 8, 4, 5] but x has shape [2, 8, 4, 4]"));
  const Tensor y = batch_norm_add_relu_train_forward(x, Tensor(), Tensor(), running_mean, running_var, 0.1f, 1e-5f,
                                                     random_tensor({2, 8, 4, 4}, gen), saved);
  EXPECT_THAT(
      [&] {
        batch_norm_add_relu_train_backward(random_tensor({2, 8, 4, 4}, gen), x, Tensor(), Tensor(), saved);
      },
      ThrowsErrorWith("batch_norm_add_relu_train_backward"));
  EXPECT_THAT(
      [&] {
        batch_norm_add_relu_train_backward(random_tensor({2, 8, 2, 4}, gen), x, y, Tensor(), saved);
      },
      ThrowsErrorWith("grad_y has shape [2, 8, 2, 4] but x has shape [2, 8, 4, 4]"));
}
