// Layer ops: forward, then backward, side by side. The heavy lifting is in tensor/ kernels.
#include "nn/functional.h"
#include "tensor/error.h"
#include "tensor/kernels/norm.h"
#include "tensor/linalg.h"
#include "tensor/random.h"

namespace peel::nn {

using ag::Grads;
using ag::make_result;

Variable linear(const Variable& x, const Variable& weight, const Variable& bias) {
  PEEL_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
             "linear: input {} does not fit weight {} (expected (N, {}))", to_string(x.shape()),
             to_string(weight.shape()), weight.dim() == 2 ? weight.size(1) : -1);
  const int64_t n = x.size(0), in = weight.size(1), out = weight.size(0);
  Tensor xc = x.value().contiguous();
  Tensor w = weight.value().contiguous();
  Tensor y = Tensor::empty({n, out});
  if (bias.defined()) {
    PEEL_CHECK(bias.shape() == Shape{out}, "linear: bias has shape {}, expected [{}]", to_string(bias.shape()), out);
    y.copy_(bias.value());  // broadcast the bias into every row, then GEMM adds x W^T on top
  }
  gemm(false, true, n, out, in, 1.f, xc.data(), in, w.data(), in, bias.defined() ? 1.f : 0.f, y.data(), out);

  return make_result(y, {x, weight, bias}, "linear",
                     [xc, w, n, in, out](const Tensor& g, const std::vector<bool>& need) {
                       Tensor gc = g.contiguous();
                       Grads grads(3);
                       if (need[0]) {  // dx = g W
                         grads[0] = Tensor::empty({n, in});
                         gemm(false, false, n, in, out, 1.f, gc.data(), out, w.data(), in, 0.f, grads[0].data(), in);
                       }
                       if (need[1]) {  // dW = g^T x
                         grads[1] = Tensor::empty({out, in});
                         gemm(true, false, out, in, n, 1.f, gc.data(), out, xc.data(), in, 0.f, grads[1].data(), in);
                       }
                       if (need[2]) grads[2] = sum(gc, {0});  // db = sum over the batch
                       return grads;
                     });
}

Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias, const Conv2dGeometry& geometry) {
  Tensor w = weight.value().contiguous();
  Tensor y = conv2d_forward(x.value(), w, bias.defined() ? bias.value() : Tensor(), geometry);
  return make_result(y, {x, weight, bias}, "conv2d",
                     [xv = x.value(), w, geometry](const Tensor& g, const std::vector<bool>& need) {
                       Grads grads(3);
                       if (need[0]) grads[0] = conv2d_backward_data(g, w, xv.shape(), geometry);
                       if (need[1]) grads[1] = conv2d_backward_weight(g, xv, w.shape(), geometry);
                       if (need[2]) grads[2] = conv2d_backward_bias(g);
                       return grads;
                     });
}

Variable batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps, bool fuse_relu,
                    const StatisticsSum& across) {
  const Tensor g = gamma.defined() ? gamma.value() : Tensor();
  const Tensor b = beta.defined() ? beta.value() : Tensor();
  if (!training) {
    Tensor y = batch_norm_eval_forward(x.value(), g, b, running_mean, running_var, eps, fuse_relu);
    // Eval mode is a fixed affine map per channel (then ReLU), so its backward needs no batch
    // statistics; the ReLU's mask is re-evaluated from x, so the output is not kept.
    return make_result(
        y, {x, gamma, beta}, "batch_norm_eval",
        [xv = x.value(), g, b, running_mean, running_var, eps, fuse_relu](const Tensor& gy, const std::vector<bool>&) {
          BatchNormGrads d = batch_norm_eval_backward(gy, xv, g, b, running_mean, running_var, eps, fuse_relu);
          return Grads{d.x, d.gamma, d.beta};
        });
  }
  BatchNormSaved saved;
  Tensor y =
      batch_norm_train_forward(x.value(), g, b, running_mean, running_var, momentum, eps, saved, fuse_relu, across);
  // The backward reads x and the saved statistics, not the output (see batch_norm_train_backward).
  return make_result(y, {x, gamma, beta}, "batch_norm",
                     [xv = x.value(), g, saved, fuse_relu, across](const Tensor& gy, const std::vector<bool>&) {
                       BatchNormGrads d = batch_norm_train_backward(gy, xv, g, saved, fuse_relu, across);
                       return Grads{d.x, d.gamma, d.beta};
                     });
}

