// The direct backend's packing: an image's padded input rows (or grad_y rows, for backward-data)
// into the planar-per-row layout the tile kernel reads, [row][c][phase][q] with column =
// phase + stride*q, so that for any tap the inputs of RW consecutive output pixels are RW
// consecutive floats; a group of images as [h][w][c][image] for image tiles; a padded image as
// channels-last rows for backward-weights; and the weights as [tap][k][OB*16] blocks. Packing
// absorbs the padding, the stride and whatever strides the caller's tensor has.
#include <algorithm>
#include <cstring>

#include "tensor/conv/direct_detail.h"

namespace peel::conv_detail::direct {

void pack_planar(const DirectKernels& k, const ImageView& src, const PlanarLayout& lay, int64_t r0, int64_t r1,
                 float* dst) {
  const int64_t col_lo = std::clamp<int64_t>(-lay.col_origin, 0, lay.cols);              // first in-source col
  const int64_t col_hi = std::clamp<int64_t>(src.W - lay.col_origin, col_lo, lay.cols);  // past the last
  for (int64_t r = r0; r < r1; ++r) {
    float* row = dst + (r - r0) * lay.row_stride();
    const int64_t h = r + lay.row_origin;
    if (h < 0 || h >= src.H) {
      std::memset(row, 0, sizeof(float) * lay.row_stride());
      continue;
    }
    auto zero_column = [&](int64_t col) {
      float* cell = row + lay.at(0, col);
      for (int64_t c = 0; c < lay.channels; ++c) cell[c * lay.channel_stride()] = 0.f;
    };
    for (int64_t col = 0; col < col_lo; ++col) zero_column(col);
    for (int64_t col = col_hi; col < lay.cols; ++col) zero_column(col);
    const float* src_row = src.data + h * src.sh;
    if (src.sc == 1) {
      // Channels-last source: each phase's pixels, transposed into place.
      for (int64_t phase = 0; phase < lay.phases; ++phase) {
        const int64_t first = col_lo + mod(phase - col_lo, lay.phases);
        if (first >= col_hi) continue;
        k.transpose(src_row + (first + lay.col_origin) * src.sw, lay.phases * src.sw,
                    ceil_div(col_hi - first, lay.phases), lay.channels, row + lay.at(0, first), lay.channel_stride());
      }
    } else if (lay.phases == 1) {
      for (int64_t c = 0; c < lay.channels; ++c) {
        const float* s = src_row + c * src.sc + lay.col_origin * src.sw;
        float* d = row + c * lay.channel_stride();
        for (int64_t col = col_lo; col < col_hi; ++col) d[col] = s[col * src.sw];
      }
    } else {
      for (int64_t c = 0; c < lay.channels; ++c)
        for (int64_t col = col_lo; col < col_hi; ++col)
          row[lay.at(c, col)] = src_row[c * src.sc + (col + lay.col_origin) * src.sw];
    }
  }
}

void pack_image_group(const DirectKernels& k, const Tensor& src, int64_t n0, int64_t count, int64_t slots, float* dst) {
  const int64_t C = src.size(1), H = src.size(2), W = src.size(3);
  const int64_t sn = src.stride(0), sc = src.stride(1), sh = src.stride(2), sw = src.stride(3);
  const float* base = src.data() + n0 * sn;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) {
      const float* s = base + h * sh + w * sw;
      float* d = dst + (h * W + w) * C * slots;
      if (sc == 1) {
        k.transpose(s, sn, count, C, d, slots);
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < count; ++i) d[c * slots + i] = s[i * sn + c * sc];
      }
    }
}

void pack_nhwc(const ImageView& src, int64_t pad_h, int64_t pad_w, int64_t rows, int64_t cols, float* dst) {
  const int64_t C = src.C;
  const int64_t col_lo = std::clamp<int64_t>(pad_w, 0, cols), col_hi = std::clamp<int64_t>(pad_w + src.W, col_lo, cols);
  const bool dense_rows = src.sc == 1 && src.sw == C;  // a source row is one run of W*C floats
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r - pad_h;
    float* row = dst + r * cols * C;
    if (h < 0 || h >= src.H) {
      std::memset(row, 0, sizeof(float) * cols * C);
      continue;
    }
    std::memset(row, 0, sizeof(float) * col_lo * C);
    std::memset(row + col_hi * C, 0, sizeof(float) * (cols - col_hi) * C);
    const float* s = src.data + h * src.sh + (col_lo - pad_w) * src.sw;
    if (dense_rows) {
      std::memcpy(row + col_lo * C, s, sizeof(float) * (col_hi - col_lo) * C);
      continue;
    }
    for (int64_t col = col_lo; col < col_hi; ++col, s += src.sw)
      for (int64_t c = 0; c < C; ++c) row[col * C + c] = s[c * src.sc];
  }
}

template <bool kBlockedIsInput>
Tensor pack_weights(const DirectKernels& k, const Tensor& w, const ConvProblem& p, int ob) {
  const int64_t blocked = kBlockedIsInput ? p.C : p.O, kdim = kBlockedIsInput ? p.O : p.C;
  const int64_t blocks = ceil_div(blocked, kBlock), taps = p.KH * p.KW;
  // Along the packed row, the blocked channel steps the weight index by taps (input channels) or
  // by C * taps (output channels).
  const int64_t lane_stride = kBlockedIsInput ? taps : p.C * taps;
  Tensor packed = Tensor::empty({blocks * kBlock * taps * kdim});
  float* dst = packed.data();
  const float* src = w.data();
  // For one group and one k, the source is `valid` runs of `taps` contiguous floats (one per
  // blocked channel, lane_stride apart) and the destination is `taps` rows of `width` lanes
  // (kdim * width apart): a transpose, done in 8x8 register blocks (element by element it was
  // 7% of a batch-2 step, which packs every weight twice per step). The (group, k) pairs are
  // shared among the threads.
  const std::vector<BlockGroup> groups = block_groups(blocks, ob);
  const int64_t pairs = static_cast<int64_t>(groups.size()) * kdim;
  parallel_for(pairs, std::max<int64_t>(1, 8192 / (ob * kBlock * taps)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const BlockGroup& grp = groups[r / kdim];
      const int64_t kk = r % kdim;
      const int64_t width = grp.ob * kBlock, first = grp.first_block * kBlock;
      const int64_t valid = std::min(width, blocked - first);
      float* v = dst + first * taps * kdim + kk * width;
      const float* s = src + (kBlockedIsInput ? (kk * p.C + first) * taps : (first * p.C + kk) * taps);
      k.transpose(s, lane_stride, valid, taps, v, kdim * width);
      for (int64_t t = 0; t < taps; ++t) std::fill(v + t * kdim * width + valid, v + t * kdim * width + width, 0.f);
    }
  });
  return packed;
}

template Tensor pack_weights<false>(const DirectKernels& k, const Tensor& w, const ConvProblem& p, int ob);
template Tensor pack_weights<true>(const DirectKernels& k, const Tensor& w, const ConvProblem& p, int ob);

}  // namespace peel::conv_detail::direct
