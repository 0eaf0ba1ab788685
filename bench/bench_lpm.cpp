// Layer-Peeled Model solvers: one SDP solve, one nonconvex solve, one projection, and the whole
// 41-point sweep of Fang et al.'s grid (the budget: under 10 s on this machine).
//
//   bench_lpm [--threads=N] [benchmark flags]   threads: --threads, else $PEEL_THREADS, else 2
#include <benchmark/benchmark.h>

#include "bench/bench_threads.h"
#include "experiments/lpm/lpm.h"
#include "tensor/random.h"

namespace {

peel::LpmProblem authors_problem(double ratio) {
  peel::LpmProblem p;  // K = 10, K_A = 5, E_W = 1, E_H = 5
  p.ratio = ratio;
  return p;
}

void BM_LpmSdpSolve(benchmark::State& state) {
  const peel::LpmProblem p = authors_problem(static_cast<double>(state.range(0)));
  int64_t iterations = 0;
  for (auto _ : state) {
    const peel::LpmSolution s = peel::solve_lpm_sdp(p);
    iterations = s.iterations;
    benchmark::DoNotOptimize(s.objective);
  }
  state.counters["fista_iterations"] = static_cast<double>(iterations);
}
BENCHMARK(BM_LpmSdpSolve)->Arg(1)->Arg(10)->Arg(100)->Arg(10000)->Unit(benchmark::kMillisecond);

void BM_LpmNonconvexSolve(benchmark::State& state) {
  const peel::LpmProblem p = authors_problem(static_cast<double>(state.range(0)));
  int64_t iterations = 0;
  for (auto _ : state) {
    const peel::LpmSolution s = peel::solve_lpm_nonconvex(p);  // 4 starts, p = 2K
    iterations = s.iterations;
    benchmark::DoNotOptimize(s.objective);
  }
  state.counters["spg_iterations"] = static_cast<double>(iterations);
}
BENCHMARK(BM_LpmNonconvexSolve)->Arg(1)->Arg(10)->Arg(100)->Unit(benchmark::kMillisecond);

void BM_LpmProjection(benchmark::State& state) {
  peel::Generator gen(1);
  const int64_t k = 10, n = 2 * k;
  peel::MatrixD y = peel::MatrixD::zeros(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) y(i, j) = y(j, i) = 5 * gen.normal() + (i == j ? 10 : 0);
  int64_t eigs = 0;
  for (auto _ : state) {
    const peel::LpmProjection p = peel::project_lpm_set(y, k, 50, 10);  // both budgets bind
    eigs = p.eigendecompositions;
    benchmark::DoNotOptimize(p.x.values.data());
  }
  state.counters["eigh_calls"] = static_cast<double>(eigs);
}
BENCHMARK(BM_LpmProjection)->Unit(benchmark::kMicrosecond);

void BM_LpmSweep41(benchmark::State& state) {
  peel::LpmSweepConfig config;  // Fang et al.'s grid, SDP, warm starts
  config.refine_collapse = state.range(0) != 0;
  for (auto _ : state) {
    const peel::LpmSweep sweep = peel::lpm_sweep(config);
    benchmark::DoNotOptimize(sweep.collapse_ratio);
  }
}
BENCHMARK(BM_LpmSweep41)->ArgName("refine")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

PEEL_BENCHMARK_MAIN()
