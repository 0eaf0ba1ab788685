#include "nn/fusion.h"

#include <atomic>
#include <typeinfo>

#include "tensor/ops.h"

namespace peel::nn {

namespace {

std::atomic<bool> g_folding{true};
std::atomic<bool> g_training_fusion{true};

// The folded weights and bias of `conv` followed by the eval-mode `bn` (see the header).
std::pair<Tensor, Tensor> folded_weights(Conv2d& conv, const BatchNorm& bn) {
  const Tensor w = conv.effective_weight().value();
  const int64_t out = w.size(0);
  Tensor scale = rsqrt(bn.running_var + bn.eps);
  if (bn.weight.defined()) scale = scale * bn.weight.value();
  Tensor shift = conv.bias.defined() ? conv.bias.value() - bn.running_mean : -bn.running_mean;
  shift = shift * scale;
  if (bn.bias.defined()) shift = shift + bn.bias.value();
  return {(w * scale.reshape({out, 1, 1, 1})).contiguous(), shift.contiguous()};
}

bool is_plain_batch_norm(const Module& m) { return typeid(m) == typeid(BatchNorm); }

}  // namespace

void set_eval_folding(bool enabled) { g_folding.store(enabled, std::memory_order_relaxed); }
bool eval_folding() { return g_folding.load(std::memory_order_relaxed); }
void set_training_fusion(bool enabled) { g_training_fusion.store(enabled, std::memory_order_relaxed); }
bool training_fusion() { return g_training_fusion.load(std::memory_order_relaxed); }

Variable conv_then_norm(Conv2d& conv, Module& norm, const Variable& x) {
  const bool foldable_context = eval_folding() && !ag::grad_enabled() && conv.output_probe == nullptr;
  if (foldable_context && is_plain_batch_norm(norm)) {
    auto& bn = static_cast<BatchNorm&>(norm);
    if (!bn.is_training() && bn.probe == nullptr) {
      const auto [w, b] = folded_weights(conv, bn);
      return Variable(conv2d_forward(x.value(), w, b, conv.geometry, default_conv_backend(),
                                     bn.fuse_relu ? ConvEpilogue::kRelu : ConvEpilogue::kNone));
    }
  }
  if (foldable_context && typeid(norm) == typeid(ReLU)) {
    const auto& relu = static_cast<const ReLU&>(norm);
    if (relu.probe == nullptr) {
      const Tensor b = conv.bias.defined() ? conv.bias.value() : Tensor();
      return Variable(conv2d_forward(x.value(), conv.effective_weight().value().contiguous(), b, conv.geometry,
                                     default_conv_backend(), ConvEpilogue::kRelu));
    }
  }
  return norm.forward(conv.forward(x));
}

Variable conv_norm_max_pool(Conv2d& conv, Module& norm, const Variable& x, const Pool2dGeometry& pool) {
  if (training_fusion() && is_plain_batch_norm(norm)) {
    auto& bn = static_cast<BatchNorm&>(norm);
    if (bn.is_training() && bn.fuse_relu && bn.probe == nullptr)
      return bn.normalize_relu_max_pool(conv.forward(x), pool);
  }
  return max_pool2d(conv_then_norm(conv, norm, x), pool);
}

Variable conv_norm_add_activation(Conv2d& conv, Module& norm, const Variable& x, const Variable& residual,
                                  Module& activation) {
  if (training_fusion() && is_plain_batch_norm(norm) && typeid(activation) == typeid(ReLU)) {
    auto& bn = static_cast<BatchNorm&>(norm);
    const auto& relu = static_cast<const ReLU&>(activation);
    if (bn.is_training() && !bn.fuse_relu && relu.probe == nullptr)
      return bn.normalize_add_relu(conv.forward(x), residual);
  }
  return activation.forward(ag::add(conv_then_norm(conv, norm, x), residual));
}

}  // namespace peel::nn
