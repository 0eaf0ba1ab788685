// The baseline instantiation of kernels.inl (4 floats per vector); compiled with its own -march flags.
#define PEEL_SIMD_WIDTH 4
#define PEEL_SIMD_NAMESPACE isa_baseline
#define PEEL_SIMD_NAME "baseline"
#include "tensor/simd/kernels.inl"

namespace peel::simd {
const KernelTable& baseline_kernels() { return isa_baseline::table; }
}  // namespace peel::simd
