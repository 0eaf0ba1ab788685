// The direct backend's forward and backward-data passes, which share one tile kernel
// (backward-data swaps the roles of input and output channels).
//
// Row tiles (most layers). Threads take whole images (or row bands of an image when the batch is
// smaller than the thread count). Each image's padded input rows are packed into a per-thread
// buffer (direct_pack.cpp). A register tile covers OB*16 output channels x RH rows x RW pixels;
// taps whose kernel row lies wholly in the padding for the tile's rows are skipped.
//
// Image tiles (small feature maps). On a 4x4 map with padding 1, a third of the nominal work
// multiplies padding, and a row tile spans both edges, so it cannot skip it. Instead the RW
// "pixels" of a tile are one output position in RW different images: they all see the same
// padding, and exactly the taps that reach the image are run. The input of a group of images is
// packed as [h][w][c][image].
//
// Backward-data runs the same two modes on grad_y. With stride s, dx rows and columns are taken by
// residue modulo s, and each residue gets exactly the taps that reach it, so stride 2 does no
// wasted work. The mode and tile shapes come from the cost model (direct_plan.cpp).
#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "tensor/conv/direct_detail.h"

namespace peel::conv_detail {

using namespace direct;

namespace {

// ---- Taps ---------------------------------------------------------------------------------------

// Row tiles: taps listed with the source row each reads, relative to a tile's first row
// ("shift"), in kernel-row order. A tap whose source row lies in the padding for every row of a
// tile adds nothing there; since the shift is monotone in the kernel row, the taps that do add
// something form one contiguous run, which is all the kernel is given.
struct TapList {
  std::vector<DirectTap> taps;
  std::vector<int64_t> shift;
  // The run of taps that reach a source row in [0, limit) from rows first + r*step, r < rows.
  std::pair<const DirectTap*, int64_t> reaching(int64_t first, int64_t step, int64_t rows, int64_t limit) const {
    auto reaches = [&](int64_t sh) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = first + r * step + sh;
        if (row >= 0 && row < limit) return true;
      }
      return false;
    };
    size_t lo = 0, hi = taps.size();
    while (lo < hi && !reaches(shift[lo])) ++lo;
    while (hi > lo && !reaches(shift[hi - 1])) --hi;
    return {taps.data() + lo, static_cast<int64_t>(hi - lo)};
  }
};

// Image tiles: for each output position, exactly the taps that reach a source pixel.
struct PositionTaps {
  std::vector<DirectTap> taps;
  std::vector<int64_t> begin;  // taps of position i: [begin[i], begin[i + 1])
};

// source(r, c, kh, kw, &sr, &sc): the source pixel output (r, c) reads through tap (kh, kw), or
// false when it reads padding (or, for backward-data, no pixel at all).
using SourceOf = std::function<bool(int64_t, int64_t, int64_t, int64_t, int64_t&, int64_t&)>;

PositionTaps position_taps(const ConvProblem& p, int64_t out_h, int64_t out_w, int64_t src_w, int64_t kdim,
                           int64_t slots, int ob, const SourceOf& source) {
  PositionTaps pt;
  for (int64_t r = 0; r < out_h; ++r)
    for (int64_t c = 0; c < out_w; ++c) {
      pt.begin.push_back(static_cast<int64_t>(pt.taps.size()));
      for (int64_t kh = 0; kh < p.KH; ++kh)
        for (int64_t kw = 0; kw < p.KW; ++kw) {
          int64_t sr, sc;
          if (source(r, c, kh, kw, sr, sc))
            pt.taps.push_back({(sr * src_w + sc) * kdim * slots, (kh * p.KW + kw) * kdim * ob * kBlock});
        }
    }
  pt.begin.push_back(static_cast<int64_t>(pt.taps.size()));
  return pt;
}

// ---- Image-tile pass (shared by forward and backward-data) --------------------------------------

