// GCC vector types and the few helpers the hand-vectorised kernels share: simd/kernels.inl (the
// elementwise kernels, one copy per instruction set), kernels/pool.cpp (16-channel max pooling)
// and kernels/norm_detail.cpp (float lanes widened to double for the norm reductions).
//
// A Vector<T, N> is N lanes of T; arithmetic, comparisons (giving an integer mask vector of the
// same width), `mask ? a : b` and lane subscripts work as on scalars. What register it becomes
// depends on the -march of the file that includes this header: a 64-byte vector is one AVX-512
// register, two AVX2 registers or four SSE2 registers. Loads and stores go through memcpy, so
// they need no alignment and the compiler emits plain unaligned vector moves.
//
// Everything here has internal linkage (an anonymous namespace): a file compiled for AVX-512 and
// one compiled for baseline x86-64 each keep their own copies, and the linker can never pick the
// AVX-512 one for both. For the same reason this header includes nothing that defines functions.
#pragma once

#include <cstdint>

namespace peel::simd {
namespace {

template <class T, int N>
struct VectorOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
// N lanes of T, e.g. Vector<float, 8> (8 floats), Vector<int32_t, 16> (a 16-lane mask).
template <class T, int N>
using Vector = typename VectorOf<T, N>::type;

// The lane type of a vector type: Lane<Vector<float, 8>> is float.
template <class V>
struct LaneOf {
  typedef __typeof__(V{}[0]) type;
};
template <class V>
using Lane = typename LaneOf<V>::type;

template <class V>
inline constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(Lane<V>));

// V's lanes from p[0], ..., p[kLanes<V> - 1] (any alignment).
template <class V>
inline V load(const Lane<V>* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// p[0], ..., p[kLanes<V> - 1] = v's lanes (any alignment).
template <class V>
inline void store(Lane<V>* p, V v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// Every lane = value.
template <class V>
inline V splat(Lane<V> value) {
  return V{} + value;
}

// The same bits seen as another vector type of the same size (float lanes as int32 and back).
template <class To, class From>
inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs vectors of the same size");
  To t;
  __builtin_memcpy(&t, &v, sizeof t);
  return t;
}

// Lane-by-lane value conversion to another lane type with the same lane count (float -> double
// widens, float -> int32 truncates toward zero).
template <class To, class From>
inline To convert(From v) {
  static_assert(kLanes<To> == kLanes<From>, "convert keeps the lane count");
  return __builtin_convertvector(v, To);
}

}  // namespace
}  // namespace peel::simd
