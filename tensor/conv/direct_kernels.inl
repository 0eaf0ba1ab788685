// One source for the direct-convolution micro-kernels of both instruction sets (see
// conv/direct_kernels.h for what they compute). Included by conv/direct_avx512.cpp and
// conv/direct_avx2.cpp with PEEL_CONV_WIDTH (floats per vector) and PEEL_CONV_NAMESPACE set.
// Everything has internal linkage, and nothing from the standard library that defines functions
// is used, so no code compiled for AVX-512 can be picked by the linker for the AVX2 path.
//
// The accumulators are fixed-size arrays indexed by compile-time constants after full
// unrolling, so GCC keeps them in registers; each broadcast feeds OB FMAs (AVX-512 folds it into
// the FMA as an embedded broadcast).
#include <immintrin.h>

#include <cstdint>
#include <utility>  // std::integer_sequence (a type only)

#include "tensor/conv/direct_kernels.h"

#ifndef PEEL_CONV_WIDTH
#error "define PEEL_CONV_WIDTH before including conv/direct_kernels.inl"
#endif

namespace peel::conv_detail::PEEL_CONV_NAMESPACE {
namespace {

#if PEEL_CONV_WIDTH == 16
using vec = __m512;
using lane_mask = __mmask16;
constexpr int L = 16;
constexpr int kRegisters = 32;
inline vec vzero() { return _mm512_setzero_ps(); }
inline vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
inline vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
inline void vstore(float* p, vec v) { _mm512_storeu_ps(p, v); }
inline lane_mask make_mask(int lanes) { return static_cast<lane_mask>((1u << lanes) - 1u); }
inline vec vload_masked(const float* p, lane_mask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void vstore_masked(float* p, lane_mask m, vec v) { _mm512_mask_storeu_ps(p, m, v); }
#elif PEEL_CONV_WIDTH == 8
using vec = __m256;
using lane_mask = __m256i;
constexpr int L = 8;
constexpr int kRegisters = 16;
inline vec vzero() { return _mm256_setzero_ps(); }
inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
inline vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
inline void vstore(float* p, vec v) { _mm256_storeu_ps(p, v); }
inline lane_mask make_mask(int lanes) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vec vload_masked(const float* p, lane_mask m) { return _mm256_maskload_ps(p, m); }
inline void vstore_masked(float* p, lane_mask m, vec v) { _mm256_maskstore_ps(p, m, v); }
#else
#error "PEEL_CONV_WIDTH must be 16 or 8"
#endif

constexpr int VPB = 16 / L;  // vectors per 16-channel block

// A register tile of OB blocks x `pixels` fits when its accumulators, the OB blocks of weights
// (or grad_y) and one broadcast register all stay in vector registers (no spills).
constexpr bool fits(int ob, int pixels) { return (ob * pixels + ob) * VPB + 1 <= kRegisters; }
// The weight-gradient kernel also keeps its tail masks in vector registers on AVX2.
constexpr bool fits_wgrad(int ob, int entries) {
  return fits(ob, entries) && (L == 16 || (ob * entries + ob + 1) * VPB + 1 <= kRegisters);
}

// Valid lanes of vector q (0..VPB-1) of a block with `lanes` valid lanes.
inline int vector_lanes(int lanes, int q) {
  const int n = lanes - q * L;
  return n < 0 ? 0 : (n > L ? L : n);
}

template <int OB, int RH, int RW>
void tile_kernel(const DirectTileArgs& a) {
  constexpr int NV = OB * VPB;
  vec acc[RH][RW][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const vec init = a.init != nullptr ? vload(a.init + v * L) : vzero();
#pragma GCC unroll 2
    for (int r = 0; r < RH; ++r)
#pragma GCC unroll 28
      for (int j = 0; j < RW; ++j) acc[r][j][v] = init;
  }
  const int64_t ks = a.in_k_stride;
  for (int64_t t = 0; t < a.ntaps; ++t) {
    const float* in0 = a.in + a.taps[t].in_off;
    const float* in1 = in0 + (RH > 1 ? a.in_row_step : 0);
    const float* wp = a.w + a.taps[t].w_off;
    for (int64_t k = a.kdim; k > 0; --k) {
      vec wv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) wv[v] = vload(wp + v * L);
#pragma GCC unroll 28
      for (int j = 0; j < RW; ++j) {
        const vec xb = vbroadcast(in0 + j);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[0][j][v] = vfma(wv[v], xb, acc[0][j][v]);
      }
      if constexpr (RH > 1) {
#pragma GCC unroll 28
        for (int j = 0; j < RW; ++j) {
          const vec xb = vbroadcast(in1 + j);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[RH - 1][j][v] = vfma(wv[v], xb, acc[RH - 1][j][v]);
        }
      }
      in0 += ks;
      in1 += ks;
      wp += NV * L;
    }
  }
  if (a.relu) {
#pragma GCC unroll 2
    for (int r = 0; r < RH; ++r)
#pragma GCC unroll 28
      for (int j = 0; j < RW; ++j)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][j][v] = vmax(acc[r][j][v], vzero());
  }
  lane_mask tail[VPB];
  int tail_lanes[VPB];
#pragma GCC unroll 2
  for (int q = 0; q < VPB; ++q) {
    tail_lanes[q] = vector_lanes(a.last_block_lanes, q);
    tail[q] = make_mask(tail_lanes[q]);
  }
#pragma GCC unroll 2
  for (int r = 0; r < RH; ++r)
#pragma GCC unroll 28
    for (int j = 0; j < RW; ++j) {
      float* out = a.out + r * a.out_row_stride + j * a.out_pix_stride;
#pragma GCC unroll 8
      for (int v = 0; v < NV - VPB; ++v) vstore(out + v * L, acc[r][j][v]);
#pragma GCC unroll 2
      for (int q = 0; q < VPB; ++q) {
        const int v = NV - VPB + q;
        if (tail_lanes[q] == L)
          vstore(out + v * L, acc[r][j][v]);
        else if (tail_lanes[q] > 0)
          vstore_masked(out + v * L, tail[q], acc[r][j][v]);
      }
    }
}

// PX = 2 keeps a second set of accumulators for every other pixel, for small tiles whose
// accumulators are too few to cover the FMA latency.
template <int OB, int RC, int PX>
void wgrad_kernel(const DirectWgradArgs& a) {
  constexpr int NV = OB * VPB;
  vec acc[PX][RC][NV];
#pragma GCC unroll 28
  for (int e = 0; e < RC; ++e)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      acc[0][e][v] = vload(a.acc + e * a.acc_e_stride + v * L);
      if constexpr (PX > 1) acc[PX - 1][e][v] = vzero();
    }
  lane_mask tail[VPB];
#pragma GCC unroll 2
  for (int q = 0; q < VPB; ++q) tail[q] = make_mask(vector_lanes(a.last_block_lanes, q));
  // One pixel's contribution to accumulator set s.
  auto add_pixel = [&](int s, const float* x, const float* g) __attribute__((always_inline)) {
    vec gv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV - VPB; ++v) gv[v] = vload(g + v * L);
#pragma GCC unroll 2
    for (int q = 0; q < VPB; ++q) gv[NV - VPB + q] = vload_masked(g + (NV - VPB + q) * L, tail[q]);
#pragma GCC unroll 28
    for (int e = 0; e < RC; ++e) {
      const vec xb = vbroadcast(x + e);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[s][e][v] = vfma(gv[v], xb, acc[s][e][v]);
    }
  };
  // A run of n pixels `xs` / `gs` apart.
  auto add_run = [&](const float* x, const float* g, int64_t n, int64_t xs, int64_t gs) __attribute__((always_inline)) {
    for (; n >= PX; n -= PX) {
#pragma GCC unroll 2
      for (int s = 0; s < PX; ++s) add_pixel(s, x + s * xs, g + s * gs);
      x += PX * xs;
      g += PX * gs;
    }
    if (PX > 1 && n > 0) add_pixel(0, x, g);
  };
  // The innermost run is whichever is longer: a row's columns, or the same pixel across images
  // (small maps have rows of 2-4 pixels).
  if (a.cols >= a.images) {
    for (int64_t i = 0; i < a.images; ++i)
      for (int64_t r = 0; r < a.rows; ++r)
        add_run(a.x + i * a.x_image_step + r * a.x_row_step, a.gy + i * a.gy_image_step + r * a.gy_row_step, a.cols,
                a.x_col_step, a.gy_col_step);
  } else {
    for (int64_t r = 0; r < a.rows; ++r)
      for (int64_t c = 0; c < a.cols; ++c)
        add_run(a.x + r * a.x_row_step + c * a.x_col_step, a.gy + r * a.gy_row_step + c * a.gy_col_step, a.images,
                a.x_image_step, a.gy_image_step);
  }
