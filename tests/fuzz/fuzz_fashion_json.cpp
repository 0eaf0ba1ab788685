// libFuzzer target: the reader of Fashion-MNIST's per-class JSON files (datasets/formats/fashion_json.h),
// and the train/test split of what it accepts.
#include "datasets/formats/fashion_json.h"
#include "tests/fuzz/fuzz.h"

using namespace peel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::reject_errors([&] {
    const std::string text = fuzz::text_of(data, size);
    const data::ClassImages images = data::parse_fashion_class_json(text, "fuzz.json");
    if (images.count <= 16) data::fashion_split({images, images}, images.count / 2, images.count);
  });
}
