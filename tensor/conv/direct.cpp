// The direct convolution backend: packing, tiling and threading around the SIMD micro-kernels of
// conv/direct_kernels.h. Forward and backward-data are the same tile kernel (backward-data swaps
// the roles of input and output channels); backward-weights has its own kernel.
//
// Row tiles (most layers). Threads take whole images (or row bands of an image when the batch is
// smaller than the thread count). Each image's padded input rows are packed into a per-thread
// buffer in a planar-per-row layout, [row][c][phase][q] with column = phase + stride*q, so that
// for any tap the inputs of RW consecutive output pixels are RW consecutive floats; the packing
// also absorbs the padding, the stride and whatever strides the caller's tensor has. A register
// tile covers OB*16 output channels x RH rows x RW pixels; taps whose kernel row lies wholly in the
// padding for the tile's rows are skipped.
//
// Image tiles (small feature maps). On a 4x4 map with padding 1, a third of the nominal work
// multiplies padding, and a row tile spans both edges, so it cannot skip it. Instead the RW
// "pixels" of a tile are one output position in RW different images: they all see the same
// padding, and exactly the taps that reach the image are run. The input of a group of images is
// packed as [h][w][c][image].
//
// Backward-data runs the same two modes on grad_y. With stride s, dx rows and columns are taken by
// residue modulo s, and each residue gets exactly the taps that reach it, so stride 2 does no
// wasted work.
//
// Backward-weights accumulates, per thread, a (KH*KW*C) x O partial gradient over that thread's
// images, reading both operands channels-last: the O values of a grad_y pixel are vector loads and
// the C values of the input pixel (KW*C when dilation is 1: adjacent taps are adjacent pixels) are
// broadcasts. Output rows (and, per tap, columns) whose input lies in the padding are skipped. The
// per-thread partials are summed in thread order, so results depend only on the thread count.
//
// A cost model (issue slots, FMA latency, call overhead and thread balance) picks the mode and
// the register tile shape for each problem.
#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "tensor/conv/backends.h"
#include "tensor/conv/direct_kernels.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace peel::conv_detail {
namespace {

constexpr int64_t kBlock = 16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

const DirectKernels& direct_kernels_for(simd::Isa isa) {
  PEEL_CHECK(simd::cpu_supports(isa), "conv direct: this CPU does not support {}", simd::isa_name(isa));
  switch (isa) {
    case simd::Isa::kAvx512:
      return direct_kernels_avx512();
    case simd::Isa::kAvx2:
      return direct_kernels_avx2();
    case simd::Isa::kBaseline:
      break;
  }
  PEEL_FAIL("conv direct: no kernels for instruction set {} (needs avx2 or avx512)", simd::isa_name(isa));
}

int last_lanes(int64_t channels) { return static_cast<int>(channels - kBlock * (ceil_div(channels, kBlock) - 1)); }

// ---- Cost model ---------------------------------------------------------------------------------

// Estimated cycles per k-step: the larger of FMA issue (2 per cycle), load issue (2 per cycle)
// and FMA latency (4 cycles per dependent accumulator), plus loop overhead.
double step_cycles(int vectors, int broadcasts, int accumulators) {
  return std::max({accumulators / 2.0, (vectors + broadcasts) / 2.0, 4.0}) + 1.0;
}

// Estimated cycles for one tile-kernel call.
double tile_cost(const DirectKernels& k, int ob, int64_t rh, int64_t rw, double ksteps) {
  const int vpb = k.vectors_per_block;
  const int acc = static_cast<int>(ob * vpb * rh * rw);
  return ksteps * step_cycles(ob * vpb, static_cast<int>(rh * rw), acc) + acc + 30.0;
}

// n items split into ceil(n / max_len) nearly equal spans.
template <class Body>
void for_each_span(int64_t n, int64_t max_len, Body&& body) {
  const int64_t spans = ceil_div(n, max_len);
  for (int64_t i = 0; i < spans; ++i) {
    const int64_t begin = n * i / spans, end = n * (i + 1) / spans;
    body(begin, end - begin);
  }
}

// Channel blocks in groups of `ob` (the last group may be smaller).
struct BlockGroup {
  int64_t first_block;
  int ob;
};
std::vector<BlockGroup> block_groups(int64_t blocks, int ob) {
  std::vector<BlockGroup> groups;
  for (int64_t b = 0; b < blocks; b += ob) groups.push_back({b, static_cast<int>(std::min<int64_t>(ob, blocks - b))});
  return groups;
}

// Runs body(unit, scratch) for units [0, n) on the threads, each task with its own slice of one
// scratch buffer allocated up front: the same number of same-sized buffers every call, so the
// caching allocator serves them all after the first (a buffer allocated inside the parallel body
// would be one or two depending on how the threads happened to overlap).
template <class Body>
void for_each_unit(int64_t n, int64_t scratch_floats, Body&& body) {
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), n));
  Tensor scratch = Tensor::empty({tasks * std::max<int64_t>(scratch_floats, 1)});
  parallel_for(tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* mine = scratch.data() + t * std::max<int64_t>(scratch_floats, 1);
      for (int64_t u = n * t / tasks; u < n * (t + 1) / tasks; ++u) body(u, mine);
    }
  });
}

