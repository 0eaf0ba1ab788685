#include "tensor/threads.h"

#include <cblas.h>

#include <thread>

namespace peel {
namespace {
int g_threads = 0;  // 0: not set yet, use all cores
}

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = n;
  omp_set_num_threads(n);       // our loops and oneDNN's
  openblas_set_num_threads(n);  // OpenBLAS keeps its own pthread pool
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

}  // namespace peel
