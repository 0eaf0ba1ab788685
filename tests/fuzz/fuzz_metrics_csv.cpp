// libFuzzer target: the reader of a run folder's metrics.csv (experiments/run/folder.h), reading
// every row and, as --resume does, only the rows up to epoch 2.
#include "experiments/run/folder.h"
#include "tests/fuzz/fuzz.h"

using namespace peel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = fuzz::text_of(data, size);
  fuzz::reject_errors([&] { parse_metrics_csv(text, "fuzz/metrics.csv"); });
  return fuzz::reject_errors([&] { parse_metrics_csv(text, "fuzz/metrics.csv", 2); });
}
