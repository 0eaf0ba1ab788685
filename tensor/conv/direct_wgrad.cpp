// The direct backend's backward-weights pass. The images are split into one run per thread; each
// run is accumulated from zero into a (KH*KW*C) x O gradient, reading both operands
// channels-last: the O values of a grad_y pixel are vector loads and the C values of the input
// pixel (KW*C when dilation is 1: adjacent taps are adjacent pixels) are broadcasts. Output rows
// (and, per tap, columns) whose input lies in the padding are skipped. The runs' sums are added in
// run order, so results depend only on the thread count. At batch sizes of many images per thread
// each thread runs one run into its own partial; at one or two images per thread the threads share
// the output-channel groups instead, each summing every run for its channels (same bits, far less
// memory traffic). The register tile comes from the cost model (plan_wgrad, direct_plan.cpp).
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

  // The images are split into `ranges` runs (one per thread, or fewer when N is smaller), each
  // accumulated on its own from zero, and the runs' sums added in order: so results depend only
  // on the thread count, whichever of the two schedules below runs them.
  const int ranges = static_cast<int>(std::min<int64_t>(num_threads(), p.N));
  auto range_begin = [&](int64_t t) { return p.N * t / ranges; };
  const float* x_data = x.data();
  const float* gy_data = gl.data();
  // Adds images [n0, n0 + count), whose padded rows start at `images`, to the accumulator rows
  // of one (group, segment, span of the segment's x values).
  auto accumulate = [&](const BlockGroup& grp, const Segment& seg, int64_t e0, int64_t len, const float* images,
                        int64_t n0, int64_t count, float* acc, int64_t acc_e_stride) {
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
    a.acc = acc;
    a.acc_e_stride = acc_e_stride;
    a.last_block_lanes = grp.first_block + grp.ob == blocks ? last_lanes(p.O) : static_cast<int>(kBlock);
    K.wgrad[plan.px][grp.ob][len](a);
  };
  auto empty = [](const Segment& seg) { return seg.oh_begin >= seg.oh_end || seg.ow_begin >= seg.ow_end; };

  // dw[o][c][kh][kw] is the sum, in order, of `copies` gradient row sets [(kh, kw, c)][opad]
  // (`entries * opad` apart), made 16 output channels at a time: the sums go to a
  // [(c, kh, kw)][16] buffer in vector-wide rows, which is then transposed into the block's 16 rows
  // of dw (element by element, the strided stores were 6% of a batch-2 step).
  Tensor dw = Tensor::empty(p.w_shape());
  const int64_t taps = p.KH * p.KW;
  Tensor sums = Tensor::empty({blocks * entries * kBlock});
  auto finish_block = [&](int64_t b, const float* part, int64_t copies) {
    const int64_t o0 = b * kBlock, width = std::min(kBlock, p.O - o0);
    float* block = sums.data() + b * entries * kBlock;
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t k = 0; k < taps; ++k) {
        const float* row = part + (k * p.C + c) * opad + o0;
        float* v = block + (c * taps + k) * kBlock;
        for (int64_t l = 0; l < kBlock; ++l) v[l] = row[l];
        for (int64_t t = 1; t < copies; ++t)
          for (int64_t l = 0; l < kBlock; ++l) v[l] += row[t * entries * opad + l];
      }
    K.transpose(block, kBlock, entries, width, dw.data() + o0 * entries, entries);
  };

  if (ranges > 1 && p.N <= 2 * ranges && static_cast<int64_t>(groups.size()) >= ranges) {
    // One or two images per thread (micro-batches): one accumulator, the threads sharing its
    // channel groups, each (group, segment, span) tile summing the image runs itself in a few KB
    // that stay in L1, and each thread finishing its own blocks of dw, so that no accumulator line
    // one core wrote is read by the other. Splitting by images instead gives each thread a
    // full-size partial to clear, fill and add, as much memory traffic as the arithmetic at this
    // batch (bench_conv --batch=2, 64x128 on 7x7: 0.072-0.079 ms that way, 0.052-0.061 this).
    // With fewer groups than threads the image split stays (it measured faster than sharing tiles).
    Tensor packed;
    const float* all = x_data;
    if (!in_place) {
      packed = Tensor::empty({p.N * image_floats});
      parallel_for(p.N, 1, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n)
          pack_nhwc(image_of(x, n), g.pad_h, g.pad_w, rows_used, cols_used, packed.data() + n * image_floats);
      });
      all = packed.data();
    }
    Tensor acc_rows = Tensor::empty({entries * opad});
    float* acc = acc_rows.data();
    auto run_tile = [&](const BlockGroup& grp, const Segment& seg, int64_t e0, int64_t len) {
      alignas(64) float run_sum[kMaxRW * kMaxOB * kBlock];
      const int64_t width = grp.ob * kBlock;
      float* out = acc + (seg.entry + e0) * opad + grp.first_block * kBlock;
      for (int64_t e = 0; e < len; ++e) std::fill(out + e * opad, out + e * opad + width, 0.f);
      if (empty(seg)) return;
      for (int t = 0; t < ranges; ++t) {
        // The first run accumulates in place; each later one in run_sum, then added.
        float* dst = t == 0 ? out : run_sum;
        const int64_t stride = t == 0 ? opad : width;
        if (t > 0) std::fill(run_sum, run_sum + len * width, 0.f);
        for (int64_t n0 = range_begin(t); n0 < range_begin(t + 1); n0 += batch) {
          const int64_t count = std::min(batch, range_begin(t + 1) - n0);
          accumulate(grp, seg, e0, len, all + n0 * image_floats, n0, count, dst, stride);
        }
        if (t > 0)
          for (int64_t e = 0; e < len; ++e)
            for (int64_t l = 0; l < width; ++l) out[e * opad + l] += run_sum[e * width + l];
      }
    };
    // Whole groups per thread: a thread then also finishes its own blocks of dw, and no
    // accumulator line it wrote is read by another core.
    parallel_for(static_cast<int64_t>(groups.size()), 1, [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; ++gi) {
        const BlockGroup& grp = groups[gi];
        for (const Segment& seg : segments)
          for_each_span(seg.length, plan.rc, [&](int64_t e0, int64_t len) { run_tile(grp, seg, e0, len); });
        for (int64_t b = grp.first_block; b < grp.first_block + grp.ob; ++b) finish_block(b, acc, 1);
      }
    });
    return dw;
  }

  // Each thread accumulates its run of images into its own full partial.
  Tensor partial = Tensor::empty({ranges * entries * opad});
  float* partial_data = partial.data();
  for_each_unit(ranges, in_place ? 0 : batch * image_floats, [&](int64_t t, float* scratch) {
    float* acc = partial_data + t * entries * opad;
    std::memset(acc, 0, sizeof(float) * entries * opad);
    for (int64_t n0 = range_begin(t); n0 < range_begin(t + 1); n0 += batch) {
      const int64_t count = std::min(batch, range_begin(t + 1) - n0);
      const float* images = in_place ? x_data + n0 * image_floats : scratch;
      if (!in_place)
        for (int64_t i = 0; i < count; ++i)
          pack_nhwc(image_of(x, n0 + i), g.pad_h, g.pad_w, rows_used, cols_used, scratch + i * image_floats);
      for (const BlockGroup& grp : groups)
        for (const Segment& seg : segments) {
          if (empty(seg)) continue;
          for_each_span(seg.length, plan.rc, [&](int64_t e0, int64_t len) {
            accumulate(grp, seg, e0, len, images, n0, count, acc + (seg.entry + e0) * opad + grp.first_block * kBlock,
                       opad);
          });
        }
    }
  });
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) finish_block(b, partial_data, ranges);
  });
  return dw;
}

}  // namespace peel::conv_detail
