// The avx512 instantiation of kernels.inl (16 floats per vector); compiled with its own -march flags.
#define PEEL_SIMD_WIDTH 16
#define PEEL_SIMD_NAMESPACE isa_avx512
#define PEEL_SIMD_NAME "avx512"
#include "tensor/simd/kernels.inl"

namespace peel::simd {
const KernelTable& avx512_kernels() { return isa_avx512::table; }
}  // namespace peel::simd
