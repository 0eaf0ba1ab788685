// The direct convolution backend's internal pieces, shared by its files (internal to tensor/conv/):
//   direct_plan.cpp   cost model: which tiling mode and register tile each problem gets
//   direct_pack.cpp   packing of inputs, grad_y and weights into the layouts the kernels read
//   direct_tiles.cpp  forward and backward-data: taps, tiles and threads around the tile kernel
//   direct_wgrad.cpp  backward-weights: segments, batching and the per-thread partial sums
// The SIMD micro-kernels they call are in direct_kernels.{h,inl} (direct_avx512.cpp,
// direct_avx2.cpp); the entry points are declared in backends.h.
//
// Channels come in blocks of kBlock = 16 (one zmm, or two ymm); a register tile covers OB blocks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "tensor/conv/backends.h"
#include "tensor/conv/direct_kernels.h"
#include "tensor/tensor.h"
#include "tensor/threads.h"

namespace peel::conv_detail::direct {

constexpr int64_t kBlock = 16;  // channels per block (one zmm, two ymm)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// The micro-kernel table of an instruction set (kAvx512 or kAvx2); throws for others.
const DirectKernels& direct_kernels_for(simd::Isa isa);

// Valid lanes (1..16) of the last 16-channel block of `channels`.
inline int last_lanes(int64_t channels) {
  return static_cast<int>(channels - kBlock * (ceil_div(channels, kBlock) - 1));
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
inline std::vector<BlockGroup> block_groups(int64_t blocks, int ob) {
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

// ---- Packing (direct_pack.cpp) ----------------------------------------------------------------

// A 3-d strided view of one image: element (c, h, w).
struct ImageView {
  const float* data;
  int64_t sc, sh, sw;
  int64_t C, H, W;
};

inline ImageView image_of(const Tensor& t, int64_t n) {
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

inline PlanarLayout planar_layout(int64_t channels, int64_t row_origin, int64_t col_origin, int64_t cols,
                                  int64_t phases) {
  return {channels, row_origin, col_origin, cols, phases, ceil_div(cols, phases)};
}

// Packs rows [r0, r1) of the layout into dst (dst row 0 = layout row r0).
void pack_planar(const DirectKernels& k, const ImageView& src, const PlanarLayout& lay, int64_t r0, int64_t r1,
                 float* dst);
// Images [n0, n0 + count) of src packed as [h][w][c][slot], `slots` floats per (h, w, c).
void pack_image_group(const DirectKernels& k, const Tensor& src, int64_t n0, int64_t count, int64_t slots, float* dst);
// Channels-last packing of a padded image: dst (row, col, c) = src (c, row - pad_h, col - pad_w).
void pack_nhwc(const ImageView& src, int64_t pad_h, int64_t pad_w, int64_t rows, int64_t cols, float* dst);
// Weights as [group][kh][kw][k][ob*16] with lane = the "blocked" channel. For forward the blocked
// channel is o and k is c; for backward-data the blocked channel is c and k is o.
// A template so that each direction gets its own specialised copy (defined for both).
template <bool kBlockedIsInput>
Tensor pack_weights(const DirectKernels& k, const Tensor& w, const ConvProblem& p, int ob);

// ---- Plans (direct_plan.cpp) -------------------------------------------------------------------

// A set of output rows tiled together: `rows` x `cols`, with reach(first_row, rh) taps per tile.
struct RowSet {
  int64_t rows, cols;
  std::function<int64_t(int64_t, int64_t)> reach;
};

struct RowPlan {
  int ob = 1, rh = 1, rw = 1;  // blocks per group, rows per tile, most pixels per tile
  double cycles_per_image = 1e300;
};

// Row tiles of OB blocks x RH rows x RW pixels with the least estimated cycles over `sets`.
RowPlan plan_rows(const DirectKernels& k, const std::vector<RowSet>& sets, int64_t blocks, int64_t kdim,
                  DirectMode mode);

struct ImagePlan {
  int ob = 1;
  int64_t groups = 1;       // image groups (tasks); group g holds images [N*g/groups, N*(g+1)/groups)
  int64_t slots = 1;        // the largest group
  double makespan = 1e300;  // estimated cycles on the busiest thread
};

// Image groups and OB with the least estimated makespan, given how many taps reach each position.
ImagePlan plan_images(const DirectKernels& k, const std::vector<int64_t>& taps_per_position, int64_t N, int64_t blocks,
                      int64_t kdim);

struct WgradPlan {
  int ob = 1, rc = 1, px = 1;  // blocks per group, x values per tile, pixels per step
};

// The weight-gradient register tile for runs of `entries` x values over `blocks` channel blocks.
WgradPlan plan_wgrad(const DirectKernels& k, int64_t entries, int64_t blocks);

// Whether image tiles beat row tiles (which run N images split over the threads).
bool use_images(DirectMode mode, const RowPlan& rows, const ImagePlan& images, int64_t N);

// The choice between row and image tiles, and the tile shapes, for one problem.
struct DirectPlan {
  bool images = false;
  RowPlan rows;
  ImagePlan image;
};

// The plan of one problem in one direction (0 forward, 1 backward-data): made by `make` the first
// time, then taken from a process-wide cache (plans depend only on the problem and thread count).
DirectPlan cached_plan(int direction, simd::Isa isa, DirectMode mode, const ConvProblem& p,
                       const std::function<DirectPlan()>& make);

}  // namespace peel::conv_detail::direct
