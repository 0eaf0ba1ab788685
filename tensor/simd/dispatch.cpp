#include <cstdlib>
#include <cstring>

#include "tensor/error.h"
#include "tensor/simd/kernels.h"

namespace peel::simd {

bool cpu_supports(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kBaseline:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  return false;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kBaseline:
      return "baseline";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

const KernelTable& kernels_for(Isa isa) {
  PEEL_CHECK(cpu_supports(isa), "simd: this CPU does not support the {} kernels", isa_name(isa));
  switch (isa) {
    case Isa::kAvx512:
      return avx512_kernels();
    case Isa::kAvx2:
      return avx2_kernels();
    case Isa::kBaseline:
      break;
  }
  return baseline_kernels();
}

namespace {
Isa choose_isa() {
  if (const char* env = std::getenv("PEEL_ISA"); env != nullptr && *env != '\0') {
    for (Isa isa : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512})
      if (std::strcmp(env, isa_name(isa)) == 0) {
        PEEL_CHECK(cpu_supports(isa), "PEEL_ISA={}: this CPU does not support it", env);
        return isa;
      }
    PEEL_FAIL("PEEL_ISA={}: unknown instruction set (expected baseline, avx2 or avx512)", env);
  }
  if (cpu_supports(Isa::kAvx512)) return Isa::kAvx512;
  if (cpu_supports(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kBaseline;
}
}  // namespace

Isa active_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

const KernelTable& kernels() {
  static const KernelTable& table = kernels_for(active_isa());
  return table;
}

}  // namespace peel::simd
