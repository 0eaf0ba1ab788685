// The direct backend's cost model: for each problem, whether forward and backward-data run row
// tiles (one or two rows of one image) or image tiles (one position across images), and the
// register tile shape of each mode and of backward-weights. The estimate counts issue slots (FMA
// and load), FMA latency, call overhead and how evenly the tasks fill the threads; it is made once
// per problem and cached.
#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <tuple>

#include "tensor/conv/direct_detail.h"
#include "tensor/error.h"

namespace peel::conv_detail {
namespace direct {

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

namespace {

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

}  // namespace

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
        const int64_t full_groups = blocks / ob;  // groups of ob blocks; the smaller rest is costed apart
        double cost = 0;
        for (size_t si = 0; si < sets.size(); ++si) {
          const RowSet& set = sets[si];
          for (int64_t r = 0; r < set.rows; r += rh) {
            const int64_t trh = std::min<int64_t>(rh, set.rows - r);
            const double steps = ksteps[trh][si][r];
            for_each_span(set.cols, rw, [&](int64_t, int64_t len) {
              cost += static_cast<double>(full_groups) * tile_cost(k, ob, trh, len, steps);
              if (blocks % ob != 0) cost += tile_cost(k, static_cast<int>(blocks % ob), trh, len, steps);
            });
          }
        }
        if (cost < best.cycles_per_image) best = {ob, rh, rw, cost};
      }
  return best;
}

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
      const int64_t full_groups = blocks / ob;  // groups of ob blocks; the smaller rest is costed apart
      double group_cost = 0;
      for (const auto& [taps, positions] : histogram) {
        const double ksteps = static_cast<double>(taps * kdim);
        double c = static_cast<double>(full_groups) * tile_cost(k, ob, 1, size, ksteps);
        if (blocks % ob != 0) c += tile_cost(k, static_cast<int>(blocks % ob), 1, size, ksteps);
        group_cost += static_cast<double>(positions) * c;
      }
      const double makespan = static_cast<double>(ceil_div(groups, threads)) * group_cost;
      if (makespan < best.makespan) best = {ob, groups, size, makespan};
    }
  return best;
}

namespace {

WgradPlan make_wgrad_plan(const DirectKernels& k, int64_t entries, int64_t blocks) {
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
        const int64_t full_groups = blocks / ob;  // groups of ob blocks; the smaller rest is costed apart
        double cost = static_cast<double>(full_groups) * group_cost(ob);
        if (blocks % ob != 0) cost += group_cost(static_cast<int>(blocks % ob));
        if (cost < best_cost - 1e-9) {
          best_cost = cost;
          best = {ob, rc, px};
        }
      }
  return best;
}

}  // namespace

// The search above walks every register tile for every call; at micro-batches that was a few
// percent of a training step (docs/normalization.md's profile), so each answer is kept.
WgradPlan plan_wgrad(const DirectKernels& k, int64_t entries, int64_t blocks) {
  static std::mutex mutex;
  static std::map<std::tuple<const DirectKernels*, int64_t, int64_t>, WgradPlan> cache;
  const auto key = std::make_tuple(&k, entries, blocks);
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  const WgradPlan plan = make_wgrad_plan(k, entries, blocks);
  std::lock_guard lock(mutex);
  cache.emplace(key, plan);
  return plan;
}

bool use_images(DirectMode mode, const RowPlan& rows, const ImagePlan& images, int64_t N) {
  if (mode != DirectMode::kAuto) return mode == DirectMode::kImageTiles;
  const double row_makespan = rows.cycles_per_image * static_cast<double>(ceil_div(N, num_threads()));
  return images.makespan < 0.95 * row_makespan;
}

// Plans depend only on the problem, so each is made once (planning a 28x28 layer takes about as
// long as a few percent of running it) and kept in a mutex-guarded map, like oneDNN's primitives.
DirectPlan cached_plan(int direction, simd::Isa isa, DirectMode mode, const ConvProblem& p,
                       const std::function<DirectPlan()>& make) {
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

}  // namespace direct

simd::Isa direct_isa() {
  const simd::Isa isa = simd::active_isa();
  PEEL_CHECK(isa != simd::Isa::kBaseline,
             "conv direct backend: needs AVX2 or AVX-512, but the active instruction set is {} (PEEL_ISA or CPU); "
             "use PEEL_CONV_BACKEND=im2col or onednn",
             simd::isa_name(isa));
  return isa;
}

}  // namespace peel::conv_detail