// out (channels-last, N x out_c x out_h x out_w) = the tile kernel over image groups of `src`.
void run_image_tiles(const DirectKernels& k, const ImagePlan& plan, const Tensor& src, const Tensor& wpack,
                     const float* init, bool relu, int64_t out_c, int64_t out_h, int64_t out_w, int64_t taps_total,
                     const std::vector<PositionTaps>& taps_by_ob, Tensor& out) {
  const int64_t N = src.size(0), kdim = src.size(1);
  const int64_t blocks = ceil_div(out_c, kBlock);
  const std::vector<BlockGroup> groups = block_groups(blocks, plan.ob);
  const int64_t group_floats = src.size(2) * src.size(3) * kdim * plan.slots;
  float* out_data = out.data();
  const float* w_data = wpack.data();
  for_each_unit(plan.groups, group_floats, [&](int64_t gi, float* scratch) {
    const int64_t n0 = N * gi / plan.groups, count = N * (gi + 1) / plan.groups - n0;
    if (count == 0) return;
    pack_image_group(k, src, n0, count, plan.slots, scratch);
    for (const BlockGroup& grp : groups) {
      const PositionTaps& pt = taps_by_ob[grp.ob];
      DirectTileArgs a{};
      a.in = scratch;
      a.in_k_stride = plan.slots;
      a.kdim = kdim;
      a.w = w_data + grp.first_block * kBlock * taps_total * kdim;
      a.init = init != nullptr ? init + grp.first_block * kBlock : nullptr;
      a.out_pix_stride = out_h * out_w * out_c;  // the next image
      a.relu = relu;
      a.last_block_lanes = grp.first_block + grp.ob == blocks ? last_lanes(out_c) : static_cast<int>(kBlock);
      for (int64_t pos = 0; pos < out_h * out_w; ++pos) {
        a.taps = pt.taps.data() + pt.begin[pos];
        a.ntaps = pt.begin[pos + 1] - pt.begin[pos];
        a.out = out_data + (n0 * out_h * out_w + pos) * out_c + grp.first_block * kBlock;
        k.tile[grp.ob][1][count](a);
      }
    }
  });
}

// The whole image-tile pass of forward (the tile's channels are the output channels, k the input
// channels) or of backward-data (the other way round): weights packed for the plan's OB, the taps
// of each group size, then the tile kernel over the image groups into `out`.
template <bool kBackwardData>
void image_tile_pass(const DirectKernels& k, const ImagePlan& plan, const Tensor& src, const Tensor& w,
                     const ConvProblem& p, const float* init, bool relu, const SourceOf& source, Tensor& out) {
  const int64_t out_c = kBackwardData ? p.C : p.O, kdim = kBackwardData ? p.O : p.C;
  const int64_t out_h = kBackwardData ? p.H : p.OH, out_w = kBackwardData ? p.W : p.OW;
  const int64_t src_w = kBackwardData ? p.OW : p.W;
  const Tensor wpack = pack_weights<kBackwardData>(k, w, p, plan.ob);
  std::vector<PositionTaps> taps_by_ob(kMaxOB + 1);
  for (const BlockGroup& grp : block_groups(ceil_div(out_c, kBlock), plan.ob))
    if (taps_by_ob[grp.ob].begin.empty())
      taps_by_ob[grp.ob] = position_taps(p, out_h, out_w, src_w, kdim, plan.slots, grp.ob, source);
  run_image_tiles(k, plan, src, wpack, init, relu, out_c, out_h, out_w, p.KH * p.KW, taps_by_ob, out);
}

std::vector<int64_t> taps_per_position(const PositionTaps& pt) {
  std::vector<int64_t> counts;
  for (size_t i = 0; i + 1 < pt.begin.size(); ++i) counts.push_back(pt.begin[i + 1] - pt.begin[i]);
  return counts;
}

Tensor padded_bias(const Tensor& bias, int64_t channels) {
  if (!bias.defined()) return Tensor();
  Tensor b = Tensor::zeros({ceil_div(channels, kBlock) * kBlock});
  std::memcpy(b.data(), bias.data(), sizeof(float) * channels);
  return b;
}

}  // namespace

