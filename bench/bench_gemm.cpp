// GEMM throughput: peel::gemm (the checked cblas_sgemm wrapper) against raw cblas_sgemm, on square
// matrices and on the GEMMs the im2col convolution backend issues for small_cnn's layers.
//
//   bench_gemm [--threads=N] [benchmark flags]      threads: --threads, else $PEEL_THREADS, else 2
//
// square/<n>/{peel,cblas}            n x n x n on all threads
// im2col/<layer>/<dir>/batch/...     the whole batch as one GEMM (P = 128*OH*OW rows), all threads
// im2col/<layer>/<dir>/chunk/...     one chunk as conv/im2col.cpp runs it: one OpenBLAS thread
// Counter GFLOP/s = 2*m*n*k per call over real time.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <string>

#include "bench/bench_threads.h"
#include "tensor/conv/backends.h"
#include "tensor/linalg.h"
#include "tensor/random.h"
#include "tensor/threads.h"

using namespace peel;

namespace {

struct GemmShape {
  bool trans_a, trans_b;
  int64_t m, n, k;
};

void run_gemm(benchmark::State& state, GemmShape s, bool use_peel, int blas_threads) {
  Generator gen(1);
  const Tensor a = uniform({s.m * s.k}, -1.f, 1.f, gen);
  const Tensor b = uniform({s.k * s.n}, -1.f, 1.f, gen);
  Tensor c = Tensor::zeros({s.m * s.n});
  const int64_t lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
  openblas_set_num_threads(blas_threads);
  for (auto _ : state) {
    if (use_peel) {
      gemm(s.trans_a, s.trans_b, s.m, s.n, s.k, 1.f, a.data(), lda, b.data(), ldb, 0.f, c.data(), s.n);
    } else {
      cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans, s.trans_b ? CblasTrans : CblasNoTrans,
                  static_cast<blasint>(s.m), static_cast<blasint>(s.n), static_cast<blasint>(s.k), 1.f, a.data(),
                  static_cast<blasint>(lda), b.data(), static_cast<blasint>(ldb), 0.f, c.data(),
                  static_cast<blasint>(s.n));
    }
    benchmark::DoNotOptimize(c.data());
  }
  openblas_set_num_threads(num_threads());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k * 1e-9 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

void add(const std::string& name, GemmShape s, int blas_threads) {
  for (bool use_peel : {true, false})
    benchmark::RegisterBenchmark((name + (use_peel ? "/peel" : "/cblas")).c_str(), run_gemm, s, use_peel, blas_threads)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  const int all = bench::setup_threads(argc, argv);

  for (int64_t n = 128; n <= 2048; n *= 2) add("square/" + std::to_string(n), {false, false, n, n, n}, all);

  // small_cnn's 3x3 layers at batch 128 (stride 1, padding 1), in conv/im2col.cpp's terms:
  //   forward  Y = cols * Wr^T  (P x K)(K x O);  backward-data dcols = dY * Wr  (P x O)(O x K);
  //   backward-weights dWr = dY^T * cols  (O x P)(P x K); K = 9*C.
  struct Layer {
    int64_t C, O, H;
  };
  const int64_t batch = 128;
  for (const Layer& l :
       {Layer{1, 32, 28}, Layer{32, 32, 28}, Layer{32, 64, 14}, Layer{64, 64, 14}, Layer{64, 128, 7}}) {
    const conv_detail::ConvProblem p =
        conv_detail::make_problem({batch, l.C, l.H, l.H}, {l.O, l.C, 3, 3}, Conv2dGeometry::square(1, 1));
    const int64_t K = 9 * l.C, pixels = p.OH * p.OW;
    const std::string layer = std::to_string(l.C) + "x" + std::to_string(l.O) + "_" + std::to_string(l.H);
    for (bool whole : {true, false}) {
      const int64_t P = (whole ? batch : conv_detail::im2col_chunk_images(p)) * pixels;
      const int blas_threads = whole ? all : 1;
      const std::string suffix = whole ? "/batch" : "/chunk";
      add("im2col/" + layer + "/fwd" + suffix, {false, true, P, l.O, K}, blas_threads);
      add("im2col/" + layer + "/bwd_data" + suffix, {false, false, P, K, l.O}, blas_threads);
      add("im2col/" + layer + "/bwd_weights" + suffix, {true, false, l.O, K, P}, blas_threads);
    }
  }
  return bench::run_benchmarks(argc, argv);
}