// ---- Packing ------------------------------------------------------------------------------------

// A 3-d strided view of one image: element (c, h, w).
struct ImageView {
  const float* data;
  int64_t sc, sh, sw;
  int64_t C, H, W;
};

ImageView image_of(const Tensor& t, int64_t n) {
  return {t.data() + n * t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.size(1), t.size(2), t.size(3)};
}

// Packing is the first touch of an image's input, so it would stall on memory; instead, while
// one image computes, its loop prefetches the next image (in `parts` slices, one per step). Only
// for dense layouts, where an image is one span of memory.
class ImagePrefetcher {
 public:
  ImagePrefetcher(const Tensor& t, int64_t parts)
      : t_(t),
        floats_(t.size(1) * t.size(2) * t.size(3)),
        parts_(std::max<int64_t>(parts, 1)),
        dense_(t.is_contiguous() || t.is_channels_last()) {}
  void step(int64_t next_image, int64_t part) const {
    if (!dense_ || next_image >= t_.size(0) || part >= parts_) return;
    const char* base = reinterpret_cast<const char*>(t_.data() + next_image * floats_);
    const int64_t bytes = floats_ * static_cast<int64_t>(sizeof(float));
    for (int64_t off = (bytes * part / parts_) & ~int64_t{63}; off < bytes * (part + 1) / parts_; off += 64)
      __builtin_prefetch(base + off, 0, 2);
  }

 private:
  const Tensor& t_;
  int64_t floats_, parts_;
  bool dense_;
};

// Planar-per-row packing: packed (row, c, col) at row*row_stride() + c*phases*q + (col % phases)*q
// + col / phases, holding source (c, row + row_origin, col + col_origin), zero outside the source.
struct PlanarLayout {
  int64_t channels, row_origin, col_origin, cols, phases, q;
  int64_t channel_stride() const { return phases * q; }
  int64_t row_stride() const { return channels * phases * q; }
  int64_t at(int64_t c, int64_t col) const { return c * channel_stride() + (col % phases) * q + col / phases; }
};

PlanarLayout planar_layout(int64_t channels, int64_t row_origin, int64_t col_origin, int64_t cols, int64_t phases) {
  return {channels, row_origin, col_origin, cols, phases, ceil_div(cols, phases)};
}

// Packs rows [r0, r1) of the layout into dst (dst row 0 = layout row r0).
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

// Images [n0, n0 + count) of src packed as [h][w][c][slot], `slots` floats per (h, w, c).
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

// Channels-last packing of a padded image: dst (row, col, c) = src (c, row - pad_h, col - pad_w).
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

// Weights as [group][kh][kw][k][ob*16] with lane = the "blocked" channel. For forward the blocked
// channel is o and k is c; for backward-data the blocked channel is c and k is o.
Tensor pack_weights(const Tensor& w, const ConvProblem& p, int ob, bool blocked_is_input) {
  const int64_t blocked = blocked_is_input ? p.C : p.O, kdim = blocked_is_input ? p.O : p.C;
  const int64_t blocks = ceil_div(blocked, kBlock), taps = p.KH * p.KW;
  Tensor packed = Tensor::empty({blocks * kBlock * taps * kdim});
  float* dst = packed.data();
  const float* src = w.data();
  for (const BlockGroup& grp : block_groups(blocks, ob)) {
    const int64_t width = grp.ob * kBlock, first = grp.first_block * kBlock;
    float* base = dst + first * taps * kdim;
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < kdim; ++k) {
        float* v = base + (t * kdim + k) * width;
        for (int64_t l = 0; l < width; ++l) {
          const int64_t ch = first + l;
          if (ch >= blocked) {
            v[l] = 0.f;
            continue;
          }
          const int64_t o = blocked_is_input ? k : ch, c = blocked_is_input ? ch : k;
          v[l] = src[(o * p.C + c) * taps + t];
        }
      }
  }
  return packed;
}

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

// ---- Plans --------------------------------------------------------------------------------------

// A set of output rows tiled together: `rows` x `cols`, with reach(first_row, rh) taps per tile.
struct RowSet {
  int64_t rows, cols;
  std::function<int64_t(int64_t, int64_t)> reach;
};

struct RowPlan {
  int ob = 1, rh = 1, rw = 1;  // blocks per group, rows per tile, most pixels per tile
  double cycles_per_image = 1e300;
};

