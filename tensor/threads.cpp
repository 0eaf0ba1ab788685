#include "tensor/threads.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
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

void adopt_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", kSpinCount, 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

}  // namespace peel
