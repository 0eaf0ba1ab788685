// Internal: walks N operands of one shape, each with its own strides, one inner row at a time.
//
// The dimensions are ordered by the first operand's (the output's) strides, largest first, so
// the walk follows the output's memory order; adjacent dimensions that are contiguous for every
// operand are merged, so a dense tensor is one long row whatever its rank.
#pragma once

#include <algorithm>
#include <array>
#include <numeric>

#include "tensor/shape.h"
#include "tensor/threads.h"

namespace peel::detail {

template <size_t N>
struct StridedLoop {
  Shape shape;                     // after ordering and merging; never empty
  std::array<Strides, N> strides;  // per operand, same length as shape
  std::array<float*, N> base;      // per operand
};

template <size_t N>
StridedLoop<N> make_loop(const Shape& shape, const std::array<Strides, N>& strides, const std::array<float*, N>& base) {
  // Keep dimensions of size > 1, in the output's memory order.
  std::vector<size_t> order;
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] != 1) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    for (size_t k = 0; k < N; ++k) {
      const int64_t sa = std::abs(strides[k][a]), sb = std::abs(strides[k][b]);
      if (sa != sb) return sa > sb;
    }
    return false;
  });
  StridedLoop<N> loop;
  loop.base = base;
  for (size_t i : order) {
    const bool merge = !loop.shape.empty() && [&] {
      for (size_t k = 0; k < N; ++k)
        if (loop.strides[k].back() != strides[k][i] * shape[i]) return false;
      return true;
    }();
    if (merge) {
      loop.shape.back() *= shape[i];
      for (size_t k = 0; k < N; ++k) loop.strides[k].back() = strides[k][i];
    } else {
      loop.shape.push_back(shape[i]);
      for (size_t k = 0; k < N; ++k) loop.strides[k].push_back(strides[k][i]);
    }
  }
  if (loop.shape.empty()) {  // a single element
    loop.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) loop.strides[k].push_back(1);
  }
  return loop;
}

// Calls row(ptrs, n, inner_strides) for every inner row, rows shared among threads.
template <size_t N, class Row>
void for_each_row(const StridedLoop<N>& loop, Row&& row, int64_t grain_elements = 1 << 15) {
  const size_t nd = loop.shape.size();
  const int64_t inner = loop.shape[nd - 1];
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = loop.strides[k][nd - 1];
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= loop.shape[d];
  if (inner == 0 || rows == 0) return;

  if (rows == 1) {  // one long row: split it among threads
    parallel_for(inner, grain_elements, [&](int64_t begin, int64_t end) {
      std::array<float*, N> p;
      for (size_t k = 0; k < N; ++k) p[k] = loop.base[k] + begin * inner_strides[k];
      row(p, end - begin, inner_strides);
    });
    return;
  }
  parallel_for(rows, std::max<int64_t>(1, grain_elements / inner), [&](int64_t begin, int64_t end) {
    // Multi-index of row `begin` over the outer dimensions, then step it like an odometer.
    std::vector<int64_t> index(nd - 1, 0);
    int64_t r = begin;
    for (size_t d = nd - 1; d-- > 0;) {
      index[d] = r % loop.shape[d];
      r /= loop.shape[d];
    }
    std::array<float*, N> p;
    for (size_t k = 0; k < N; ++k) {
      p[k] = loop.base[k];
      for (size_t d = 0; d + 1 < nd; ++d) p[k] += index[d] * loop.strides[k][d];
    }
    for (int64_t i = begin; i < end; ++i) {
      row(p, inner, inner_strides);
      for (size_t d = nd - 1; d-- > 0;) {  // advance the odometer
        for (size_t k = 0; k < N; ++k) p[k] += loop.strides[k][d];
        if (++index[d] < loop.shape[d]) break;
        for (size_t k = 0; k < N; ++k) p[k] -= loop.strides[k][d] * loop.shape[d];
        index[d] = 0;
      }
    }
  });
}

}  // namespace peel::detail
