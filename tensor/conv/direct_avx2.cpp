// The AVX2+FMA instantiation of the direct-convolution micro-kernels (two ymm per 16 channels).
#define PEEL_CONV_WIDTH 8
#define PEEL_CONV_NAMESPACE avx2
#include "tensor/conv/direct_kernels.inl"

namespace peel::conv_detail {
const DirectKernels& direct_kernels_avx2() {
  static const DirectKernels table = avx2::make_table("avx2");
  return table;
}
}  // namespace peel::conv_detail