#pragma GCC unroll 28
  for (int e = 0; e < RC; ++e)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      vec sum = acc[0][e][v];
      if constexpr (PX > 1) sum = vadd(sum, acc[PX - 1][e][v]);
      vstore(a.acc + e * a.acc_e_stride + v * L, sum);
    }
}

// The 8x8 block of src rows (8 floats each, `ss` apart) written transposed to dst rows (`ds` apart).
inline void transpose8x8(const float* s, int64_t ss, float* d, int64_t ds) {
  const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ss), r2 = _mm256_loadu_ps(s + 2 * ss),
               r3 = _mm256_loadu_ps(s + 3 * ss), r4 = _mm256_loadu_ps(s + 4 * ss), r5 = _mm256_loadu_ps(s + 5 * ss),
               r6 = _mm256_loadu_ps(s + 6 * ss), r7 = _mm256_loadu_ps(s + 7 * ss);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(d + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(d + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(d + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(d + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(d + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(d + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(d + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// A block of `rows` < 8 source rows: the missing rows read as zero and only `rows` lanes of each
// destination row are written.
inline void transpose_partial(const float* s, int64_t ss, int64_t rows, float* d, int64_t ds) {
  alignas(32) float block[8][8] = {};
  for (int64_t r = 0; r < rows; ++r) _mm256_store_ps(block[r], _mm256_loadu_ps(s + r * ss));
  alignas(32) float out[8][8];
  transpose8x8(&block[0][0], 8, &out[0][0], 8);
  const __m256i mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int c = 0; c < 8; ++c) _mm256_maskstore_ps(d + c * ds, mask, _mm256_load_ps(out[c]));
}

// Whole 8x8 blocks; a ragged edge is covered by one more block that overlaps the previous one
// (rewriting a few values with the same numbers). Fewer than 8 source rows go through a masked
// block; fewer than 8 channels element by element.
void transpose_kernel(const float* src, int64_t src_stride, int64_t count, int64_t channels, float* dst,
                      int64_t dst_stride) {
  if (channels < 8) {
    for (int64_t j = 0; j < count; ++j)
      for (int64_t c = 0; c < channels; ++c) dst[c * dst_stride + j] = src[j * src_stride + c];
    return;
  }
  if (count < 8) {
    for (int64_t c0 = 0; c0 < channels; c0 += 8) {
      const int64_t c = c0 + 8 <= channels ? c0 : channels - 8;
      transpose_partial(src + c, src_stride, count, dst + c * dst_stride, dst_stride);
    }
    return;
  }
  for (int64_t j0 = 0; j0 < count; j0 += 8) {
    const int64_t j = j0 + 8 <= count ? j0 : count - 8;
    for (int64_t c0 = 0; c0 < channels; c0 += 8) {
      const int64_t c = c0 + 8 <= channels ? c0 : channels - 8;
      transpose8x8(src + j * src_stride + c, src_stride, dst + c * dst_stride + j, dst_stride);
    }
  }
}

// ---- The table: every (OB, RH, RW) and (OB, RC) within the accumulator budget ----------------

template <int OB, int RH, int RW>
void set_tile(DirectKernels& t) {
  if constexpr (fits(OB, RH * RW)) t.tile[OB][RH][RW] = &tile_kernel<OB, RH, RW>;
}
template <int OB, int RH, int... I>
void set_tile_row(DirectKernels& t, std::integer_sequence<int, I...>) {
  (set_tile<OB, RH, I + 1>(t), ...);
}
template <int OB, int RC>
void set_wgrad(DirectKernels& t) {
  if constexpr (fits_wgrad(OB, RC)) t.wgrad[1][OB][RC] = &wgrad_kernel<OB, RC, 1>;
  if constexpr (fits_wgrad(OB, 2 * RC)) t.wgrad[2][OB][RC] = &wgrad_kernel<OB, RC, 2>;
}
template <int OB, int... I>
void set_wgrad_row(DirectKernels& t, std::integer_sequence<int, I...>) {
  (set_wgrad<OB, I + 1>(t), ...);
}
template <int OB>
void set_block(DirectKernels& t) {
  using Seq = std::make_integer_sequence<int, kMaxRW>;
  set_tile_row<OB, 1>(t, Seq{});
  set_tile_row<OB, 2>(t, Seq{});
  set_wgrad_row<OB>(t, Seq{});
}

DirectKernels make_table(const char* name) {
  DirectKernels t{};
  t.name = name;
  t.vectors_per_block = VPB;
  t.transpose = &transpose_kernel;
  t.max_acc = 0;
  for (int ob = 1; ob <= kMaxOB; ++ob)
    for (int px = 1; px <= kMaxRW; ++px)
      if (fits(ob, px) && ob * px > t.max_acc) t.max_acc = ob * px;
  set_block<1>(t);
  set_block<2>(t);
  set_block<3>(t);
  set_block<4>(t);
  return t;
}

static_assert(kMaxRH == 2, "tile_kernel handles one or two rows");

}  // namespace
}  // namespace peel::conv_detail::PEEL_CONV_NAMESPACE