RowPlan plan_rows(const DirectKernels& k, const std::vector<RowSet>& sets, int64_t blocks, int64_t kdim,
                  DirectMode mode) {
  RowPlan best;
  const int rh_lo = mode == DirectMode::kTwoRowTiles ? 2 : 1, rh_hi = mode == DirectMode::kOneRowTiles ? 1 : kMaxRH;
  // k-steps of a tile of rh rows starting at each row, per set: [set][rh][row]
  std::vector<std::vector<double>> ksteps[kMaxRH + 1];
  for (int rh = 1; rh <= kMaxRH; ++rh)
    for (const RowSet& set : sets) {
      std::vector<double> per_row(static_cast<size_t>(set.rows));
      for (int64_t r = 0; r < set.rows; ++r)
        per_row[r] = static_cast<double>(set.reach(r, std::min<int64_t>(rh, set.rows - r)) * kdim);
      ksteps[rh].push_back(std::move(per_row));
    }
  for (int ob = 1; ob <= std::min<int64_t>(kMaxOB, blocks); ++ob)
    for (int rh = rh_lo; rh <= rh_hi; ++rh)
      for (int rw = 1; rw <= kMaxRW; ++rw) {
        if (k.tile[ob][rh][rw] == nullptr) continue;
        double cost = 0;
        for (size_t si = 0; si < sets.size(); ++si) {
          const RowSet& set = sets[si];
          for (int64_t r = 0; r < set.rows; r += rh) {
            const int64_t trh = std::min<int64_t>(rh, set.rows - r);
            const double steps = ksteps[trh][si][r];
            for_each_span(set.cols, rw, [&](int64_t, int64_t len) {
              cost += (blocks / ob) * tile_cost(k, ob, trh, len, steps);
              if (blocks % ob != 0) cost += tile_cost(k, static_cast<int>(blocks % ob), trh, len, steps);
            });
          }
        }
        if (cost < best.cycles_per_image) best = {ob, rh, rw, cost};
      }
  return best;
}

struct ImagePlan {
  int ob = 1;
  int64_t groups = 1;       // image groups (tasks); group g holds images [N*g/groups, N*(g+1)/groups)
  int64_t slots = 1;        // the largest group
  double makespan = 1e300;  // estimated cycles on the busiest thread
};

ImagePlan plan_images(const DirectKernels& k, const std::vector<int64_t>& taps_per_position, int64_t N, int64_t blocks,
                      int64_t kdim) {
  ImagePlan best;
  const int64_t threads = num_threads();
  std::map<int64_t, int64_t> histogram;  // taps -> positions with that many
  for (int64_t t : taps_per_position) ++histogram[t];
  for (int ob = 1; ob <= std::min<int64_t>(kMaxOB, blocks); ++ob)
    for (int slots = 1; slots <= kMaxRW; ++slots) {
      if (k.tile[ob][1][slots] == nullptr) continue;
      // Enough groups for every thread to get the same number, then as full as possible.
      int64_t groups = ceil_div(N, slots);
      if (groups > threads) groups = ceil_div(groups, threads) * threads;
      if (groups > N) continue;
      const int64_t size = ceil_div(N, groups);
      double group_cost = 0;
      for (const auto& [taps, positions] : histogram) {
        const double ksteps = static_cast<double>(taps * kdim);
        double c = (blocks / ob) * tile_cost(k, ob, 1, size, ksteps);
        if (blocks % ob != 0) c += tile_cost(k, static_cast<int>(blocks % ob), 1, size, ksteps);
        group_cost += static_cast<double>(positions) * c;
      }
      const double makespan = static_cast<double>(ceil_div(groups, threads)) * group_cost;
      if (makespan < best.makespan) best = {ob, groups, size, makespan};
    }
  return best;
}

struct WgradPlan {
  int ob = 1, rc = 1, px = 1;  // blocks per group, x values per tile, pixels per step
};

WgradPlan plan_wgrad(const DirectKernels& k, int64_t entries, int64_t blocks) {
  const int vpb = k.vectors_per_block;
  WgradPlan best;
  double best_cost = 1e300;
  for (int px = 1; px <= 2; ++px)
    for (int ob = 1; ob <= std::min<int64_t>(kMaxOB, blocks); ++ob)
      for (int rc = 1; rc <= kMaxRW; ++rc) {
        if (k.wgrad[px][ob][rc] == nullptr) continue;
        // Cycles per pixel: FMA issue (2 per cycle), load issue (grad_y vectors and x broadcasts;
        // measured to sustain about 1.5 per cycle here), the FMA latency shared by the PX pixels
        // of a step, and loop overhead. Two-pixel steps only pay off for tiles with too few
        // accumulators to hide the latency.
        auto group_cost = [&](int tob) {
          double c = 0;
          for_each_span(entries, rc, [&](int64_t, int64_t len) {
            const double fmas = tob * vpb * static_cast<double>(len), loads = tob * vpb + static_cast<double>(len);
            c += std::max({fmas / 2.0, loads / 1.5, 4.0 / px}) + 1.0;
          });
          return c;
        };
        double cost = (blocks / ob) * group_cost(ob);
        if (blocks % ob != 0) cost += group_cost(static_cast<int>(blocks % ob));
        if (cost < best_cost - 1e-9) {
          best_cost = cost;
          best = {ob, rc, px};
        }
      }
  return best;
}

