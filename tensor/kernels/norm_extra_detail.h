// Shared pieces of the kernels of norm_extra.h: deterministic drivers for sums per channel and per
// (sample, channel), and the parallel elementwise pass over rows of one sample. Internal to tensor/.
//
// The memory forms (rows = channels-last or (N, C); planes = contiguous NCHW) and the vectorised
// inner loops are the ones of the existing norm kernels (norm_detail.h), reused here.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>

#include "tensor/kernels/norm_detail.h"
#include "tensor/threads.h"

namespace peel::norm_extra_detail {

// The existing norm kernels' helpers: the one place that names their namespace.
namespace shared = ::peel::kernels_detail;
using shared::ChannelLayout;
using shared::RowBlocking;

constexpr int64_t kElementsPerTask = 16384;  // elementwise passes: work per parallel chunk

template <int K>
using SumArrays = std::array<double*, K>;  // K arrays of sums, indexed by channel (or n*C + c)

// out[k][c] = the sum over all N*S positions of channel c of term k.
//   rows form:   rows_task(r0, rows, c0, c1, acc) adds rows [r0, r0 + rows) of the (N*S, C) matrix,
//                channels [c0, c1), into acc[k][c];
//   planes form: plane_task(p, sums) sets sums[k] to the sums over plane p = n*C + c.
// Rows are cut into fixed blocks (row_blocking) and planes are added over n in order, so the result
// does not depend on the thread count.
template <int K, class RowsTask, class PlaneTask>
void channel_sums(const ChannelLayout& L, SumArrays<K> out, RowsTask&& rows_task, PlaneTask&& plane_task) {
  const int64_t N = L.N, C = L.C, S = L.S;
  Tensor hold;
  if (L.rows) {
    const RowBlocking b = shared::row_blocking(N * S, C);
    double* part = shared::scratch_doubles(hold, K * b.row_blocks * C);
    parallel_for(b.tasks(), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t rb = t / b.chunks, c0 = (t % b.chunks) * b.channels_per_chunk;
        const int64_t c1 = std::min(C, c0 + b.channels_per_chunk);
        const int64_t r0 = rb * b.rows_per_block, rows = std::min(b.rows_per_block, N * S - r0);
        SumArrays<K> acc;
        for (int k = 0; k < K; ++k) {
          acc[k] = part + (k * b.row_blocks + rb) * C;
          std::fill(acc[k] + c0, acc[k] + c1, 0.0);
        }
        rows_task(r0, rows, c0, c1, acc);
      }
    });
    for (int k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) {
        double total = 0;
        for (int64_t rb = 0; rb < b.row_blocks; ++rb) total += part[(k * b.row_blocks + rb) * C + c];
        out[k][c] = total;
      }
    return;
  }
  double* part = shared::scratch_doubles(hold, K * N * C);
  parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(S, 1)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      std::array<double, K> sums{};
      plane_task(p, sums);
      for (int k = 0; k < K; ++k) part[k * N * C + p] = sums[k];
    }
  });
  for (int k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      double total = 0;
      for (int64_t n = 0; n < N; ++n) total += part[k * N * C + n * C + c];
      out[k][c] = total;
    }
}

// out[k][n*C + c] = the sum over the S positions of sample n, channel c, of term k.
//   rows form:   rows_task(n, r0, rows, c0, c1, acc) adds rows [r0, r0 + rows) of sample n (rows
//                counted within the sample), channels [c0, c1), into acc[k][c] (acc is per sample);
//   planes form: plane_task(p, sums) as in channel_sums.
template <int K, class RowsTask, class PlaneTask>
void sample_channel_sums(const ChannelLayout& L, SumArrays<K> out, RowsTask&& rows_task, PlaneTask&& plane_task) {
  const int64_t N = L.N, C = L.C, S = L.S;
  if (!L.rows) {
    parallel_for(N * C, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(S, 1)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        std::array<double, K> sums{};
        plane_task(p, sums);
        for (int k = 0; k < K; ++k) out[k][p] = sums[k];
      }
    });
    return;
  }
  const RowBlocking b = shared::row_blocking(S, C);
  Tensor hold;
  double* part = shared::scratch_doubles(hold, K * N * b.row_blocks * C);
  auto block = [&](int k, int64_t n, int64_t rb) { return part + ((k * N + n) * b.row_blocks + rb) * C; };
  parallel_for(N * b.tasks(), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / b.tasks(), rest = t % b.tasks();
      const int64_t rb = rest / b.chunks, c0 = (rest % b.chunks) * b.channels_per_chunk;
      const int64_t c1 = std::min(C, c0 + b.channels_per_chunk);
      const int64_t r0 = rb * b.rows_per_block, rows = std::min(b.rows_per_block, S - r0);
      SumArrays<K> acc;
      for (int k = 0; k < K; ++k) {
        acc[k] = block(k, n, rb);
        std::fill(acc[k] + c0, acc[k] + c1, 0.0);
      }
      rows_task(n, r0, rows, c0, c1, acc);
    }
  });
  for (int k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        double total = 0;
        for (int64_t rb = 0; rb < b.row_blocks; ++rb) total += block(k, n, rb)[c];
        out[k][n * C + c] = total;
      }
}

// Elementwise pass: rows form body_rows(n, r0, r1) on global rows [r0, r1) of sample n (r = n*S + s);
// planes form body_plane(p) on plane p = n*C + c.
template <class RowsBody, class PlaneBody>
void for_each_chunk(const ChannelLayout& L, RowsBody&& body_rows, PlaneBody&& body_plane) {
  if (L.rows) {
    parallel_for(L.N * L.S, std::max<int64_t>(1, kElementsPerTask / L.C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1;) {
        const int64_t n = r / L.S, end = std::min(r1, (n + 1) * L.S);
        body_rows(n, r, end);
        r = end;
      }
    });
    return;
  }
  parallel_for(L.N * L.C, std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(L.S, 1)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p) body_plane(p);
               });
}

// A (C) vector of a kernel argument as contiguous floats (a view when it already is one).
inline const float* channel_values(const Tensor& t, Tensor& hold) {
  hold = t.contiguous();
  return hold.data();
}

}  // namespace peel::norm_extra_detail
