// Elementwise ops: broadcasting, output layout, and the strided walk around the SIMD kernels.
#include <cmath>

#include "tensor/error.h"
#include "tensor/iterate.h"
#include "tensor/ops.h"
#include "tensor/simd/kernels.h"

namespace peel {

using simd::BinaryOp;
using simd::UnaryOp;

namespace {

// A result of `shape` laid out like `like` when `like` is channels-last and has that shape.
Tensor empty_like_layout(const Shape& shape, const Tensor& like) {
  if (like.shape() == shape && like.is_channels_last() && !like.is_contiguous())
    return Tensor::empty_channels_last(shape);
  return Tensor::empty(shape);
}

void check_defined(const Tensor& t, const char* op) { PEEL_CHECK(t.defined(), "{}: tensor is undefined", op); }

void unary_into(Tensor& out, const Tensor& x, UnaryOp op, float p0 = 0.f, float p1 = 0.f) {
  const auto& k = simd::kernels();
  auto loop = detail::make_loop<2>(out.shape(), {out.strides(), broadcast_strides(x.shape(), x.strides(), out.shape())},
                                   {out.data(), const_cast<float*>(x.data())});
  detail::for_each_row(loop, [&](const std::array<float*, 2>& p, int64_t n, const std::array<int64_t, 2>& s) {
    k.unary(op, n, p[1], s[1], p[0], s[0], p0, p1);
  });
}

Tensor unary(const Tensor& x, UnaryOp op, const char* name, float p0 = 0.f, float p1 = 0.f) {
  check_defined(x, name);
  Tensor out = empty_like_layout(x.shape(), x);
  unary_into(out, x, op, p0, p1);
  return out;
}

Tensor binary(const Tensor& a, const Tensor& b, BinaryOp op, const char* name) {
  check_defined(a, name);
  check_defined(b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty_like_layout(shape, a.shape() == shape ? a : b);
  const auto& k = simd::kernels();
  auto loop = detail::make_loop<3>(shape,
                                   {out.strides(), broadcast_strides(a.shape(), a.strides(), shape),
                                    broadcast_strides(b.shape(), b.strides(), shape)},
                                   {out.data(), const_cast<float*>(a.data()), const_cast<float*>(b.data())});
  detail::for_each_row(loop, [&](const std::array<float*, 3>& p, int64_t n, const std::array<int64_t, 3>& s) {
    k.binary(op, n, p[1], s[1], p[2], s[2], p[0], s[0]);
  });
  return out;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary(x, UnaryOp::kNeg, "neg"); }
Tensor exp(const Tensor& x) { return unary(x, UnaryOp::kExp, "exp"); }
Tensor log(const Tensor& x) { return unary(x, UnaryOp::kLog, "log"); }
Tensor sqrt(const Tensor& x) { return unary(x, UnaryOp::kSqrt, "sqrt"); }
Tensor rsqrt(const Tensor& x) { return unary(x, UnaryOp::kRsqrt, "rsqrt"); }
Tensor abs(const Tensor& x) { return unary(x, UnaryOp::kAbs, "abs"); }
Tensor relu(const Tensor& x) { return unary(x, UnaryOp::kRelu, "relu"); }
Tensor sigmoid(const Tensor& x) { return unary(x, UnaryOp::kSigmoid, "sigmoid"); }
Tensor tanh(const Tensor& x) { return unary(x, UnaryOp::kTanh, "tanh"); }
Tensor square(const Tensor& x) { return unary(x, UnaryOp::kSquare, "square"); }
Tensor pow(const Tensor& x, float exponent) { return unary(x, UnaryOp::kPowScalar, "pow", exponent); }
Tensor clamp(const Tensor& x, float lo, float hi) {
  PEEL_CHECK(!(lo > hi), "clamp: lower bound {} is above upper bound {}", lo, hi);
  return unary(x, UnaryOp::kClamp, "clamp", lo, hi);
}
Tensor affine(const Tensor& x, float scale, float shift) { return unary(x, UnaryOp::kAffine, "affine", scale, shift); }

Tensor add(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kAdd, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kSub, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kMul, "mul"); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kDiv, "div"); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kMax, "maximum"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kMin, "minimum"); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kPow, "pow"); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kEq, "eq"); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kNe, "ne"); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kLt, "lt"); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kLe, "le"); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kGt, "gt"); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(a, b, BinaryOp::kGe, "ge"); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined(cond, "where");
  check_defined(a, "where");
  check_defined(b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty_like_layout(shape, a);
  const auto& k = simd::kernels();
  auto loop = detail::make_loop<4>(
      shape,
      {out.strides(), broadcast_strides(cond.shape(), cond.strides(), shape),
       broadcast_strides(a.shape(), a.strides(), shape), broadcast_strides(b.shape(), b.strides(), shape)},
      {out.data(), const_cast<float*>(cond.data()), const_cast<float*>(a.data()), const_cast<float*>(b.data())});
  detail::for_each_row(loop, [&](const std::array<float*, 4>& p, int64_t n, const std::array<int64_t, 4>& s) {
    k.where(n, p[1], s[1], p[2], s[2], p[3], s[3], p[0], s[0]);
  });
  return out;
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, float b) { return affine(a, 1.f, b); }
Tensor operator-(const Tensor& a, float b) { return affine(a, 1.f, -b); }
Tensor operator*(const Tensor& a, float b) { return affine(a, b, 0.f); }
Tensor operator/(const Tensor& a, float b) { return div(a, Tensor::scalar(b)); }
Tensor operator+(float a, const Tensor& b) { return affine(b, 1.f, a); }
Tensor operator-(float a, const Tensor& b) { return affine(b, -1.f, a); }
Tensor operator*(float a, const Tensor& b) { return affine(b, a, 0.f); }
Tensor operator/(float a, const Tensor& b) { return div(Tensor::scalar(a), b); }

