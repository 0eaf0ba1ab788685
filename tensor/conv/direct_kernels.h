// The register-blocked micro-kernels of the direct convolution backend, one table per
// instruction set (conv/direct_avx512.cpp, conv/direct_avx2.cpp). conv/direct.cpp packs the
// operands and walks the tiles; these only multiply and add.
//
// Channels come in blocks of 16 (one zmm, or two ymm). A tile kernel computes a register block of
// OB channel blocks x RH rows x RW pixels:
//   out[r][j][b*16 + l] = init[b*16 + l]
//       + sum over taps t, k < kdim of  w[t.w_off + k*OB*16 + b*16 + l] * in[t.in_off + r*in_row_step + j +
//       k*in_k_stride]
// then max(0, .) of it when `relu` (a fused ReLU: one tile call sums every tap and k, so the value
// stored is final).
// i.e. the input is planar per row (pixels of one channel adjacent), so the RW values of a tap
// are consecutive floats broadcast one by one, and the weights are packed [tap][k][OB*16].
// Forward uses it with k = input channel, backward-data with k = output channel.
//
// A weight-gradient kernel accumulates an OB x RC block over images x rows x cols pixels:
//   acc[e*acc_e_stride + b*16 + l] += sum over pixels  gy[pixel][b*16 + l] * x[pixel][e]
// where both operands are channels-last (the O values of gy and the RC values of x adjacent).
//
// Only plain structs here: this header is included by the files compiled for AVX-512 and AVX2.
#pragma once

#include <cstdint>

namespace peel::conv_detail {

constexpr int kMaxOB = 4;   // channel blocks per register tile
constexpr int kMaxRH = 2;   // rows per register tile
constexpr int kMaxRW = 28;  // pixels per row (or x values) per register tile

struct DirectTap {
  int64_t in_off;
  int64_t w_off;
};

struct DirectTileArgs {
  const float* in;
  int64_t in_row_step;
  int64_t in_k_stride;
  const DirectTap* taps;
  int64_t ntaps;
  int64_t kdim;
  const float* w;
  const float* init;  // OB*16 values, or nullptr for zeros
  float* out;
  int64_t out_pix_stride;
  int64_t out_row_stride;
  int last_block_lanes;  // valid lanes (1..16) of the last channel block; the rest is not stored
  bool relu;             // store max(0, out) (forward's ReLU epilogue); the sums are complete by then
};

struct DirectWgradArgs {
  const float* x;
  int64_t x_col_step, x_row_step, x_image_step;
  const float* gy;
  int64_t gy_col_step, gy_row_step, gy_image_step;
  int64_t images, rows, cols;
  float* acc;
  int64_t acc_e_stride;
  int last_block_lanes;  // valid lanes of gy's last channel block; the rest reads as zero
};

using DirectTileFn = void (*)(const DirectTileArgs&);
using DirectWgradFn = void (*)(const DirectWgradArgs&);
// dst[c * dst_stride + j] = src[j * src_stride + c] for c < channels, j < count: channels-last
// pixels into planar rows, in 8x8 register transposes.
using DirectTransposeFn = void (*)(const float* src, int64_t src_stride, int64_t count, int64_t channels, float* dst,
                                   int64_t dst_stride);

struct DirectKernels {
  const char* name;
  int vectors_per_block;  // 1 (zmm) or 2 (ymm)
  int max_acc;            // the largest register tile, in 16-float blocks (OB*RH*RW or OB*RC)
  DirectTileFn tile[kMaxOB + 1][kMaxRH + 1][kMaxRW + 1];  // [OB][RH][RW], null where over budget
  DirectWgradFn wgrad[3][kMaxOB + 1][kMaxRW + 1];         // [pixels per step: 1 or 2][OB][RC]
  DirectTransposeFn transpose;
};

const DirectKernels& direct_kernels_avx512();
const DirectKernels& direct_kernels_avx2();

}  // namespace peel::conv_detail
