// The thread count of every benchmark program, set one way: --threads=N on the command line, else
// the environment variable PEEL_THREADS, else 2 (the machine's core count; benchmarks on a shared
// machine should say what they used). The count governs peel's loops, OpenBLAS and oneDNN, and is
// recorded in the benchmark's context ("threads"). A bad value is an error, not a silent default.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tensor/threads.h"

namespace peel::bench {

// Removes "--name=value" (or a bare "--name") from argv and returns the value ("1" for a bare
// flag, "" when absent), so that Google Benchmark never sees the flags it does not know.
inline std::string take_flag(int& argc, char** argv, const char* name) {
  const std::string prefix = std::string("--") + name;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == prefix || arg.rfind(prefix + "=", 0) == 0) {
      std::string value = arg == prefix ? "1" : arg.substr(prefix.size() + 1);
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      return value;
    }
  }
  return "";
}

// A positive integer from `text`, or exit(2) naming where it came from.
inline int parse_thread_count(const std::string& text, const char* source) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < 1 || value > 1024) {
    std::fprintf(stderr, "%s: '%s' is not a thread count (expected an integer from 1 to 1024)\n", source, text.c_str());
    std::exit(2);
  }
  return static_cast<int>(value);
}

// --threads=N, else $PEEL_THREADS, else 2: sets peel's thread count, records it in the benchmark
// context and returns it. Call first in main, before benchmark::Initialize.
inline int setup_threads(int& argc, char** argv) {
  const std::string flag = take_flag(argc, argv, "threads");
  const char* env = std::getenv("PEEL_THREADS");
  int threads = 2;
  if (!flag.empty()) {
    threads = parse_thread_count(flag, "--threads");
  } else if (env != nullptr && *env != '\0') {
    threads = parse_thread_count(env, "PEEL_THREADS");
  }
  set_num_threads(threads);
  benchmark::AddCustomContext("threads", std::to_string(threads));
  return threads;
}

// Runs the registered benchmarks (after setup_threads); the body of every bench program's main.
inline int run_benchmarks(int& argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace peel::bench

// main() for a program whose benchmarks are registered with BENCHMARK(...).
#define PEEL_BENCHMARK_MAIN()                       \
  int main(int argc, char** argv) {                 \
    peel::bench::setup_threads(argc, argv);         \
    return peel::bench::run_benchmarks(argc, argv); \
  }
