// A scope in which OpenBLAS (and so LAPACK) runs on one thread, for measurements made of many small
// BLAS calls: a values-only SVD is mostly matrix-vector work, and a sample pass over narrow features
// is many small GEMMs. There a second OpenBLAS thread saves little. On a loaded machine it costs a
// lot, because each call waits for a thread the scheduler has put aside: the small_cnn rank report
// took 12 s wall with 2 threads and 23 ms with 1, on a machine with load 18 (docs/square-loss.md §3).
// Like parallel_for running inline when there is too little work, this changes only how the work is
// split, not the --threads knob; the previous count is restored on exit.
#pragma once

#include <cblas.h>

namespace peel {

class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~SingleThreadedBlas() { openblas_set_num_threads(saved_); }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

}  // namespace peel
