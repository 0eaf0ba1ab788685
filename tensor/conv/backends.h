// Internal to tensor/ (and its tests): the per-backend entry points behind conv.h's dispatcher.
//
// conv.cpp checks the shapes once and hands every backend a ConvProblem plus dense operands:
// weights are contiguous (O,C,KH,KW) and bias is contiguous (O) or undefined. Activations keep
// whatever strides the caller gave; each backend reads them as it likes. Forward and
// backward-data results are channels-last; weight gradients are contiguous (O,C,KH,KW).
#pragma once

#include <array>

#include "tensor/conv/conv.h"
#include "tensor/simd/kernels.h"

namespace peel::conv_detail {

struct ConvProblem {
  int64_t N, C, H, W;  // input
  int64_t O, KH, KW;   // weights
  int64_t OH, OW;      // output
  Conv2dGeometry g;
  Shape x_shape() const { return {N, C, H, W}; }
  Shape w_shape() const { return {O, C, KH, KW}; }
  Shape y_shape() const { return {N, O, OH, OW}; }
  double flops() const { return 2.0 * N * O * OH * OW * C * KH * KW; }
};

ConvProblem make_problem(const Shape& x, const Shape& w, const Conv2dGeometry& g);

// A cache key from integers and enums (the backends cache per-problem work in ordered maps).
template <class... T>
std::array<int64_t, sizeof...(T)> int64_key(T... values) {
  return {static_cast<int64_t>(values)...};
}

// `relu`: the forward's ReLU epilogue (ConvEpilogue::kRelu), applied before the value is stored.
Tensor reference_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, bool relu);
Tensor reference_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p);
Tensor reference_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p);

Tensor im2col_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, bool relu);
Tensor im2col_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p);
Tensor im2col_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p);
// Images per im2col chunk: each thread runs GEMMs of (chunk*OH*OW) rows on one OpenBLAS thread.
int64_t im2col_chunk_images(const ConvProblem& p);

// The direct kernels for one instruction set (kAvx512 or kAvx2); the dispatcher passes the best
// the CPU has (or PEEL_ISA's choice), tests pass each in turn. The mode is normally chosen by the
// cost model; tests force each. For forward and backward-data it is the tiling (one or two rows of
// one image, or one position across images: the small-map mode); for backward-weights, kImageTiles
// is the small-map variant too (one run per tap, with exact column ranges).
enum class DirectMode { kAuto, kOneRowTiles, kTwoRowTiles, kImageTiles };
Tensor direct_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, simd::Isa isa,
                      DirectMode mode = DirectMode::kAuto, bool relu = false);
Tensor direct_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p, simd::Isa isa,
                            DirectMode mode = DirectMode::kAuto);
Tensor direct_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p, simd::Isa isa,
                              DirectMode mode = DirectMode::kAuto);
// The instruction set the direct backend uses by default; throws if the CPU has neither AVX2 nor AVX-512.
simd::Isa direct_isa();

Tensor onednn_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, bool relu);
Tensor onednn_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p);
Tensor onednn_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p);
// Number of oneDNN primitives created so far (the cache's misses), for tests of the cache.
int64_t onednn_primitives_created();

}  // namespace peel::conv_detail