// Whether image tiles beat row tiles (which run N images split over the threads).
bool use_images(DirectMode mode, const RowPlan& rows, const ImagePlan& images, int64_t N) {
  if (mode != DirectMode::kAuto) return mode == DirectMode::kImageTiles;
  const double row_makespan = rows.cycles_per_image * static_cast<double>(ceil_div(N, num_threads()));
  return images.makespan < 0.95 * row_makespan;
}

// The choice between row and image tiles, and the tile shapes, for one problem.
struct DirectPlan {
  bool images = false;
  RowPlan rows;
  ImagePlan image;
};

// Plans depend only on the problem, so each is made once (planning a 28x28 layer takes about as
// long as a few percent of running it) and kept in a mutex-guarded map, like oneDNN's primitives.
template <class Make>
DirectPlan cached_plan(int direction, simd::Isa isa, DirectMode mode, const ConvProblem& p, Make&& make) {
  static std::mutex mutex;
  static std::map<std::array<int64_t, 17>, DirectPlan> cache;
  const Conv2dGeometry& g = p.g;
  const auto key = int64_key(direction, isa, mode, num_threads(), p.N, p.C, p.H, p.W, p.O, p.KH, p.KW, g.stride_h,
                             g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w);
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  const DirectPlan plan = make();
  std::lock_guard lock(mutex);
  cache.emplace(key, plan);
  return plan;
}

// ---- Image-tile pass (shared by forward and backward-data) --------------------------------------

// out (channels-last, N x out_c x out_h x out_w) = the tile kernel over image groups of `src`.
void run_image_tiles(const DirectKernels& k, const ImagePlan& plan, const Tensor& src, const Tensor& wpack,
                     const float* init, int64_t out_c, int64_t out_h, int64_t out_w, int64_t taps_total,
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

simd::Isa direct_isa() {
  const simd::Isa isa = simd::active_isa();
  PEEL_CHECK(isa != simd::Isa::kBaseline,
             "conv direct backend: needs AVX2 or AVX-512, but the active instruction set is {} (PEEL_ISA or CPU); "
             "use PEEL_CONV_BACKEND=im2col or onednn",
             simd::isa_name(isa));
  return isa;
}

Tensor direct_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvProblem& p, simd::Isa isa,
                      DirectMode mode) {
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
  const ImagePlan& image_plan = chosen.image;

  if (chosen.images) {
    const Tensor wpack = pack_weights(w, p, image_plan.ob, false);
    std::vector<PositionTaps> taps_by_ob(kMaxOB + 1);
    for (const BlockGroup& grp : block_groups(blocks, image_plan.ob))
      if (taps_by_ob[grp.ob].begin.empty())
        taps_by_ob[grp.ob] = position_taps(p, p.OH, p.OW, p.W, p.C, image_plan.slots, grp.ob, source);
    run_image_tiles(K, image_plan, x, wpack, bpad.defined() ? bpad.data() : nullptr, p.O, p.OH, p.OW, p.KH * p.KW,
                    taps_by_ob, y);
    return y;
  }

  const RowPlan& plan = chosen.rows;
  const std::vector<BlockGroup> groups = block_groups(blocks, plan.ob);
  const Tensor wpack = pack_weights(w, p, plan.ob, false);
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
  const ImagePlan& image_plan = chosen.image;

  if (chosen.images) {
    const Tensor wpack = pack_weights(w, p, image_plan.ob, true);
    std::vector<PositionTaps> taps_by_ob(kMaxOB + 1);
    for (const BlockGroup& grp : block_groups(blocks, image_plan.ob))
      if (taps_by_ob[grp.ob].begin.empty())
        taps_by_ob[grp.ob] = position_taps(p, p.H, p.W, p.OW, p.O, image_plan.slots, grp.ob, source);
    run_image_tiles(K, image_plan, gy, wpack, nullptr, p.C, p.H, p.W, p.KH * p.KW, taps_by_ob, dx);
    return dx;
  }

  const RowPlan& plan = chosen.rows;
  const std::vector<BlockGroup> groups = block_groups(blocks, plan.ob);
  const Tensor wpack = pack_weights(w, p, plan.ob, true);
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
