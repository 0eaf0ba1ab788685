// Batch norm, a residual sum and a ReLU as one training op: relu(bn(x) + residual), the end of a
// residual block (kernels/norm.h). The statistics and the backward are batch norm's own
// (kernels/batch_norm.cpp); what this file adds is the one pass that normalises, adds and cuts,
// and the ReLU's backward that is also the residual's gradient.
#include <algorithm>

#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/kernels/norm_detail.h"
#include "tensor/threads.h"

namespace peel {

using namespace kernels_detail;

namespace {

constexpr int64_t kElementsPerTask = 16384;  // work per parallel chunk

}  // namespace

Tensor batch_norm_add_relu_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                         Tensor& running_var, float momentum, float eps, const Tensor& residual,
                                         BatchNormSaved& saved, const StatisticsSum& across) {
  const char* op = "batch_norm_add_relu_train_forward";
  PEEL_CHECK(x.defined() && residual.defined() && residual.shape() == x.shape(),
             "{}: the residual has shape {} but x has shape {}", op,
             residual.defined() ? to_string(residual.shape()) : "undefined",
             x.defined() ? to_string(x.shape()) : "undefined");
  const TrainStatistics t =
      batch_norm_train_statistics(x, gamma, beta, running_mean, running_var, momentum, eps, saved, across, op);
  const ChannelLayout& L = t.L;
  const Tensor r = to_layout(residual, L);
  Tensor y = empty_in_layout(x.shape(), L);
  const float *xd = t.x.data(), *rd = r.data();
  float* yd = y.data();
  const int64_t C = L.C, S = L.S;
  if (L.rows) {
    parallel_for(L.N * S, std::max<int64_t>(1, kElementsPerTask / C), [&](int64_t r0, int64_t r1) {
      rows_affine_add_relu(xd + r0 * C, rd + r0 * C, yd + r0 * C, r1 - r0, C, t.affine);
    });
    return y;
  }
  parallel_for(L.N * C, std::max<int64_t>(1, kElementsPerTask / S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % C;
      plane_affine_add_relu(xd + p * S, rd + p * S, yd + p * S, S, t.affine.center[c], t.affine.a[c], t.affine.b[c]);
    }
  });
  return y;
}

BatchNormAddReluGrads batch_norm_add_relu_train_backward(const Tensor& grad_y, const Tensor& x, const Tensor& y,
                                                         const Tensor& gamma, const BatchNormSaved& saved,
                                                         const StatisticsSum& across) {
  const char* op = "batch_norm_add_relu_train_backward";
  const BackwardOperands o = backward_operands(grad_y, x, y, true, op);
  // relu's backward as autograd's relu computes it, grad_y * (y > 0 ? 1 : 0): a product, not a
  // select, so the bits (signed zeros, a NaN gradient where y is cut) are the same.
  Tensor g = empty_in_layout(x.shape(), o.L);
  const float *gy = o.g.data(), *yd = o.y.data();
  float* gd = g.data();
  parallel_for(o.L.numel(), kElementsPerTask, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) gd[i] = gy[i] * (yd[i] > 0.f ? 1.f : 0.f);
  });
  BatchNormAddReluGrads grads;
  grads.norm = batch_norm_train_backward(g, o.x, gamma, saved, false, across);
  grads.residual = g;
  return grads;
}

}  // namespace peel
