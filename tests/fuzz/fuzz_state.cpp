// libFuzzer target: the reader of peel's state files, checkpoints and saved models (nn/module.h),
// versions 1 (no CRCs, so the fuzzer reaches the entries) and 2.
#include "nn/module.h"
#include "tests/fuzz/fuzz.h"

using namespace peel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::reject_errors([&] { nn::parse_state(fuzz::bytes_of(data, size), "fuzz.peel"); });
}
