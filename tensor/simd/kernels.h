// The vectorised inner loops of elementwise ops and reductions, compiled once per instruction
// set (baseline SSE2, AVX2+FMA, AVX-512) and chosen at run time: the best the CPU supports, or the
// one named by the environment variable PEEL_ISA=baseline|avx2|avx512 (for tests and comparison).
//
// Every kernel works on one row of n elements. An operand's stride is 1 (contiguous), 0
// (broadcast scalar) or anything else (gathered); the fast paths are the first two.
#pragma once

#include <cstdint>

namespace peel::simd {

enum class Isa { kBaseline, kAvx2, kAvx512 };

enum class UnaryOp {
  kCopy,
  kNeg,
  kExp,
  kLog,
  kSqrt,
  kRsqrt,
  kAbs,
  kRelu,
  kSigmoid,
  kTanh,
  kSquare,
  kPowScalar,  // x^p0
  kClamp,      // min(max(x, p0), p1)
  kAffine,     // p0 * x + p1
  kFill,       // p0 (x ignored)
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kMax, kMin, kEq, kNe, kLt, kLe, kGt, kGe, kPow };

enum class ReduceOp { kSum, kMax, kMin };

struct KernelTable {
  const char* name;
  // y[i] = op(x[i]; p0, p1)
  void (*unary)(UnaryOp op, int64_t n, const float* x, int64_t sx, float* y, int64_t sy, float p0, float p1);
  // y[i] = op(a[i], b[i])
  void (*binary)(BinaryOp op, int64_t n, const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t sy);
  // y[i] = c[i] != 0 ? a[i] : b[i]
  void (*where)(int64_t n, const float* c, int64_t sc, const float* a, int64_t sa, const float* b, int64_t sb, float* y,
                int64_t sy);
  // y[i] += alpha * x[i]
  void (*axpy)(int64_t n, float alpha, const float* x, int64_t sx, float* y, int64_t sy);
  // op over x[0..n); sum uses several vector accumulators (blocked summation)
  float (*reduce)(ReduceOp op, int64_t n, const float* x, int64_t sx);
  // sum of (x[i] - mean)^2
  float (*sum_squared_deviation)(int64_t n, const float* x, int64_t sx, float mean);
};

const KernelTable& kernels();             // the active table
const KernelTable& kernels_for(Isa isa);  // a specific one; throws if the CPU lacks it
bool cpu_supports(Isa isa);
Isa active_isa();
const char* isa_name(Isa isa);

// The per-ISA tables (defined in kernels_<isa>.cpp).
const KernelTable& baseline_kernels();
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();

}  // namespace peel::simd
