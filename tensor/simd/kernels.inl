// One source for the elementwise and reduction kernels of every instruction set.
//
// Included by kernels_<isa>.cpp with PEEL_SIMD_WIDTH (floats per vector) and PEEL_SIMD_NAMESPACE
// set; each of those files is compiled with its own -march, so the GCC vector types below become
// SSE2, AVX2 or AVX-512 registers. Everything here has internal linkage (an anonymous namespace)
// so that no inline function compiled for AVX-512 can be picked by the linker for another path;
// for the same reason this file includes no standard-library header that defines functions.
//
// The math functions are Cephes' single-precision polynomials (as in sse_mathfun), about 1-2 ulp.
#include <cstdint>

#include "tensor/simd/kernels.h"
#include "tensor/simd/vector.h"

#ifndef PEEL_SIMD_WIDTH
#error "define PEEL_SIMD_WIDTH before including kernels.inl"
#endif

namespace peel::simd::PEEL_SIMD_NAMESPACE {
namespace {

constexpr int W = PEEL_SIMD_WIDTH;
using vf = Vector<float, W>;
using vi = Vector<int32_t, W>;

// Shorthands of tensor/simd/vector.h's helpers at this file's one width.
inline vf splat(float v) { return simd::splat<vf>(v); }
inline vf as_float(vi v) { return bit_cast<vf>(v); }
inline vi as_int(vf v) { return bit_cast<vi>(v); }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }  // NaN in a: returns b; callers guard
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }
inline vf vabs(vf x) { return as_float(as_int(x) & 0x7fffffff); }

// Reads W elements (or fewer, zero padded) of a strided operand into a vector.
inline vf gather(const float* p, int64_t stride, int count) {
  if (stride == 1 && count == W) return load<vf>(p);
  if (stride == 0) return splat(*p);
  vf v = {};
  for (int i = 0; i < count; ++i) v[i] = p[i * stride];
  return v;
}
inline void scatter(float* p, int64_t stride, int count, vf v) {
  if (stride == 1 && count == W) return store(p, v);
  for (int i = 0; i < count; ++i) p[i * stride] = v[i];
}

// ---- Math -----------------------------------------------------------------------------------

inline vf v_exp(vf x) {
  const vi too_small = x < -87.33654f;
  const vi too_large = x > 88.72283f;
  vf xc = x < -87.33654f ? splat(-87.33654f) : x;
  xc = xc > 88.72283f ? splat(88.72283f) : xc;
  // n = round(x / ln 2), through the 1.5 * 2^23 trick (round to nearest even)
  const vf shifter = splat(12582912.f);
  vf n = (xc * 1.44269504088896341f + shifter) - shifter;
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const vf z = r * r;
  vf y = splat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.f;
  const vi pow2 = (convert<vi>(n) + 127) << 23;
  y = y * as_float(pow2);
  y = select(too_small, splat(0.f), y);
  y = select(too_large, splat(__builtin_inff()), y);
  return y;
}