Tensor direct_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, simd::Isa isa,
                      DirectMode mode, bool relu) {
  const DirectKernels& K = direct_kernels_for(isa);
  const Conv2dGeometry& g = p.g;
  const int64_t blocks = ceil_div(p.O, kBlock);
  const Tensor bpad = padded_bias(bias, p.O);
  Tensor y = Tensor::empty_channels_last(p.y_shape());

  // The padded input rows and columns the output reads, split into `stride_w` phases.
  const int64_t rows_used = (p.OH - 1) * g.stride_h + (p.KH - 1) * g.dilation_h + 1;
  const int64_t cols_used = (p.OW - 1) * g.stride_w + (p.KW - 1) * g.dilation_w + 1;
  const PlanarLayout lay = planar_layout(p.C, -g.pad_h, -g.pad_w, cols_used, g.stride_w);
  auto tap_list = [&](int ob) {
    TapList list;
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw = 0; kw < p.KW; ++kw) {
        list.taps.push_back({kh * g.dilation_h * lay.row_stride() + lay.at(0, kw * g.dilation_w),
                             (kh * p.KW + kw) * p.C * ob * kBlock});
        list.shift.push_back(kh * g.dilation_h);
      }
    return list;
  };
  auto reach_rows = [&](const TapList& list, int64_t oh, int64_t rh) {
    return list.reaching(oh * g.stride_h - g.pad_h, g.stride_h, rh, p.H);
  };
  const SourceOf source = [&](int64_t oh, int64_t ow, int64_t kh, int64_t kw, int64_t& ih, int64_t& iw) {
    ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
    iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
    return ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
  };
  const DirectPlan chosen = cached_plan(0, isa, mode, p, [&] {
    DirectPlan d;
    const TapList shape_only = tap_list(1);
    d.rows = plan_rows(
        K, {RowSet{p.OH, p.OW, [&](int64_t oh, int64_t rh) { return reach_rows(shape_only, oh, rh).second; }}}, blocks,
        p.C, mode);
    d.image = plan_images(K, taps_per_position(position_taps(p, p.OH, p.OW, p.W, p.C, 1, 1, source)), p.N, blocks, p.C);
    d.images = use_images(mode, d.rows, d.image, p.N);
    return d;
  });
  if (chosen.images) {
    image_tile_pass<false>(K, chosen.image, x, w, p, bpad.defined() ? bpad.data() : nullptr, relu, source, y);
    return y;
  }

  const RowPlan& plan = chosen.rows;
  const std::vector<BlockGroup> groups = block_groups(blocks, plan.ob);
  const Tensor wpack = pack_weights<false>(K, w, p, plan.ob);
  TapList taps_by_ob[kMaxOB + 1];
  for (const BlockGroup& grp : groups)
    if (taps_by_ob[grp.ob].taps.empty()) taps_by_ob[grp.ob] = tap_list(grp.ob);

  const int64_t row_tiles = ceil_div(p.OH, plan.rh);
  const int threads = num_threads();
  const int64_t bands = p.N >= threads ? 1 : std::min(row_tiles, ceil_div(threads, p.N));
  const int64_t band_rows_max = ceil_div(row_tiles, bands) * plan.rh;
  const int64_t scratch_rows = std::min(rows_used, (band_rows_max - 1) * g.stride_h + (p.KH - 1) * g.dilation_h + 1);

  const ImagePrefetcher prefetch(x, static_cast<int64_t>(groups.size()) * ceil_div(band_rows_max, plan.rh));
  float* y_data = y.data();
  const float* w_data = wpack.data();
  const float* b_data = bpad.defined() ? bpad.data() : nullptr;
  for_each_unit(p.N * bands, scratch_rows * lay.row_stride(), [&](int64_t u, float* scratch) {
    const int64_t n = u / bands, band = u % bands;
    const int64_t oh0 = row_tiles * band / bands * plan.rh;
    const int64_t oh1 = std::min(p.OH, row_tiles * (band + 1) / bands * plan.rh);
    if (oh0 >= oh1) return;
    const int64_t r0 = oh0 * g.stride_h, r1 = (oh1 - 1) * g.stride_h + (p.KH - 1) * g.dilation_h + 1;
    pack_planar(K, image_of(x, n), lay, r0, r1, scratch);
    int64_t step = 0;
    for (const BlockGroup& grp : groups) {
      DirectTileArgs a{};
      a.in_row_step = g.stride_h * lay.row_stride();
      a.in_k_stride = lay.channel_stride();
      a.kdim = p.C;
      a.w = w_data + grp.first_block * kBlock * p.KH * p.KW * p.C;
      a.init = b_data != nullptr ? b_data + grp.first_block * kBlock : nullptr;
      a.out_pix_stride = p.O;
      a.out_row_stride = p.OW * p.O;
      a.last_block_lanes = grp.first_block + grp.ob == blocks ? last_lanes(p.O) : static_cast<int>(kBlock);
      a.relu = relu;
      for (int64_t oh = oh0; oh < oh1; oh += plan.rh) {
        if (band == bands - 1) prefetch.step(n + 1, step++);
        const int64_t rh = std::min<int64_t>(plan.rh, oh1 - oh);
        std::tie(a.taps, a.ntaps) = reach_rows(taps_by_ob[grp.ob], oh, rh);
        for_each_span(p.OW, plan.rw, [&](int64_t ow0, int64_t len) {
          a.in = scratch + (oh * g.stride_h - r0) * lay.row_stride() + ow0;
          a.out = y_data + ((n * p.OH + oh) * p.OW + ow0) * p.O + grp.first_block * kBlock;
          K.tile[grp.ob][rh][len](a);
        });
      }
    }
  });
  return y;
}

