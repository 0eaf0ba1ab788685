// The AVX-512 instantiation of the direct-convolution micro-kernels (one zmm per 16 channels).
#define PEEL_CONV_WIDTH 16
#define PEEL_CONV_NAMESPACE avx512
#include "tensor/conv/direct_kernels.inl"

namespace peel::conv_detail {
const DirectKernels& direct_kernels_avx512() {
  static const DirectKernels table = avx512::make_table("avx512");
  return table;
}
}  // namespace peel::conv_detail