// ---- In-place ----------------------------------------------------------------------------------

void fill_into(Tensor& dst, float value) {
  const auto& k = simd::kernels();
  auto loop = detail::make_loop<1>(dst.shape(), {dst.strides()}, {dst.data()});
  detail::for_each_row(loop, [&](const std::array<float*, 1>& p, int64_t n, const std::array<int64_t, 1>& s) {
    k.unary(UnaryOp::kFill, n, p[0], s[0], p[0], s[0], value, 0.f);
  });
}

void copy_into(Tensor& dst, const Tensor& src) {
  PEEL_CHECK(broadcast_shapes(src.shape(), dst.shape(), "copy_") == dst.shape(),
             "copy_: cannot copy a tensor of shape {} into one of shape {}", to_string(src.shape()),
             to_string(dst.shape()));
  unary_into(dst, src, UnaryOp::kCopy);
}

void axpy_into(Tensor& dst, float alpha, const Tensor& src) {
  PEEL_CHECK(broadcast_shapes(src.shape(), dst.shape(), "add_") == dst.shape(),
             "add_: cannot add a tensor of shape {} into one of shape {}", to_string(src.shape()),
             to_string(dst.shape()));
  const auto& k = simd::kernels();
  auto loop =
      detail::make_loop<2>(dst.shape(), {dst.strides(), broadcast_strides(src.shape(), src.strides(), dst.shape())},
                           {dst.data(), const_cast<float*>(src.data())});
  detail::for_each_row(loop, [&](const std::array<float*, 2>& p, int64_t n, const std::array<int64_t, 2>& s) {
    k.axpy(n, alpha, p[1], s[1], p[0], s[0]);
  });
}

void scale_into(Tensor& dst, float factor) { unary_into(dst, dst, UnaryOp::kAffine, factor, 0.f); }

// ---- Comparison helpers ------------------------------------------------------------------------

bool allclose(const Tensor& a, const Tensor& b, float rtol, float atol) {
  PEEL_CHECK(a.shape() == b.shape(), "allclose: shapes {} and {} differ", to_string(a.shape()), to_string(b.shape()));
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) return false;
    if (std::fabs(va[i] - vb[i]) > atol + rtol * std::fabs(vb[i])) return false;
  }
  return true;
}

float max_relative_error(const Tensor& a, const Tensor& b, float floor) {
  PEEL_CHECK(a.shape() == b.shape(), "max_relative_error: shapes {} and {} differ", to_string(a.shape()),
             to_string(b.shape()));
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  float worst = 0.f;
  for (size_t i = 0; i < va.size(); ++i) {
    const float err = std::fabs(va[i] - vb[i]) / std::max(std::fabs(vb[i]), floor);
    if (std::isnan(err)) return NAN;
    worst = std::max(worst, err);
  }
  return worst;
}

}  // namespace peel