Variable group_norm(const Variable& x, int64_t groups, const Variable& gamma, const Variable& beta, float eps,
                    bool relu) {
  const Tensor g = gamma.defined() ? gamma.value() : Tensor();
  GroupNormSaved saved;
  Tensor y = group_norm_forward(x.value(), groups, g, beta.defined() ? beta.value() : Tensor(), eps, saved, relu);
  // The backward reads x and the saved statistics, not the output (a fused ReLU's mask is
  // re-evaluated from them).
  return make_result(y, {x, gamma, beta}, "group_norm",
                     [xv = x.value(), g, groups, saved, relu](const Tensor& gy, const std::vector<bool>&) {
                       BatchNormGrads d = group_norm_backward(gy, xv, groups, g, saved, relu);
                       return Grads{d.x, d.gamma, d.beta};
                     });
}

Variable max_pool2d(const Variable& x, const Pool2dGeometry& geometry) {
  auto argmax = std::make_shared<MaxPoolArgmax>();
  Tensor y = max_pool2d_forward(x.value(), geometry, *argmax);
  return make_result(y, {x}, "max_pool2d", [argmax, in = x.shape()](const Tensor& g, const std::vector<bool>&) {
    return Grads{max_pool2d_backward(g, *argmax, in)};
  });
}

Variable batch_norm_relu_max_pool(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                                  Tensor& running_var, float momentum, float eps, const Pool2dGeometry& pool,
                                  const StatisticsSum& across) {
  const Tensor g = gamma.defined() ? gamma.value() : Tensor();
  BatchNormSaved saved;
  auto argmax = std::make_shared<MaxPoolArgmax>();
  Tensor y =
      batch_norm_relu_max_pool_train_forward(x.value(), g, beta.defined() ? beta.value() : Tensor(), running_mean,
                                             running_var, momentum, eps, pool, saved, *argmax, across);
  // The backward reads x, the saved statistics and the pool's choices; nothing at full resolution
  // but x is kept.
  return make_result(y, {x, gamma, beta}, "batch_norm_relu_max_pool",
                     [xv = x.value(), g, saved, pool, argmax, across](const Tensor& gy, const std::vector<bool>&) {
                       BatchNormGrads d =
                           batch_norm_relu_max_pool_train_backward(gy, xv, g, saved, pool, *argmax, across);
                       return Grads{d.x, d.gamma, d.beta};
                     });
}

Variable batch_norm_add_relu(const Variable& x, const Variable& gamma, const Variable& beta, Tensor& running_mean,
                             Tensor& running_var, float momentum, float eps, const Variable& residual,
                             const StatisticsSum& across) {
  const Tensor g = gamma.defined() ? gamma.value() : Tensor();
  BatchNormSaved saved;
  Tensor y = batch_norm_add_relu_train_forward(x.value(), g, beta.defined() ? beta.value() : Tensor(), running_mean,
                                               running_var, momentum, eps, residual.value(), saved, across);
  // The backward reads x, the output (the ReLU's mask, as relu keeps it) and the statistics.
  return make_result(y, {x, gamma, beta, residual}, "batch_norm_add_relu",
                     [xv = x.value(), y, g, saved, across](const Tensor& gy, const std::vector<bool>&) {
                       BatchNormAddReluGrads d = batch_norm_add_relu_train_backward(gy, xv, y, g, saved, across);
                       return Grads{d.norm.x, d.norm.gamma, d.norm.beta, d.residual};
                     });
}

Variable avg_pool2d(const Variable& x, const Pool2dGeometry& geometry) {
  return make_result(avg_pool2d_forward(x.value(), geometry), {x}, "avg_pool2d",
                     [in = x.shape(), geometry](const Tensor& g, const std::vector<bool>&) {
                       return Grads{avg_pool2d_backward(g, in, geometry)};
                     });
}

Variable global_avg_pool(const Variable& x) {
  return make_result(global_avg_pool_forward(x.value()), {x}, "global_avg_pool",
                     [in = x.shape(), cl = x.value().is_channels_last()](const Tensor& g, const std::vector<bool>&) {
                       return Grads{global_avg_pool_backward(g, in, cl)};
                     });
}

Variable dropout(const Variable& x, float p, Generator& gen) {
  PEEL_CHECK(p >= 0.f && p < 1.f, "dropout: probability must be in [0, 1), got {}", p);
  Tensor mask = Tensor::empty(x.shape());
  float* m = mask.data();
  const float keep_scale = 1.f / (1.f - p);
  for (int64_t i = 0; i < mask.numel(); ++i) m[i] = gen.uniform() < p ? 0.f : keep_scale;
  return make_result(x.value() * mask, {x}, "dropout",
                     [mask](const Tensor& g, const std::vector<bool>&) { return Grads{g * mask}; });
}

}  // namespace peel::nn
