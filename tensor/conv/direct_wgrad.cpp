// The direct backend's backward-weights pass. Each thread accumulates a (KH*KW*C) x O partial
// gradient over its images, reading both operands channels-last: the O values of a grad_y pixel
// are vector loads and the C values of the input pixel (KW*C when dilation is 1: adjacent taps are
// adjacent pixels) are broadcasts. Output rows (and, per tap, columns) whose input lies in the
// padding are skipped. The per-thread partials are summed in thread order, so results depend only
// on the thread count. The register tile comes from the cost model (plan_wgrad, direct_plan.cpp).
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "tensor/conv/direct_detail.h"

namespace peel::conv_detail {

using namespace direct;

Tensor direct_backward_weight(const Tensor& gy, const Tensor& x, const ConvProblem& p, simd::Isa isa, DirectMode mode) {
  const DirectKernels& K = direct_kernels_for(isa);
  const Conv2dGeometry& g = p.g;
  const Tensor gl = gy.channels_last();
  const int64_t blocks = ceil_div(p.O, kBlock), opad = blocks * kBlock;
  const int64_t entries = p.KH * p.KW * p.C;  // partial gradient rows, order (kh, kw, c)

  // The padded input as channels-last rows; read in place when it already is that.
  const int64_t rows_used = (p.OH - 1) * g.stride_h + (p.KH - 1) * g.dilation_h + 1;
  const int64_t cols_used = (p.OW - 1) * g.stride_w + (p.KW - 1) * g.dilation_w + 1;
  const bool in_place = x.is_channels_last() && g.pad_h == 0 && g.pad_w == 0;
  const int64_t pitch = in_place ? p.W * p.C : cols_used * p.C;  // floats per input row
  const int64_t image_floats = in_place ? p.H * pitch : rows_used * pitch;

  // Runs of adjacent x values that share a weight-gradient row block, each with the output rows
  // (and columns) whose input is not padding (the rest would add zeros). With dilation 1 the KW
  // taps of a kernel row are adjacent pixels, so a run can be KW*C long; on narrow maps, where the
  // padded columns are a large share, each tap is its own run so its columns can be cut exactly.
  struct Segment {
    int64_t x_off, entry, length;
    int64_t oh_begin, oh_end, ow_begin, ow_end;
  };
  auto valid_range = [](int64_t shift, int64_t stride, int64_t out, int64_t in) {
    // outputs o with 0 <= o*stride + shift < in
    return std::pair<int64_t, int64_t>{std::max<int64_t>(0, -floor_div(shift, stride)),
                                       std::min(out, floor_div(in - 1 - shift, stride) + 1)};
  };
  const bool per_tap = g.dilation_w != 1 || mode == DirectMode::kImageTiles ||
                       (mode == DirectMode::kAuto && g.pad_w > 0 && p.OW <= 8 && p.C >= 8);
  std::vector<Segment> segments;
  for (int64_t kh = 0; kh < p.KH; ++kh) {
    const auto [oh_begin, oh_end] = valid_range(kh * g.dilation_h - g.pad_h, g.stride_h, p.OH, p.H);
    if (!per_tap) {
      segments.push_back({kh * g.dilation_h * pitch, kh * p.KW * p.C, p.KW * p.C, oh_begin, oh_end, 0, p.OW});
      continue;
    }
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      const auto [ow_begin, ow_end] = valid_range(kw * g.dilation_w - g.pad_w, g.stride_w, p.OW, p.W);
      segments.push_back({kh * g.dilation_h * pitch + kw * g.dilation_w * p.C, (kh * p.KW + kw) * p.C, p.C, oh_begin,
                          oh_end, ow_begin, ow_end});
    }
  }
  const WgradPlan plan = plan_wgrad(K, segments.front().length, blocks);
  const std::vector<BlockGroup> groups = block_groups(blocks, plan.ob);
  // Images per kernel call: enough for a few hundred pixels, to amortise loading and storing the
  // accumulators, but no more than keep one group's slice of grad_y (which every tap and every run
  // of x values reads again) within about 32 KB, so that it stays in L1.
  const int64_t gy_slice_bytes = p.OH * p.OW * plan.ob * kBlock * static_cast<int64_t>(sizeof(float));
  const int64_t batch = std::clamp<int64_t>(std::min(ceil_div(256, p.OH * p.OW), 32768 / gy_slice_bytes), 1, 64);

  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), p.N));
  Tensor partial = Tensor::empty({threads, entries * opad});
  float* partial_data = partial.data();
  const float* x_data = x.data();
  const float* gy_data = gl.data();
  for_each_unit(threads, in_place ? 0 : batch * image_floats, [&](int64_t t, float* scratch) {
    float* acc = partial_data + t * entries * opad;
    std::memset(acc, 0, sizeof(float) * entries * opad);
    const int64_t n_begin = p.N * t / threads, n_end = p.N * (t + 1) / threads;
    for (int64_t n0 = n_begin; n0 < n_end; n0 += batch) {
      const int64_t count = std::min(batch, n_end - n0);
      const float* images = in_place ? x_data + n0 * image_floats : scratch;
      if (!in_place)
        for (int64_t i = 0; i < count; ++i)
          pack_nhwc(image_of(x, n0 + i), g.pad_h, g.pad_w, rows_used, cols_used, scratch + i * image_floats);
      for (const BlockGroup& grp : groups)
        for (const Segment& seg : segments) {
          if (seg.oh_begin >= seg.oh_end || seg.ow_begin >= seg.ow_end) continue;
          for_each_span(seg.length, plan.rc, [&](int64_t e0, int64_t len) {
            DirectWgradArgs a{};
            a.x = images + seg.x_off + e0 + seg.oh_begin * g.stride_h * pitch + seg.ow_begin * g.stride_w * p.C;
            a.x_col_step = g.stride_w * p.C;
            a.x_row_step = g.stride_h * pitch;
            a.x_image_step = image_floats;
            a.gy = gy_data + ((n0 * p.OH + seg.oh_begin) * p.OW + seg.ow_begin) * p.O + grp.first_block * kBlock;
            a.gy_col_step = p.O;
            a.gy_row_step = p.OW * p.O;
            a.gy_image_step = p.OH * p.OW * p.O;
            a.images = count;
            a.rows = seg.oh_end - seg.oh_begin;
            a.cols = seg.ow_end - seg.ow_begin;
            a.acc = acc + (seg.entry + e0) * opad + grp.first_block * kBlock;
            a.acc_e_stride = opad;
            a.last_block_lanes = grp.first_block + grp.ob == blocks ? last_lanes(p.O) : static_cast<int>(kBlock);
            K.wgrad[plan.px][grp.ob][len](a);
          });
        }
    }
  });

  // dw[o][c][kh][kw] = sum over threads, in thread order, of partial[t][(kh, kw, c)][o], a block
  // of 16 output channels at a time (one cache line of each partial row).
  Tensor dw = Tensor::empty(p.w_shape());
  const int64_t taps = p.KH * p.KW;
  const float* part = partial_data;
  float* out = dw.data();
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    float v[kBlock];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t o0 = b * kBlock, width = std::min(kBlock, p.O - o0);
      for (int64_t c = 0; c < p.C; ++c)
        for (int64_t k = 0; k < taps; ++k) {
          const float* row = part + (k * p.C + c) * opad + o0;
          for (int64_t l = 0; l < kBlock; ++l) v[l] = row[l];
          for (int t = 1; t < threads; ++t)
            for (int64_t l = 0; l < kBlock; ++l) v[l] += row[t * entries * opad + l];
          float* dst = out + (o0 * p.C + c) * taps + k;
          for (int64_t l = 0; l < width; ++l) dst[l * p.C * taps] = v[l];
        }
    }
  });
  return dw;
}

}  // namespace peel::conv_detail
