// One thread knob for everything: our OpenMP loops, OpenBLAS and oneDNN (which runs on OpenMP).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace peel {

// Sets the thread count for peel's loops, OpenBLAS and oneDNN. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

// Calls body(begin, end) on contiguous chunks of [0, n). The split depends only on n, grain and
// the thread count, so a kernel whose chunks do independent work gives identical bits run to run.
// Runs inline (no parallel region) when there is too little work to share.
template <class Body>
void parallel_for(int64_t n, int64_t grain, Body&& body) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (threads <= 1 || omp_in_parallel()) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t begin = n * t / threads;
    const int64_t end = n * (t + 1) / threads;
    if (begin < end) body(begin, end);
  }
}

}  // namespace peel
