// Elementwise ops: forward, then backward, side by side. Broadcasting in the forward becomes
// sum_to in the backward: the gradient of a broadcast input is summed over the broadcast axes.
#include "autograd/functional.h"

namespace peel::ag {

namespace {
Tensor zero() { return Tensor::scalar(0.f); }
}  // namespace

Variable constant(const Tensor& t) { return Variable(t, false); }

Variable add(const Variable& a, const Variable& b) {
  return make_result(peel::add(a.value(), b.value()), {a, b}, "add",
                     [sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& need) {
                       return Grads{need[0] ? sum_to(g, sa) : Tensor(), need[1] ? sum_to(g, sb) : Tensor()};
                     });
}

Variable sub(const Variable& a, const Variable& b) {
  return make_result(peel::sub(a.value(), b.value()), {a, b}, "sub",
                     [sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& need) {
                       return Grads{need[0] ? sum_to(g, sa) : Tensor(), need[1] ? sum_to(peel::neg(g), sb) : Tensor()};
                     });
}

Variable mul(const Variable& a, const Variable& b) {
  // d(ab)/da = b, d(ab)/db = a
  return make_result(
      peel::mul(a.value(), b.value()), {a, b}, "mul",
      [av = a.value(), bv = b.value()](const Tensor& g, const std::vector<bool>& need) {
        return Grads{need[0] ? sum_to(g * bv, av.shape()) : Tensor(), need[1] ? sum_to(g * av, bv.shape()) : Tensor()};
      });
}

Variable div(const Variable& a, const Variable& b) {
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
  return make_result(peel::div(a.value(), b.value()), {a, b}, "div",
                     [av = a.value(), bv = b.value()](const Tensor& g, const std::vector<bool>& need) {
                       return Grads{need[0] ? sum_to(g / bv, av.shape()) : Tensor(),
                                    need[1] ? sum_to(peel::neg(g * av / peel::square(bv)), bv.shape()) : Tensor()};
                     });
}

Variable maximum(const Variable& a, const Variable& b) {
  return make_result(peel::maximum(a.value(), b.value()), {a, b}, "maximum",
                     [av = a.value(), bv = b.value()](const Tensor& g, const std::vector<bool>& need) {
                       Tensor take_a = ge(av, bv);
                       return Grads{need[0] ? sum_to(g * take_a, av.shape()) : Tensor(),
                                    need[1] ? sum_to(g * (1.f - take_a), bv.shape()) : Tensor()};
                     });
}

Variable minimum(const Variable& a, const Variable& b) {
  return make_result(peel::minimum(a.value(), b.value()), {a, b}, "minimum",
                     [av = a.value(), bv = b.value()](const Tensor& g, const std::vector<bool>& need) {
                       Tensor take_a = le(av, bv);
                       return Grads{need[0] ? sum_to(g * take_a, av.shape()) : Tensor(),
                                    need[1] ? sum_to(g * (1.f - take_a), bv.shape()) : Tensor()};
                     });
}

Variable neg(const Variable& x) {
  return make_result(peel::neg(x.value()), {x}, "neg",
                     [](const Tensor& g, const std::vector<bool>&) { return Grads{peel::neg(g)}; });
}

Variable exp(const Variable& x) {
  Tensor y = peel::exp(x.value());  // d e^x = e^x: keep the output
  return make_result(y, {x}, "exp", [y](const Tensor& g, const std::vector<bool>&) { return Grads{g * y}; });
}

Variable log(const Variable& x) {
  return make_result(peel::log(x.value()), {x}, "log",
                     [xv = x.value()](const Tensor& g, const std::vector<bool>&) { return Grads{g / xv}; });
}

Variable sqrt(const Variable& x) {
  Tensor y = peel::sqrt(x.value());  // d sqrt(x) = 1 / (2 sqrt(x))
  return make_result(y, {x}, "sqrt", [y](const Tensor& g, const std::vector<bool>&) { return Grads{g / (2.f * y)}; });
}

Variable rsqrt(const Variable& x) {
  Tensor y = peel::rsqrt(x.value());  // d x^{-1/2} = -1/2 x^{-3/2} = -1/2 y^3
  return make_result(y, {x}, "rsqrt",
                     [y](const Tensor& g, const std::vector<bool>&) { return Grads{g * peel::pow(y, 3.f) * -0.5f}; });
}

Variable abs(const Variable& x) {
  return make_result(peel::abs(x.value()), {x}, "abs", [xv = x.value()](const Tensor& g, const std::vector<bool>&) {
    return Grads{g * (gt(xv, zero()) - lt(xv, zero()))};
  });
}

Variable relu(const Variable& x) {
  Tensor y = peel::relu(x.value());
  return make_result(y, {x}, "relu",
                     [y](const Tensor& g, const std::vector<bool>&) { return Grads{g * gt(y, zero())}; });
}

Variable sigmoid(const Variable& x) {
  Tensor y = peel::sigmoid(x.value());  // d s = s (1 - s)
  return make_result(y, {x}, "sigmoid",
                     [y](const Tensor& g, const std::vector<bool>&) { return Grads{g * y * (1.f - y)}; });
}

Variable tanh(const Variable& x) {
  Tensor y = peel::tanh(x.value());  // d tanh = 1 - tanh^2
  return make_result(y, {x}, "tanh",
                     [y](const Tensor& g, const std::vector<bool>&) { return Grads{g * (1.f - peel::square(y))}; });
}

Variable square(const Variable& x) {
  return make_result(peel::square(x.value()), {x}, "square",
                     [xv = x.value()](const Tensor& g, const std::vector<bool>&) { return Grads{g * xv * 2.f}; });
}

Variable pow(const Variable& x, float exponent) {
  return make_result(peel::pow(x.value(), exponent), {x}, "pow",
                     [xv = x.value(), exponent](const Tensor& g, const std::vector<bool>&) {
                       return Grads{g * peel::pow(xv, exponent - 1.f) * exponent};
                     });
}

Variable clamp(const Variable& x, float lo, float hi) {
  return make_result(peel::clamp(x.value(), lo, hi), {x}, "clamp",
                     [xv = x.value(), lo, hi](const Tensor& g, const std::vector<bool>&) {
                       return Grads{g * ge(xv, Tensor::scalar(lo)) * le(xv, Tensor::scalar(hi))};
                     });
}

Variable affine(const Variable& x, float scale, float shift) {
  return make_result(peel::affine(x.value(), scale, shift), {x}, "affine",
                     [scale](const Tensor& g, const std::vector<bool>&) { return Grads{g * scale}; });
}

Variable where(const Tensor& cond, const Variable& a, const Variable& b) {
  return make_result(peel::where(cond, a.value(), b.value()), {a, b}, "where",
                     [cond, sa = a.shape(), sb = b.shape()](const Tensor& g, const std::vector<bool>& need) {
                       return Grads{need[0] ? sum_to(peel::where(cond, g, zero()), sa) : Tensor(),
                                    need[1] ? sum_to(peel::where(cond, zero(), g), sb) : Tensor()};
                     });
}

Variable operator+(const Variable& a, const Variable& b) { return add(a, b); }
Variable operator-(const Variable& a, const Variable& b) { return sub(a, b); }
Variable operator*(const Variable& a, const Variable& b) { return mul(a, b); }
Variable operator/(const Variable& a, const Variable& b) { return div(a, b); }
Variable operator-(const Variable& x) { return neg(x); }
Variable operator*(const Variable& a, float s) { return affine(a, s, 0.f); }
Variable operator*(float s, const Variable& a) { return affine(a, s, 0.f); }
Variable operator+(const Variable& a, float s) { return affine(a, 1.f, s); }
Variable operator-(const Variable& a, float s) { return affine(a, 1.f, -s); }
Variable operator/(const Variable& a, float s) { return affine(a, 1.f / s, 0.f); }

}  // namespace peel::ag