inline vf v_log(vf x) {
  const vi is_nan_or_neg = ~(x >= 0.f);  // x < 0 or NaN
  const vi is_zero = x == 0.f;
  const vi is_inf = x == __builtin_inff();
  // Scale denormals into the normal range first.
  const vi denormal = x < 1.17549435e-38f;
  vf xs = select(denormal, x * 8388608.f, x);
  vi bits = as_int(xs);
  vi e = ((bits >> 23) & 0xff) - 126;
  e = e - (denormal & 23);
  vf m = as_float((bits & 0x807fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const vi small = m < 0.707106781186547524f;
  vf ef = convert<vf>(e) - select(small, splat(1.f), splat(0.f));
  m = select(small, m + m - 1.f, m - 1.f);
  const vf z = m * m;
  vf y = splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  vf r = m + y + ef * 0.693359375f;
  r = select(is_zero, splat(-__builtin_inff()), r);
  r = select(is_inf, splat(__builtin_inff()), r);
  r = select(is_nan_or_neg, splat(__builtin_nanf("")), r);
  return r;
}

inline vf v_sigmoid(vf x) {
  // 1/(1+e^-x) for x >= 0, e^x/(1+e^x) for x < 0: never overflows, keeps relative accuracy.
  const vf e = v_exp(-vabs(x));
  const vf s = 1.f / (1.f + e);
  return select(x >= 0.f, s, e * s);
}

inline vf v_tanh(vf x) {
  const vf ax = vabs(x);
  // |x| < 0.625: Cephes' odd polynomial; otherwise 1 - 2/(e^{2|x|} + 1) with the sign of x.
  const vf s = x * x;
  vf p = splat(-5.70498872745e-3f);
  p = p * s + 2.06390887954e-2f;
  p = p * s - 5.37397155531e-2f;
  p = p * s + 1.33314422036e-1f;
  p = p * s - 3.33332819422e-1f;
  const vf small = p * s * x + x;
  vf big = 1.f - 2.f / (v_exp(ax + ax) + 1.f);
  big = as_float(as_int(big) | (as_int(x) & (int32_t)0x80000000));
  return select(ax < 0.625f, small, big);
}

inline vf v_sqrt(vf x) {
  vf r = x;
  for (int i = 0; i < W; ++i) r[i] = __builtin_sqrtf(x[i]);  // compiles to one vsqrtps
  return r;
}

inline vf v_pow(vf x, vf p) {
  // x^p = exp(p log x), with the integer-exponent cases of negative x handled exactly like pow().
  vf r = v_exp(p * v_log(vabs(x)));
  const vf pr = (p + 12582912.f) - 12582912.f;
  const vi p_is_int = (pr == p) & (vabs(p) < 8388608.f);
  const vf half = p * 0.5f;
  const vi p_is_odd = p_is_int & (((half + 12582912.f) - 12582912.f) != half);
  const vi neg = x < 0.f;
  r = select(neg & p_is_odd, -r, r);
  r = select(neg & ~p_is_int, splat(__builtin_nanf("")), r);
  r = select(p == 0.f, splat(1.f), r);
  r = select((x == 0.f) & (p > 0.f), splat(0.f), r);
  return r;
}

inline vi lane_index() {
  vi v;
  for (int i = 0; i < W; ++i) v[i] = i;
  return v;
}

inline vf bool_to_float(vi mask) { return select(mask, splat(1.f), splat(0.f)); }

inline vf apply_unary(UnaryOp op, vf x, float p0, float p1) {
  switch (op) {
    case UnaryOp::kCopy:
      return x;
    case UnaryOp::kNeg:
      return -x;
    case UnaryOp::kExp:
      return v_exp(x);
    case UnaryOp::kLog:
      return v_log(x);
    case UnaryOp::kSqrt:
      return v_sqrt(x);
    case UnaryOp::kRsqrt:
      return 1.f / v_sqrt(x);
    case UnaryOp::kAbs:
      return vabs(x);
    case UnaryOp::kRelu:
      return select(x > 0.f, x, splat(0.f));
    case UnaryOp::kSigmoid:
      return v_sigmoid(x);
    case UnaryOp::kTanh:
      return v_tanh(x);
    case UnaryOp::kSquare:
      return x * x;
    case UnaryOp::kPowScalar:
      if (p0 == 2.f) return x * x;
      if (p0 == 1.f) return x;
      if (p0 == 0.5f) return v_sqrt(x);
      return v_pow(x, splat(p0));
    case UnaryOp::kClamp: {
      const vf lo = select(x < p0, splat(p0), x);
      return select(lo > p1, splat(p1), lo);
    }
    case UnaryOp::kAffine:
      return x * p0 + p1;
    case UnaryOp::kFill:
      return splat(p0);
  }
  return x;
}

inline vf apply_binary(BinaryOp op, vf a, vf b) {
  switch (op) {
    case BinaryOp::kAdd:
      return a + b;
    case BinaryOp::kSub:
      return a - b;
    case BinaryOp::kMul:
      return a * b;
    case BinaryOp::kDiv:
      return a / b;
    case BinaryOp::kMax:
      return select((a > b) | (a != a), a, b);  // NaN propagates, as in torch.maximum
    case BinaryOp::kMin:
      return select((a < b) | (a != a), a, b);
    case BinaryOp::kEq:
      return bool_to_float(a == b);
    case BinaryOp::kNe:
      return bool_to_float(a != b);
    case BinaryOp::kLt:
      return bool_to_float(a < b);
    case BinaryOp::kLe:
      return bool_to_float(a <= b);
    case BinaryOp::kGt:
      return bool_to_float(a > b);
    case BinaryOp::kGe:
      return bool_to_float(a >= b);
    case BinaryOp::kPow:
      return v_pow(a, b);
  }
  return a;
}

// ---- Row kernels ------------------------------------------------------------------------------

void unary(UnaryOp op, int64_t n, const float* x, int64_t sx, float* y, int64_t sy, float p0, float p1) {
  int64_t i = 0;
  if (sx == 1 && sy == 1) {
    for (; i + W <= n; i += W) store(y + i, apply_unary(op, load<vf>(x + i), p0, p1));
  }
  for (; i < n; i += W) {
    const int count = static_cast<int>(n - i < W ? n - i : W);
    scatter(y + i * sy, sy, count, apply_unary(op, gather(x + i * sx, sx, count), p0, p1));
  }
}

void binary(BinaryOp op, int64_t n, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t sy) {
  int64_t i = 0;
  if (sy == 1 && (sa == 1 || sa == 0) && (sb == 1 || sb == 0)) {
    const vf a0 = splat(*a), b0 = splat(*b);
    for (; i + W <= n; i += W) store(y + i, apply_binary(op, sa ? load<vf>(a + i) : a0, sb ? load<vf>(b + i) : b0));
  }
  for (; i < n; i += W) {
    const int count = static_cast<int>(n - i < W ? n - i : W);
    scatter(y + i * sy, sy, count, apply_binary(op, gather(a + i * sa, sa, count), gather(b + i * sb, sb, count)));
  }
}

void where(int64_t n, const float* c, int64_t sc, const float* a, int64_t sa, const float* b, int64_t sb, float* y,
           int64_t sy) {
  for (int64_t i = 0; i < n; i += W) {
    const int count = static_cast<int>(n - i < W ? n - i : W);
    const vf cv = gather(c + i * sc, sc, count);
    scatter(y + i * sy, sy, count, select(cv != 0.f, gather(a + i * sa, sa, count), gather(b + i * sb, sb, count)));
  }
}

void axpy(int64_t n, float alpha, const float* x, int64_t sx, float* y, int64_t sy) {
  int64_t i = 0;
  if (sx == 1 && sy == 1) {
    for (; i + W <= n; i += W) store(y + i, load<vf>(y + i) + alpha * load<vf>(x + i));
  }
  for (; i < n; i += W) {
    const int count = static_cast<int>(n - i < W ? n - i : W);
    scatter(y + i * sy, sy, count, gather(y + i * sy, sy, count) + alpha * gather(x + i * sx, sx, count));
  }
}

inline float horizontal(ReduceOp op, vf v) {
  float r = v[0];
  for (int i = 1; i < W; ++i) {
    if (op == ReduceOp::kSum)
      r += v[i];
    else if (op == ReduceOp::kMax)
      r = (v[i] > r || v[i] != v[i]) ? v[i] : r;
    else
      r = (v[i] < r || v[i] != v[i]) ? v[i] : r;
  }
  return r;
}

inline vf combine(ReduceOp op, vf acc, vf v) {
  if (op == ReduceOp::kSum) return acc + v;
  if (op == ReduceOp::kMax) return select((v > acc) | (v != v), v, acc);
  return select((v < acc) | (v != v), v, acc);
}

float reduce(ReduceOp op, int64_t n, const float* x, int64_t sx) {
  if (n == 0) return op == ReduceOp::kSum ? 0.f : (op == ReduceOp::kMax ? -__builtin_inff() : __builtin_inff());
  const vf identity = op == ReduceOp::kSum ? splat(0.f) : splat(x[0]);
  vf acc0 = identity, acc1 = identity, acc2 = identity, acc3 = identity;
  int64_t i = 0;
  if (sx == 1) {
    for (; i + 4 * W <= n; i += 4 * W) {
      acc0 = combine(op, acc0, load<vf>(x + i));
      acc1 = combine(op, acc1, load<vf>(x + i + W));
      acc2 = combine(op, acc2, load<vf>(x + i + 2 * W));
      acc3 = combine(op, acc3, load<vf>(x + i + 3 * W));
    }
  }
  for (; i < n; i += W) {
    const int count = static_cast<int>(n - i < W ? n - i : W);
    vf v = gather(x + i * sx, sx, count);
    if (count < W) v = select((vi{} + count) > lane_index(), v, identity);
    acc0 = combine(op, acc0, v);
  }
  return horizontal(op, combine(op, combine(op, acc0, acc1), combine(op, acc2, acc3)));
}

float sum_squared_deviation(int64_t n, const float* x, int64_t sx, float mean) {
  vf acc0 = {}, acc1 = {};
  const vf m = splat(mean);
  int64_t i = 0;
  if (sx == 1) {
    for (; i + 2 * W <= n; i += 2 * W) {
      const vf d0 = load<vf>(x + i) - m, d1 = load<vf>(x + i + W) - m;
      acc0 += d0 * d0;
      acc1 += d1 * d1;
    }
  }
  for (; i < n; i += W) {
    const int count = static_cast<int>(n - i < W ? n - i : W);
    vf d = gather(x + i * sx, sx, count) - m;
    for (int k = count; k < W; ++k) d[k] = 0.f;
    acc0 += d * d;
  }
  return horizontal(ReduceOp::kSum, acc0 + acc1);
}

}  // namespace

extern const KernelTable table;
const KernelTable table = {PEEL_SIMD_NAME, unary, binary, where, axpy, reduce, sum_squared_deviation};

}  // namespace peel::simd::PEEL_SIMD_NAMESPACE