Tensor direct_backward_data(const Tensor& gy, const Tensor& w, const ConvProblem& p, simd::Isa isa, DirectMode mode) {
  const DirectKernels& K = direct_kernels_for(isa);
  const Conv2dGeometry& g = p.g;
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t blocks = ceil_div(p.C, kBlock);
  Tensor dx = Tensor::empty_channels_last(p.x_shape());

  // dx row ih reads grad_y row (ih + ph - kh*dh) / sh through tap kh when that divides evenly; the
  // packed grad_y spans every such row, zero outside [0, OH).
  const int64_t row_lo = floor_div(g.pad_h - (p.KH - 1) * g.dilation_h, sh);
  const int64_t row_hi = floor_div(p.H - 1 + g.pad_h, sh);
  const int64_t col_lo = floor_div(g.pad_w - (p.KW - 1) * g.dilation_w, sw);
  const int64_t col_hi = floor_div(p.W - 1 + g.pad_w, sw);
  const PlanarLayout lay = planar_layout(p.O, row_lo, col_lo, col_hi - col_lo + 1, 1);
  const int64_t packed_rows = row_hi - row_lo + 1;

  // Taps per residue (rh, rw) of dx coordinates modulo the stride.
  struct Residue {
    int64_t rh, rw;
    int64_t rows, cols;  // dx rows rh, rh + sh, ... and columns rw, rw + sw, ...
    TapList taps[kMaxOB + 1];
  };
  auto residue_taps = [&](int64_t rh, int64_t rw, int ob) {
    TapList list;
    for (int64_t kh = 0; kh < p.KH; ++kh) {
      const int64_t th = rh + g.pad_h - kh * g.dilation_h;
      if (mod(th, sh) != 0) continue;
      for (int64_t kw = 0; kw < p.KW; ++kw) {
        const int64_t tw = rw + g.pad_w - kw * g.dilation_w;
        if (mod(tw, sw) != 0) continue;
        list.taps.push_back(
            {(th / sh - row_lo) * lay.row_stride() + (tw / sw - col_lo), (kh * p.KW + kw) * p.O * ob * kBlock});
        list.shift.push_back(th / sh);
      }
    }
    return list;
  };
  std::vector<Residue> residues;
  for (int64_t rh = 0; rh < std::min(sh, p.H); ++rh)
    for (int64_t rw = 0; rw < std::min(sw, p.W); ++rw) {
      Residue res{rh, rw, ceil_div(p.H - rh, sh), ceil_div(p.W - rw, sw), {}};
      res.taps[1] = residue_taps(rh, rw, 1);
      residues.push_back(std::move(res));
    }
  const SourceOf source = [&](int64_t ih, int64_t iw, int64_t kh, int64_t kw, int64_t& oh, int64_t& ow) {
    const int64_t th = ih + g.pad_h - kh * g.dilation_h, tw = iw + g.pad_w - kw * g.dilation_w;
    if (mod(th, sh) != 0 || mod(tw, sw) != 0) return false;
    oh = floor_div(th, sh);
    ow = floor_div(tw, sw);
    return oh >= 0 && oh < p.OH && ow >= 0 && ow < p.OW;
  };
  const DirectPlan chosen = cached_plan(1, isa, mode, p, [&] {
    DirectPlan d;
    std::vector<RowSet> sets;
    for (const Residue& res : residues) {
      const TapList* list = &res.taps[1];
      const int64_t OH = p.OH;
      sets.push_back(
          {res.rows, res.cols, [list, OH](int64_t r, int64_t rh) { return list->reaching(r, 1, rh, OH).second; }});
    }
    d.rows = plan_rows(K, sets, blocks, p.O, mode);
    d.image = plan_images(K, taps_per_position(position_taps(p, p.H, p.W, p.OW, p.O, 1, 1, source)), p.N, blocks, p.O);
    d.images = use_images(mode, d.rows, d.image, p.N);
    return d;
  });
  if (chosen.images) {
    image_tile_pass<true>(K, chosen.image, gy, w, p, nullptr, false, source, dx);
    return dx;
  }

  const RowPlan& plan = chosen.rows;
  const std::vector<BlockGroup> groups = block_groups(blocks, plan.ob);
  const Tensor wpack = pack_weights<true>(K, w, p, plan.ob);
  for (Residue& res : residues)
    for (const BlockGroup& grp : groups)
      if (grp.ob != 1 && res.taps[grp.ob].taps.empty()) res.taps[grp.ob] = residue_taps(res.rh, res.rw, grp.ob);

  const ImagePrefetcher prefetch(gy, static_cast<int64_t>(residues.size() * groups.size()));
  float* dx_data = dx.data();
  const float* w_data = wpack.data();
  for_each_unit(p.N, packed_rows * lay.row_stride(), [&](int64_t n, float* scratch) {
    pack_planar(K, image_of(gy, n), lay, 0, packed_rows, scratch);
    int64_t step = 0;
    for (const Residue& res : residues) {
      for (const BlockGroup& grp : groups) {
        prefetch.step(n + 1, step++);
        const TapList& list = res.taps[grp.ob];
        DirectTileArgs a{};
        a.in_row_step = lay.row_stride();
        a.in_k_stride = lay.channel_stride();
        a.kdim = p.O;
        a.w = w_data + grp.first_block * kBlock * p.KH * p.KW * p.O;
        a.init = nullptr;
        a.out_pix_stride = sw * p.C;
        a.out_row_stride = sh * p.W * p.C;
        a.last_block_lanes = grp.first_block + grp.ob == blocks ? last_lanes(p.C) : static_cast<int>(kBlock);
        for (int64_t r = 0; r < res.rows; r += plan.rh) {
          const int64_t rh = std::min<int64_t>(plan.rh, res.rows - r);
          std::tie(a.taps, a.ntaps) = list.reaching(r, 1, rh, p.OH);
          for_each_span(res.cols, plan.rw, [&](int64_t c0, int64_t len) {
            a.in = scratch + r * lay.row_stride() + c0;
            a.out = dx_data + ((n * p.H + res.rh + sh * r) * p.W + res.rw + sw * c0) * p.C + grp.first_block * kBlock;
            K.tile[grp.ob][rh][len](a);
          });
        }
      }
    }
  });
  return dx;
}

}  // namespace peel::conv_detail
