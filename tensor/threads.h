// One thread knob for everything: peel's loops (its own pool), OpenBLAS and oneDNN (which runs on OpenMP).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "tensor/thread_pool.h"

namespace peel {

// Sets the thread count for peel's loops, OpenBLAS and oneDNN. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

// How long an idle OpenMP thread spins before it sleeps (libgomp's GOMP_SPINCOUNT, in spin-loop
// iterations). peel's own loops run on its pool (thread_pool.h); OpenMP's threads are OpenBLAS's
// and oneDNN's. libgomp's own default, 300000, is milliseconds of spinning at every barrier: on a
// machine whose cores are busy with other work the spinning threads take the CPU from the one
// thread everyone waits for, and a training step ran 5-10x slower (docs/performance.md). A short
// spin still bridges the gaps between the back-to-back parallel regions of one step.
inline constexpr const char* kSpinCount = "3000";

// libgomp reads its waiting policy once, when it is loaded, before main(); so a program that
// wants the short spin sets GOMP_SPINCOUNT and executes itself again, first thing in main(). Does
// nothing when the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT set), and returns when
// the re-execution fails (the program then runs with libgomp's default).
void adopt_wait_policy(char** argv);

// Calls body(begin, end) on contiguous chunks of [0, n), on peel's thread pool (thread_pool.h). The
// split depends only on n, grain and the thread count, never on which thread runs a chunk, so a
// kernel whose chunks do independent work gives identical bits run to run.
// Runs inline when there is too little work to share, or inside another parallel_for or an OpenMP
// region (the im2col backend's).
template <class Body>
void parallel_for(int64_t n, int64_t grain, Body&& body) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  const int64_t chunks = std::min<int64_t>(num_threads(), max_chunks);
  if (chunks <= 1 || pool::in_parallel() || omp_in_parallel()) {
    body(int64_t{0}, n);
    return;
  }
  struct Split {
    std::remove_reference_t<Body>* body;
    int64_t n, chunks;
  } split{&body, n, chunks};
  pool::run(
      chunks,
      [](void* context, int64_t chunk) {
        const Split& s = *static_cast<const Split*>(context);
        const int64_t begin = s.n * chunk / s.chunks, end = s.n * (chunk + 1) / s.chunks;
        if (begin < end) (*s.body)(begin, end);
      },
      &split);
}

}  // namespace peel
