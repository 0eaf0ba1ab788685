// libFuzzer target: the CIFAR-10 batch reader (datasets/formats/cifar.h).
#include "datasets/formats/cifar.h"
#include "tests/fuzz/fuzz.h"

using namespace peel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::reject_errors([&] { data::parse_cifar10_batch(fuzz::bytes_of(data, size), "fuzz.bin"); });
}
