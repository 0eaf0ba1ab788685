// The avx2 instantiation of kernels.inl (8 floats per vector); compiled with its own -march flags.
#define PEEL_SIMD_WIDTH 8
#define PEEL_SIMD_NAMESPACE isa_avx2
#define PEEL_SIMD_NAME "avx2"
#include "tensor/simd/kernels.inl"

namespace peel::simd {
const KernelTable& avx2_kernels() { return isa_avx2::table; }
}  // namespace peel::simd
